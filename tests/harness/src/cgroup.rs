//! Cgroups of a test's own, on cgroup v1 (one directory per controller) or
//! v2 (one directory), removed on drop.

use std::path::{Path, PathBuf};

use crate::unique_name;

const ROOT: &str = "/sys/fs/cgroup";

/// A cgroup named `rdt-<pid>-<n>` in each mounted hierarchy of the given
/// controllers (v1) or in the unified hierarchy (v2).
#[derive(Debug)]
pub struct TestCgroup {
    name: String,
    dirs: Vec<PathBuf>,
}

impl TestCgroup {
    /// Creates the cgroup for `controllers` (e.g. `["memory", "cpu", "pids"]`).
    #[track_caller]
    pub fn new(controllers: &[&str]) -> Self {
        let name = unique_name();
        let root = Path::new(ROOT);
        let unified = root.join("cgroup.controllers").exists();
        let parents: Vec<PathBuf> = if unified {
            vec![root.to_path_buf()]
        } else {
            controllers
                .iter()
                .map(|c| root.join(c))
                .filter(|p| p.is_dir())
                .collect()
        };
        assert!(
            !parents.is_empty(),
            "no cgroup hierarchy for {controllers:?} under {ROOT}"
        );
        let dirs = parents.iter().map(|p| p.join(&name)).collect::<Vec<_>>();
        for d in &dirs {
            std::fs::create_dir(d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
        }
        Self { name, dirs }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cgroup's directories, one per hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Moves a process into the cgroup in every hierarchy.
    #[track_caller]
    pub fn add_pid(&self, pid: u32) {
        for d in &self.dirs {
            std::fs::write(d.join("cgroup.procs"), pid.to_string())
                .unwrap_or_else(|e| panic!("cannot move {pid} into {}: {e}", d.display()));
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            // Processes still inside are killed so that the directory can go.
            if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}
