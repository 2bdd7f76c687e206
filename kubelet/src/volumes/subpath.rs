//! `subPath` and `subPathExpr` mounts, made safe as the kubelet made them
//! after CVE-2017-1002101: the path is resolved inside its volume without
//! ever leaving it ([`confined::open_beneath`]), the result is bind-mounted
//! through its descriptor onto a kubelet-owned point
//! (`<pod>/volume-subpaths/<volume>/<container>/<index>`), and that point,
//! not a path inside the volume, is what the container runtime mounts. A
//! container swapping a directory for a symlink between the check and the
//! mount gains nothing: the mount is of the object that was checked.

use std::path::{Path, PathBuf};

use super::{VolumeError, confined, is_mount_point, verr};

/// The directory of a pod's subPath mount points.
pub(crate) const DIR: &str = "volume-subpaths";

/// Where container `container`'s mount number `index` of volume `volume`
/// is prepared.
pub(crate) fn target(pod_dir: &Path, volume: &str, container: &str, index: usize) -> PathBuf {
    pod_dir
        .join(DIR)
        .join(volume)
        .join(container)
        .join(index.to_string())
}

/// Resolves `sub` inside the volume at `base` (creating missing
/// directories, as the kubelet does) and bind-mounts it on `target`, made
/// anew: an earlier container instance's mount there is detached first.
pub(crate) fn prepare(
    volume: &str,
    base: &Path,
    sub: &str,
    target: &Path,
) -> Result<(), VolumeError> {
    let fd = confined::open_beneath(base, sub, true)
        .map_err(|e| verr(volume, format!("subPath {sub:?}: {e}")))?;
    let io = |e: std::io::Error| verr(volume, format!("subPath {sub:?}: {e}"));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    detach(target);
    let dir = confined::is_dir(&fd);
    // The point must be of the source's kind; a leftover of the other
    // kind (the source changed between two instances) goes.
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() != dir => {
            let _ = std::fs::remove_dir(target);
            let _ = std::fs::remove_file(target);
        }
        _ => {}
    }
    if dir {
        match std::fs::create_dir(target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(target)
            .map_err(io)?;
    }
    confined::bind_fd(&fd, target).map_err(io)
}

/// Detaches whatever is mounted on `p` (repeatedly: mounts may stack).
fn detach(p: &Path) {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return;
    };
    for _ in 0..8 {
        if !is_mount_point(p) {
            return;
        }
        // SAFETY: a NUL-terminated path that outlives the call.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            return;
        }
    }
}
