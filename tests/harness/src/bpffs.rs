//! BPF pin directories of a test's own under `/sys/fs/bpf/rudder-test/`.

use std::path::{Path, PathBuf};

use crate::{run, unique_name};

const BPFFS: &str = "/sys/fs/bpf";
const ROOT: &str = "/sys/fs/bpf/rudder-test";

/// A directory on the BPF filesystem for a test's pins, removed (with its
/// pins) on drop. Mounts bpffs at `/sys/fs/bpf` if nothing is mounted there.
#[derive(Debug)]
pub struct BpfPinDir {
    path: PathBuf,
}

impl BpfPinDir {
    #[track_caller]
    pub fn new() -> Self {
        ensure_bpffs();
        let path = Path::new(ROOT).join(unique_name());
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for BpfPinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for BpfPinDir {
    fn drop(&mut self) {
        // Unlinking a pin releases the kernel object once nothing else holds it.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Mounts the BPF filesystem at /sys/fs/bpf unless it is already there.
#[track_caller]
pub fn ensure_bpffs() {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next(), f.next(), f.next());
        dir == Some(BPFFS) && fstype == Some("bpf")
    });
    if !mounted {
        run("mount", &["-t", "bpf", "bpf", BPFFS]);
    }
}

pub(crate) fn sweep(stale: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(ROOT) else {
        return;
    };
    for e in entries.flatten() {
        if stale(&e.file_name().to_string_lossy()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
