//! Workspace binaries, processes started inside a test's namespaces (killed
//! by pid when their guard drops), and scratch directories.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output},
};

use crate::{NetNs, unique_name};

/// A binary of this workspace (`target/<profile>/<name>`), built by `cargo
/// build --bins` (`cargo xtask test` does that before the tests).
#[track_caller]
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // Tests: target/<profile>/deps/<test>-<hash>; benchmarks and other
    // binaries: target/<profile>/<name>.
    let mut profile_dir = exe.parent().expect("an executable has a directory");
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().expect("deps has a parent");
    }
    let bin = profile_dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace's binaries first (`cargo build --bins`; `cargo xtask \
         test` does)",
        bin.display()
    );
    bin
}

impl NetNs {
    /// Starts `cmd` inside this namespace (from a thread that entered it,
    /// so the child inherits it; the mount namespace stays the caller's).
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<Child> {
        self.run(|| cmd.spawn())
    }

    /// Runs `cmd` inside this namespace to completion.
    pub fn output(&self, cmd: &mut Command) -> std::io::Result<Output> {
        self.run(|| cmd.output())
    }
}

/// A child process killed (SIGKILL, by pid) and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// Asks the process to stop (SIGTERM) and waits up to `grace` for it;
    /// whether it ended by itself (else it is killed when dropped).
    pub fn terminate(&mut self, grace: std::time::Duration) -> bool {
        let Ok(pid) = i32::try_from(self.0.id()) else {
            return false;
        };
        // SAFETY: kill has no memory-safety preconditions; `pid` is our
        // child, not yet reaped (the Child owns it), so it is not reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if !self.running() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory (`$TMPDIR/rdt-<pid>-<n>`), removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    #[track_caller]
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(unique_name());
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // What a test left mounted inside (a killed kubelet's tmpfs
        // volumes, containerd's snapshots) goes first.
        unmount_under(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The pid a pid file names, if that process lives and is not a zombie (a
/// recycled pid or a dead process is not the one the file meant). Shared by
/// `cargo xtask up` and the smoke checks.
pub fn live_pid(pid_file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(") ")?.1.chars().next()?;
    (state != 'Z').then_some(pid)
}

/// Lazily unmounts everything mounted below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut targets: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        // /proc/self/mounts escapes spaces as \040.
        .map(|t| t.replace("\\040", " "))
        .filter(|t| Path::new(t).starts_with(dir) && Path::new(t) != dir)
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        if let Ok(c) = std::ffi::CString::new(t) {
            // SAFETY: a valid NUL-terminated path; failure (gone) is fine.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
