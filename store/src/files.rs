//! Files the control plane keeps secrets in (keys, kubeconfigs, the store):
//! directories it creates are `0700`; files are created with their final
//! mode (never written first and narrowed after), written to a temporary
//! name, flushed to disk, renamed into place, and the directory flushed
//! too, so that a crash leaves the old file or the new one, never half of
//! one, and no other local user can read them at any moment.

use std::{
    fs::{DirBuilder, File, OpenOptions},
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::Path,
};

/// Creates `dir` and its missing parents with mode `0700` (directories
/// that exist keep their mode).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Makes `dir` (which belongs to Rudder: a data or PKI directory) `0700`,
/// creating it if missing, whatever mode an older version left it with.
pub fn own_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    private_dir(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes `data` to `path` durably and atomically with `mode`; the
/// directory is created `0700` if missing.
pub fn write_durably(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    write_durably_with(path, mode, |w| w.write_all(data))
}

/// As [`write_durably`], with the contents streamed by `write` (through
/// a buffer) rather than held in memory.
pub fn write_durably_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    private_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let written = write(&mut w).and_then(|()| w.flush());
    let f = match written.and_then(|()| w.into_inner().map_err(std::io::IntoInnerError::into_error))
    {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn secrets_are_private_from_the_start() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a/b/key.pem");
        write_durably(&p, b"secret", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(&t.path().join("a/b")), 0o700);
        assert_eq!(mode(&t.path().join("a")), 0o700);
        write_durably(&p, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(t.path().join("a/b")).unwrap().count(), 1);
        // A bare file name is in the current directory.
        let here = std::env::current_dir().unwrap();
        std::env::set_current_dir(t.path()).unwrap();
        let r = write_durably(Path::new("bare.kubeconfig"), b"x", 0o600);
        std::env::set_current_dir(here).unwrap();
        r.unwrap();
        assert!(t.path().join("bare.kubeconfig").exists());
    }
}
