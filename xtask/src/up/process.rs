//! The processes `up` starts: spawned in the background (inside a node's
//! namespaces where it has its own) with a pid file and a log, found again
//! by pid, stopped by pid, waited for.

use std::{
    io::Write as _,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{Layout, NodeDirs};

/// Makes `cmd`'s child enter the namespaces (open nsfs files with their
/// `CLONE_NEW*` type, which must stay open until the child is spawned), in
/// order, before it execs.
pub(crate) fn in_namespaces(cmd: &mut Command, namespaces: &[(&std::fs::File, libc::c_int)]) {
    use std::os::fd::AsRawFd as _;
    let fds: Vec<(i32, libc::c_int)> = namespaces
        .iter()
        .map(|(f, kind)| (f.as_raw_fd(), *kind))
        .collect();
    // SAFETY: setns(2) is async-signal-safe and touches only the child (a
    // forked child is single-threaded and shares no filesystem attributes,
    // as entering a mount namespace requires); the caller keeps the files
    // (and so the fds) open until the child has been spawned. The vector is
    // moved into the closure before the fork, so nothing is allocated in it.
    unsafe {
        cmd.pre_exec(move || {
            for (fd, kind) in &fds {
                if libc::setns(*fd, *kind) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The namespace files of a node that has its own (mount first: entering
/// it needs the paths of this machine's mount namespace to open nothing
/// more), opened.
pub(crate) fn node_namespaces(
    node: Option<&NodeDirs>,
) -> anyhow::Result<Vec<(std::fs::File, libc::c_int)>> {
    let Some(n) = node else {
        return Ok(Vec::new());
    };
    [
        (n.mntns.as_deref(), libc::CLONE_NEWNS),
        (n.netns.as_deref(), libc::CLONE_NEWNET),
    ]
    .into_iter()
    .filter_map(|(p, kind)| p.map(|p| (p, kind)))
    .map(|(p, kind)| {
        std::fs::File::open(p)
            .with_context(|| format!("opening {}", p.display()))
            .map(|f| (f, kind))
    })
    .collect()
}

/// Runs `cmd` to its end inside the node's namespaces.
pub(crate) fn output_in(
    node: &NodeDirs,
    cmd: &mut Command,
) -> anyhow::Result<std::process::Output> {
    let files = node_namespaces(Some(node))?;
    let refs: Vec<_> = files.iter().map(|(f, k)| (f, *k)).collect();
    in_namespaces(cmd, &refs);
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))
}

/// Starts a background process in its own process group (in network
/// namespaces of `node` if it has its own), output to its log, pid in its pid file.
pub(crate) fn spawn(
    l: &Layout,
    name: &str,
    cmd: &mut Command,
    node: Option<&NodeDirs>,
) -> anyhow::Result<()> {
    let files = node_namespaces(node)?;
    let refs: Vec<_> = files.iter().map(|(f, k)| (f, *k)).collect();
    in_namespaces(cmd, &refs);
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(l.log(name))
        .with_context(|| format!("opening {}", l.log(name).display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name}: {cmd:?}"))?;
    std::fs::File::create(l.pid_file(name))?.write_all(child.id().to_string().as_bytes())?;
    Ok(())
}

fn pid_of(l: &Layout, name: &str) -> Option<i32> {
    rudder_test_harness::live_pid(&l.pid_file(name))
}

pub(crate) fn running(l: &Layout, name: &str) -> bool {
    pid_of(l, name).is_some()
}

/// SIGTERM, then SIGKILL after `grace`. Returns whether it was running.
pub(crate) fn stop(l: &Layout, name: &str, grace: Duration) -> bool {
    let Some(pid) = pid_of(l, name) else {
        let _ = std::fs::remove_file(l.pid_file(name));
        return false;
    };
    // SAFETY: kill(2) on a pid read from our own pid file.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while pid_of(l, name).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if pid_of(l, name).is_some() {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_file(l.pid_file(name));
    true
}

pub(crate) fn wait(
    what: &str,
    secs: u64,
    l: &Layout,
    process: &str,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if ready() {
            return Ok(());
        }
        if !running(l, process) {
            bail!(
                "waiting for {what}: {process} exited; the end of {}:\n{}",
                l.log(process).display(),
                tail(&l.log(process), 30)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "waiting for {what}: not within {secs} s; the end of {}:\n{}",
                l.log(process).display(),
                tail(&l.log(process), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
