//! `shareProcessNamespace`: one PID namespace for all of a pod's
//! containers.
//!
//! A PID namespace lives only as long as its first process (its PID 1),
//! so a pod whose containers share one needs a process of its own to hold
//! it, as the pause container holds it under containerd's CRI. The kubelet
//! starts its own binary with [`ARG`], in a session of its own (so it
//! outlives a kubelet restart, as the log drivers do). That process
//! unshares a new PID namespace, forks the namespace's PID 1, prints the
//! child's PID (as the kubelet sees it) and exits. The child reaps the
//! orphans the containers leave behind, as pause does, and ends on
//! SIGTERM or SIGINT.
//!
//! The kubelet bind-mounts the namespace beside the pod's other ones and
//! records the PID ([`super::sandbox`]); it signals that PID only after
//! checking that it is still the namespace's PID 1 (the same nsfs inode),
//! never by name, so a reused PID is never hit.

use std::{io::Write as _, os::unix::fs::MetadataExt as _, path::Path};

/// The only argument of a pause process.
pub const ARG: &str = "--rudder-pod-pause";

/// Runs the pause process if this is what `argv` (without the program
/// name) asks for; never returns then.
pub fn run_if_asked(argv: &[String]) {
    if argv.len() == 1 && argv[0] == ARG {
        let code = match start() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("pause: {e}");
                1
            }
        };
        std::process::exit(code);
    }
}

/// Unshares a PID namespace and forks its PID 1. Called before any
/// thread is started (first thing in `main`), so `fork` is sound.
fn start() -> std::io::Result<()> {
    // SAFETY: unshare takes flags only; the new namespace is for the
    // children of this (single-threaded) process.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: this process has one thread; the child runs only
    // async-signal-safe calls before it loops in `pid1`.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => pid1(),
        child => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{child}")?;
            out.flush()
        }
    }
}

/// The namespace's PID 1: stdio to /dev/null (the kubelet reads the
/// parent's stdout to its end), reaps children, ends on SIGTERM/SIGINT.
fn pid1() -> ! {
    // SAFETY: plain syscalls on constant, NUL-terminated arguments and
    // on a signal set this function owns.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
        libc::chdir(c"/".as_ptr());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT] {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        loop {
            let mut sig: libc::c_int = 0;
            if libc::sigwait(&set, &mut sig) != 0 {
                continue;
            }
            match sig {
                libc::SIGCHLD => {
                    while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
                }
                _ => libc::_exit(0),
            }
        }
    }
}

/// Makes `cmd` start its process in a session of its own, so that it
/// outlives the kubelet (a pause process, a log driver the kubelet starts).
pub(crate) fn in_own_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the
    // parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

/// Whether `pid` is still the PID 1 of the namespace mounted at `ns`
/// (the same nsfs inode): what makes signalling it safe.
pub fn holds(pid: i32, ns: &Path) -> bool {
    let (Ok(theirs), Ok(ours)) = (
        std::fs::metadata(format!("/proc/{pid}/ns/pid")),
        std::fs::metadata(ns),
    ) else {
        return false;
    };
    // A bind mount that was never made is a plain empty file, never an
    // nsfs inode.
    pid > 0 && theirs.ino() == ours.ino() && theirs.dev() == ours.dev()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_its_own_argument_starts_it() {
        // Returns (does not exit) for anything else.
        run_if_asked(&[]);
        run_if_asked(&["server".into()]);
        run_if_asked(&[ARG.into(), "x".into()]);
    }

    #[test]
    fn a_plain_file_is_never_taken_for_a_namespace() {
        let dir = std::env::temp_dir().join(format!("rudder-pause-{}", std::process::id()));
        std::fs::write(&dir, b"").unwrap();
        assert!(!holds(std::process::id() as i32, &dir));
        assert!(holds(
            std::process::id() as i32,
            Path::new("/proc/self/ns/pid")
        ));
        assert!(!holds(0, Path::new("/proc/self/ns/pid")));
        let _ = std::fs::remove_file(&dir);
    }
}
