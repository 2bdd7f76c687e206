//! `kubectl attach`: a client joins a running container's own stdio.
//!
//! The container's stdio is held by its log driver (the `rudder` process
//! the runc shim starts beside each container, see [`super::logs`]), as
//! conmon holds it for CRI-O: besides writing the CRI log, the driver
//! serves a Unix socket under the kubelet's run directory (root's alone)
//! on which it sends every chunk of output as it comes, and takes input
//! for the container's stdin FIFO. The driver opens that FIFO read-write
//! for the container's whole life, so the container's stdin stays open
//! across attach sessions and kubelet restarts; with `stdinOnce` it is
//! closed when the first client that attached stdin goes away, as
//! containerd's CRI does.
//!
//! Between the kubelet and the driver, frames of `[channel][length u32
//! BE][bytes]`: 1 stdout and 2 stderr from the driver; 0 stdin, 254 hello
//! (`[1]` when the client attaches stdin) and 255 close stdin from the
//! kubelet. At most 16 clients at once; one that cannot take 256 chunks
//! in a row is dropped, so that a slow client never holds the container's
//! output (or its log) back. Terminal sizes go to containerd directly.
//!
//! When the container's output ends, the driver waits (at most
//! [`CLOSE_WAIT`]) until each client's writer has written what was queued
//! for it before the process exits: exiting kills those threads, and the
//! container's last words, already in its log, would never reach a client
//! that was attached all along (the loss a starved node showed).

use std::{
    fs::File,
    io::{Read, Write},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex,
        mpsc::{SyncSender, sync_channel},
    },
};

use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{
    Shared,
    exec::{Client, ExecRequest, Input, STDERR, STDOUT},
};

const CH_STDIN: u8 = 0;
const CH_HELLO: u8 = 254;
const CH_CLOSE_STDIN: u8 = 255;
/// The largest frame either side sends or takes.
const MAX_FRAME: usize = 64 * 1024;
const MAX_CLIENTS: usize = 16;
const CLIENT_QUEUE: usize = 256;
/// How long the end of the output waits for clients' writers; also the
/// longest one write to a client may block.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where a container's attach socket and stdin FIFO live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub socket: PathBuf,
    pub stdin: PathBuf,
    /// The output FIFOs of a container whose driver the kubelet starts.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// The paths of container `id` under the kubelet's `run_dir` (named by a
/// hash: a socket path must fit in 108 bytes).
pub fn paths(run_dir: &Path, id: &str) -> Paths {
    let h = hex::encode(&sha2::Sha256::digest(id.as_bytes())[..8]);
    let dir = run_dir.join("attach");
    Paths {
        socket: dir.join(format!("{h}.sock")),
        stdin: dir.join(format!("{h}.stdin")),
        stdout: dir.join(format!("{h}.stdout")),
        stderr: dir.join(format!("{h}.stderr")),
    }
}

fn write_frame(w: &mut impl Write, ch: u8, data: &[u8]) -> std::io::Result<()> {
    for part in data
        .chunks(MAX_FRAME)
        .chain(data.is_empty().then_some(&[][..]))
    {
        let mut head = [0u8; 5];
        head[0] = ch;
        head[1..].copy_from_slice(&(part.len() as u32).to_be_bytes());
        w.write_all(&head)?;
        w.write_all(part)?;
    }
    Ok(())
}

/// One frame, `None` at the end of the stream.
fn read_frame(r: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        r => r?,
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other("an attach frame over 64 KiB"));
    }
    let mut data = vec![0; len];
    r.read_exact(&mut data)?;
    Ok(Some((head[0], data)))
}

/// A client's queue of `(channel, chunk)`.
type Queue = SyncSender<(u8, Arc<[u8]>)>;

/// The driver's side: the clients attached to one container.
#[derive(Debug)]
pub struct Hub {
    /// Each client's queue, by a number of its own.
    clients: Mutex<Vec<(u64, Queue)>>,
    next: std::sync::atomic::AtomicU64,
    /// Set by [`Hub::close`] (under the clients' lock): no client joins
    /// after the end.
    closed: std::sync::atomic::AtomicBool,
    /// Writer threads still running (each drains one client's queue).
    writers: Arc<(Mutex<usize>, Condvar)>,
    stdin: Mutex<Option<File>>,
    stdin_once: bool,
    socket: PathBuf,
}

impl Hub {
    /// Serves `socket`, holding the stdin FIFO `stdin` open if the
    /// container has one.
    pub fn start(
        socket: &Path,
        stdin: Option<&Path>,
        stdin_once: bool,
    ) -> std::io::Result<Arc<Self>> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        let stdin = match stdin {
            // Read-write: never blocks, and the shim never sees an end
            // while this process lives.
            Some(p) => Some(File::options().read(true).write(true).open(p)?),
            None => None,
        };
        let hub = Arc::new(Self {
            clients: Mutex::new(Vec::new()),
            next: std::sync::atomic::AtomicU64::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
            writers: Arc::default(),
            stdin: Mutex::new(stdin),
            stdin_once,
            socket: socket.to_path_buf(),
        });
        let h = Arc::clone(&hub);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => h.admit(c),
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
                }
            }
        });
        Ok(hub)
    }

    fn admit(self: &Arc<Self>, conn: UnixStream) {
        let Ok(mut reader) = conn.try_clone() else {
            return;
        };
        let mut writer = conn;
        // A kubelet that stops reading cannot hold this writer (or the
        // end of the output) for longer than this.
        let _ = writer.set_write_timeout(Some(CLOSE_WAIT));
        let Ok(mut clients) = self.clients.lock() else {
            return;
        };
        if clients.len() >= MAX_CLIENTS || self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = sync_channel::<(u8, Arc<[u8]>)>(CLIENT_QUEUE);
        // First, what the kubelet must know: whether stdin is once-only.
        let _ = tx.try_send((CH_HELLO, Arc::from(&[u8::from(self.stdin_once)][..])));
        clients.push((id, tx));
        // Counted before the clients' lock goes, so that an end of output
        // racing with this admission still waits for this writer.
        let writers = Arc::clone(&self.writers);
        if let Ok(mut n) = writers.0.lock() {
            *n += 1;
        }
        drop(clients);
        std::thread::spawn(move || {
            for (ch, data) in rx {
                if write_frame(&mut writer, ch, &data).is_err() {
                    break;
                }
            }
            let _ = writer.shutdown(std::net::Shutdown::Both);
            if let Ok(mut n) = writers.0.lock() {
                *n = n.saturating_sub(1);
            }
            writers.1.notify_all();
        });
        let hub = Arc::clone(self);
        std::thread::spawn(move || {
            let mut attached_stdin = false;
            while let Ok(Some((ch, data))) = read_frame(&mut reader) {
                match ch {
                    CH_HELLO => attached_stdin = data.first() == Some(&1),
                    CH_STDIN => hub.write_stdin(&data),
                    CH_CLOSE_STDIN if hub.stdin_once => {
                        // Once the shim has taken every byte, the kubelet
                        // may have containerd close the process's stdin.
                        hub.drain_and_close_stdin();
                        hub.send_to(id, CH_CLOSE_STDIN);
                    }
                    _ => {}
                }
            }
            if attached_stdin && hub.stdin_once {
                hub.drain_and_close_stdin();
            }
            // Gone: its queue goes (and with it the writer).
            if let Ok(mut c) = hub.clients.lock() {
                c.retain(|(n, _)| *n != id);
            }
        });
    }

    fn write_stdin(&self, data: &[u8]) {
        if let Ok(mut s) = self.stdin.lock()
            && let Some(f) = s.as_mut()
            && f.write_all(data).is_err()
        {
            *s = None;
        }
    }

    /// Waits (at most 2 s) until the shim has read everything written to
    /// the stdin FIFO, then lets go of it.
    fn drain_and_close_stdin(&self) {
        use std::os::fd::AsRawFd as _;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let pending = match self.stdin.lock() {
                Ok(s) => s.as_ref().map_or(0, |f| {
                    let mut n: libc::c_int = 0;
                    // SAFETY: FIONREAD writes one int through the pointer,
                    // on a descriptor this process owns.
                    match unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) } {
                        0 => n,
                        _ => 0,
                    }
                }),
                Err(_) => 0,
            };
            if pending <= 0 || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.close_stdin();
    }

    /// Queues an empty frame on `ch` for client `id`.
    fn send_to(&self, id: u64, ch: u8) {
        if let Ok(c) = self.clients.lock()
            && let Some((_, q)) = c.iter().find(|(n, _)| *n == id)
        {
            let _ = q.try_send((ch, Arc::from(&[][..])));
        }
    }

    fn close_stdin(&self) {
        if let Ok(mut s) = self.stdin.lock() {
            *s = None;
        }
    }

    /// Sends a chunk of output (`STDOUT` or `STDERR`) to every client; one
    /// whose queue is full is dropped.
    pub fn broadcast(&self, ch: u8, data: &[u8]) {
        let Ok(mut clients) = self.clients.lock() else {
            return;
        };
        if clients.is_empty() {
            return;
        }
        let data: Arc<[u8]> = Arc::from(data);
        clients.retain(|(_, c)| c.try_send((ch, Arc::clone(&data))).is_ok());
    }

    /// The container's output has ended: clients get the rest of what was
    /// queued, then the end of their stream; the socket goes. Returns once
    /// every client's writer has written its queue (or after
    /// [`CLOSE_WAIT`]), so that the process may exit.
    pub fn close(&self) {
        let _ = std::fs::remove_file(&self.socket);
        if let Ok(mut c) = self.clients.lock() {
            self.closed
                .store(true, std::sync::atomic::Ordering::Relaxed);
            c.clear();
        }
        self.close_stdin();
        let (count, done) = &*self.writers;
        if let Ok(n) = count.lock() {
            let _ = done.wait_timeout_while(n, CLOSE_WAIT, |n| *n > 0);
        }
    }

    /// Writer threads still running.
    #[cfg(test)]
    fn writers(&self) -> usize {
        self.writers.0.lock().map_or(0, |n| *n)
    }
}

/// Starts the log driver of container `id` from the kubelet (in a
/// session of its own, so that it outlives a kubelet restart, as conmon
/// outlives CRI-O's) and waits until it serves its attach socket: by then
/// it holds the FIFOs. Its pid.
pub(crate) async fn spawn_driver(
    binary: &Path,
    id: &str,
    args: &super::logs::DriverArgs,
) -> std::io::Result<u32> {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(args.argv())
        .env("CONTAINER_ID", id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    super::pause::in_own_session(cmd.as_std_mut());
    let mut child = cmd.spawn()?;
    let pid = child.id().unwrap_or_default();
    let socket = args.attach.clone().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !socket.exists() {
        if let Some(status) = child.try_wait()? {
            return Err(std::io::Error::other(format!("it exited: {status}")));
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.start_kill();
            return Err(std::io::Error::other("it did not start within 10 s"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Reaped here while this kubelet lives, by init after.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(pid)
}

/// The kubelet's side: joins `client` to container instance `instance`
/// until the container's output ends or the client goes.
pub(crate) async fn run(
    shared: &Shared,
    instance: &str,
    req: &ExecRequest,
    mut client: Client,
) -> Result<u32, String> {
    let p = paths(&shared.cfg.run_dir, instance);
    let conn = tokio::net::UnixStream::connect(&p.socket)
        .await
        .map_err(|e| format!("the container cannot be attached to ({e}): it was started by an older kubelet; restart it"))?;
    let (mut rd, mut wr) = conn.into_split();
    // Frames are read by a task of their own: a read cut short by the
    // other branch of the select below would lose bytes mid-frame.
    let (ftx, mut frames) = tokio::sync::mpsc::channel::<(u8, Vec<u8>)>(64);
    let reader = tokio::spawn(async move {
        while let Some(f) = read_frame_async(&mut rd).await {
            if ftx.send(f).await.is_err() {
                break;
            }
        }
    });
    let mut hello = Vec::new();
    write_frame(&mut hello, CH_HELLO, &[u8::from(req.stdin)]).map_err(|e| e.to_string())?;
    wr.write_all(&hello).await.map_err(|e| e.to_string())?;
    let mut stdin_once = false;
    // containerd's shim keeps its own end of the FIFO: closing stdin
    // once-only is the driver letting go of it and containerd closing the
    // process's.
    let close_stdin = || shared.runtime.exec_close_stdin(instance, "");
    // Whether the driver still takes input. It hangs up once the
    // container's output has ended, possibly while input is on its way:
    // then what it sent before is still forwarded, to the end.
    let mut writable = true;
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some((ch, data)) = frame else {
                    tracing::debug!(instance, "attach: the container's output ended");
                    break;
                };
                if ch == CH_HELLO {
                    stdin_once = data.first() == Some(&1);
                    continue;
                }
                if ch == CH_CLOSE_STDIN {
                    tracing::debug!(instance, stdin_once, "attach: the driver let go of stdin");
                    if stdin_once {
                        let _ = close_stdin().await;
                    }
                    continue;
                }
                let wanted = (ch == STDOUT && req.stdout) || (ch == STDERR && req.stderr);
                if wanted && client.out.send((ch, bytes::Bytes::from(data))).await.is_err() {
                    break;
                }
            }
            msg = client.input.recv(), if writable => {
                let frame = match msg {
                    Some(Input::Stdin(b)) if req.stdin => Some((CH_STDIN, b.to_vec())),
                    // The driver answers once the shim has read all input;
                    // then containerd closes the process's stdin.
                    Some(Input::CloseStdin) if req.stdin => Some((CH_CLOSE_STDIN, Vec::new())),
                    Some(Input::Resize { width, height }) => {
                        if req.tty && width > 0 && height > 0 {
                            let _ = shared
                                .runtime
                                .exec_resize(instance, "", width as u32, height as u32)
                                .await;
                        }
                        None
                    }
                    Some(_) => None,
                    // The client went away; the container goes on.
                    None => {
                        tracing::debug!(instance, "attach: the client went away");
                        if req.stdin && stdin_once {
                            close_after_ack(&mut frames, &mut wr).await;
                            let _ = close_stdin().await;
                        }
                        break;
                    }
                };
                if let Some((ch, data)) = frame {
                    let mut buf = Vec::with_capacity(data.len() + 5);
                    let _ = write_frame(&mut buf, ch, &data);
                    if wr.write_all(&buf).await.is_err() {
                        writable = false;
                    }
                }
            }
        }
    }
    reader.abort();
    let _ = wr.shutdown().await;
    Ok(0)
}

/// The client left with stdin once-only: asks the driver to let go of
/// stdin and waits (at most 3 s) for its answer that the shim has read it.
async fn close_after_ack(
    frames: &mut tokio::sync::mpsc::Receiver<(u8, Vec<u8>)>,
    wr: &mut tokio::net::unix::OwnedWriteHalf,
) {
    let mut buf = Vec::new();
    let _ = write_frame(&mut buf, CH_CLOSE_STDIN, &[]);
    if wr.write_all(&buf).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        while let Some((ch, _)) = frames.recv().await {
            if ch == CH_CLOSE_STDIN {
                break;
            }
        }
    })
    .await;
}

async fn read_frame_async(r: &mut tokio::net::unix::OwnedReadHalf) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return None;
    }
    let mut data = vec![0; len];
    r.read_exact(&mut data).await.ok()?;
    Some((head[0], data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_are_bounded() {
        let mut buf = Vec::new();
        write_frame(&mut buf, STDOUT, b"hello").unwrap();
        write_frame(&mut buf, CH_CLOSE_STDIN, b"").unwrap();
        write_frame(&mut buf, STDERR, &vec![7u8; MAX_FRAME + 10]).unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((STDOUT, b"hello".to_vec()))
        );
        assert_eq!(read_frame(&mut r).unwrap(), Some((CH_CLOSE_STDIN, vec![])));
        assert_eq!(read_frame(&mut r).unwrap().unwrap().1.len(), MAX_FRAME);
        assert_eq!(read_frame(&mut r).unwrap().unwrap().1.len(), 10);
        assert_eq!(read_frame(&mut r).unwrap(), None);
        let mut big = vec![STDOUT];
        big.extend_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert!(read_frame(&mut &big[..]).is_err());
    }

    #[test]
    fn the_hub_fans_out_output_and_keeps_stdin_until_the_first_client_goes() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path(), "container-1");
        std::fs::create_dir_all(p.socket.parent().unwrap()).unwrap();
        let c = std::ffi::CString::new(p.stdin.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // The shim's end of the FIFO.
        let mut shim = File::options()
            .read(true)
            .write(true)
            .open(&p.stdin)
            .unwrap();
        let hub = Hub::start(&p.socket, Some(&p.stdin), true).unwrap();
        let mut a = UnixStream::connect(&p.socket).unwrap();
        let mut b = UnixStream::connect(&p.socket).unwrap();
        write_frame(&mut a, CH_HELLO, &[1]).unwrap();
        write_frame(&mut a, CH_STDIN, b"typed\n").unwrap();
        let mut got = [0u8; 6];
        shim.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"typed\n");
        // Both clients are registered once the hub has admitted them.
        for _ in 0..100 {
            if hub.clients.lock().unwrap().len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        hub.broadcast(STDOUT, b"out");
        hub.broadcast(STDERR, b"err");
        for s in [&mut a, &mut b] {
            assert_eq!(read_frame(s).unwrap(), Some((CH_HELLO, vec![1])));
            assert_eq!(read_frame(s).unwrap(), Some((STDOUT, b"out".to_vec())));
            assert_eq!(read_frame(s).unwrap(), Some((STDERR, b"err".to_vec())));
        }
        // stdinOnce: the client closes stdin; once the shim has read
        // everything the driver lets go of the FIFO and answers.
        write_frame(&mut a, CH_STDIN, b"last").unwrap();
        write_frame(&mut a, CH_CLOSE_STDIN, b"").unwrap();
        let mut last = [0u8; 4];
        shim.read_exact(&mut last).unwrap();
        assert_eq!(&last, b"last");
        assert_eq!(read_frame(&mut a).unwrap(), Some((CH_CLOSE_STDIN, vec![])));
        drop(a);
        for _ in 0..100 {
            if hub.stdin.lock().unwrap().is_none() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(hub.stdin.lock().unwrap().is_none());
        // The container's last words, then its end: close returns only
        // once they are written (the driver exits right after, and its
        // threads with it), and the remaining client reads them, then the
        // end.
        for i in 0..50u8 {
            hub.broadcast(STDOUT, &[i; 1000]);
        }
        hub.close();
        assert_eq!(hub.writers(), 0);
        for i in 0..50u8 {
            assert_eq!(read_frame(&mut b).unwrap(), Some((STDOUT, vec![i; 1000])));
        }
        assert_eq!(read_frame(&mut b).unwrap(), None);
        assert!(!p.socket.exists());
        // Nobody joins after the end.
        assert!(UnixStream::connect(&p.socket).is_err());
    }
}
