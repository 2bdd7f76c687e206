//! `kubectl port-forward` on the kubelet's side: `/portForward/{namespace}/{pod}`
//! speaking `portforward.k8s.io` over SPDY/3.1, either as a plain HTTP
//! upgrade (`Upgrade: SPDY/3.1`, what a Kubernetes apiserver and kubectl
//! before 1.31 send) or tunnelled in WebSocket binary messages
//! (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31 and later). A WebSocket
//! offering the channel protocols instead (the Python and JavaScript
//! clients) is served by [`super::portforward_ws`].
//!
//! The client opens two streams per connection, headers `streamtype`
//! (`error`, `data`), `port` and `requestid`. Once both are there the
//! kubelet dials `localhost:port` inside the pod's network namespace and
//! joins it with the data stream; a failure is written on the error stream.
//! Both streams are closed when the connection ends.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::mpsc,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::Role},
};

use super::{
    L_POD_NAME, L_POD_NS, L_POD_UID, Shared,
    exec::{accept_spdy, accept_websocket, header_values},
    portforward_ws::{self, Framing},
    sandbox,
    spdy::{self, Incoming as In, Stream, header as hdr},
};

type Body = Full<bytes::Bytes>;

/// The stream protocol, as a SPDY upgrade names it.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The same, tunnelled in a WebSocket.
pub const WS_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// A stream whose partner does not come within this is reset (the
/// kubelet's `streamCreationTimeout`).
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dialling the pod's port may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(bytes::Bytes::from(msg.into())));
    *r.status_mut() = status;
    r
}

/// How the client asked to talk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `Upgrade: SPDY/3.1`.
    Spdy,
    /// A WebSocket carrying SPDY, with the client's `Sec-WebSocket-Key`.
    WebSocket { key: String },
    /// A WebSocket speaking a channel protocol (`""` when the client
    /// offered none) for the ports of the query.
    Channels {
        key: String,
        protocol: &'static str,
        framing: Framing,
    },
}

/// The WebSocket subprotocols served, as kubelet lists them.
const WS_SERVED: [(&str, Option<Framing>); 3] = [
    (WS_PROTOCOL, None),
    (portforward_ws::V4_BINARY, Some(Framing::Binary)),
    (portforward_ws::V4_BASE64, Some(Framing::Base64)),
];

/// Which transport the request's headers ask for, or why none fits.
pub fn negotiate(headers: &header::HeaderMap) -> Result<Transport, String> {
    let values = |name: &str| header_values(headers, name);
    let upgrade = values("upgrade");
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        let offered = values("sec-websocket-protocol");
        let key = headers
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
            .ok_or("a WebSocket upgrade without Sec-WebSocket-Key")?
            .to_string();
        // The client's order decides; no offer at all is the bare
        // binary channel protocol.
        if offered.is_empty() {
            return Ok(Transport::Channels {
                key,
                protocol: "",
                framing: Framing::Binary,
            });
        }
        let chosen = offered
            .iter()
            .find_map(|o| WS_SERVED.iter().find(|(p, _)| p == o));
        return match chosen {
            Some((_, None)) => Ok(Transport::WebSocket { key }),
            Some((protocol, Some(framing))) => Ok(Transport::Channels {
                key,
                protocol,
                framing: *framing,
            }),
            None => Err(format!(
                "no supported port-forward protocol among {offered:?}: this kubelet speaks {:?}",
                WS_SERVED.map(|(p, _)| p)
            )),
        };
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        let offered = values("x-stream-protocol-version");
        if !offered.is_empty() && !offered.iter().any(|p| p == PROTOCOL) {
            return Err(format!(
                "no supported port-forward protocol among {offered:?}: this kubelet speaks {PROTOCOL:?}"
            ));
        }
        return Ok(Transport::Spdy);
    }
    Err("port-forward needs an upgrade to SPDY/3.1 or to a WebSocket".into())
}

/// Where to dial: the pod's network namespace file, or `None` for a pod on
/// the host's network.
pub(super) async fn pod_netns(
    shared: &Shared,
    ns: &str,
    pod: &str,
    uid: Option<&str>,
) -> Result<(String, Option<PathBuf>), String> {
    let filter = format!("labels.\"{L_POD_NS}\"=={ns},labels.\"{L_POD_NAME}\"=={pod}");
    let found = shared
        .runtime
        .container_list(&filter)
        .await
        .map_err(|e| e.to_string())?;
    let uids: Vec<String> = found
        .iter()
        .filter_map(|(_, l)| l.get(L_POD_UID).cloned())
        .filter(|u| uid.is_none_or(|want| want == u))
        .collect();
    let Some(uid) = uids.into_iter().next() else {
        return Err(format!("pod {ns}/{pod} is not running on this node"));
    };
    let dir = shared.cfg.run_dir.join("pods").join(&uid);
    let net = sandbox::namespace_paths(&dir, false).net;
    Ok((uid, net.filter(|p| p.exists())))
}

/// `GET|POST /portForward/{ns}/{pod}[/{uid}]` with an upgrade.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    ns: &str,
    pod: &str,
    uid: Option<&str>,
    query: &[(String, String)],
    mut req: Request<Incoming>,
) -> Response<Body> {
    let transport = match negotiate(req.headers()) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let ports = match &transport {
        Transport::Channels { .. } => match portforward_ws::ports(query) {
            Ok(p) => p,
            Err(e) => return text(StatusCode::BAD_REQUEST, e),
        },
        _ => Vec::new(),
    };
    let (uid, netns) = match pod_netns(shared, ns, pod, uid).await {
        Ok(x) => x,
        Err(e) => return text(StatusCode::NOT_FOUND, e),
    };
    let target = Target {
        pod: format!("{ns}/{pod}"),
        uid,
        netns,
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let mut r = Response::new(Full::new(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    match &transport {
        Transport::Spdy => accept_spdy(r.headers_mut(), PROTOCOL),
        Transport::WebSocket { key } => {
            accept_websocket(r.headers_mut(), key.as_bytes(), WS_PROTOCOL);
        }
        Transport::Channels { key, protocol, .. } => {
            accept_websocket(r.headers_mut(), key.as_bytes(), protocol);
        }
    }
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let io = TokioIo::new(upgraded);
        let result = match transport {
            Transport::Spdy => session(io, target).await,
            Transport::WebSocket { .. } => {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                let (a, b) = tokio::io::duplex(256 * 1024);
                let pump = tokio::spawn(ws_pump(ws, b));
                let r = session(a, target).await;
                pump.abort();
                r
            }
            Transport::Channels { framing, .. } => {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                portforward_ws::session(ws, framing, ports, Arc::new(target)).await;
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "port-forward session");
        }
    });
    r
}

/// The pod a session forwards to.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) pod: String,
    pub(super) uid: String,
    pub(super) netns: Option<PathBuf>,
}

/// Carries the bytes of a SPDY session in WebSocket binary messages, as
/// client-go's tunnelling connection does.
async fn ws_pump<S>(ws: WebSocketStream<S>, side: tokio::io::DuplexStream)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut wtx, mut wrx) = ws.split();
    let (mut rd, mut wr) = tokio::io::split(side);
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if wtx.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = wtx.close().await;
    };
    let down = async move {
        while let Some(m) = wrx.next().await {
            match m {
                Ok(Message::Binary(b)) => {
                    if wr.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::join!(up, down);
}

/// A stream pair in the making.
#[derive(Default)]
struct Pair {
    data: Option<Stream>,
    error: Option<Stream>,
    since: Option<Instant>,
}

/// Serves one session: pairs the client's streams and forwards each pair.
async fn session<IO>(io: IO, target: Target) -> Result<(), spdy::SpdyError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Stream>(16);
    let serve = tokio::spawn(spdy::serve(io, tx));
    let target = Arc::new(target);
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut unnamed = 0u64;
    while let Some(s) = rx.recv().await {
        // Pairs whose partner never came.
        let now = Instant::now();
        let stale: Vec<String> = pending
            .iter()
            .filter(|(_, p)| p.since.is_some_and(|t| now - t > PAIR_TIMEOUT))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(p) = pending.remove(&k) {
                for s in [p.data, p.error].into_iter().flatten() {
                    s.out.reset(spdy::CANCEL).await;
                }
            }
        }
        let Some(port) = hdr(&s.headers, "port").and_then(|p| p.parse::<u16>().ok()) else {
            tracing::debug!(headers = ?s.headers, "port-forward stream without a valid port");
            s.out.reset(spdy::PROTOCOL_ERROR).await;
            continue;
        };
        // Clients before requestid pair an error stream with the data
        // stream that follows it.
        let key = match hdr(&s.headers, "requestid") {
            Some(id) => id.to_string(),
            None => {
                if hdr(&s.headers, "streamtype") == Some("error") {
                    unnamed += 1;
                }
                format!("unnamed-{unnamed}")
            }
        };
        let pair = pending.entry(key.clone()).or_default();
        pair.since.get_or_insert(now);
        match hdr(&s.headers, "streamtype") {
            Some("data") if pair.data.is_none() => pair.data = Some(s),
            Some("error") if pair.error.is_none() => pair.error = Some(s),
            other => {
                tracing::debug!(?other, "port-forward stream of an unknown or repeated type");
                s.out.reset(spdy::PROTOCOL_ERROR).await;
                continue;
            }
        }
        if pair.data.is_some() && pair.error.is_some() {
            let p = pending.remove(&key).unwrap_or_default();
            if let (Some(data), Some(error)) = (p.data, p.error) {
                tokio::spawn(forward(Arc::clone(&target), port, data, error));
            }
        }
    }
    serve
        .await
        .unwrap_or_else(|e| Err(spdy::SpdyError::Protocol(format!("session task: {e}"))))
}

/// Dials `localhost:port` inside `netns` (or on the host), IPv4 first.
pub(super) async fn dial(
    netns: Option<PathBuf>,
    port: u16,
) -> Result<tokio::net::TcpStream, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread of its own: it enters the pod's namespace and ends, so no
    // runtime thread is ever left in it.
    std::thread::Builder::new()
        .name("portforward-dial".into())
        .spawn(move || {
            let _ = tx.send(dial_blocking(netns.as_deref(), port));
        })
        .map_err(|e| format!("spawning the dial thread: {e}"))?;
    let std = rx
        .await
        .map_err(|_| "the dial thread ended without an answer".to_string())??;
    std.set_nonblocking(true).map_err(|e| e.to_string())?;
    tokio::net::TcpStream::from_std(std).map_err(|e| e.to_string())
}

fn dial_blocking(netns: Option<&Path>, port: u16) -> Result<std::net::TcpStream, String> {
    if let Some(path) = netns {
        let f = std::fs::File::open(path)
            .map_err(|e| format!("opening the network namespace {}: {e}", path.display()))?;
        // SAFETY: `f` is an open nsfs file; setns changes only this thread,
        // which exists for this dial alone.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "entering the network namespace {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    match std::net::TcpStream::connect_timeout(&v4, DIAL_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(e4) => std::net::TcpStream::connect_timeout(&v6, DIAL_TIMEOUT).map_err(|e6| {
            format!("failed to connect to localhost:{port} inside the pod's network namespace, IPv4: {e4}, IPv6: {e6}")
        }),
    }
}

/// Joins one connection to the pod with its data stream.
async fn forward(target: Arc<Target>, port: u16, mut data: Stream, error: Stream) {
    let conn = match dial(target.netns.clone(), port).await {
        Ok(c) => c,
        Err(e) => {
            let msg = format!(
                "error forwarding port {port} to pod {}, uid {}: {e}",
                target.pod, target.uid
            );
            tracing::info!("{msg}");
            let _ = error.out.send(msg.as_bytes()).await;
            let _ = error.out.finish().await;
            let _ = data.out.finish().await;
            return;
        }
    };
    let (mut rd, mut wr) = conn.into_split();
    let out = data.out.clone();
    // Pod → client, until the pod closes its side.
    let up = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.send(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = out.finish().await;
    };
    // Client → pod, until FIN (half-close) or a reset (both ways end).
    let down = async move {
        loop {
            match data.incoming.recv().await {
                Some(In::Data(b)) => {
                    if wr.write_all(&b).await.is_err() {
                        return false;
                    }
                }
                Some(In::Fin) => {
                    let _ = wr.shutdown().await;
                    return true;
                }
                None => return false,
            }
        }
    };
    tokio::pin!(up);
    tokio::select! {
        () = &mut up => {}
        finished = down => {
            if finished {
                up.await;
            }
        }
    }
    let _ = error.out.finish().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> header::HeaderMap {
        let mut h = header::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn transports_from_upgrade_headers() {
        assert_eq!(
            negotiate(&headers(&[
                ("upgrade", "SPDY/3.1"),
                ("x-stream-protocol-version", "portforward.k8s.io"),
            ])),
            Ok(Transport::Spdy)
        );
        assert_eq!(
            negotiate(&headers(&[
                ("upgrade", "websocket"),
                ("sec-websocket-key", "abc"),
                ("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io"),
            ])),
            Ok(Transport::WebSocket { key: "abc".into() })
        );
        // The Python client's offer: v5 is not a port-forward protocol.
        assert_eq!(
            negotiate(&headers(&[
                ("upgrade", "websocket"),
                ("sec-websocket-key", "abc"),
                (
                    "sec-websocket-protocol",
                    "v5.channel.k8s.io,v4.channel.k8s.io"
                ),
            ])),
            Ok(Transport::Channels {
                key: "abc".into(),
                protocol: "v4.channel.k8s.io",
                framing: Framing::Binary,
            })
        );
        assert_eq!(
            negotiate(&headers(&[
                ("upgrade", "websocket"),
                ("sec-websocket-key", "abc"),
                ("sec-websocket-protocol", "v4.base64.channel.k8s.io"),
                ("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io"),
            ])),
            Ok(Transport::Channels {
                key: "abc".into(),
                protocol: "v4.base64.channel.k8s.io",
                framing: Framing::Base64,
            })
        );
        assert_eq!(
            negotiate(&headers(&[
                ("upgrade", "websocket"),
                ("sec-websocket-key", "k")
            ])),
            Ok(Transport::Channels {
                key: "k".into(),
                protocol: "",
                framing: Framing::Binary,
            })
        );
        let e = negotiate(&headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-key", "abc"),
            ("sec-websocket-protocol", "v5.channel.k8s.io"),
        ]))
        .unwrap_err();
        assert!(e.contains("v4.channel.k8s.io"), "{e}");
        assert!(negotiate(&headers(&[])).is_err());
        assert!(
            negotiate(&headers(&[
                ("upgrade", "SPDY/3.1"),
                ("x-stream-protocol-version", "v4.channel.k8s.io"),
            ]))
            .is_err()
        );
    }

    #[test]
    fn dialling_a_closed_port_on_the_host_says_what_failed() {
        // Port 1 on loopback: nothing listens there in a test environment.
        let e = dial_blocking(None, 1).unwrap_err();
        assert!(e.contains("localhost:1"), "{e}");
        let e = dial_blocking(Some(Path::new("/nonexistent/net")), 80).unwrap_err();
        assert!(e.contains("/nonexistent/net"), "{e}");
    }
}
