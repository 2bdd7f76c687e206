//! Calling one webhook: where it is (its URL, or a ready endpoint of its
//! Service), one HTTPS POST of the review within its timeout trusting only
//! its `caBundle`, and, for admission, what its answer means. Admission
//! webhooks and CRD conversion webhooks share the call ([`Client`]).

use std::net::SocketAddr;

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::{Outcome, config::Hook};
use crate::api::{
    ApiState,
    handlers::{Target, list_objects},
    resources,
    status::ApiError,
};

/// The largest answer read from a webhook.
const MAX_RESPONSE: usize = 3 << 20;

/// Where to connect, the name the certificate must carry, and the URL as
/// upstream's errors print it.
struct Destination {
    addr: SocketAddr,
    server_name: String,
    path: String,
    shown: String,
}

/// Where a webhook is and how to reach it: a `clientConfig` (URL or
/// Service, `caBundle`) and the call's timeout.
#[derive(Clone, Debug)]
pub struct Client {
    pub url: Option<String>,
    /// (namespace, name, path, port) of a Service.
    pub service: Option<(String, String, String, u16)>,
    pub tls: std::sync::Arc<rustls::ClientConfig>,
    pub timeout: std::time::Duration,
}

impl Client {
    /// A `clientConfig` as stored (validated and defaulted); the error says
    /// why its `caBundle` cannot be used.
    pub fn of(c: &Value, timeout: std::time::Duration) -> Result<Self, String> {
        Ok(Self {
            url: c["url"].as_str().map(str::to_owned),
            service: c.get("service").filter(|s| s.is_object()).map(|s| {
                (
                    s["namespace"].as_str().unwrap_or("").to_owned(),
                    s["name"].as_str().unwrap_or("").to_owned(),
                    s["path"].as_str().unwrap_or("/").to_owned(),
                    u16::try_from(s["port"].as_u64().unwrap_or(443)).unwrap_or(443),
                )
            }),
            tls: std::sync::Arc::new(super::config::tls_for(c["caBundle"].as_str())?),
            timeout,
        })
    }
}

async fn resolve(st: &ApiState, h: &Client) -> Result<Destination, String> {
    let timeout = h.timeout.as_secs();
    if let Some(url) = &h.url {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        let host = uri
            .host()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}timeout={timeout}s");
        let shown = format!("https://{}:{port}{path}", uri.host().unwrap_or(""));
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("Post {shown:?}: dial tcp: lookup {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("Post {shown:?}: no address for {host}"))?;
        return Ok(Destination {
            addr,
            server_name: host,
            path,
            shown,
        });
    }
    let (ns, name, path, port) = h.service.clone().ok_or("no clientConfig")?;
    let server_name = format!("{name}.{ns}.svc");
    let path = format!("{path}?timeout={timeout}s");
    let shown = format!("https://{server_name}:{port}{path}");
    let addr = endpoint(st, &ns, &name, port)
        .await
        .map_err(|e| format!("Post {shown:?}: {e}"))?;
    Ok(Destination {
        addr,
        server_name,
        path,
        shown,
    })
}

/// A ready endpoint of the Service's port `port` (webhooks and remote
/// APIServices are reached this way).
pub(crate) async fn endpoint(
    st: &ApiState,
    ns: &str,
    name: &str,
    port: u16,
) -> Result<SocketAddr, String> {
    let svc_r = resources::by_kind("", "Service").ok_or("no Service kind")?;
    let (kv, _) = st
        .store
        .get(&crate::api::handlers::key(svc_r, ns, name))
        .await
        .map_err(|e| e.to_string())?;
    let svc = kv
        .and_then(|kv| crate::api::handlers::decode_stored(&kv).ok())
        .ok_or_else(|| format!("service \"{name}\" not found"))?;
    let sp = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_u64() == Some(u64::from(port)))
        .ok_or_else(|| format!("service \"{name}\" has no port {port}"))?;
    let port_name = sp["name"].as_str().unwrap_or("");
    let t = Target {
        resource: resources::by_kind("discovery.k8s.io", "EndpointSlice")
            .ok_or("no EndpointSlice kind")?,
        namespace: ns.to_owned(),
        name: None,
        subresource: None,
    };
    let slices = list_objects(st, &t, &Default::default())
        .await
        .map_err(|e| e.message)?
        .0;
    let mut choices = Vec::new();
    for s in slices.iter().filter(|s| {
        s.pointer("/metadata/labels/kubernetes.io~1service-name")
            .and_then(Value::as_str)
            == Some(name)
    }) {
        let Some(number) = s["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str().unwrap_or("") == port_name)
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for e in s["endpoints"].as_array().into_iter().flatten() {
            if e.pointer("/conditions/ready").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            for a in e["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if let Ok(ip) = a.parse::<std::net::IpAddr>() {
                    choices.push(SocketAddr::new(ip, number));
                }
            }
        }
    }
    use rand::seq::IndexedRandom as _;
    choices
        .choose(&mut rand::rng())
        .copied()
        .ok_or_else(|| format!("no endpoints available for service \"{name}\""))
}

/// POSTs an AdmissionReview; the parsed answer or why there is none, as
/// kube-apiserver words it.
pub async fn post(st: &ApiState, h: &Hook, review: &Value) -> Result<Value, String> {
    post_review(st, &h.client, review, "AdmissionReview")
        .await
        .map_err(|e| format!("failed to call webhook: {e}"))
}

/// POSTs a review of kind `kind`; the parsed answer, or why there is none
/// (`Post "<url>": <cause>`).
pub async fn post_review(
    st: &ApiState,
    client: &Client,
    review: &Value,
    kind: &str,
) -> Result<Value, String> {
    let dest = resolve(st, client).await?;
    let shown = dest.shown.clone();
    match tokio::time::timeout(client.timeout, exchange(client, dest, review, kind)).await {
        Ok(r) => r.map_err(|e| format!("Post {shown:?}: {e}")),
        Err(_) => Err(format!("Post {shown:?}: context deadline exceeded")),
    }
}

/// An HTTP/1.1 connection over TLS to `addr`, its certificate checked
/// for `server_name` (webhooks and remote APIServices).
pub(crate) async fn dial(
    addr: SocketAddr,
    server_name: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> Result<hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>, String> {
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| format!("dial tcp {addr}: i/o timeout"))?
    .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| format!("server name {server_name:?}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn exchange(
    h: &Client,
    dest: Destination,
    review: &Value,
    kind: &str,
) -> Result<Value, String> {
    let mut sender = dial(dest.addr, &dest.server_name, h.tls.clone()).await?;
    let body = serde_json::to_vec(review).expect("serialisable");
    let req = Request::post(dest.path.as_str())
        .header(hyper::header::HOST, dest.server_name.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::ACCEPT, "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!(
            "the server responded with the status code {} but did not return a valid {kind}",
            status.as_u16()
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("the answer is not a {kind}: {e}"))
}

/// What an answer means: allowed (with a patch applied to `obj` by a
/// mutating hook, reported by the return value), or the refusal. A
/// malformed answer counts as a failed call.
pub fn judge(
    h: &Hook,
    uid: &str,
    review: &Value,
    obj: &mut Value,
    out: &mut Outcome,
) -> Result<bool, ApiError> {
    let failed = |why: String| -> Result<bool, ApiError> {
        if h.fail_closed {
            Err(ApiError::internal(format!(
                "failed calling webhook {:?}: {why}",
                h.name
            )))
        } else {
            tracing::warn!(webhook = %h.name, why, "webhook answer ignored by its failure policy");
            Ok(false)
        }
    };
    let Some(resp) = review.get("response").filter(|r| r.is_object()) else {
        return failed("the answer has no response".into());
    };
    if resp["uid"].as_str() != Some(uid) {
        return failed(format!(
            "expected response.uid={uid:?}, got {:?}",
            resp["uid"]
        ));
    }
    out.warnings.extend(
        resp["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned),
    );
    if resp["allowed"].as_bool() != Some(true) {
        let status = &resp["status"];
        let code = status["code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (400..600).contains(c))
            .unwrap_or(400);
        let denied = format!("admission webhook {:?} denied the request", h.name);
        let message = match status["message"].as_str().filter(|m| !m.is_empty()) {
            Some(m) => format!("{denied}: {m}"),
            None => format!("{denied} without explanation"),
        };
        let reason = status["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
            .unwrap_or("");
        return Err(ApiError::denied(code, reason, message));
    }
    let Some(patch) = resp["patch"].as_str().filter(|p| !p.is_empty()) else {
        return Ok(false);
    };
    if !h.mutating {
        return Ok(false);
    }
    if resp["patchType"].as_str() != Some("JSONPatch") {
        return failed(format!("unsupported patch type {:?}", resp["patchType"]));
    }
    let bytes = match base64::engine::general_purpose::STANDARD.decode(patch) {
        Ok(b) => b,
        Err(e) => return failed(format!("the patch is not base64: {e}")),
    };
    let p: json_patch::Patch = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => return failed(format!("the patch is not a JSON patch: {e}")),
    };
    let mut patched = obj.clone();
    if let Err(e) = json_patch::patch(&mut patched, &p) {
        return failed(format!("the patch does not apply: {e}"));
    }
    let changed = patched != *obj;
    *obj = patched;
    Ok(changed)
}
