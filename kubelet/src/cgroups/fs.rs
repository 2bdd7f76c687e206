//! The cgroupfs driver: pod and tier cgroups written straight into the
//! cgroup file system, as the kubelet's `cgroupManagerImpl` does through
//! libcontainer's fs managers.
//!
//! - **v2** (`/sys/fs/cgroup` is cgroup2 with its controllers): each
//!   ancestor's `cgroup.subtree_control` gets `+cpu +memory +pids` (those
//!   it offers), then the cgroup's `cpu.weight`, `cpu.max` and
//!   `memory.max`;
//! - **v1** (one hierarchy per controller, CentOS 7's and this project's
//!   CI host's layout, cgroup2 at most beside them without controllers):
//!   the cgroup made in the `cpu`, `memory` and `pids` hierarchies, then
//!   `cpu.shares`, `cpu.cfs_period_us`/`cpu.cfs_quota_us` and
//!   `memory.limit_in_bytes`. runc makes the container's own directories
//!   in every hierarchy it uses, these included, below the pod's.
//!
//! Paths come from [`super::Layout`], whose pod components are checked
//! (the uid's characters), never from a pod.

use std::path::{Path, PathBuf};

use super::{CPU_PERIOD_US, CgroupError, Resources, shares_to_weight};

/// The controllers pod cgroups are given settings in.
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];
const ROOT: &str = "/sys/fs/cgroup";

/// The node's cgroup mount: unified (v2) or per controller (v1).
#[derive(Debug, Clone)]
pub struct Hierarchy {
    root: PathBuf,
    pub unified: bool,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.display().to_string();
    move |source| CgroupError::Io { what, path, source }
}

impl Hierarchy {
    /// The node's, as runc decides it: v2 when the root offers controllers.
    pub fn detect() -> Self {
        Self::at(Path::new(ROOT))
    }

    /// The hierarchy mounted at `root` (tests use their own).
    pub fn at(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            unified: root.join("cgroup.controllers").exists(),
        }
    }

    /// The directories of `rel` to write settings in: one, or one per v1
    /// controller mounted.
    fn dirs(&self, rel: &str) -> Vec<(Option<&'static str>, PathBuf)> {
        let rel = rel.trim_start_matches('/');
        if self.unified {
            return vec![(None, self.root.join(rel))];
        }
        CONTROLLERS
            .iter()
            .map(|c| (Some(*c), self.root.join(c)))
            .filter(|(_, p)| p.is_dir())
            .map(|(c, p)| (c, p.join(rel)))
            .collect()
    }

    /// Whether `rel` exists (in the `memory` hierarchy on v1, where usage
    /// is read).
    pub fn exists(&self, rel: &str) -> bool {
        let rel = rel.trim_start_matches('/');
        if self.unified {
            self.root.join(rel).is_dir()
        } else {
            self.root.join("memory").join(rel).is_dir()
        }
    }

    /// Makes `rel` (and its ancestors) and gives it `res`.
    pub fn ensure(&self, rel: &str, res: &Resources) -> Result<(), CgroupError> {
        if self.unified {
            self.enable_controllers(rel)?;
        }
        for (controller, dir) in self.dirs(rel) {
            std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
            for (file, value) in settings(self.unified, controller, res) {
                let path = dir.join(file);
                std::fs::write(&path, value).map_err(io_err("writing", &path))?;
            }
        }
        Ok(())
    }

    /// v2: each ancestor of `rel` (the root first) hands its children the
    /// controllers the settings need, of those it has.
    fn enable_controllers(&self, rel: &str) -> Result<(), CgroupError> {
        let mut dir = self.root.clone();
        for component in rel.split('/').filter(|c| !c.is_empty()) {
            std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
            let offered =
                std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            let enabled =
                std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
            let want: Vec<String> = CONTROLLERS
                .iter()
                .filter(|c| offered.split_whitespace().any(|o| o == **c))
                .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
                .map(|c| format!("+{c}"))
                .collect();
            if !want.is_empty() {
                let path = dir.join("cgroup.subtree_control");
                std::fs::write(&path, want.join(" ")).map_err(io_err("writing", &path))?;
            }
            dir.push(component);
        }
        Ok(())
    }

    /// Removes `rel` and what is left below it (runc removes each
    /// container's directory; a killed one's can remain) in every
    /// hierarchy mounted, named ones included.
    pub fn remove(&self, rel: &str) {
        let rel = rel.trim_start_matches('/');
        let mut bases = vec![self.root.clone()];
        if !self.unified {
            bases.extend(
                std::fs::read_dir(&self.root)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir()),
            );
        }
        for b in bases {
            remove_tree(&b.join(rel), 0);
        }
    }
}

/// Deepest a pod's tree goes below its cgroup (containers, runc's
/// children): bounded, though only the kubelet and runc make it.
const MAX_DEPTH: usize = 8;

fn remove_tree(p: &Path, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    // symlink_metadata: a cgroup directory is never a link; do not follow one.
    if !std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
        return;
    }
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path(), depth + 1);
        }
    }
    let _ = std::fs::remove_dir(p);
}

/// The files and values that give a cgroup `res`, for one v1 controller's
/// hierarchy (`Some`) or the v2 one (`None`).
pub fn settings(
    unified: bool,
    controller: Option<&str>,
    res: &Resources,
) -> Vec<(&'static str, String)> {
    let quota = res.cpu_quota_us;
    let memory = res.memory_limit;
    if unified {
        return vec![
            ("cpu.weight", shares_to_weight(res.cpu_shares).to_string()),
            (
                "cpu.max",
                match quota {
                    Some(q) => format!("{q} {CPU_PERIOD_US}"),
                    None => format!("max {CPU_PERIOD_US}"),
                },
            ),
            (
                "memory.max",
                memory.map_or_else(|| "max".into(), |m| m.to_string()),
            ),
        ];
    }
    match controller {
        Some("cpu") => vec![
            ("cpu.shares", res.cpu_shares.to_string()),
            ("cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
            ("cpu.cfs_quota_us", quota.unwrap_or(-1).to_string()),
        ],
        Some("memory") => vec![("memory.limit_in_bytes", memory.unwrap_or(-1).to_string())],
        _ => vec![],
    }
}
