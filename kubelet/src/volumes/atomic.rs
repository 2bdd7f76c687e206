//! The kubelet's atomic writer for configMap, secret, downwardAPI and
//! projected volumes: the files go into a fresh `..<timestamp>` directory,
//! the `..data` symlink is switched to it in one rename, and each
//! top-level entry is a symlink through `..data`. A container reading the
//! volume sees the old set or the new one, never a mix; unchanged content
//! is left alone.
//!
//! What the writer reads back from the volume (the `..data` link, the old
//! files) is treated as hostile even though these volumes are mounted
//! read-only: a `..data` that is not one of our own timestamp names is
//! ignored, never joined to a path (CVE-2017-1002102: a `..data` pointing
//! at a node directory made the kubelet delete it), and nothing is
//! followed through a link. File modes lose setuid, setgid and sticky
//! bits; with the pod's `fsGroup`, files are given to that group and made
//! group-readable, as the kubelet's `SetVolumeOwnership` does for
//! read-only volumes.

use std::{
    collections::BTreeSet,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
};

use super::{VolumeError, confined, verr};

/// A file of a volume: (relative path, content, mode).
pub(crate) type Entry = (String, Vec<u8>, i32);

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Whether `name` is one of the writer's own timestamped directories
/// (`..2026_12_04_19_46_07.123456789`): one component, nothing else.
fn is_stamp(name: &str) -> bool {
    name.len() > 2
        && name.starts_with("..")
        && name != DATA
        && name != DATA_TMP
        && name[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'_' || b == b'.')
}

/// The mode a file is written with: permission bits only, plus group read
/// for the pod's `fsGroup`.
fn effective_mode(mode: i32, fs_group: Option<u32>) -> u32 {
    let m = (mode as u32) & 0o777;
    if fs_group.is_some() { m | 0o440 } else { m }
}

/// Whether `cur` already holds exactly `entries` (content, mode, group),
/// looked at without following links.
fn unchanged(cur: &Path, entries: &[Entry], fs_group: Option<u32>) -> bool {
    entries.iter().all(|(rel, value, mode)| {
        let p = cur.join(rel);
        std::fs::symlink_metadata(&p).is_ok_and(|m| {
            m.file_type().is_file()
                && m.permissions().mode() & 0o7777 == effective_mode(*mode, fs_group)
                && fs_group.is_none_or(|g| m.gid() == g)
        }) && std::fs::read(&p).is_ok_and(|v| v == *value)
    }) && confined::count_files(cur, entries.len() + 1) == Some(entries.len())
}

/// Writes a volume's files atomically (see the module doc); `what` names
/// the source in errors.
pub(crate) fn write(
    dir: &Path,
    volume: &str,
    entries: &[Entry],
    what: &str,
    fs_group: Option<u32>,
) -> Result<(), VolumeError> {
    let io = |e: std::io::Error| verr(volume, e.to_string());
    for (rel, _, _) in entries {
        let ok = rudder_k8s::paths::descending_components(rel).is_some_and(|c| !c.is_empty())
            && !rel.starts_with("..");
        if !ok {
            return Err(verr(volume, format!("invalid path {rel:?} in {what}")));
        }
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let current = std::fs::read_link(dir.join(DATA))
        .ok()
        .and_then(|t| t.to_str().map(str::to_owned))
        .filter(|t| is_stamp(t));
    if let Some(cur) = &current
        && unchanged(&dir.join(cur), entries, fs_group)
    {
        return Ok(());
    }
    let stamp = jiff::Timestamp::now()
        .strftime("..%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let fresh = dir.join(&stamp);
    std::fs::create_dir(&fresh).map_err(io)?;
    set_group(&fresh, fs_group, 0o755).map_err(io)?;
    for (rel, value, mode) in entries {
        let p = fresh.join(rel);
        if let Some(parent) = p.parent().filter(|p| *p != fresh) {
            std::fs::create_dir_all(parent).map_err(io)?;
            set_group(parent, fs_group, 0o755).map_err(io)?;
        }
        std::fs::write(&p, value).map_err(io)?;
        set_group(&p, fs_group, effective_mode(*mode, fs_group)).map_err(io)?;
    }
    let tmp_link = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link).map_err(io)?;
    std::fs::rename(&tmp_link, dir.join(DATA)).map_err(io)?;
    relink_top_level(dir, entries).map_err(io)?;
    if let Some(old) = current.filter(|o| *o != stamp) {
        // `old` is one component of our own making; `remove_dir_all`
        // does not follow links inside it.
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

/// Each top-level name as a link through `..data`; names no longer there
/// go (only links and files: the writer never made anything else there).
fn relink_top_level(dir: &Path, entries: &[Entry]) -> std::io::Result<()> {
    let top: BTreeSet<&str> = entries
        .iter()
        .filter_map(|(rel, _, _)| rel.split('/').find(|c| !c.is_empty() && *c != "."))
        .collect();
    for t in &top {
        let link = dir.join(t);
        let want = Path::new(DATA).join(t);
        if std::fs::read_link(&link).ok().as_deref() != Some(want.as_path()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&want, &link)?;
        }
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let ours = n == DATA || is_stamp(&n);
        if !ours && !top.contains(n.as_str()) && !e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Sets a file's mode and, with an `fsGroup`, its group (not following a
/// link: everything here was just made by the writer).
fn set_group(p: &Path, fs_group: Option<u32>, mode: u32) -> std::io::Result<()> {
    if let Some(g) = fs_group {
        std::os::unix::fs::lchown(p, None, Some(g))?;
    }
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn entries(v: &[(&str, &str, i32)]) -> Vec<Entry> {
        v.iter()
            .map(|(p, c, m)| ((*p).to_owned(), c.as_bytes().to_vec(), *m))
            .collect()
    }

    #[test]
    fn writes_swaps_and_cleans_up() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("vol");
        write(
            &dir,
            "v",
            &entries(&[("a", "1", 0o644), ("d/b", "2", 0o4755)]),
            "cm",
            None,
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("d/b")).unwrap(), "2");
        // No setuid bit survives.
        let mode = std::fs::metadata(dir.join("d/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        let first = std::fs::read_link(dir.join(DATA)).unwrap();
        // Unchanged content: nothing is rewritten.
        write(
            &dir,
            "v",
            &entries(&[("a", "1", 0o644), ("d/b", "2", 0o4755)]),
            "cm",
            None,
        )
        .unwrap();
        assert_eq!(std::fs::read_link(dir.join(DATA)).unwrap(), first);
        // A change: the new set only, the old directory gone.
        write(&dir, "v", &entries(&[("c", "3", 0o600)]), "cm", None).unwrap();
        assert!(!dir.join("a").exists() && !dir.join(&first).exists());
        assert_eq!(std::fs::read_to_string(dir.join("c")).unwrap(), "3");
    }

    #[test]
    fn a_planted_data_link_is_never_followed_or_removed() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("vol");
        let victim = t.path().join("victim");
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("keep"), b"x").unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        // What a container with a writable volume could do.
        symlink(&victim, dir.join(DATA)).unwrap();
        symlink("../victim", dir.join("rel")).unwrap();
        write(&dir, "v", &entries(&[("a", "1", 0o644)]), "cm", None).unwrap();
        assert!(victim.join("keep").exists());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        // A planted relative `..data` is not one of ours either.
        symlink("../victim", dir.join(DATA_TMP)).unwrap();
        std::fs::remove_file(dir.join(DATA)).unwrap();
        symlink("../victim", dir.join(DATA)).unwrap();
        write(&dir, "v", &entries(&[("a", "2", 0o644)]), "cm", None).unwrap();
        assert!(victim.join("keep").exists());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "2");
    }

    #[test]
    fn bad_paths_are_refused_and_groups_applied() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("vol");
        for bad in ["../x", "/etc/x", "..data", "a/../../x", ""] {
            assert!(
                write(&dir, "v", &entries(&[(bad, "1", 0o644)]), "cm", None).is_err(),
                "{bad}"
            );
        }
        // Any group as root (the kubelet); one's own group otherwise.
        let own = std::fs::metadata(t.path()).unwrap().gid();
        let group = if own == 0 { 4242 } else { own };
        write(
            &dir,
            "v",
            &entries(&[("s", "1", 0o400)]),
            "secret",
            Some(group),
        )
        .unwrap();
        let m = std::fs::metadata(dir.join("s")).unwrap();
        assert_eq!((m.gid(), m.permissions().mode() & 0o777), (group, 0o440));
        assert!(is_stamp("..2026_12_04_19_46_07.123456789"));
        assert!(!is_stamp("..data") && !is_stamp("../etc") && !is_stamp(".."));
    }
}
