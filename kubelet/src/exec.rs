//! `kubectl exec` on the kubelet's side: `/exec/{namespace}/{pod}/{container}`
//! upgraded to a WebSocket with the Kubernetes stream protocol
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`, and the older and base64
//! ones the kubelet still speaks, see [`PROTOCOLS`]): each binary message starts
//! with its channel (0 stdin, 1 stdout, 2 stderr, 3 the final status, 4
//! terminal resize; v5: `[255, 0]` closes stdin); or upgraded to SPDY/3.1
//! (`v4.channel.k8s.io`, one SPDY stream per channel, named by its
//! `streamtype` header), as kubectl before 1.30 and a Kubernetes apiserver
//! speak it. The process runs in the container through containerd, its
//! stdio FIFOs the kubelet made; the transports only carry bytes to and
//! from [`run_process`].

use std::{
    ffi::CString,
    path::{Path, PathBuf},
    sync::Arc,
};

use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::mpsc,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        handshake::derive_accept_key,
        protocol::{CloseFrame, Role, frame::coding::CloseCode},
    },
};

use super::{L_ATTEMPT, L_CONTAINER, L_POD_NAME, L_POD_NS, Shared, spdy};
use rudder_runtime::containerd::TaskState;

type Body = Full<bytes::Bytes>;

/// The WebSocket stream protocols served, as the kubelet's: the binary
/// ones, and the `base64` ones (text frames: the channel as an ASCII digit,
/// then the data in base64) that browsers' terminals speak.
pub const PROTOCOLS: [(&str, WsProto); 5] = [
    (
        "v5.channel.k8s.io",
        WsProto {
            v4: true,
            close: true,
            base64: false,
        },
    ),
    (
        "v4.channel.k8s.io",
        WsProto {
            v4: true,
            close: false,
            base64: false,
        },
    ),
    (
        "v4.base64.channel.k8s.io",
        WsProto {
            v4: true,
            close: false,
            base64: true,
        },
    ),
    (
        "channel.k8s.io",
        WsProto {
            v4: false,
            close: false,
            base64: false,
        },
    ),
    (
        "base64.channel.k8s.io",
        WsProto {
            v4: false,
            close: false,
            base64: true,
        },
    ),
];

/// How a WebSocket stream protocol frames what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsProto {
    /// The final status as a JSON `Status` on channel 3 (v4 and later);
    /// before v4, only a failure's message, as text.
    pub v4: bool,
    /// `[255, 0]` closes stdin (v5).
    pub close: bool,
    /// Text frames, base64 data.
    pub base64: bool,
}

/// The protocol to answer for the client's offer: the first offered that
/// is served (none offered: `channel.k8s.io`'s framing, unnamed).
pub fn choose_protocol(offered: &[String]) -> Option<(&'static str, WsProto)> {
    if offered.is_empty() {
        return Some(("", PROTOCOLS[3].1));
    }
    offered
        .iter()
        .find_map(|o| PROTOCOLS.iter().find(|(p, _)| p == o).copied())
}

const STDIN: u8 = 0;
pub(crate) const STDOUT: u8 = 1;
pub(crate) const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// What an exec (or, with no command, an attach) request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn flag(q: &[(String, String)], names: &[&str]) -> bool {
    q.iter()
        .any(|(k, v)| names.contains(&k.as_str()) && rudder_k8s::query::is_true(Some(v)))
}

/// Reads the query the apiserver passes on (kubectl's parameter names, and
/// the kubelet's `input`/`output`/`error` aliases).
pub fn parse_request(q: &[(String, String)]) -> Result<ExecRequest, String> {
    let command: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return Err("you must specify at least one command for the container".into());
    }
    streams(q, command)
}

/// Reads an attach request's query: the streams, no command.
pub fn parse_attach(q: &[(String, String)]) -> Result<ExecRequest, String> {
    streams(q, Vec::new())
}

fn streams(q: &[(String, String)], command: Vec<String>) -> Result<ExecRequest, String> {
    let r = ExecRequest {
        command,
        stdin: flag(q, &["stdin", "input"]),
        stdout: flag(q, &["stdout", "output"]),
        stderr: flag(q, &["stderr", "error"]),
        tty: flag(q, &["tty"]),
    };
    if !r.stdin && !r.stdout && !r.stderr {
        return Err("you must specify at least one of stdin, stdout, stderr".into());
    }
    Ok(r)
}

/// The final status sent on channel 3, as the kubelet sends it.
pub fn exit_status(
    command: &[String],
    code: Option<u32>,
    error: Option<&str>,
) -> serde_json::Value {
    match (code, error) {
        (Some(0), None) => json!({"metadata": {}, "status": "Success"}),
        (Some(c), None) => json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {c}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": c.to_string()}]}
        }),
        (_, e) => json!({
            "metadata": {}, "status": "Failure",
            "message": e.unwrap_or("the process did not report an exit status"),
            "reason": "InternalError"
        }),
    }
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(bytes::Bytes::from(msg.into())));
    *r.status_mut() = status;
    r
}

/// The running containerd instance of a pod's container (its latest attempt).
pub(crate) async fn running_instance(
    shared: &Shared,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<String, String> {
    let filter = format!(
        "labels.\"{L_POD_NS}\"=={ns},labels.\"{L_POD_NAME}\"=={pod},labels.\"{L_CONTAINER}\"=={container}"
    );
    let mut found = shared
        .runtime
        .container_list(&filter)
        .await
        .map_err(|e| e.to_string())?;
    found.sort_by_key(|(_, labels)| {
        std::cmp::Reverse(
            labels
                .get(L_ATTEMPT)
                .and_then(|a| a.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    for (id, _) in found {
        if let Ok(Some(t)) = shared.runtime.task_get(&id).await
            && t.state == TaskState::Running
        {
            return Ok(id);
        }
    }
    Err(format!(
        "container {container} is not running in pod {ns}/{pod} on this node"
    ))
}

/// The SPDY stream protocol served (v4 carries the structured exit status
/// on the error stream, as on WebSocket channel 3).
pub const SPDY_PROTOCOL: &str = "v4.channel.k8s.io";
/// How long the client may take to open the streams it asked for.
const STREAMS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The comma-separated values of every `name` header, trimmed.
pub(crate) fn header_values(headers: &header::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect()
}

/// `Connection: Upgrade` and `Upgrade: <to>`.
fn upgrade_to(h: &mut header::HeaderMap, to: &'static str) {
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(header::UPGRADE, header::HeaderValue::from_static(to));
}

/// The headers of a 101 answer switching to a WebSocket speaking
/// `protocol`, for the client's `Sec-WebSocket-Key` `key`.
pub(crate) fn accept_websocket(h: &mut header::HeaderMap, key: &[u8], protocol: &'static str) {
    upgrade_to(h, "websocket");
    if let Ok(v) = header::HeaderValue::from_str(&derive_accept_key(key)) {
        h.insert("sec-websocket-accept", v);
    }
    // No subprotocol offered, none answered.
    if !protocol.is_empty() {
        h.insert(
            "sec-websocket-protocol",
            header::HeaderValue::from_static(protocol),
        );
    }
}

/// The headers of a 101 answer switching to SPDY/3.1 with the stream
/// protocol `protocol`.
pub(crate) fn accept_spdy(h: &mut header::HeaderMap, protocol: &'static str) {
    upgrade_to(h, "SPDY/3.1");
    h.insert(
        "x-stream-protocol-version",
        header::HeaderValue::from_static(protocol),
    );
}

/// `/exec/{ns}/{pod}/{container}?command=…` (or, `attach`, `/attach/…`
/// with no command) upgraded to a WebSocket (`v5`/`v4.channel.k8s.io`) or
/// to SPDY/3.1 (`v4.channel.k8s.io`, what kubectl before 1.30 and a
/// Kubernetes apiserver send).
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    ns: &str,
    pod: &str,
    container: &str,
    q: &[(String, String)],
    attach: bool,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let parsed = if attach {
        parse_attach(q)
    } else {
        parse_request(q)
    };
    let exec = match parsed {
        Ok(e) => e,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let headers = req.headers();
    let upgrade = header_values(headers, "upgrade");
    let is_ws = upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket"));
    let is_spdy = upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1"));
    if !is_ws && !is_spdy {
        return text(
            StatusCode::BAD_REQUEST,
            "exec and attach need an upgrade to a WebSocket or to SPDY/3.1",
        );
    }
    let mut r = Response::new(Full::new(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let transport = if is_ws {
        let Some(key) = headers.get("sec-websocket-key").cloned() else {
            return text(
                StatusCode::BAD_REQUEST,
                "a WebSocket upgrade without Sec-WebSocket-Key",
            );
        };
        let offered = header_values(headers, "sec-websocket-protocol");
        let Some((protocol, proto)) = choose_protocol(&offered) else {
            let served: Vec<&str> = PROTOCOLS.iter().map(|(p, _)| *p).collect();
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "no supported stream protocol among {offered:?}: this kubelet speaks {served:?}"
                ),
            );
        };
        accept_websocket(r.headers_mut(), key.as_bytes(), protocol);
        Transport::WebSocket { proto }
    } else {
        let offered = header_values(headers, "x-stream-protocol-version");
        if !offered.iter().any(|p| p == SPDY_PROTOCOL) {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "no supported stream protocol among {offered:?}: this kubelet speaks {SPDY_PROTOCOL:?} over SPDY"
                ),
            );
        }
        accept_spdy(r.headers_mut(), SPDY_PROTOCOL);
        Transport::Spdy
    };
    let instance = match running_instance(shared, ns, pod, container).await {
        Ok(i) => i,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let io = TokioIo::new(upgraded);
        match transport {
            Transport::WebSocket { proto } => {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                run_ws(&shared, &instance, exec, ws, proto).await;
            }
            Transport::Spdy => run_spdy(&shared, &instance, exec, io).await,
        }
    });
    r
}

#[derive(Debug, Clone, Copy)]
enum Transport {
    WebSocket { proto: WsProto },
    Spdy,
}

/// What the client sends while the process runs.
#[derive(Debug)]
pub(crate) enum Input {
    Stdin(bytes::Bytes),
    CloseStdin,
    Resize { width: u64, height: u64 },
}

/// The process's side of a client, whatever the transport: output as
/// `(STDOUT | STDERR, bytes)`, input until the client goes away (then the
/// channel closes).
pub(crate) struct Client {
    pub(crate) out: mpsc::Sender<(u8, bytes::Bytes)>,
    pub(crate) input: mpsc::Receiver<Input>,
}

fn resize_of(json: &[u8]) -> Option<Input> {
    let v = serde_json::from_slice::<serde_json::Value>(json).ok()?;
    Some(Input::Resize {
        width: v["Width"].as_u64().unwrap_or(0),
        height: v["Height"].as_u64().unwrap_or(0),
    })
}

pub(crate) fn mkfifo(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::other("a NUL in the FIFO path"))?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The exec'd process's FIFOs, removed on drop.
struct Fifos(PathBuf);

impl Drop for Fifos {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Exec over a WebSocket: channel bytes in, channel bytes out, the status
/// on channel 3, then a normal close.
async fn run_ws(shared: &Shared, instance: &str, exec: ExecRequest, ws: Ws, proto: WsProto) {
    let (mut tx, mut rx) = ws.split();
    let (otx, mut orx) = mpsc::channel::<(u8, bytes::Bytes)>(16);
    let (itx, irx) = mpsc::channel::<Input>(16);
    let reader = tokio::spawn(async move {
        while let Some(msg) = rx.next().await {
            let frame = match msg {
                Ok(Message::Binary(b)) => Some(b),
                // Text frames carry channel bytes too (the Python client
                // writes a `str` to stdin as one), as kubelet reads them;
                // with base64, a digit and base64.
                Ok(Message::Text(t)) => decode_text(t.as_bytes(), proto.base64),
                Ok(Message::Close(c)) => {
                    tracing::debug!(close = ?c, "exec/attach: the client closed the WebSocket");
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "exec/attach: reading the client's WebSocket failed");
                    break;
                }
                Ok(_) => None,
            };
            let Some(b) = frame.filter(|b| !b.is_empty()) else {
                continue;
            };
            let input = match b[0] {
                STDIN => Input::Stdin(b.slice(1..)),
                CLOSE if proto.close && b.get(1) == Some(&STDIN) => Input::CloseStdin,
                RESIZE => match resize_of(&b[1..]) {
                    Some(r) => r,
                    None => continue,
                },
                _ => continue,
            };
            if itx.send(input).await.is_err() {
                break;
            }
        }
        // Dropping `itx` tells the process the client is gone.
    });
    let client = Client {
        out: otx,
        input: irx,
    };
    let process = exec_or_attach(shared, instance, &exec, client);
    let writer = async {
        while let Some((ch, data)) = orx.recv().await {
            if send(&mut tx, proto, ch, &data).await.is_err() {
                // Keep draining so the process never blocks on output.
                while orx.recv().await.is_some() {}
                break;
            }
        }
    };
    let (result, ()) = tokio::join!(process, writer);
    reader.abort();
    let status = match result {
        Ok(code) => exit_status(&exec.command, Some(code), None),
        Err(e) => exit_status(&exec.command, None, Some(&e)),
    };
    // Before v4: nothing on success, a failure's message as text.
    let report = if proto.v4 {
        Some(status.to_string())
    } else {
        status["message"].as_str().map(str::to_owned)
    };
    if let Some(report) = report {
        let _ = send(&mut tx, proto, ERROR, report.as_bytes()).await;
    }
    // A normal closure (1000): kubectl takes a close without a code as an
    // error on the error stream.
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
}

/// Exec over SPDY (`v4.channel.k8s.io`): the client opens an `error`
/// stream and one per stdio stream it asked for (`stdin`, `stdout`,
/// `stderr`, `resize` with a terminal); the status goes on `error` at the
/// end, after stdout and stderr are finished.
async fn run_spdy<IO>(shared: &Shared, instance: &str, exec: ExecRequest, io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (stx, mut srx) = mpsc::channel(8);
    let session = tokio::spawn(spdy::serve(io, stx));
    let mut wanted = vec!["error"];
    for (name, on) in [
        ("stdin", exec.stdin),
        ("stdout", exec.stdout),
        ("stderr", exec.stderr && !exec.tty),
        ("resize", exec.tty),
    ] {
        if on {
            wanted.push(name);
        }
    }
    let mut streams: std::collections::HashMap<String, spdy::Stream> = Default::default();
    let deadline = tokio::time::Instant::now() + STREAMS_TIMEOUT;
    while wanted.iter().any(|w| !streams.contains_key(*w)) {
        match tokio::time::timeout_at(deadline, srx.recv()).await {
            Ok(Some(s)) => {
                let kind = spdy::header(&s.headers, "streamtype").unwrap_or_default();
                if wanted.contains(&kind) && !streams.contains_key(kind) {
                    streams.insert(kind.to_string(), s);
                } else {
                    s.out.reset(spdy::PROTOCOL_ERROR).await;
                }
            }
            Ok(None) => return,
            Err(_) => {
                tracing::info!(
                    instance,
                    have = ?streams.keys().collect::<Vec<_>>(),
                    "exec over SPDY: the client did not open its streams in time"
                );
                return;
            }
        }
    }
    let take =
        |streams: &mut std::collections::HashMap<String, spdy::Stream>, k: &str| streams.remove(k);
    let error = take(&mut streams, "error");
    let stdin = take(&mut streams, "stdin");
    let stdout = take(&mut streams, "stdout");
    let stderr = take(&mut streams, "stderr");
    let resize = take(&mut streams, "resize");
    let (otx, mut orx) = mpsc::channel::<(u8, bytes::Bytes)>(16);
    let (itx, irx) = mpsc::channel::<Input>(16);
    // Input: stdin until its FIN, terminal sizes, until the session ends.
    let reader = tokio::spawn(async move {
        let mut stdin = stdin.map(|s| s.incoming);
        let mut resize = resize.map(|s| s.incoming);
        loop {
            let input = tokio::select! {
                m = async { stdin.as_mut()?.recv().await }, if stdin.is_some() => match m {
                    Some(spdy::Incoming::Data(b)) => Input::Stdin(b),
                    Some(spdy::Incoming::Fin) => { stdin = None; Input::CloseStdin }
                    None => { stdin = None; continue }
                },
                m = async { resize.as_mut()?.recv().await }, if resize.is_some() => match m {
                    Some(spdy::Incoming::Data(b)) => {
                        // One JSON object per write; several may share a frame.
                        let sizes: Vec<Input> = serde_json::Deserializer::from_slice(&b)
                            .into_iter::<serde_json::Value>()
                            .map_while(Result::ok)
                            .filter_map(|v| resize_of(v.to_string().as_bytes()))
                            .collect();
                        for s in sizes {
                            if itx.send(s).await.is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                    _ => { resize = None; continue }
                },
                // The session's end: no more streams, the client is gone.
                s = srx.recv() => match s {
                    Some(s) => { s.out.reset(spdy::PROTOCOL_ERROR).await; continue }
                    None => return,
                },
            };
            if itx.send(input).await.is_err() {
                return;
            }
        }
    });
    let client = Client {
        out: otx,
        input: irx,
    };
    let process = exec_or_attach(shared, instance, &exec, client);
    let (out_s, err_s) = (stdout.map(|s| s.out), stderr.map(|s| s.out));
    let writer = async {
        while let Some((ch, data)) = orx.recv().await {
            let to = if ch == STDOUT { &out_s } else { &err_s };
            if let Some(to) = to {
                let _ = to.send(&data).await;
            }
        }
        for s in [&out_s, &err_s].into_iter().flatten() {
            let _ = s.finish().await;
        }
    };
    let (result, ()) = tokio::join!(process, writer);
    let status = match result {
        Ok(code) => exit_status(&exec.command, Some(code), None),
        Err(e) => exit_status(&exec.command, None, Some(&e)),
    };
    if let Some(e) = error {
        let _ = e.out.send(status.to_string().as_bytes()).await;
        let _ = e.out.finish().await;
    }
    // The client closes the connection once it has the status.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), session).await;
    reader.abort();
}

/// The exec'd process, or the attach to the container (no command).
async fn exec_or_attach(
    shared: &Shared,
    instance: &str,
    exec: &ExecRequest,
    client: Client,
) -> Result<u32, String> {
    if exec.command.is_empty() {
        super::attach::run(shared, instance, exec, client).await
    } else {
        run_process(shared, instance, exec, client).await
    }
}

async fn run_process(
    shared: &Shared,
    instance: &str,
    exec: &ExecRequest,
    mut client: Client,
) -> Result<u32, String> {
    use tokio::net::unix::pipe;
    let cd = &shared.runtime;
    let spec = cd
        .container_spec(instance)
        .await
        .map_err(|e| e.to_string())?;
    let mut process = spec["process"].clone();
    process["args"] = json!(exec.command);
    process["terminal"] = json!(exec.tty);
    let exec_id = format!("exec-{:08x}", rand::random::<u32>());
    let dir = shared.cfg.run_dir.join("exec").join(&exec_id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let fifos = Fifos(dir.clone());
    let path = |n: &str| dir.join(n);
    // Both output FIFOs whatever the client asked for (what it did not ask
    // for is read and dropped): containerd 1.6's shim fails an exec whose
    // stdout or stderr alone is empty ("opening file \"\" failed").
    let wanted = [
        ("stdin", exec.stdin),
        ("stdout", true),
        ("stderr", !exec.tty),
    ];
    for (name, on) in wanted {
        if on {
            mkfifo(&path(name)).map_err(|e| format!("mkfifo {name}: {e}"))?;
        }
    }
    // Our ends first, read-write so that opening never blocks and reads
    // never see a premature end while the shim has not opened its side.
    let open_rx = |name: &str| -> Result<Option<pipe::Receiver>, String> {
        if !path(name).exists() {
            return Ok(None);
        }
        pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(path(name))
            .map(Some)
            .map_err(|e| format!("open {name}: {e}"))
    };
    let mut out = open_rx("stdout")?;
    let mut err = open_rx("stderr")?;
    let mut input = if exec.stdin {
        Some(
            pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(path("stdin"))
                .map_err(|e| format!("open stdin: {e}"))?,
        )
    } else {
        None
    };
    let p = |name: &str| -> String {
        if path(name).exists() {
            path(name).display().to_string()
        } else {
            String::new()
        }
    };
    let body = serde_json::to_vec(&process).map_err(|e| e.to_string())?;
    cd.exec_start(
        instance,
        &exec_id,
        body,
        &p("stdin"),
        &p("stdout"),
        &p("stderr"),
        exec.tty,
    )
    .await
    .map_err(|e| e.to_string())?;
    let wait = cd.exec_wait(instance, &exec_id);
    tokio::pin!(wait);
    let mut obuf = vec![0u8; 32 * 1024];
    let mut ebuf = vec![0u8; 32 * 1024];
    let mut gone = false;
    let code = loop {
        tokio::select! {
            code = &mut wait => break code.map_err(|e| e.to_string())?,
            n = read_some(&mut out, &mut obuf) => {
                if n > 0 && exec.stdout && client.out.send((STDOUT, bytes::Bytes::copy_from_slice(&obuf[..n]))).await.is_err() {
                    let _ = cd.exec_kill(instance, &exec_id, 9).await;
                }
            }
            n = read_some(&mut err, &mut ebuf) => {
                if n > 0 && exec.stderr && client.out.send((STDERR, bytes::Bytes::copy_from_slice(&ebuf[..n]))).await.is_err() {
                    let _ = cd.exec_kill(instance, &exec_id, 9).await;
                }
            }
            msg = client.input.recv(), if !gone => match msg {
                Some(Input::Stdin(b)) => {
                    if let Some(w) = &mut input
                        && w.write_all(&b).await.is_err()
                    {
                        input = None;
                    }
                }
                Some(Input::CloseStdin) => {
                    if let Some(mut w) = input.take() {
                        let _ = w.flush().await;
                        drop(w);
                        let _ = cd.exec_close_stdin(instance, &exec_id).await;
                    }
                }
                Some(Input::Resize { width, height }) => {
                    if exec.tty && width > 0 && height > 0 {
                        let _ = cd.exec_resize(instance, &exec_id, width as u32, height as u32).await;
                    }
                }
                None => {
                    // The client went away: the process goes too.
                    gone = true;
                    input = None;
                    let _ = cd.exec_kill(instance, &exec_id, 9).await;
                }
            },
        }
    };
    drain_after_exit(
        [
            (&mut out, STDOUT, exec.stdout),
            (&mut err, STDERR, exec.stderr),
        ],
        &mut client,
    )
    .await;
    drop(input);
    cd.exec_delete(instance, &exec_id).await;
    drop(fifos);
    Ok(code)
}

/// What the process wrote before it ended may still be on its way: the
/// shim copies it into the FIFOs on its own schedule, and reports the exit
/// without waiting for that. Reads the wanted streams until each is quiet
/// for 150 ms.
async fn drain_after_exit(
    streams: [(&mut Option<tokio::net::unix::pipe::Receiver>, u8, bool); 2],
    client: &mut Client,
) {
    let mut buf = vec![0u8; 32 * 1024];
    for (r, ch, on) in streams {
        let Some(r) = r.as_mut().filter(|_| on) else {
            continue;
        };
        while let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_millis(150), r.read(&mut buf)).await
        {
            if n == 0
                || client
                    .out
                    .send((ch, bytes::Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
            {
                break;
            }
        }
    }
}

/// Reads what is there (never returns when there is no such stream).
async fn read_some(r: &mut Option<tokio::net::unix::pipe::Receiver>, buf: &mut [u8]) -> usize {
    match r {
        Some(r) => match r.read(buf).await {
            Ok(n) if n > 0 => n,
            _ => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

async fn send(
    tx: &mut futures_util::stream::SplitSink<Ws, Message>,
    proto: WsProto,
    channel: u8,
    data: &[u8],
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    tx.send(encode_frame(proto, channel, data)).await
}

/// One channel's bytes as a WebSocket message of `proto`.
fn encode_frame(proto: WsProto, channel: u8, data: &[u8]) -> Message {
    use base64::Engine as _;
    if proto.base64 {
        let mut t = String::with_capacity(data.len() * 4 / 3 + 5);
        t.push(char::from(b'0' + channel));
        t.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
        return Message::text(t);
    }
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(channel);
    m.extend_from_slice(data);
    Message::binary(m)
}

/// A text message's channel bytes: as they are, or (base64) the channel
/// digit and the decoded data; `None` if it is not valid.
fn decode_text(t: &[u8], base64: bool) -> Option<bytes::Bytes> {
    use base64::Engine as _;
    if !base64 {
        return Some(bytes::Bytes::copy_from_slice(t));
    }
    let (&digit, rest) = t.split_first()?;
    let channel = digit.checked_sub(b'0').filter(|c| *c <= 9)?;
    let mut out = vec![channel];
    out.extend(
        base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?,
    );
    Some(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn requests_from_kubectl_queries() {
        let r = parse_request(&q(&[
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo hi"),
            ("stdin", "true"),
            ("stdout", "true"),
            ("tty", "true"),
        ]))
        .unwrap();
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
        assert!(r.stdin && r.stdout && !r.stderr && r.tty);
        let r = parse_request(&q(&[("command", "ls"), ("output", "1"), ("error", "1")])).unwrap();
        assert!(r.stdout && r.stderr && !r.stdin);
        assert!(parse_request(&q(&[("stdout", "true")])).is_err());
        assert!(parse_request(&q(&[("command", "ls")])).is_err());
    }

    #[test]
    fn exit_statuses_as_kubectl_reads_them() {
        let cmd = vec!["sh".to_string()];
        assert_eq!(exit_status(&cmd, Some(0), None)["status"], "Success");
        let s = exit_status(&cmd, Some(3), None);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        let s = exit_status(&cmd, None, Some("exec failed: no such file"));
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["message"], "exec failed: no such file");
    }

    #[test]
    fn websocket_protocols_as_the_kubelet_negotiates_and_frames_them() {
        let o = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        // The client's order decides; none offered: unnamed binary v1.
        assert_eq!(
            choose_protocol(&o(&["v4.channel.k8s.io", "v5.channel.k8s.io"])).map(|p| p.0),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(choose_protocol(&[]).map(|p| p.0), Some(""));
        assert!(choose_protocol(&o(&["v9.channel.k8s.io"])).is_none());
        let (_, b64) = choose_protocol(&o(&["base64.channel.k8s.io"])).unwrap();
        assert!(b64.base64 && !b64.v4 && !b64.close);
        match encode_frame(b64, STDOUT, b"hello") {
            Message::Text(t) => assert_eq!(t.as_str(), "1aGVsbG8="),
            m => panic!("{m:?}"),
        }
        assert_eq!(decode_text(b"0aGk=", true).unwrap().as_ref(), b"\0hi");
        assert!(decode_text(b"0***", true).is_none());
        assert!(decode_text(b"x", true).is_none());
        match encode_frame(PROTOCOLS[0].1, STDERR, b"e") {
            Message::Binary(b) => assert_eq!(b.as_ref(), b"\x02e"),
            m => panic!("{m:?}"),
        }
    }
}
