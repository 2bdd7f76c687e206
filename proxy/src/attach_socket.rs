//! The proxy's attach socket: the CNI plugin, at the end of ADD, asks the
//! proxy to put the Service dataplane on the new pod interface and waits
//! for it (bounded), so that a pod's first packet to a Service is already
//! translated whichever kubelet runs the pod. The agent's own kubelet asks
//! in process ([`super::daemon::Rescan`]); a cluster's own kubelet (the
//! agent as a DaemonSet) only reaches the agent through its CNI plugin, as
//! Cilium's plugin reaches its agent.
//!
//! The protocol is one line each way on a Unix socket only root can open:
//! `attach\n`, answered `ok\n` once the proxy has rescanned (or after its
//! 5 s bound). Anything else is answered `error\n` and closed; a client
//! that says nothing within 2 s is dropped; at most 32 requests are served
//! at once (the CNI plugin is run once per pod start).

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream},
    sync::Semaphore,
};

use super::daemon::Rescan;

/// The request and its answers.
pub const REQUEST: &[u8] = b"attach\n";
pub const ANSWER: &[u8] = b"ok\n";
const REFUSED: &[u8] = b"error\n";

const READ_TIMEOUT: Duration = Duration::from_secs(2);
const CONCURRENT: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("attach socket {path}: {source}")]
pub struct AttachSocketError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Serves the socket at `path` (a stale file there is replaced) until an
/// accept fails for good.
pub async fn serve(path: PathBuf, rescan: Rescan) -> Result<(), AttachSocketError> {
    let err = |source| AttachSocketError {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(&path).map_err(err)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    tracing::info!(path = %path.display(), "proxy attach socket");
    let slots = Arc::new(Semaphore::new(CONCURRENT));
    loop {
        let (stream, _) = listener.accept().await.map_err(err)?;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Busy: the plugin goes on without waiting (the periodic scan
            // attaches the interface a little later).
            drop(stream);
            continue;
        };
        let rescan = rescan.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = answer(stream, &rescan).await {
                tracing::debug!(error = %e, "attach socket client");
            }
        });
    }
}

async fn answer(mut stream: UnixStream, rescan: &Rescan) -> std::io::Result<()> {
    let mut buf = [0u8; REQUEST.len()];
    let read = tokio::time::timeout(READ_TIMEOUT, stream.read_exact(&mut buf)).await;
    if !matches!(read, Ok(Ok(_))) || buf != REQUEST {
        return stream.write_all(REFUSED).await;
    }
    rescan.now().await;
    stream.write_all(ANSWER).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn attach_is_answered_after_the_rescan_and_anything_else_refused() {
        let dir = std::env::temp_dir().join(format!("attach-sock-{}", std::process::id()));
        let path = dir.join("proxy.sock");
        let (rescan, rx) = Rescan::channel();
        // A stand-in for the proxy's loop: answers each rescan.
        tokio::spawn(async move {
            while let Some(done) = rx.recv().await {
                let _ = done.send(());
            }
        });
        tokio::spawn(serve(path.clone(), rescan));
        let connect = || async {
            for _ in 0..100 {
                if let Ok(s) = UnixStream::connect(&path).await {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the socket never came up");
        };
        let mut s = connect().await;
        s.write_all(REQUEST).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, ANSWER);
        let mut s = connect().await;
        s.write_all(b"detach\n").await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, REFUSED);
        let mode = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
