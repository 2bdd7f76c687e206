//! File-system operations on paths a pod controls, confined to the
//! directory they belong to. A container can write symlinks, loops and
//! FIFOs into its volumes; the kubelet, which runs as root on the node,
//! must never follow one of them out (CVE-2017-1002101: a `subPath`
//! symlink that bind-mounted the node's root).
//!
//! - [`open_beneath`] resolves a relative path inside a directory one
//!   component at a time (`openat` with `O_NOFOLLOW`), following symlinks
//!   only while they stay inside, and returns an `O_PATH` descriptor of
//!   what it found; [`bind_fd`] mounts that descriptor through
//!   `/proc/self/fd`, so what is mounted is what was checked, whatever the
//!   container renames in between. This works on every kernel (no
//!   `openat2`, which CentOS 7 and 8 lack).
//! - [`count_files`] walks a tree without following links, bounded in
//!   depth and size.
//! - [`read_tail`] reads at most the last bytes of a regular file, never a
//!   link or a FIFO.

use std::{
    collections::VecDeque,
    ffi::CString,
    io::{Read as _, Seek as _, SeekFrom},
    os::{
        fd::{AsFd, AsRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use nix::{
    errno::Errno,
    fcntl::{AtFlags, OFlag, openat, readlinkat},
    sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat},
};

/// Symlinks followed in one resolution before it counts as a loop (the
/// kernel's own limit).
const MAX_LINKS: usize = 40;
/// How deep [`count_files`] goes.
const MAX_DEPTH: usize = 64;

/// Why a path could not be resolved inside its directory.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfinedError {
    #[error("path {path:?} is not within the volume")]
    Escapes { path: String },
    #[error("too many levels of symbolic links resolving {path:?}")]
    Loop { path: String },
    #[error("{path:?}: component {component:?} is not a directory")]
    NotADirectory { path: String, component: String },
    #[error("{what} {path:?}: {errno}")]
    Os {
        what: &'static str,
        path: String,
        errno: Errno,
    },
}

fn os<'a>(what: &'static str, path: &'a str) -> impl FnOnce(Errno) -> ConfinedError + 'a {
    move |errno| ConfinedError::Os {
        what,
        path: path.to_owned(),
        errno,
    }
}

fn is_kind(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

/// Opens `base` itself (trusted: a directory the kubelet made, or a
/// hostPath the pod's author was allowed to name) as an `O_PATH`
/// descriptor.
fn open_base(base: &Path) -> Result<OwnedFd, ConfinedError> {
    let shown = base.display().to_string();
    nix::fcntl::open(
        base,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(os("opening", &shown))
}

/// Resolves `rel` inside `base` and returns an `O_PATH` descriptor of the
/// result. Symlinks are followed only while they stay inside `base`
/// (relative targets whose `..` never climb above it); an absolute target,
/// a climb out, a loop, or a component swapped for a link under our feet
/// is refused. With `create`, missing components are made as directories
/// (0750), as the kubelet does for a `subPath` that does not exist yet.
pub(crate) fn open_beneath(base: &Path, rel: &str, create: bool) -> Result<OwnedFd, ConfinedError> {
    let escapes = || ConfinedError::Escapes {
        path: rel.to_owned(),
    };
    let comps = rudder_k8s::paths::descending_components(rel).ok_or_else(escapes)?;
    let root = open_base(base)?;
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut pending: VecDeque<String> = comps.into_iter().map(str::to_owned).collect();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c.is_empty() || c == "." {
            continue;
        }
        if c == ".." {
            stack.pop().ok_or_else(escapes)?;
            continue;
        }
        let dir = stack.last().map_or(root.as_fd(), AsFd::as_fd);
        let st = match fstatat(dir, c.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) if create => {
                match mkdirat(dir, c.as_str(), Mode::from_bits_truncate(0o750)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(os("creating", rel)(e)),
                }
                fstatat(dir, c.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(os("reading", rel))?
            }
            other => other.map_err(os("reading", rel))?,
        };
        if is_kind(&st, SFlag::S_IFLNK) {
            links += 1;
            if links > MAX_LINKS {
                return Err(ConfinedError::Loop {
                    path: rel.to_owned(),
                });
            }
            let target = readlinkat(dir, c.as_str()).map_err(os("reading the link", rel))?;
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') || target.contains('\0') {
                return Err(escapes());
            }
            for t in target.split('/').rev() {
                pending.push_front(t.to_owned());
            }
            continue;
        }
        let fd = openat(
            dir,
            c.as_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(os("opening", rel))?;
        // What was opened may not be what was looked at: check again.
        let st = fstat(&fd).map_err(os("reading", rel))?;
        if is_kind(&st, SFlag::S_IFLNK) {
            return Err(escapes());
        }
        if !pending.is_empty() && !is_kind(&st, SFlag::S_IFDIR) {
            return Err(ConfinedError::NotADirectory {
                path: rel.to_owned(),
                component: c,
            });
        }
        stack.push(fd);
    }
    Ok(stack.pop().unwrap_or(root))
}

/// Whether the descriptor is a directory.
pub(crate) fn is_dir(fd: &OwnedFd) -> bool {
    fstat(fd).is_ok_and(|st| is_kind(&st, SFlag::S_IFDIR))
}

/// Bind-mounts what `fd` refers to on `target` (which must exist and be of
/// the same kind: a directory for a directory, a file otherwise), through
/// `/proc/self/fd/<fd>`: the kernel mounts the object the descriptor
/// holds, never a path looked up again.
pub(crate) fn bind_fd(fd: &OwnedFd, target: &Path) -> std::io::Result<()> {
    let source =
        CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(std::io::Error::other)?;
    let target = CString::new(target.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: NUL-terminated strings that outlive the call; a bind mount
    // takes no file-system type or data.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The number of non-directory entries under `dir`, without following
/// links; `None` past `limit` entries or [`MAX_DEPTH`] levels (a tree
/// nobody should compare file by file).
pub(crate) fn count_files(dir: &Path, limit: usize) -> Option<usize> {
    fn walk(dir: &Path, depth: usize, left: &mut usize) -> Option<usize> {
        if depth > MAX_DEPTH {
            return None;
        }
        let mut n = 0;
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            *left = left.checked_sub(1)?;
            // `DirEntry::file_type` does not follow links.
            if e.file_type().ok()?.is_dir() {
                n += walk(&e.path(), depth + 1, left)?;
            } else {
                n += 1;
            }
        }
        Some(n)
    }
    let mut left = limit;
    walk(dir, 0, &mut left)
}

/// At most the last `max` bytes of the regular file at `path` (the
/// kubelet's `tail.ReadAtMost`), as text; empty if it is not a regular
/// file (a link, a FIFO a container made) or cannot be read.
pub(crate) fn read_tail(path: &Path, max: u64) -> String {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let Ok(fd) = nix::fcntl::open(path, flags, Mode::empty()) else {
        return String::new();
    };
    if !fstat(&fd).is_ok_and(|st| is_kind(&st, SFlag::S_IFREG)) {
        return String::new();
    }
    let mut f = std::fs::File::from(fd);
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(max))).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(max).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn path_of(fd: &OwnedFd) -> std::path::PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    #[test]
    fn links_inside_are_followed_and_links_out_refused() {
        let t = tmp();
        let vol = t.path().join("vol");
        std::fs::create_dir_all(vol.join("..2026/dir")).unwrap();
        std::fs::write(vol.join("..2026/key"), b"v").unwrap();
        // The atomic writer's layout: key -> ..data/key -> ..2026/key.
        symlink("..2026", vol.join("..data")).unwrap();
        symlink("..data/key", vol.join("key")).unwrap();
        let fd = open_beneath(&vol, "key", false).unwrap();
        assert_eq!(path_of(&fd), vol.join("..2026/key"));
        assert!(!is_dir(&fd));
        // `..` in a link's target, staying inside, is fine; in the path
        // asked for, it never is.
        symlink("dir/..", vol.join("..2026/here")).unwrap();
        let fd = open_beneath(&vol, "..data/here", false).unwrap();
        assert_eq!(path_of(&fd), vol.join("..2026"));
        assert!(is_dir(&fd));

        // Out of the volume, by every route a container has.
        symlink("/", vol.join("root")).unwrap();
        symlink("../../..", vol.join("up")).unwrap();
        symlink("dir/../../../x", vol.join("..2026/sneaky")).unwrap();
        for bad in [
            "root",
            "root/etc",
            "up",
            "..data/sneaky",
            "../vol",
            "dir/..",
            "/etc",
        ] {
            let e = open_beneath(&vol, bad, true).unwrap_err();
            assert!(matches!(e, ConfinedError::Escapes { .. }), "{bad}: {e}");
        }
        assert!(!t.path().join("x").exists());
    }

    #[test]
    fn loops_missing_directories_and_files_in_the_way() {
        let t = tmp();
        let vol = t.path();
        symlink("b", vol.join("a")).unwrap();
        symlink("a", vol.join("b")).unwrap();
        assert!(matches!(
            open_beneath(vol, "a/x", false).unwrap_err(),
            ConfinedError::Loop { .. }
        ));
        let fd = open_beneath(vol, "new/deeper", true).unwrap();
        assert!(is_dir(&fd));
        assert_eq!(path_of(&fd), vol.join("new/deeper"));
        assert!(open_beneath(vol, "absent", false).is_err());
        std::fs::write(vol.join("f"), b"").unwrap();
        assert!(matches!(
            open_beneath(vol, "f/x", true).unwrap_err(),
            ConfinedError::NotADirectory { .. }
        ));
        assert_eq!(path_of(&open_beneath(vol, "", false).unwrap()), vol);
    }

    #[test]
    fn walks_and_tails_do_not_follow_links() {
        let t = tmp();
        let d = t.path();
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::write(d.join("a/b/f"), b"x").unwrap();
        symlink(".", d.join("a/loop")).unwrap();
        symlink("/", d.join("root")).unwrap();
        assert_eq!(count_files(d, 100), Some(2 + 1));
        assert_eq!(count_files(d, 2), None);

        std::fs::write(d.join("msg"), "a".repeat(5000) + "end").unwrap();
        let tail = read_tail(&d.join("msg"), 4096);
        assert_eq!(tail.len(), 4096);
        assert!(tail.ends_with("end"));
        symlink("/etc/hostname", d.join("link")).unwrap();
        assert_eq!(read_tail(&d.join("link"), 4096), "");
        nix::unistd::mkfifo(&d.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(read_tail(&d.join("fifo"), 4096), "");
    }
}
