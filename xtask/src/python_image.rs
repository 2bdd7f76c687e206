//! The `rudder/kopf` test image: the host's Python (the interpreter of the
//! virtual environment `cargo xtask setup` made, with its standard library
//! and the shared objects it and its extension modules load) and that
//! environment's packages (kopf, the `kubernetes` client and their
//! dependencies), on busybox. The kopf operator test runs its operator in
//! a pod of this image.
//!
//! Copied from the host rather than installed from a distribution, as the
//! agent image's netfilter userland is (see `agent_image.rs`): the
//! project's only network is the package registries, and the packages are
//! the ones `cargo xtask setup` installed from PyPI. The interpreter keeps
//! its host path, so it finds its standard library and `libpython` where
//! it was built to look; the packages are at [`SITE_PACKAGES`]. Left out:
//! the standard library's tests, IDLE, Tk, `ensurepip`, compiled bytecode
//! (`__pycache__`, recompiled at import) and pip itself.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::{
    agent_image::{Files, add_file, files_layer, libraries},
    images::Layer,
};

/// The virtual environment `cargo xtask setup` makes (relative to the
/// workspace).
const VENV: &str = "target/rudder/python";

/// Where the environment's packages are in the image.
pub(crate) const SITE_PACKAGES: &str = "opt/kopf/site-packages";

/// Directories and files of the standard library and the packages not
/// carried.
const SKIPPED: &[&str] = &[
    "__pycache__",
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "site-packages",
    "pip",
    "setuptools",
    "pkg_resources",
    "_distutils_hack",
];

fn skipped(name: &str) -> bool {
    SKIPPED.contains(&name)
        || name.starts_with("config-3.")
        || name.starts_with("_tkinter")
        || name.starts_with("pip-")
}

/// Every file under `dir` not skipped, with its path below `dir`.
fn walk(dir: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        for e in std::fs::read_dir(&here).with_context(|| format!("reading {}", here.display()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if skipped(&name) {
                continue;
            }
            let kind = e.file_type()?;
            let rel = rel.join(&name);
            if kind.is_dir() {
                stack.push(rel);
            } else if kind.is_file() || kind.is_symlink() && e.path().is_file() {
                out.push((e.path(), rel));
            }
        }
    }
    Ok(out)
}

/// Adds a file at `at` (no leading `/`), with the shared objects it loads
/// at their host paths when it is one.
fn add_at(files: &mut Files, host: &Path, at: String) -> anyhow::Result<()> {
    let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
    let mode = if host.extension().is_some_and(|x| x == "so") || at.contains(".so.") {
        0o755
    } else {
        0o644
    };
    if mode == 0o755 {
        for lib in libraries(host)? {
            add_file(files, &lib, 0o755)?;
        }
    }
    files.insert(at, (mode, data));
    Ok(())
}

/// The layer, or `None` when the environment is not there (`cargo xtask
/// setup` makes it).
pub(crate) fn python_layer(root: &Path) -> anyhow::Result<Option<Layer>> {
    let venv = root.join(VENV);
    let python = venv.join("bin/python3");
    if !python.exists() {
        return Ok(None);
    }
    let real = std::fs::canonicalize(&python)?;
    let version = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.starts_with("python3."))
        .context("the environment's python3 does not resolve to a python3.N")?;
    let prefix = real
        .parent()
        .and_then(Path::parent)
        .context("the interpreter has no prefix")?;
    let mut files = Files::new();
    add_file(&mut files, &real, 0o755)?;
    for lib in libraries(&real)? {
        add_file(&mut files, &lib, 0o755)?;
    }
    let stdlib = prefix.join("lib").join(&version);
    for (host, rel) in walk(&stdlib)? {
        let at = stdlib
            .join(&rel)
            .to_string_lossy()
            .trim_start_matches('/')
            .to_owned();
        add_at(&mut files, &host, at)?;
    }
    let site = venv.join("lib").join(&version).join("site-packages");
    for (host, rel) in walk(&site)? {
        add_at(
            &mut files,
            &host,
            format!("{SITE_PACKAGES}/{}", rel.display()),
        )?;
    }
    let interpreter = format!("/{}", real.to_string_lossy().trim_start_matches('/'));
    let links = [("usr/bin/python3".to_owned(), interpreter)];
    // Under busybox's private `root`, which keeps its mode.
    files_layer(&files, &links).map(Some)
}
