//! `kubectl exec` on the kubelet's side: `/exec/{namespace}/{pod}/{container}`
//! upgraded to a WebSocket with the Kubernetes stream protocol
//! (`v5.channel.k8s.io`, or `v4.channel.k8s.io`): each binary message starts
//! with its channel (0 stdin, 1 stdout, 2 stderr, 3 the final status, 4
//! terminal resize; v5: `[255, 0]` closes stdin). The process runs in the
//! container through containerd, its stdio FIFOs the kubelet made.

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
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        handshake::derive_accept_key,
        protocol::{CloseFrame, Role, frame::coding::CloseCode},
    },
};

use super::{L_ATTEMPT, L_CONTAINER, L_POD_NAME, L_POD_NS, Shared};
use crate::containerd::TaskState;

type Body = Full<bytes::Bytes>;

/// The stream protocols served, most preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// What an exec request asks for.
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
        .any(|(k, v)| names.contains(&k.as_str()) && matches!(v.as_str(), "1" | "true" | "True"))
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
async fn running_instance(
    shared: &Shared,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<String, String> {
    let filter = format!(
        "labels.\"{L_POD_NS}\"=={ns},labels.\"{L_POD_NAME}\"=={pod},labels.\"{L_CONTAINER}\"=={container}"
    );
    let mut found = shared
        .containerd
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
        if let Ok(Some(t)) = shared.containerd.task_get(&id).await
            && t.state == TaskState::Running
        {
            return Ok(id);
        }
    }
    Err(format!(
        "container {container} is not running in pod {ns}/{pod} on this node"
    ))
}

/// `GET /exec/{ns}/{pod}/{container}?command=…` with a WebSocket upgrade.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    ns: &str,
    pod: &str,
    container: &str,
    q: &[(String, String)],
    mut req: Request<Incoming>,
) -> Response<Body> {
    let exec = match parse_request(q) {
        Ok(e) => e,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let headers = req.headers();
    let is_ws = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers.get("sec-websocket-key").cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "exec needs a WebSocket upgrade (Sec-WebSocket-Key); SPDY is not served",
        );
    };
    if !is_ws {
        return text(StatusCode::BAD_REQUEST, "exec needs a WebSocket upgrade");
    }
    let offered: Vec<String> = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    let Some(protocol) = PROTOCOLS.iter().find(|p| offered.iter().any(|o| o == *p)) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "no supported stream protocol among {offered:?}: this kubelet speaks {PROTOCOLS:?}"
            ),
        );
    };
    let instance = match running_instance(shared, ns, pod, container).await {
        Ok(i) => i,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    let shared = Arc::clone(shared);
    let v5 = *protocol == PROTOCOLS[0];
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        run(&shared, &instance, exec, ws, v5).await;
    });
    let mut r = Response::new(Full::new(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    h.insert(
        "sec-websocket-protocol",
        header::HeaderValue::from_static(protocol),
    );
    r
}

fn mkfifo(path: &Path) -> std::io::Result<()> {
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

async fn run(shared: &Shared, instance: &str, exec: ExecRequest, ws: Ws, v5: bool) {
    let (mut tx, mut rx) = ws.split();
    let status = match run_process(shared, instance, &exec, &mut tx, &mut rx, v5).await {
        Ok(code) => exit_status(&exec.command, Some(code), None),
        Err(e) => exit_status(&exec.command, None, Some(&e)),
    };
    let mut msg = vec![ERROR];
    msg.extend_from_slice(status.to_string().as_bytes());
    let _ = tx.send(Message::binary(msg)).await;
    // A normal closure (1000): kubectl takes a close without a code as an
    // error on the error stream.
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
}

async fn run_process(
    shared: &Shared,
    instance: &str,
    exec: &ExecRequest,
    tx: &mut futures_util::stream::SplitSink<Ws, Message>,
    rx: &mut futures_util::stream::SplitStream<Ws>,
    v5: bool,
) -> Result<u32, String> {
    use tokio::net::unix::pipe;
    let cd = &shared.containerd;
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
    let wanted = [
        ("stdin", exec.stdin),
        ("stdout", exec.stdout),
        ("stderr", exec.stderr && !exec.tty),
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
    let code = loop {
        tokio::select! {
            code = &mut wait => break code.map_err(|e| e.to_string())?,
            n = read_some(&mut out, &mut obuf) => {
                if n > 0 && send(tx, STDOUT, &obuf[..n]).await.is_err() {
                    let _ = cd.exec_kill(instance, &exec_id, 9).await;
                }
            }
            n = read_some(&mut err, &mut ebuf) => {
                if n > 0 && send(tx, STDERR, &ebuf[..n]).await.is_err() {
                    let _ = cd.exec_kill(instance, &exec_id, 9).await;
                }
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => match b[0] {
                    STDIN => {
                        if let Some(w) = &mut input
                            && w.write_all(&b[1..]).await.is_err()
                        {
                            input = None;
                        }
                    }
                    CLOSE if v5 && b.get(1) == Some(&STDIN) => {
                        if let Some(mut w) = input.take() {
                            let _ = w.flush().await;
                            drop(w);
                            let _ = cd.exec_close_stdin(instance, &exec_id).await;
                        }
                    }
                    RESIZE => {
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b[1..]) {
                            let (w, h) = (v["Width"].as_u64().unwrap_or(0), v["Height"].as_u64().unwrap_or(0));
                            if exec.tty && w > 0 && h > 0 {
                                let _ = cd.exec_resize(instance, &exec_id, w as u32, h as u32).await;
                            }
                        }
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The client went away: the process goes too.
                    input = None;
                    let _ = cd.exec_kill(instance, &exec_id, 9).await;
                }
                Some(Ok(_)) => {}
            },
        }
    };
    // What the process wrote before it ended may still be on its way: the
    // shim copies it into the FIFOs on its own schedule, and reports the
    // exit without waiting for that. Read until both are quiet for 150 ms.
    for (r, buf, ch) in [(&mut out, &mut obuf, STDOUT), (&mut err, &mut ebuf, STDERR)] {
        if let Some(r) = r.as_mut() {
            while let Ok(Ok(n)) =
                tokio::time::timeout(std::time::Duration::from_millis(150), r.read(buf)).await
            {
                if n == 0 || send(tx, ch, &buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(input);
    cd.exec_delete(instance, &exec_id).await;
    drop(fifos);
    Ok(code)
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
    channel: u8,
    data: &[u8],
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(channel);
    m.extend_from_slice(data);
    tx.send(Message::binary(m)).await
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
}
