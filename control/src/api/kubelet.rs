//! Subresources the apiserver serves by asking the pod's kubelet:
//! `pods/log` (`kubectl logs`, `-f`, `--previous`, `--tail`, `--since`,
//! `--timestamps`), proxied to `https://<node InternalIP>:<kubelet port>/
//! containerLogs/…` with the apiserver's kubelet client certificate
//! (`kube-apiserver-kubelet-client`, signed by the cluster CA). The
//! kubelet's serving certificate is verified as kube-apiserver does with
//! `--kubelet-certificate-authority`: signed by the cluster CA, for the
//! address dialled, and (stricter) issued to a node (`system:node:<name>`,
//! see [`super::join`]), so that nothing else that answers on a node's
//! address (a pod that captured the port, another service of the node)
//! receives `kubectl exec` streams.

use std::sync::{Arc, OnceLock};

use axum::response::{IntoResponse as _, Response};
use http_body_util::BodyExt as _;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;

use super::{
    ApiState,
    handlers::{Query, Target, get_object},
    resources,
    status::ApiError,
};

/// The client identity kubelets let in.
pub const CLIENT_CN: &str = "kube-apiserver-kubelet-client";

type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// The HTTPS client to kubelets, made once.
#[derive(Debug)]
pub struct KubeletClient {
    client: Client<Https, http_body_util::Full<bytes::Bytes>>,
    /// For upgraded connections (exec), made by hand.
    tls: Arc<rustls::ClientConfig>,
}

/// A kubelet's serving certificate must have been issued to a node.
fn issued_to_a_node(der: &[u8]) -> Result<(), rustls::Error> {
    match super::pki::identity_from_cert(der) {
        Some((cn, _))
            if cn
                .strip_prefix("system:node:")
                .is_some_and(|n| !n.is_empty()) =>
        {
            Ok(())
        }
        _ => Err(rustls::Error::General(
            "the kubelet's serving certificate was not issued to a node (system:node:<name>)"
                .into(),
        )),
    }
}

impl KubeletClient {
    fn new(pki: &super::pki::Pki) -> Result<Self, String> {
        let (cert_pem, key_pem) = pki
            .issue(CLIENT_CN, &["system:masters"], &[], false)
            .map_err(|e| e.to_string())?;
        use rustls::pki_types::pem::PemObject as _;
        let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
            rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| e.to_string())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let kubelets = super::pki::CaServerVerifier::new(&pki.ca_cert_pem, false, issued_to_a_node)
            .map_err(|e| e.to_string())?;
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(kubelets))
            .with_client_auth_cert(certs, key)
            .map_err(|e| e.to_string())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_only()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            tls: Arc::new(tls),
        })
    }
}

static CLIENT: OnceLock<Result<KubeletClient, String>> = OnceLock::new();

fn client(st: &ApiState) -> Result<&'static KubeletClient, ApiError> {
    let pki =
        st.config.pki.as_ref().ok_or_else(|| {
            ApiError::unavailable("this apiserver has no CA to reach kubelets with")
        })?;
    CLIENT
        .get_or_init(|| KubeletClient::new(pki))
        .as_ref()
        .map_err(|e| ApiError::internal(format!("the kubelet client: {e}")))
}

/// The container a log request is about: the one named, or the only one.
pub fn pick_container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let names = |key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let apps = names("containers");
    let all: Vec<String> = apps
        .iter()
        .cloned()
        .chain(names("initContainers"))
        .chain(names("ephemeralContainers"))
        .collect();
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if all.iter().any(|n| n == c) => Ok(c.to_owned()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if apps.len() == 1 => Ok(apps[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            all.join(" ")
        ))),
    }
}

/// The kubelet of the pod's node: its InternalIP and kubelet port.
async fn kubelet_endpoint(
    st: &ApiState,
    pod: &Value,
    name: &str,
) -> Result<(String, u64), ApiError> {
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let nodes = Target {
        resource: resources::by_kind("", "Node")
            .ok_or_else(|| ApiError::internal("no Node resource"))?,
        namespace: String::new(),
        name: Some(node_name.to_owned()),
        subresource: None,
    };
    let (node, _) = get_object(st, &nodes, node_name).await?;
    node_endpoint(&node)
}

/// A Node's kubelet: its InternalIP (or first address) and kubelet port.
pub fn node_endpoint(node: &Value) -> Result<(String, u64), ApiError> {
    let node_name = node["metadata"]["name"].as_str().unwrap_or_default();
    let address = node["status"]["addresses"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|x| x["type"] == "InternalIP")
                .or_else(|| a.first())
                .and_then(|x| x["address"].as_str())
        })
        .ok_or_else(|| ApiError::unavailable(format!("node {node_name:?} has no address")))?
        .to_owned();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| *p > 0)
        .unwrap_or(10250);
    Ok((address, port))
}

/// An error with its causes, as `a: b: c` (a TLS refusal of the kubelet's
/// certificate is several levels down in a connect error).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// A GET to a kubelet: the body of a successful answer.
pub async fn get(st: &ApiState, uri: &str) -> Result<hyper::body::Incoming, ApiError> {
    let req = hyper::Request::get(uri)
        .body(http_body_util::Full::default())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = client(st)?
        .client
        .request(req)
        .await
        .map_err(|e| ApiError::unavailable(format!("Get \"{uri}\": {}", chain(&e))))?;
    if !resp.status().is_success() {
        return Err(ApiError::unavailable(format!(
            "Get \"{uri}\": {}",
            resp.status()
        )));
    }
    Ok(resp.into_body())
}

/// A request carried to a kubelet as it is (`pods/proxy`,
/// `services/proxy`, `nodes/proxy`): the kubelet's answer, whatever its
/// status.
pub async fn forward(
    st: &ApiState,
    method: hyper::Method,
    uri: &str,
    headers: hyper::HeaderMap,
    body: bytes::Bytes,
) -> Result<hyper::Response<hyper::body::Incoming>, ApiError> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .body(http_body_util::Full::new(body))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    *req.headers_mut() = headers;
    client(st)?.client.request(req).await.map_err(|e| {
        ApiError::unavailable(format!("error trying to reach the kubelet: {}", chain(&e)))
    })
}

/// The streaming subresources whose upgrades [`pod_stream`] serves
/// outside the router (it keeps the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `pods/exec` over WebSocket (`v5`/`v4.channel.k8s.io`) or SPDY/3.1
    /// (`v4.channel.k8s.io`).
    Exec,
    /// `pods/attach`: as exec, joining the container's own stdio.
    Attach,
    /// `pods/portforward`: SPDY/3.1 (`portforward.k8s.io`), as an upgrade
    /// of its own or tunnelled in a WebSocket (kubectl 1.31+), or the
    /// WebSocket channel protocols for the `ports` of the query (the
    /// Python and JavaScript clients).
    PortForward,
}

/// Which streaming upgrade a request is, if any.
pub fn stream_upgrade(req: &hyper::Request<hyper::body::Incoming>) -> Option<StreamKind> {
    let upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let ws = upgrade.eq_ignore_ascii_case("websocket");
    let spdy = upgrade.eq_ignore_ascii_case("SPDY/3.1");
    let segs: Vec<&str> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["api", "v1", "namespaces", _, "pods", _, "exec"] if ws || spdy => Some(StreamKind::Exec),
        ["api", "v1", "namespaces", _, "pods", _, "attach"] if ws || spdy => {
            Some(StreamKind::Attach)
        }
        ["api", "v1", "namespaces", _, "pods", _, "portforward"] if ws || spdy => {
            Some(StreamKind::PortForward)
        }
        _ => None,
    }
}

/// A streaming subresource (`pods/exec`, `pods/portforward`): authorized
/// as `create` on it, then the upgrade is passed to the pod's kubelet and
/// the two connections are joined byte for byte.
pub async fn pod_stream(
    st: &Arc<ApiState>,
    user: &super::auth::User,
    kind: StreamKind,
    mut req: hyper::Request<hyper::body::Incoming>,
) -> Response {
    match stream_upgrade_to_kubelet(st, user, kind, &mut req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn stream_upgrade_to_kubelet(
    st: &Arc<ApiState>,
    user: &super::auth::User,
    kind: StreamKind,
    req: &mut hyper::Request<hyper::body::Incoming>,
) -> Result<Response, ApiError> {
    let segs: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let (ns, name) = (segs[3].clone(), segs[5].clone());
    let sub = match kind {
        StreamKind::Exec => "exec",
        StreamKind::Attach => "attach",
        StreamKind::PortForward => "portforward",
    };
    let attrs = super::rbac::Attributes::resource("create", "", "pods", sub, &ns, &name);
    if let Err(why) = st.authz.authorize(st.store.as_ref(), user, &attrs).await {
        return Err(ApiError::forbidden(format!("forbidden: {why}")));
    }
    let t = Target {
        resource: resources::by_kind("", "Pod")
            .ok_or_else(|| ApiError::internal("no Pod resource"))?,
        namespace: ns.clone(),
        name: Some(name.clone()),
        subresource: Some(sub.into()),
    };
    let query = req.uri().query().unwrap_or_default().to_owned();
    let (pod, _) = get_object(st, &t, &name).await?;
    let path = match kind {
        StreamKind::Exec | StreamKind::Attach => {
            let asked = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("container="))
                .map(str::to_owned);
            let container = pick_container(&pod, &name, asked.as_deref())?;
            let rest: Vec<&str> = query
                .split('&')
                .filter(|kv| !kv.is_empty() && !kv.starts_with("container="))
                .collect();
            format!("/{sub}/{ns}/{name}/{container}?{}", rest.join("&"))
        }
        StreamKind::PortForward => {
            if pod["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
            {
                return Err(ApiError::bad_request(format!(
                    "pod {name} is not scheduled to a node yet"
                )));
            }
            // A hostNetwork pod's ports are the node's (the kubelet's, the
            // store's peer port): forwarding into it is access to the node.
            if pod["spec"]["hostNetwork"] == true {
                let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
                let attrs =
                    super::rbac::Attributes::resource("create", "", "nodes", "proxy", "", node);
                if let Err(why) = st.authz.authorize(st.store.as_ref(), user, &attrs).await {
                    return Err(ApiError::forbidden(format!(
                        "pod {name} uses the host network: port-forwarding into it reaches node {node}'s own ports, which needs nodes/proxy: {why}"
                    )));
                }
            }
            let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
            format!("/portForward/{ns}/{name}/{uid}{}", kubelet_ports(&query)?)
        }
    };
    let (address, port) = kubelet_endpoint(st, &pod, &name).await?;
    // TLS to the kubelet, HTTP/1.1 with upgrades.
    let tcp = tokio::net::TcpStream::connect((address.as_str(), port as u16))
        .await
        .map_err(|e| ApiError::unavailable(format!("dial the kubelet at {address}:{port}: {e}")))?;
    let server_name = rustls::pki_types::ServerName::try_from(address.clone())
        .map_err(|e| ApiError::internal(format!("kubelet address {address}: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(client(st)?.tls.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|e| {
            ApiError::unavailable(format!("TLS to the kubelet at {address}:{port}: {e}"))
        })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| ApiError::unavailable(format!("the kubelet at {address}:{port}: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut up = hyper::Request::builder()
        .method(req.method().clone())
        .uri(&path)
        .header(hyper::header::HOST, format!("{address}:{port}"));
    for h in [
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "x-stream-protocol-version",
    ] {
        for v in req.headers().get_all(h) {
            up = up.header(h, v.clone());
        }
    }
    let up = up
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut resp = sender.send_request(up).await.map_err(|e| {
        ApiError::unavailable(format!("{sub} on the kubelet at {address}:{port}: {e}"))
    })?;
    if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        let msg = String::from_utf8_lossy(&body).trim().to_owned();
        return Err(match status.as_u16() {
            400 | 404 => ApiError::bad_request(msg),
            403 => ApiError::forbidden(msg),
            _ => ApiError::internal(msg),
        });
    }
    let kubelet_side = hyper::upgrade::on(&mut resp);
    let client_side = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let (Ok(a), Ok(b)) = (client_side.await, kubelet_side.await) else {
            return;
        };
        let mut a = hyper_util::rt::TokioIo::new(a);
        let mut b = hyper_util::rt::TokioIo::new(b);
        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
    });
    let mut out = axum::http::Response::builder().status(hyper::StatusCode::SWITCHING_PROTOCOLS);
    for (k, v) in resp.headers() {
        out = out.header(k, v);
    }
    out.body(axum::body::Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The client's `ports` (each value a comma-separated list, as
/// `PodPortForwardOptions` converts them) as the kubelet's `port`
/// parameters; empty when none were given (SPDY clients name the port on
/// each stream instead).
fn kubelet_ports(query: &str) -> Result<String, ApiError> {
    let mut out = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != "ports" {
            continue;
        }
        for p in v.split(',') {
            let port: u16 = p.trim().parse().map_err(|e| {
                ApiError::bad_request(format!("cannot convert to []int32: {p:?}: {e}"))
            })?;
            out.append_pair("port", &port.to_string());
            any = true;
        }
    }
    Ok(if any {
        format!("?{}", out.finish())
    } else {
        String::new()
    })
}

/// `pods/{name}/exec` without an upgrade: the pod and container are
/// checked so the error says what is wrong, then the request is refused.
pub async fn exec_not_upgraded(
    st: &ApiState,
    t: &Target,
    q: &Query,
    name: &str,
) -> Result<Response, ApiError> {
    let (pod, _) = get_object(st, t, name).await?;
    pick_container(&pod, name, q.get("container").map(String::as_str))?;
    let sub = t.subresource.as_deref().unwrap_or("exec");
    Err(ApiError::bad_request(format!(
        "{sub} needs an upgrade to a WebSocket (v5.channel.k8s.io) or to SPDY/3.1 (v4.channel.k8s.io)"
    )))
}

/// `GET pods/{name}/log`.
pub async fn pod_log(
    st: &ApiState,
    t: &Target,
    q: &Query,
    name: &str,
) -> Result<Response, ApiError> {
    let (pod, _) = get_object(st, t, name).await?;
    let container = pick_container(&pod, name, q.get("container").map(String::as_str))?;
    let (address, port) = kubelet_endpoint(st, &pod, name).await?;
    let mut query: Vec<String> = vec![];
    for key in [
        "follow",
        "previous",
        "timestamps",
        "tailLines",
        "sinceSeconds",
        "sinceTime",
        "limitBytes",
    ] {
        if let Some(v) = q.get(key) {
            let v: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            query.push(format!("{key}={v}"));
        }
    }
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_owned()
    };
    let uri = format!(
        "https://{host}:{port}/containerLogs/{}/{name}/{container}?{}",
        t.namespace,
        query.join("&")
    );
    let req = hyper::Request::get(&uri)
        .body(http_body_util::Full::default())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = client(st)?
        .client
        .request(req)
        .await
        .map_err(|e| ApiError::unavailable(format!("Get \"{uri}\": {}", chain(&e))))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        let msg = String::from_utf8_lossy(&body).trim().to_owned();
        return Err(match status.as_u16() {
            400 => ApiError::bad_request(msg),
            404 => ApiError::bad_request(msg),
            403 => ApiError::forbidden(msg),
            _ => ApiError::internal(msg),
        });
    }
    let body = axum::body::Body::new(resp.into_body());
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_is_named_or_the_only_one() {
        let one = serde_json::json!({"spec": {"containers": [{"name": "a"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(pick_container(&one, "p", None).unwrap(), "a");
        assert_eq!(pick_container(&one, "p", Some("i")).unwrap(), "i");
        let e = pick_container(&one, "p", Some("zz")).unwrap_err();
        assert!(
            e.to_status()["message"]
                .as_str()
                .unwrap()
                .contains("container zz is not valid for pod p")
        );
        let two = serde_json::json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let e = pick_container(&two, "p", None).unwrap_err();
        assert_eq!(
            e.to_status()["message"],
            "a container name must be specified for pod p, choose one of: [a b]"
        );
    }

    #[test]
    fn ports_become_the_kubelets_port_parameters() {
        // The Python client URL-encodes the comma.
        assert_eq!(
            kubelet_ports("ports=80%2C8080&ports=9").unwrap(),
            "?port=80&port=8080&port=9"
        );
        assert_eq!(kubelet_ports("").unwrap(), "");
        assert_eq!(kubelet_ports("other=1").unwrap(), "");
        for bad in ["ports=x", "ports=70000", "ports=-1", "ports=80,"] {
            let e = kubelet_ports(bad).unwrap_err();
            assert_eq!(e.to_status()["code"], 400, "{bad}");
        }
    }
}
