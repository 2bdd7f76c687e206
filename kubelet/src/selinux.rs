//! SELinux labels of containers and of the volumes the kubelet makes, on
//! nodes that enforce SELinux (RHEL, CentOS, Fedora), as containerd's CRI
//! gives them with `enable_selinux` and CRI-O by default: `--selinux` turns
//! it on, and the agent refuses to start with it on a node whose kernel
//! has SELinux off (as containerd refuses `enable_selinux` there).
//!
//! - The contexts start from the node's policy: `lxc_contexts`' `process`
//!   and `file` entries (`system_u:system_r:container_t:s0` and
//!   `system_u:object_r:container_file_t:s0` in container-selinux), as
//!   go-selinux's `ContainerLabels` reads them.
//! - Each pod gets a level of its own, two distinct categories
//!   (`s0:c12,c345`), unique among the node's pods and kept in the pod's
//!   directory, so its containers share it across restarts of the agent
//!   and can all reach the pod's volumes, while other pods cannot.
//! - `seLinuxOptions` (the container's, else the pod's, whole, as the
//!   kubelet's effective security context takes them) change it as
//!   go-selinux's `InitLabels` does: `user` both labels, `role` and `type`
//!   the process's, `level` both. Options without a level keep the pod's
//!   (CRI-O's rule; containerd would give such a container a fresh level
//!   of its own, cutting it off from the pod's volumes). A `user`, `role`
//!   or `type` with a `:` or a level containerd's pattern refuses is an
//!   error, never a label with another pod's categories in it.
//! - The volumes the kubelet makes (emptyDir, configMap, secret,
//!   downwardAPI, projected, `/etc/hosts`) are relabelled with the mount
//!   label before each container starts (the CRI's `SelinuxRelabel`, a
//!   private `:Z`); hostPath and claims never are. The walk runs in
//!   directories a pod writes into, so it goes from descriptor to
//!   descriptor (`openat` with `O_NOFOLLOW`) and labels each entry through
//!   its parent's descriptor without following it: a symlink is labelled
//!   itself, never what it points to. It stops after a bounded number of
//!   entries (what a container made there already carries its label).
//!
//! Written here: the crates that exist (`selinux`, `selinux-sys`) bind
//! libselinux, a C library the static agent would have to link, for what
//! is a few files read and one extended attribute written.

use std::{
    collections::HashSet,
    ffi::{CString, OsStr},
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
    sync::Mutex,
};

use k8s_openapi::api::core::v1::{Container, Pod, SELinuxOptions};
use nix::{
    fcntl::{OFlag, open, openat},
    sys::stat::{Mode, SFlag, fstatat},
};

/// The extended attribute holding a file's label.
const XATTR: &str = "security.selinux";
/// The file in a pod's directory that keeps its level.
pub const LEVEL_FILE: &str = "selinux-level";
/// Categories are `c0` to `c1023` (go-selinux's range).
const CATEGORIES: u32 = 1024;
/// Entries relabelled at most per volume and container start.
pub const RELABEL_LIMIT: usize = 100_000;
/// How deep the relabel goes.
const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelinuxError {
    #[error("invalid SELinux {field} {value:?}: it must not be empty or contain ':' or whitespace")]
    Field { field: &'static str, value: String },
    #[error("invalid SELinux level {0:?}: want e.g. s0, s0:c1,c2 or s0-s0:c0.c1023")]
    Level(String),
    #[error("malformed SELinux context {0:?}")]
    Context(String),
}

/// A context, `user:role:type:level`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub user: String,
    pub role: String,
    pub kind: String,
    /// May itself hold `:` (`s0:c1,c2`).
    pub level: String,
}

impl std::str::FromStr for Context {
    type Err = SelinuxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().splitn(4, ':');
        let mut next = || {
            parts
                .next()
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| SelinuxError::Context(s.to_owned()))
        };
        Ok(Self {
            user: next()?,
            role: next()?,
            kind: next()?,
            level: next()?,
        })
    }
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.user, self.role, self.kind, self.level
        )
    }
}

/// The node's contexts for containers' processes and files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub process: Context,
    pub file: Context,
}

impl Default for Base {
    /// container-selinux's.
    fn default() -> Self {
        let ctx = |u: &str, r: &str, t: &str| Context {
            user: u.into(),
            role: r.into(),
            kind: t.into(),
            level: "s0".into(),
        };
        Self {
            process: ctx("system_u", "system_r", "container_t"),
            file: ctx("system_u", "object_r", "container_file_t"),
        }
    }
}

impl Base {
    /// `lxc_contexts` (`process = "…"`, `file = "…"` lines; others and
    /// malformed values leave the defaults).
    pub fn from_lxc_contexts(text: &str) -> Self {
        let mut base = Self::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            let Ok(ctx) = value.parse::<Context>() else {
                continue;
            };
            match key.trim() {
                "process" => base.process = ctx,
                "file" => base.file = ctx,
                _ => {}
            }
        }
        base
    }

    /// The contexts of the policy `/etc/selinux/config` names (under
    /// `etc_selinux`), or container-selinux's when it has none.
    pub fn load(etc_selinux: &Path) -> Self {
        let policy = std::fs::read_to_string(etc_selinux.join("config"))
            .ok()
            .and_then(|c| {
                c.lines().find_map(|l| {
                    l.trim()
                        .strip_prefix("SELINUXTYPE=")
                        .map(|v| v.trim().to_owned())
                })
            })
            .filter(|p| !p.is_empty() && !p.contains('/'))
            .unwrap_or_else(|| "targeted".into());
        std::fs::read_to_string(etc_selinux.join(policy).join("contexts/lxc_contexts"))
            .map_or_else(|_| Self::default(), |t| Self::from_lxc_contexts(&t))
    }
}

/// A container's process label and the label of its files and mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    pub process: String,
    pub mount: String,
}

/// containerd's level pattern: `s<d>[-s<d>][:c<n>[.c<n>][,c<n>[.c<n>]]…]`.
pub fn valid_level(level: &str) -> bool {
    fn sensitivity(s: &str) -> bool {
        s.strip_prefix('s')
            .is_some_and(|d| d.len() == 1 && d.bytes().all(|b| b.is_ascii_digit()))
    }
    fn category(c: &str) -> bool {
        c.strip_prefix('c')
            .is_some_and(|d| (1..=4).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
    }
    let (range, cats) = match level.split_once(':') {
        Some((r, c)) => (r, Some(c)),
        None => (level, None),
    };
    let range_ok = match range.split_once('-') {
        Some((lo, hi)) => sensitivity(lo) && sensitivity(hi),
        None => sensitivity(range),
    };
    let cats_ok = cats.is_none_or(|c| {
        c.split(',').all(|item| match item.split_once('.') {
            Some((a, b)) => category(a) && category(b),
            None => category(item),
        })
    });
    range_ok && cats_ok
}

fn field(name: &'static str, value: Option<&String>) -> Result<Option<String>, SelinuxError> {
    match value.map(String::as_str) {
        None | Some("") => Ok(None),
        Some(v) if v.contains(':') || v.chars().any(char::is_whitespace) => {
            Err(SelinuxError::Field {
                field: name,
                value: v.to_owned(),
            })
        }
        Some(v) => Ok(Some(v.to_owned())),
    }
}

/// The labels of a container with these options in a pod of level
/// `pod_level`.
pub fn labels(
    opts: Option<&SELinuxOptions>,
    base: &Base,
    pod_level: &str,
) -> Result<Labels, SelinuxError> {
    let (mut process, mut file) = (base.process.clone(), base.file.clone());
    process.level = pod_level.to_owned();
    file.level = pod_level.to_owned();
    if let Some(o) = opts {
        if let Some(user) = field("user", o.user.as_ref())? {
            process.user.clone_from(&user);
            file.user = user;
        }
        if let Some(role) = field("role", o.role.as_ref())? {
            process.role = role;
        }
        if let Some(kind) = field("type", o.type_.as_ref())? {
            process.kind = kind;
        }
        if let Some(level) = o.level.as_deref().filter(|l| !l.is_empty()) {
            if !valid_level(level) {
                return Err(SelinuxError::Level(level.to_owned()));
            }
            process.level = level.to_owned();
            file.level = level.to_owned();
        }
    }
    Ok(Labels {
        process: process.to_string(),
        mount: file.to_string(),
    })
}

/// The options a container runs with: its own `seLinuxOptions`, else the
/// pod's (the kubelet's effective security context takes them whole).
pub fn effective_options<'a>(pod: &'a Pod, c: &'a Container) -> Option<&'a SELinuxOptions> {
    c.security_context
        .as_ref()
        .and_then(|s| s.se_linux_options.as_ref())
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.security_context.as_ref())
                .and_then(|s| s.se_linux_options.as_ref())
        })
}

/// The pods' levels in use on this node: each pair of categories at most
/// once.
#[derive(Debug, Default)]
pub struct Levels {
    used: HashSet<(u32, u32)>,
}

fn pair_of(level: &str) -> Option<(u32, u32)> {
    let cats = level.strip_prefix("s0:")?;
    let (a, b) = cats.split_once(',')?;
    let n = |c: &str| c.strip_prefix('c')?.parse::<u32>().ok();
    Some((n(a)?, n(b)?))
}

impl Levels {
    /// A level no pod here has, from categories `pick` draws (go-selinux's
    /// `uniqMcs`: two distinct, the lower first).
    pub fn reserve(&mut self, mut pick: impl FnMut() -> u32) -> String {
        loop {
            let (a, b) = (pick() % CATEGORIES, pick() % CATEGORIES);
            if a == b {
                continue;
            }
            let pair = (a.min(b), a.max(b));
            if self.used.insert(pair) {
                return format!("s0:c{},c{}", pair.0, pair.1);
            }
        }
    }

    /// Marks a level read back from a pod's directory as in use.
    pub fn claim(&mut self, level: &str) {
        if let Some(p) = pair_of(level) {
            self.used.insert(p);
        }
    }

    pub fn release(&mut self, level: &str) {
        if let Some(p) = pair_of(level) {
            self.used.remove(&p);
        }
    }
}

/// Whether the kernel enforces or audits SELinux: its file system mounted
/// and this process in a context (go-selinux's `GetEnabled`).
pub fn enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
        && std::fs::read_to_string("/proc/self/attr/current")
            .is_ok_and(|c| !c.trim_end_matches('\0').trim().is_empty() && c.trim() != "kernel")
}

/// SELinux on this node: its contexts and the pods' levels.
#[derive(Debug)]
pub struct NodeLabels {
    pub base: Base,
    levels: Mutex<Levels>,
}

impl NodeLabels {
    /// With the levels of the pods under `pods_dir` in use.
    pub fn new(base: Base, pods_dir: &Path) -> Self {
        let mut levels = Levels::default();
        for e in std::fs::read_dir(pods_dir).into_iter().flatten().flatten() {
            if let Ok(l) = std::fs::read_to_string(e.path().join(LEVEL_FILE)) {
                levels.claim(l.trim());
            }
        }
        Self {
            base,
            levels: Mutex::new(levels),
        }
    }

    fn levels(&self) -> std::sync::MutexGuard<'_, Levels> {
        self.levels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The level of the pod whose directory is `pod_dir`: the one kept
    /// there, else a new one, kept there.
    pub fn pod_level(&self, pod_dir: &Path) -> std::io::Result<String> {
        let file = pod_dir.join(LEVEL_FILE);
        if let Ok(l) = std::fs::read_to_string(&file) {
            let l = l.trim();
            if pair_of(l).is_some() && valid_level(l) {
                self.levels().claim(l);
                return Ok(l.to_owned());
            }
        }
        let level = self.levels().reserve(rand::random::<u32>);
        if let Err(e) = std::fs::write(&file, &level) {
            self.levels().release(&level);
            return Err(e);
        }
        Ok(level)
    }

    /// Frees the level of a pod whose directory is about to go.
    pub fn release(&self, pod_dir: &Path) {
        if let Ok(l) = std::fs::read_to_string(pod_dir.join(LEVEL_FILE)) {
            self.levels().release(l.trim());
        }
    }
}

/// How far a relabel got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relabelled {
    pub entries: usize,
    /// False when the bound stopped it.
    pub complete: bool,
}

fn set_label_at(dir: &OwnedFd, name: &OsStr, label: &str) -> std::io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.as_bytes());
    let path = CString::new(path).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let attr = CString::new(XATTR).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: NUL-terminated path and name, a buffer of `label.len()`
    // bytes that outlives the call. `lsetxattr` does not follow the last
    // component, and the rest is the directory's own descriptor.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            attr.as_ptr(),
            label.as_ptr().cast(),
            label.len(),
            0,
        )
    };
    io_result(rc)
}

/// A libc call's result: 0, or the error in errno.
fn io_result(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn set_label_fd(fd: &OwnedFd, label: &str) -> std::io::Result<()> {
    let attr = CString::new(XATTR).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: an open descriptor, a NUL-terminated name and a buffer of
    // `label.len()` bytes that outlives the call.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            attr.as_ptr(),
            label.as_ptr().cast(),
            label.len(),
            0,
        )
    };
    io_result(rc)
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Labels `path` (a file, or a directory and everything beneath it) with
/// `label`, never following a link, stopping after `limit` entries.
pub fn relabel(path: &Path, label: &str, limit: usize) -> std::io::Result<Relabelled> {
    // Not a link itself (ELOOP); a FIFO opens without waiting for a writer.
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let fd = open(path, flags, Mode::empty())?;
    set_label_fd(&fd, label)?;
    let mut done = Relabelled {
        entries: 1,
        complete: true,
    };
    let st = nix::sys::stat::fstat(&fd)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
        walk(&fd, label, limit, 0, &mut done)?;
    }
    Ok(done)
}

fn walk(
    dir: &OwnedFd,
    label: &str,
    limit: usize,
    depth: usize,
    done: &mut Relabelled,
) -> std::io::Result<()> {
    if depth >= MAX_DEPTH {
        done.complete = false;
        return Ok(());
    }
    // Listed through the descriptor's own magic link: the directory opened
    // above, whatever its path has become.
    let names: Vec<std::ffi::OsString> =
        std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
    for name in names {
        if done.entries >= limit {
            done.complete = false;
            return Ok(());
        }
        done.entries += 1;
        let st = match fstatat(
            dir,
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            // Removed by the container meanwhile.
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            match openat(dir, name.as_os_str(), DIR_FLAGS, Mode::empty()) {
                Ok(sub) => {
                    set_label_fd(&sub, label)?;
                    walk(&sub, label, limit, depth + 1, done)?;
                }
                // Replaced by a link or removed since: not followed.
                Err(
                    nix::errno::Errno::ELOOP
                    | nix::errno::Errno::ENOTDIR
                    | nix::errno::Errno::ENOENT,
                ) => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            match set_label_at(dir, &name, label) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
