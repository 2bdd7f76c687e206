//! `cargo xtask agent-image`: the agent's OCI image (`rudder/agent`) for
//! the DaemonSet, with everything the agent runs:
//! - `/rudder` (release) with the C library it links, built without the
//!   kubelet (`--no-default-features`): the DaemonSet runs the network
//!   daemon and the service proxy beside the cluster's own kubelet, so the
//!   image carries no containerd client (checked here with `cargo tree`);
//! - `/rudder-cni`, linked statically, because the install init container
//!   copies it onto the node, whose C library may be far older (CentOS 7's
//!   glibc 2.17);
//! - the netfilter userland of the machine that builds the image, with the
//!   libraries and the xtables extensions it loads: `nft`, `iptables` and
//!   `ip6tables` in both flavours (`-legacy`, `-nft`, and their `-save` and
//!   `-restore`), and plain `iptables`/`ip6tables` (`-save`, `-restore`) as a
//!   wrapper that uses the flavour the node already has rules in (nft when
//!   neither has any), as kube-proxy's images do;
//! - busybox, for the shell and `cp`.
//!
//! The image is pushed as an OCI index with one entry for this machine's
//! platform, so that images for other architectures can be added beside
//! it under the same tags.
//!
//! The userland is copied from the host rather than installed from a
//! distribution's packages because the project's only network is the
//! package registries of this host, and the host's packages are what
//! `cargo xtask setup` installed from them.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::{
    images::{self, Entry, Layer},
    registry::{self, Registry},
    util,
};

const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// The netfilter programs the image carries (found on the host's `PATH`).
const PROGRAMS: &[&str] = &["nft", "xtables-nft-multi", "xtables-legacy-multi"];

/// The names each xtables program answers to.
const XTABLES_NAMES: &[&str] = &[
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
];

/// `iptables` and friends: runs the flavour whose tables hold rules on the
/// node (the more rules wins; nft when neither has any), as the wrappers of
/// kube-proxy's images decide.
const IPTABLES_WRAPPER: &str = r#"#!/bin/sh
# Rudder's iptables wrapper: the legacy or nft flavour, whichever the node
# already uses.
count() {
    { "/usr/sbin/xtables-$1-multi" iptables-save; "/usr/sbin/xtables-$1-multi" ip6tables-save; } 2>/dev/null | grep -c '^-'
}
mode=nft
if [ "$(count legacy)" -gt "$(count nft)" ]; then
    mode=legacy
fi
exec "/usr/sbin/xtables-$mode-multi" "$(basename "$0")" "$@"
"#;

/// Where a program is on the host.
fn which(name: &str) -> anyhow::Result<PathBuf> {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("{name} is not installed: run `cargo xtask setup` (nftables and iptables)")
}

/// The shared objects `path` loads, as `ldd` resolves them here, the
/// program interpreter included.
pub(crate) fn libraries(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(path)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static program has none.
        return Ok(Vec::new());
    }
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// The directory the host's xtables extensions are in.
fn xtables_dir() -> anyhow::Result<PathBuf> {
    let arch = std::env::consts::ARCH;
    [
        format!("/usr/lib/{arch}-linux-gnu/xtables"),
        "/usr/lib64/xtables".to_owned(),
        "/usr/lib/xtables".to_owned(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|d| d.is_dir())
    .context("no xtables extension directory on this host (iptables not installed?)")
}

/// Files for the image: its path in the image (no leading `/`), mode and
/// contents. Paths in the image are the paths the host resolved, so the
/// copied interpreter finds the copied libraries where it looks.
pub(crate) type Files = BTreeMap<String, (u32, Vec<u8>)>;

pub(crate) fn add_file(files: &mut Files, host: &Path, mode: u32) -> anyhow::Result<()> {
    let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
    let at = host.to_string_lossy().trim_start_matches('/').to_owned();
    files.insert(at, (mode, data));
    Ok(())
}

/// A program and everything it loads.
fn add_program(files: &mut Files, host: &Path, at: &str) -> anyhow::Result<()> {
    files.insert(
        at.trim_start_matches('/').to_owned(),
        (
            0o755,
            std::fs::read(host).with_context(|| format!("reading {}", host.display()))?,
        ),
    );
    for lib in libraries(host)? {
        add_file(files, &lib, 0o755)?;
    }
    Ok(())
}

/// The layer of the agent's binaries and the netfilter userland.
fn agent_layer(rudder: &Path, cni: &Path) -> anyhow::Result<Layer> {
    let mut files = Files::new();
    add_program(&mut files, rudder, "rudder")?;
    files.insert(
        "rudder-cni".into(),
        (0o755, std::fs::read(cni).context("reading rudder-cni")?),
    );
    for p in PROGRAMS {
        let host = which(p)?;
        let real = std::fs::canonicalize(&host)?;
        add_program(&mut files, &real, &format!("usr/sbin/{p}"))?;
    }
    let ext = xtables_dir()?;
    for e in std::fs::read_dir(&ext)? {
        let e = e?.path();
        if e.extension().is_some_and(|x| x == "so") {
            add_file(&mut files, &e, 0o644)?;
            for lib in libraries(&e)? {
                add_file(&mut files, &lib, 0o755)?;
            }
        }
    }
    for etc in ["/etc/protocols", "/etc/services", "/etc/ld.so.cache"] {
        if Path::new(etc).exists() {
            add_file(&mut files, Path::new(etc), 0o644)?;
        }
    }
    files.insert(
        "usr/sbin/iptables-wrapper".into(),
        (0o755, IPTABLES_WRAPPER.as_bytes().to_vec()),
    );
    let mut links: Vec<(String, String)> = Vec::new();
    for flavour in ["legacy", "nft"] {
        for name in XTABLES_NAMES {
            let (base, rest) = name.split_once('-').map_or((*name, ""), |(b, r)| (b, r));
            let flavoured = if rest.is_empty() {
                format!("{base}-{flavour}")
            } else {
                format!("{base}-{flavour}-{rest}")
            };
            links.push((
                format!("usr/sbin/{flavoured}"),
                format!("xtables-{flavour}-multi"),
            ));
        }
    }
    for name in XTABLES_NAMES {
        links.push((format!("usr/sbin/{name}"), "iptables-wrapper".into()));
    }
    files_layer(&files, &links)
}

/// A layer of `files` and symbolic `links` (path, target), with their
/// parent directories but those the busybox layer makes (or keeps
/// private, as `root`).
pub(crate) fn files_layer(files: &Files, links: &[(String, String)]) -> anyhow::Result<Layer> {
    let dirs = parent_dirs(files.keys().chain(links.iter().map(|(l, _)| l)));
    let mut entries: Vec<Entry<'_>> = dirs.iter().map(|d| Entry::Dir(d, 0o755)).collect();
    entries.extend(
        files
            .iter()
            .map(|(p, (mode, data))| Entry::File(p, *mode, data.clone())),
    );
    entries.extend(links.iter().map(|(l, t)| Entry::Symlink(l, t)));
    images::layer(entries)
}

/// Every parent directory of `paths`, except those the busybox layer
/// makes (its modes kept: `root` is private).
fn parent_dirs<'a>(paths: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut dirs = std::collections::BTreeSet::new();
    for p in paths {
        let mut d = Path::new(p.as_str()).parent();
        while let Some(dir) = d.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_string_lossy().into_owned());
            d = dir.parent();
        }
    }
    for made in ["bin", "etc", "root", "usr", "usr/bin"] {
        dirs.remove(made);
    }
    dirs.into_iter().collect()
}

/// Builds `rudder` without the kubelet (release, kept as
/// `release/rudder-daemonset`) and `rudder-cni` (release, static): their
/// paths. The full `release/rudder` the local clusters run is built again
/// after, so both stay as their users expect.
fn build(root: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    check_no_containerd(&cargo)?;
    util::step("building rudder without the kubelet (release) and rudder-cni (release, static)");
    let rudder = ["build", "--quiet", "--release", "--package", "rudder"];
    util::run(
        Command::new(&cargo)
            .args(rudder)
            .arg("--no-default-features"),
    )?;
    let target = util::target_dir(root);
    let daemonset = target.join("release/rudder-daemonset");
    std::fs::copy(target.join("release/rudder"), &daemonset)
        .with_context(|| format!("copying the agent to {}", daemonset.display()))?;
    util::run(Command::new(&cargo).args(rudder))?;
    util::run(
        Command::new(&cargo)
            .args([
                "build",
                "--quiet",
                "--release",
                "--package",
                "rudder-cni",
                "--target",
                &triple,
            ])
            .env(
                "RUSTFLAGS",
                "-C target-feature=+crt-static -C strip=debuginfo",
            ),
    )?;
    Ok((daemonset, target.join(&triple).join("release/rudder-cni")))
}

/// Refuses when `rudder` without the kubelet would still link the
/// containerd client (a dependency leaking past the `kubelet` feature).
fn check_no_containerd(cargo: &str) -> anyhow::Result<()> {
    let out = Command::new(cargo)
        .args([
            "tree",
            "--quiet",
            "--package",
            "rudder",
            "--no-default-features",
        ])
        .args(["--edges", "normal", "--prefix", "none"])
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let leaked: Vec<&str> = tree
        .lines()
        .filter(|l| {
            ["containerd-client ", "rudder-runtime ", "rudder-kubelet "]
                .iter()
                .any(|c| l.starts_with(c))
        })
        .collect();
    if !leaked.is_empty() {
        bail!(
            "rudder --no-default-features (the DaemonSet agent) depends on {leaked:?}: a kubelet dependency leaked past the `kubelet` feature"
        );
    }
    Ok(())
}

/// Builds the image and pushes it to `addr` (plain HTTP, like the local
/// registry; tags: the workspace version and `latest`).
pub(crate) fn agent_image(root: &Path, addr: &str) -> anyhow::Result<()> {
    let (rudder, cni) = build(root)?;
    let busybox = images::busybox_layer()?;
    let agent = agent_layer(&rudder, &cni)?;
    if addr == registry::DEFAULT_ADDR {
        registry::ensure_running(root, addr)?;
    }
    util::step(&format!("pushing rudder/agent to {addr}"));
    let reg = Registry::new(addr);
    let repo = "rudder/agent";
    let manifest = images::push_content(
        &reg,
        repo,
        &[&busybox, &agent],
        &json!({
            "Env": [images::PATH_ENV],
            "Entrypoint": ["/rudder"],
            "Cmd": ["agent", "run", "--no-kubelet"],
        }),
    )?;
    let digest = images::sha256(&manifest);
    reg.push_manifest(repo, &digest, images::MANIFEST_TYPE, &manifest)?;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{
            "mediaType": images::MANIFEST_TYPE,
            "digest": digest,
            "size": manifest.len(),
            "platform": {"architecture": images::oci_arch(), "os": "linux"},
        }],
    }))?;
    let version = env!("CARGO_PKG_VERSION");
    for tag in [version, "latest"] {
        reg.push_manifest(repo, tag, INDEX_TYPE, &index)?;
    }
    println!(
        "    {repo}:{{{version},latest}} {} ({} MB of layers)",
        images::sha256(&index),
        (busybox.blob.len() + agent.blob.len()) / 1_000_000
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_read_for_paths_only() {
        // The parsing half of `libraries`, on this machine's own shell.
        let libs = libraries(Path::new("/bin/sh")).unwrap();
        assert!(libs.iter().all(|l| l.is_absolute()), "{libs:?}");
    }

    #[test]
    fn parents_are_listed_once_and_outermost_first() {
        let paths = [
            "lib/x86_64-linux-gnu/libc.so.6".to_owned(),
            "usr/sbin/nft".to_owned(),
            "usr/lib/x86_64-linux-gnu/xtables/libxt_MASQUERADE.so".to_owned(),
        ];
        assert_eq!(
            parent_dirs(paths.iter()),
            [
                "lib",
                "lib/x86_64-linux-gnu",
                "usr/lib",
                "usr/lib/x86_64-linux-gnu",
                "usr/lib/x86_64-linux-gnu/xtables",
                "usr/sbin",
            ]
        );
    }
}
