//! Container logs in the CRI format (`<RFC 3339 nano> <stream> <P|F> <line>`)
//! under `/var/log/pods/<ns>_<pod>_<uid>/<container>/<restart>.log`.
//!
//! The writer is a containerd *logging binary*: the runc shim starts
//! `rudder` with the container's stdout and stderr pipes as fds 3 and 4 and
//! a readiness pipe as fd 5 (`binary:///path/rudder?rudder-log-driver=1&path=…`
//! as the task's stdio URI). It lives as long as the container's output,
//! beside the shim, so restarting the agent loses no log line.
//!
//! As the kubelet does, each started container also gets a link
//! `/var/log/containers/<pod>_<namespace>_<container>-<id>.log` to its
//! log, the file name log shippers (Fluent Bit, Vector, Promtail) read a
//! container's identity from; links whose log is gone are removed.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    os::fd::FromRawFd as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use super::exec::{STDERR, STDOUT};

/// Lines longer than this are split into partial (`P`) records.
const MAX_LINE: usize = 16 * 1024;

/// Kubelet defaults: rotate at 10 MiB, keep 5 files.
pub const DEFAULT_MAX_SIZE: u64 = 10 << 20;
pub const DEFAULT_MAX_FILES: usize = 5;

/// The directory of a pod's logs.
pub fn pod_log_dir(root: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    root.join(format!("{namespace}_{name}_{uid}"))
}

/// The log file of one container instance.
pub fn container_log_path(pod_dir: &Path, container: &str, attempt: u32) -> PathBuf {
    pod_dir.join(container).join(format!("{attempt}.log"))
}

/// The directory of the per-container links: `containers` beside the pod
/// log root (`/var/log/containers` for `/var/log/pods`).
pub fn link_dir(pod_log_root: &Path) -> PathBuf {
    pod_log_root
        .parent()
        .unwrap_or(pod_log_root)
        .join("containers")
}

/// `<pod>_<namespace>_<container>-<id>.log`, the kubelet's link name.
pub fn link_name(pod: &str, namespace: &str, container: &str, id: &str) -> String {
    format!("{pod}_{namespace}_{container}-{id}.log")
}

/// Links `log` from the link directory under the kubelet's name (made
/// anew if it exists).
pub fn link_container_log(pod_log_root: &Path, name: &str, log: &Path) -> std::io::Result<()> {
    let dir = link_dir(pod_log_root);
    std::fs::create_dir_all(&dir)?;
    let link = dir.join(name);
    match std::fs::remove_file(&link) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::os::unix::fs::symlink(log, link)
}

/// Removes the links whose log no longer exists (the pod was deleted).
/// Only symbolic links directly in the link directory are looked at.
pub fn remove_dangling_links(pod_log_root: &Path) {
    let dir = link_dir(pod_log_root);
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = e.path();
        let is_link = e.file_type().is_ok_and(|t| t.is_symlink());
        let dangling =
            std::fs::metadata(&path).is_err_and(|err| err.kind() == std::io::ErrorKind::NotFound);
        if is_link && dangling {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// What the log driver is started with (the task's stdio URI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverArgs {
    pub path: PathBuf,
    pub max_size: u64,
    pub max_files: usize,
    /// The attach socket to serve ([`super::attach`]).
    pub attach: Option<PathBuf>,
    /// The container's stdin FIFO, held open for its life.
    pub stdin: Option<PathBuf>,
    /// Close stdin when the first client that attached it leaves.
    pub stdin_once: bool,
    /// The container's stdout and stderr FIFOs, when the kubelet started
    /// the driver itself (a container with stdin and no terminal:
    /// containerd's logging binaries get no stdin), rather than the shim
    /// with pipes on fds 3 and 4.
    pub fifos: Option<(PathBuf, PathBuf)>,
}

impl DriverArgs {
    /// The driver's arguments, as the shim would pass the URI's query.
    pub fn argv(&self) -> Vec<String> {
        let mut v = vec![
            "rudder-log-driver".to_string(),
            "1".into(),
            "path".into(),
            self.path.display().to_string(),
            "max-size".into(),
            self.max_size.to_string(),
            "max-files".into(),
            self.max_files.to_string(),
        ];
        let mut put = |k: &str, p: &Option<PathBuf>| {
            if let Some(p) = p {
                v.extend([k.to_string(), p.display().to_string()]);
            }
        };
        put("attach", &self.attach);
        put("stdin", &self.stdin);
        put("stdout-fifo", &self.fifos.as_ref().map(|f| f.0.clone()));
        put("stderr-fifo", &self.fifos.as_ref().map(|f| f.1.clone()));
        if self.stdin_once {
            v.extend(["stdin-once".to_string(), "1".to_string()]);
        }
        v
    }
}

/// The task stdio URI that makes the shim run `binary` as the log driver.
pub fn driver_uri(binary: &Path, a: &DriverArgs) -> String {
    let mut uri = format!(
        "binary://{}?rudder-log-driver=1&path={}&max-size={}&max-files={}",
        binary.display(),
        a.path.display(),
        a.max_size,
        a.max_files
    );
    if let Some(s) = &a.attach {
        uri.push_str(&format!("&attach={}", s.display()));
    }
    if let Some(s) = &a.stdin {
        uri.push_str(&format!(
            "&stdin={}&stdin-once={}",
            s.display(),
            u8::from(a.stdin_once)
        ));
    }
    uri
}

/// If this process was started by a shim as the log driver, the driver's
/// settings (the shim passes each query pair as two arguments, in any order).
pub fn driver_args(args: &[String]) -> Option<DriverArgs> {
    std::env::var_os("CONTAINER_ID")?;
    if !args.len().is_multiple_of(2) {
        return None;
    }
    let pairs: Vec<(&str, &str)> = args
        .chunks(2)
        .map(|c| (c[0].as_str(), c[1].as_str()))
        .collect();
    pairs.iter().find(|(k, _)| *k == "rudder-log-driver")?;
    let get = |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    Some(DriverArgs {
        path: PathBuf::from(get("path")?),
        max_size: get("max-size")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_SIZE),
        max_files: get("max-files")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_FILES),
        attach: get("attach").map(PathBuf::from),
        stdin: get("stdin").map(PathBuf::from),
        stdin_once: get("stdin-once") == Some("1"),
        fifos: get("stdout-fifo")
            .zip(get("stderr-fifo"))
            .map(|(o, e)| (PathBuf::from(o), PathBuf::from(e))),
    })
}

/// One CRI log record.
pub fn format_record(now: jiff::Timestamp, stream: &str, partial: bool, line: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{} {stream} {} ",
        now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        if partial { 'P' } else { 'F' }
    )
    .into_bytes();
    out.extend_from_slice(line);
    out.push(b'\n');
    out
}

struct Sink {
    path: PathBuf,
    file: File,
    written: u64,
    max_size: u64,
    max_files: usize,
}

impl Sink {
    fn write(&mut self, record: &[u8]) {
        if self.written + record.len() as u64 > self.max_size && self.written > 0 {
            self.rotate();
        }
        if self.file.write_all(record).is_ok() {
            self.written += record.len() as u64;
        }
    }

    /// `0.log` → `0.log.<timestamp>`, keeping `max_files - 1` rotated files.
    fn rotate(&mut self) {
        let stamp = jiff::Timestamp::now()
            .strftime("%Y%m%d-%H%M%S%.f")
            .to_string();
        let rotated = PathBuf::from(format!("{}.{stamp}", self.path.display()));
        let _ = std::fs::rename(&self.path, &rotated);
        let prefix = format!(
            "{}.",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        if let Some(dir) = self.path.parent() {
            let mut old: Vec<PathBuf> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                })
                .collect();
            old.sort();
            while old.len() > self.max_files.saturating_sub(1) {
                let _ = std::fs::remove_file(old.remove(0));
            }
        }
        if let Ok(f) = File::options().create(true).append(true).open(&self.path) {
            self.file = f;
            self.written = 0;
        }
    }
}

/// Runs the log driver: copies fds 3 (stdout) and 4 (stderr) into the CRI
/// log file until both close, and to the clients attached through the
/// attach socket, if it serves one.
pub fn run_driver(a: &DriverArgs) -> std::io::Result<()> {
    let path = &a.path;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = File::options().create(true).append(true).open(path)?;
    let written = file.metadata().map(|m| m.len()).unwrap_or(0);
    let sink = Arc::new(Mutex::new(Sink {
        path: path.to_path_buf(),
        file,
        written,
        max_size: a.max_size.max(1024),
        max_files: a.max_files.max(1),
    }));
    let (stdout, stderr) = match &a.fifos {
        // Read-only and non-blocking: poll(2) reports a hang-up only once
        // a writer (the shim) has come and gone, never before it opens.
        Some((o, e)) => {
            let open = |p: &Path| {
                use std::os::unix::fs::OpenOptionsExt as _;
                File::options()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(p)
            };
            (open(o)?, open(e)?)
        }
        None => {
            // SAFETY: the shim hands us these descriptors (stdout, stderr,
            // ready); nothing else in this process owns them.
            let (stdout, stderr, ready) = unsafe {
                (
                    File::from_raw_fd(3),
                    File::from_raw_fd(4),
                    File::from_raw_fd(5),
                )
            };
            // Closing the readiness pipe tells the shim the container may
            // start.
            drop(ready);
            (stdout, stderr)
        }
    };
    // A container that cannot be attached to still logs. The kubelet that
    // started this driver waits for the socket.
    let hub = a.attach.as_deref().and_then(|socket| {
        super::attach::Hub::start(socket, a.stdin.as_deref(), a.stdin_once)
            .map_err(|e| eprintln!("rudder log driver: attach socket {}: {e}", socket.display()))
            .ok()
    });
    let threads: Vec<_> = [(stdout, "stdout", STDOUT), (stderr, "stderr", STDERR)]
        .into_iter()
        .map(|(f, stream, ch)| {
            let sink = Arc::clone(&sink);
            let hub = hub.clone();
            std::thread::spawn(move || {
                copy(f, stream, &sink, |chunk| {
                    if let Some(h) = &hub {
                        h.broadcast(ch, chunk);
                    }
                });
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    if let Some(h) = hub {
        h.close();
    }
    for p in a
        .stdin
        .iter()
        .chain(a.fifos.iter().flat_map(|(o, e)| [o, e]))
    {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// Reads what is there, waiting in poll(2) first: on a FIFO's read end a
/// read with no writer yet would say "end", where poll waits for the
/// writer, its data, and its hang-up; 0 at the end.
fn read_polled(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd as _;
    loop {
        let mut p = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        if unsafe { libc::poll(&mut p, 1, -1) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if p.revents & libc::POLLIN != 0 {
            match f.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
        if p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return Ok(0);
        }
    }
}

/// Splits output into CRI log lines: at each newline, and into partial
/// records of at most `MAX_LINE` bytes.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    /// Feeds `data`, calling `emit(partial, line)` for each record done.
    fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(bool, &[u8])) {
        while !data.is_empty() {
            let room = MAX_LINE - self.buf.len();
            match data.iter().take(room).position(|&b| b == b'\n') {
                Some(i) => {
                    self.buf.extend_from_slice(&data[..i]);
                    emit(false, &self.buf);
                    self.buf.clear();
                    data = &data[i + 1..];
                }
                None => {
                    let n = data.len().min(room);
                    self.buf.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.buf.len() >= MAX_LINE {
                        emit(true, &self.buf);
                        self.buf.clear();
                    }
                }
            }
        }
    }

    /// The end of the stream: what is left is a last (full) record.
    fn finish(&mut self, emit: &mut impl FnMut(bool, &[u8])) {
        if !self.buf.is_empty() {
            emit(false, &self.buf);
            self.buf.clear();
        }
    }
}

/// Copies one stream into the log, handing each chunk read to `tee`
/// first (the attached clients see output as it comes, lines or not).
fn copy(mut f: File, stream: &str, sink: &Mutex<Sink>, mut tee: impl FnMut(&[u8])) {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut lines = Lines::default();
    let mut emit = |partial: bool, line: &[u8]| {
        let record = format_record(jiff::Timestamp::now(), stream, partial, line);
        if let Ok(mut s) = sink.lock() {
            s.write(&record);
        }
    };
    loop {
        let n = match read_polled(&mut f, &mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        tee(&chunk[..n]);
        lines.push(&chunk[..n], &mut emit);
    }
    lines.finish(&mut emit);
}

/// CRI log records back as the container's output (`kubectl logs`):
/// partial records joined, optionally with timestamps, only records since
/// `since`, only the last `tail` lines.
pub fn render(
    records: &[u8],
    timestamps: bool,
    since: Option<jiff::Timestamp>,
    tail: Option<usize>,
) -> Vec<u8> {
    let text = String::from_utf8_lossy(records);
    let mut lines: Vec<String> = vec![];
    let mut pending = String::new();
    for rec in text.lines() {
        let mut parts = rec.splitn(4, ' ');
        let (Some(ts), Some(_stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if let Some(since) = since
            && ts.parse::<jiff::Timestamp>().is_ok_and(|t| t < since)
        {
            continue;
        }
        let msg = parts.next().unwrap_or_default();
        if pending.is_empty() && timestamps {
            pending.push_str(ts);
            pending.push(' ');
        }
        pending.push_str(msg);
        if tag == "F" {
            lines.push(std::mem::take(&mut pending));
        }
    }
    if let Some(n) = tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn container_links_follow_their_logs() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("pods");
        let log = container_log_path(&pod_log_dir(&root, "ns", "web", "u1"), "c", 0);
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "x").unwrap();
        let name = link_name("web", "ns", "c", "abc");
        assert_eq!(name, "web_ns_c-abc.log");
        link_container_log(&root, &name, &log).unwrap();
        link_container_log(&root, &name, &log).unwrap();
        let link = t.path().join("containers").join(&name);
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "x");
        // A file that is not a link stays, whatever its state.
        std::fs::write(t.path().join("containers/keep.log"), "k").unwrap();
        remove_dangling_links(&root);
        assert!(link.exists());
        std::fs::remove_dir_all(root.join("ns_web_u1")).unwrap();
        remove_dangling_links(&root);
        assert!(std::fs::symlink_metadata(&link).is_err());
        assert!(t.path().join("containers/keep.log").exists());
    }

    use super::*;

    #[test]
    fn records_and_reading_back() {
        let t: jiff::Timestamp = "2026-12-01T10:00:00.123456789Z".parse().unwrap();
        let r = format_record(t, "stdout", false, b"hello");
        assert_eq!(r, b"2026-12-01T10:00:00.123456789Z stdout F hello\n");
        let dir = std::env::temp_dir().join(format!("rudder-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("0.log");
        let mut text = String::from_utf8(r).unwrap();
        text.push_str("2026-12-01T10:00:01.000000000Z stderr P part-\n");
        text.push_str("2026-12-01T10:00:01.000000001Z stderr F two\n");
        text.push_str("2026-12-01T10:00:02.000000000Z stdout F third\n");
        std::fs::write(&p, &text).unwrap();
        let read =
            |ts, since, tail| String::from_utf8(render(text.as_bytes(), ts, since, tail)).unwrap();
        assert_eq!(read(false, None, None), "hello\npart-two\nthird\n");
        assert_eq!(read(false, None, Some(1)), "third\n");
        assert!(read(true, None, Some(1)).starts_with("2026-12-01T10:00:02.000000000Z third"));
        let since: jiff::Timestamp = "2026-12-01T10:00:01.5Z".parse().unwrap();
        assert_eq!(read(false, Some(since), None), "third\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn driver_arguments_in_any_order() {
        // CONTAINER_ID is what tells a driver run from a user's.
        // SAFETY: tests in this module do not read the environment concurrently.
        unsafe { std::env::set_var("CONTAINER_ID", "abc") };
        let a: Vec<String> = [
            "path",
            "/var/log/pods/x/0.log",
            "max-files",
            "3",
            "rudder-log-driver",
            "1",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        let expected = DriverArgs {
            path: PathBuf::from("/var/log/pods/x/0.log"),
            max_size: DEFAULT_MAX_SIZE,
            max_files: 3,
            attach: None,
            stdin: None,
            stdin_once: false,
            fifos: None,
        };
        assert_eq!(driver_args(&a), Some(expected.clone()));
        assert_eq!(driver_args(&a[..5]), None);
        let mut with_attach = a.clone();
        with_attach.extend(
            [
                "stdin-once",
                "1",
                "attach",
                "/run/a.sock",
                "stdin",
                "/run/a.stdin",
            ]
            .map(String::from),
        );
        assert_eq!(
            driver_args(&with_attach),
            Some(DriverArgs {
                attach: Some("/run/a.sock".into()),
                stdin: Some("/run/a.stdin".into()),
                stdin_once: true,
                ..expected
            })
        );
        let mut d = DriverArgs {
            path: "/l/0.log".into(),
            max_size: 100,
            max_files: 2,
            attach: None,
            stdin: None,
            stdin_once: false,
            fifos: None,
        };
        assert_eq!(
            driver_uri(Path::new("/usr/bin/rudder"), &d),
            "binary:///usr/bin/rudder?rudder-log-driver=1&path=/l/0.log&max-size=100&max-files=2"
        );
        d.attach = Some("/r/x.sock".into());
        d.stdin = Some("/r/x.stdin".into());
        assert_eq!(
            driver_uri(Path::new("/usr/bin/rudder"), &d),
            "binary:///usr/bin/rudder?rudder-log-driver=1&path=/l/0.log&max-size=100&max-files=2&attach=/r/x.sock&stdin=/r/x.stdin&stdin-once=0"
        );
    }

    #[test]
    fn output_splits_into_records_at_newlines_and_at_the_line_limit() {
        let mut lines = Lines::default();
        let mut got: Vec<(bool, Vec<u8>)> = Vec::new();
        let mut emit = |p: bool, l: &[u8]| got.push((p, l.to_vec()));
        lines.push(b"a\n\nprompt$ ", &mut emit);
        lines.push(b"typed\n", &mut emit);
        lines.push(&vec![b'x'; MAX_LINE + 3], &mut emit);
        lines.finish(&mut emit);
        assert_eq!(
            got,
            [
                (false, b"a".to_vec()),
                (false, vec![]),
                (false, b"prompt$ typed".to_vec()),
                (true, vec![b'x'; MAX_LINE]),
                (false, b"xxx".to_vec()),
            ]
        );
    }
}
