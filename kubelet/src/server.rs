//! The kubelet's HTTPS API (port 10250 by default): `/healthz` and
//! `/containerLogs/{namespace}/{pod}/{container}` with `follow`,
//! `previous`, `tailLines`, `sinceSeconds`, `timestamps` and `limitBytes`,
//! as the apiserver's `pods/log` proxies it; `/exec/{namespace}/{pod}/{container}`
//! and `/attach/{namespace}/{pod}/{container}` (WebSocket or SPDY,
//! [`super::exec`], [`super::attach`]) and `/portForward/{namespace}/{pod}[/{uid}]`
//! (SPDY/3.1, plain or tunnelled in a WebSocket, [`super::portforward`]);
//! `/podProxy/{namespace}/{pod}/{port}/…` (one HTTP request into a pod,
//! [`super::pod_proxy`]).
//!
//! Clients must present a certificate of the cluster CA, and each request
//! is authorized by the apiserver ([`super::authz`]: a SubjectAccessReview
//! on `nodes/proxy` and the like for the certificate's user and groups), as
//! upstream's kubelet does in webhook mode. The serving certificate and
//! its rotation are [`super::serving_cert`]'s.

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::{Frame, Incoming},
    service::service_fn,
};
use hyper_util::rt::TokioIo;

use super::{Shared, logs, worker};
use rudder_runtime::containerd::TaskState;

/// The apiserver's client identity (as kubeadm names it).
pub const APISERVER_CLIENT: &str = "kube-apiserver-kubelet-client";

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("kubelet API TLS setup: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

type Body = BoxBody<Bytes, Infallible>;

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(msg.into())).boxed());
    *r.status_mut() = status;
    r
}

/// TLS with the serving identity, requiring client certificates of the
/// cluster CA.
fn tls_config(
    shared: &Shared,
    serving: Arc<super::serving_cert::ServingCert>,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let cfg = &shared.cfg;
    let mut roots = rustls::RootCertStore::empty();
    for der in &cfg.client_ca {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| ServerError::Tls(format!("client CA: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| ServerError::Tls(format!("client CA: {e}")))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    Ok(Arc::new(config))
}

/// The client certificate's CN and O values.
fn identity(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some((cn, groups))
}

/// A TLS handshake must be done in this time (Go's `http.Server` in the
/// kubelet uses 10 s too).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's header must arrive in this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;

/// Listens and serves until the process ends. Pods can reach this port, so
/// what a client can hold is bounded: handshakes and request headers time
/// out, connections are capped, and an accept error (out of file
/// descriptors) backs off instead of spinning.
pub(crate) async fn serve(shared: Arc<Shared>) -> Result<(), ServerError> {
    let addr = SocketAddr::from(([0, 0, 0, 0], shared.cfg.port));
    let serving = super::serving_cert::obtain(&shared).await?;
    let tls = tokio_rustls::TlsAcceptor::from(tls_config(&shared, serving.clone())?);
    let _renewal = super::serving_cert::renew_in_background(Arc::clone(&shared), serving);
    let authz = Arc::new(super::authz::Authorizer::default());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen { addr, source })?;
    tracing::info!(%addr, "kubelet API listening");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::from_millis(5);
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return Ok(());
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => {
                backoff = Duration::from_millis(5);
                c
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "kubelet API accept");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let tls = tls.clone();
        let shared = Arc::clone(&shared);
        let authz = Arc::clone(&authz);
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await
            else {
                return;
            };
            let who = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| identity(c.as_ref()));
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                let authz = Arc::clone(&authz);
                let who = who.clone();
                async move { Ok::<_, Infallible>(handle(&shared, &authz, who, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "kubelet API connection");
            }
        });
    }
}

async fn handle(
    shared: &Arc<Shared>,
    authz: &super::authz::Authorizer,
    who: Option<(String, Vec<String>)>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    let a = super::authz::attributes(req.method(), &path);
    let (user, groups) = who.unwrap_or_else(|| ("system:anonymous".into(), vec![]));
    let forbidden = |why: &str| {
        text(
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden (user={user}, verb={}, resource=nodes, subresource={}){why}",
                a.verb, a.subresource
            ),
        )
    };
    match authz
        .allowed(&shared.client, &shared.cfg.node_name, &user, &groups, &a)
        .await
    {
        Ok(true) => {}
        Ok(false) => return forbidden(""),
        Err(e) => {
            tracing::warn!(error = %e, "asking the apiserver who may use the kubelet API");
            return forbidden(": the apiserver could not be asked");
        }
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["containerLogs", ns, pod, container] => {
            let q = parse_query(req.uri().query().unwrap_or_default());
            container_logs(shared, ns, pod, container, &q).await
        }
        ["metrics", "resource"] => {
            let containers = super::stats::containers(shared).await;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let body = super::stats::render(super::stats::node_usage(), &containers, now_ms);
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        [verb @ ("exec" | "attach"), ns, pod, container] => {
            let q = parse_query(req.uri().query().unwrap_or_default());
            let attach = *verb == "attach";
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            super::exec::handle(shared, &ns, &pod, &container, &q, attach, req)
                .await
                .map(http_body_util::BodyExt::boxed)
        }
        ["podProxy", ns, pod, port, ..] => {
            let prefix = format!("/podProxy/{ns}/{pod}/{port}");
            let rest = match path.strip_prefix(&prefix) {
                Some("") | None => "/".to_owned(),
                Some(r) => r.to_owned(),
            };
            let (ns, pod, port) = (ns.to_string(), pod.to_string(), port.to_string());
            super::pod_proxy::handle(shared, &ns, &pod, &port, &rest, req).await
        }
        ["portForward", ns, pod, rest @ ..] if rest.len() <= 1 => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            let uid = rest.first().map(ToString::to_string);
            let q = parse_query(req.uri().query().unwrap_or_default());
            super::portforward::handle(shared, &ns, &pod, uid.as_deref(), &q, req)
                .await
                .map(http_body_util::BodyExt::boxed)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            format!("no such kubelet API path {path}"),
        ),
    }
}

/// `application/x-www-form-urlencoded` pairs, decoded (`+` is a space).
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What `kubectl logs` asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    /// Only records at or after this time (RFC 3339 string comparison of
    /// the records' UTC timestamps).
    pub since: Option<jiff::Timestamp>,
    pub limit_bytes: Option<usize>,
}

impl LogOptions {
    fn from_query(q: &[(String, String)]) -> Result<Self, String> {
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let flag = |k: &str| rudder_k8s::query::is_true(get(k));
        let num = |k: &str| -> Result<Option<usize>, String> {
            get(k)
                .map(|v| v.parse::<i64>().map_err(|_| format!("invalid {k} {v:?}")))
                .transpose()
                .map(|o| o.map(|n| n.max(0) as usize))
        };
        let since = match (get("sinceSeconds"), get("sinceTime")) {
            (Some(s), _) => {
                let secs: i64 = s
                    .parse()
                    .map_err(|_| format!("invalid sinceSeconds {s:?}"))?;
                Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(secs.max(0)))
            }
            (None, Some(t)) => {
                let t = t.replace("%3A", ":");
                Some(
                    t.parse::<jiff::Timestamp>()
                        .map_err(|_| format!("invalid sinceTime {t:?}"))?,
                )
            }
            _ => None,
        };
        Ok(Self {
            follow: flag("follow"),
            previous: flag("previous"),
            timestamps: flag("timestamps"),
            tail_lines: num("tailLines")?,
            since,
            limit_bytes: num("limitBytes")?,
        })
    }
}

/// Log files of one container of one pod: (pod uid, attempt → path).
fn log_files(
    root: &std::path::Path,
    ns: &str,
    pod: &str,
    container: &str,
) -> Option<(String, Vec<(u32, PathBuf)>)> {
    let prefix = format!("{ns}_{pod}_");
    let mut dirs: Vec<(std::time::SystemTime, PathBuf, String)> = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let uid = name.strip_prefix(&prefix)?.to_string();
            let m = e.metadata().ok()?.modified().ok()?;
            Some((m, e.path(), uid))
        })
        .collect();
    dirs.sort();
    let (_, dir, uid) = dirs.pop()?;
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(dir.join(container))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            Some((n.strip_suffix(".log")?.parse().ok()?, e.path()))
        })
        .collect();
    files.sort();
    Some((uid, files))
}

async fn container_logs(
    shared: &Arc<Shared>,
    ns: &str,
    pod: &str,
    container: &str,
    q: &[(String, String)],
) -> Response<Body> {
    let opts = match LogOptions::from_query(q) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let Some((uid, files)) = log_files(&shared.cfg.pod_log_dir, ns, pod, container) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("container \"{container}\" in pod \"{pod}\" is waiting to start: no logs yet"),
        );
    };
    let pick = if opts.previous {
        files.len().checked_sub(2)
    } else {
        files.len().checked_sub(1)
    };
    let Some((attempt, path)) = pick.and_then(|i| files.get(i).cloned()) else {
        return text(
            StatusCode::BAD_REQUEST,
            if opts.previous {
                format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
            } else {
                format!("container \"{container}\" in pod \"{pod}\" is waiting to start")
            },
        );
    };
    let text_now = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading {}: {e}", path.display()),
            );
        }
    };
    let offset = text_now.len() as u64;
    let mut out = logs::render(&text_now, opts.timestamps, opts.since, opts.tail_lines);
    if let Some(limit) = opts.limit_bytes {
        out.truncate(limit);
    }
    let follow = opts.follow && !opts.previous && opts.limit_bytes.is_none_or(|l| out.len() < l);
    if !follow {
        let mut r = Response::new(Full::new(Bytes::from(out)).boxed());
        r.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("text/plain"),
        );
        return r;
    }
    // Follow: what is there, then what is appended, until the container
    // stops and its last lines are out.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let shared = Arc::clone(shared);
    let container = container.to_string();
    tokio::spawn(async move {
        if tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
            return;
        }
        let id = worker::container_id(&uid, &container, attempt);
        let mut offset = offset;
        let mut pending: Vec<u8> = vec![];
        loop {
            let running = shared
                .runtime
                .task_get(&id)
                .await
                .is_ok_and(|t| t.is_some_and(|t| t.state == TaskState::Running));
            let mut chunk = vec![];
            if let Ok(mut f) = std::fs::File::open(&path) {
                use std::io::{Read as _, Seek as _};
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                if len < offset {
                    offset = 0; // rotated: the file is new
                }
                if f.seek(std::io::SeekFrom::Start(offset)).is_ok() {
                    let _ = f.read_to_end(&mut chunk);
                }
            }
            offset += chunk.len() as u64;
            pending.extend_from_slice(&chunk);
            // Only complete records; a partial last line waits.
            if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
                let complete: Vec<u8> = pending.drain(..=end).collect();
                let rendered = logs::render(&complete, opts.timestamps, None, None);
                if !rendered.is_empty()
                    && tx
                        .send(Ok(Frame::data(Bytes::from(rendered))))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            if !running && chunk.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
    let mut r = Response::new(body);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_form_decoded() {
        let q = parse_query("command=sh&command=-c&command=cat+%2Ftmp%2Fx%3B+exit+3&bad=%zz%4");
        assert_eq!(q[2], ("command".into(), "cat /tmp/x; exit 3".into()));
        assert_eq!(q[3], ("bad".into(), "%zz%4".into()));
    }

    #[test]
    fn log_options_from_kubectl_queries() {
        let q = parse_query("follow=true&tailLines=5&timestamps=true&container=c");
        let o = LogOptions::from_query(&q).unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(5));
        assert!(LogOptions::from_query(&parse_query("tailLines=x")).is_err());
        let o = LogOptions::from_query(&parse_query("sinceTime=2026-12-01T10%3A00%3A00Z")).unwrap();
        assert_eq!(o.since.unwrap().to_string(), "2026-12-01T10:00:00Z");
    }
}
