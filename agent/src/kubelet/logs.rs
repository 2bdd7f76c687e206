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
    io::{BufRead as _, BufReader, Write as _},
    os::fd::FromRawFd as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

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

/// The task stdio URI that makes the shim run `binary` as the log driver.
pub fn driver_uri(binary: &Path, log_path: &Path, max_size: u64, max_files: usize) -> String {
    format!(
        "binary://{}?rudder-log-driver=1&path={}&max-size={max_size}&max-files={max_files}",
        binary.display(),
        log_path.display()
    )
}

/// If this process was started by a shim as the log driver, the driver's
/// settings (the shim passes each query pair as two arguments, in any order).
pub fn driver_args(args: &[String]) -> Option<(PathBuf, u64, usize)> {
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
    let path = PathBuf::from(get("path")?);
    let max_size = get("max-size")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MAX_SIZE);
    let max_files = get("max-files")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MAX_FILES);
    Some((path, max_size, max_files))
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
/// log file until both close.
pub fn run_driver(path: &Path, max_size: u64, max_files: usize) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = File::options().create(true).append(true).open(path)?;
    let written = file.metadata().map(|m| m.len()).unwrap_or(0);
    let sink = Arc::new(Mutex::new(Sink {
        path: path.to_path_buf(),
        file,
        written,
        max_size: max_size.max(1024),
        max_files: max_files.max(1),
    }));
    // SAFETY: the shim hands us these descriptors (stdout, stderr, ready);
    // nothing else in this process owns them.
    let (stdout, stderr, ready) = unsafe {
        (
            File::from_raw_fd(3),
            File::from_raw_fd(4),
            File::from_raw_fd(5),
        )
    };
    // Closing the readiness pipe tells the shim the container may start.
    drop(ready);
    let threads: Vec<_> = [(stdout, "stdout"), (stderr, "stderr")]
        .into_iter()
        .map(|(f, stream)| {
            let sink = Arc::clone(&sink);
            std::thread::spawn(move || copy(f, stream, &sink))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn copy(f: File, stream: &str, sink: &Mutex<Sink>) {
    let mut r = BufReader::with_capacity(64 * 1024, f);
    let mut buf = Vec::with_capacity(MAX_LINE);
    loop {
        buf.clear();
        // Read up to a newline, but never more than MAX_LINE bytes at once.
        let mut partial = false;
        loop {
            let Ok(available) = r.fill_buf() else {
                return;
            };
            if available.is_empty() {
                break;
            }
            let room = MAX_LINE - buf.len();
            match available.iter().take(room).position(|&b| b == b'\n') {
                Some(i) => {
                    buf.extend_from_slice(&available[..i]);
                    r.consume(i + 1);
                    break;
                }
                None => {
                    let n = available.len().min(room);
                    buf.extend_from_slice(&available[..n]);
                    r.consume(n);
                    if buf.len() >= MAX_LINE {
                        partial = true;
                        break;
                    }
                }
            }
        }
        if buf.is_empty() && !partial {
            // EOF (or an empty line: keep those).
            if r.fill_buf().is_ok_and(<[u8]>::is_empty) {
                return;
            }
        }
        let record = format_record(jiff::Timestamp::now(), stream, partial, &buf);
        if let Ok(mut s) = sink.lock() {
            s.write(&record);
        }
    }
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
        assert_eq!(
            driver_args(&a),
            Some((PathBuf::from("/var/log/pods/x/0.log"), DEFAULT_MAX_SIZE, 3))
        );
        assert_eq!(driver_args(&a[..5]), None);
        let uri = driver_uri(Path::new("/usr/bin/rudder"), Path::new("/l/0.log"), 100, 2);
        assert_eq!(
            uri,
            "binary:///usr/bin/rudder?rudder-log-driver=1&path=/l/0.log&max-size=100&max-files=2"
        );
    }
}
