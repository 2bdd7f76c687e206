//! The kernels the QEMU test boots (`tests/tests/kernels.rs`): the Debian
//! kernel packages the package registry serves, bullseye's 5.10 and
//! bookworm's 6.1, each fetched through a private apt configuration (the
//! node's own sources are left alone), unpacked under
//! [`DIR`]`/<release>/` with the modules a test VM needs and their index
//! (`depmod`), once. `cargo xtask setup` calls it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::util;

/// Where the kernels are unpacked; the test reads it too.
pub(crate) const DIR: &str = "/var/cache/rudder/test-kernels";
/// Debian suites whose `linux-image-amd64` is fetched.
const SUITES: &[&str] = &["bullseye", "bookworm"];
const MIRROR: &str = "http://deb.debian.org/debian";

/// Module directories kept (the rest of `kernel/drivers` and `sound` is a
/// machine's hardware, not a VM's).
const KEEP_DRIVERS: &[&str] = &["virtio", "net", "char"];
/// Of `kernel/drivers/net`, what a VM has no use for.
const DROP_NET_DRIVERS: &[&str] = &["ethernet", "wireless", "usb", "can", "wwan", "ieee802154"];

fn apt_args(root: &Path) -> Vec<String> {
    let o = |k: &str, v: &Path| vec!["-o".to_string(), format!("{k}={}", v.display())];
    [
        o("Dir::Etc::SourceList", &root.join("sources.list")),
        o("Dir::Etc::SourceParts", &root.join("parts")),
        o("Dir::State::Lists", &root.join("lists")),
        o("Dir::State::status", &root.join("status")),
        o("Dir::Cache", &root.join("cache")),
    ]
    .concat()
}

/// Makes sure each suite's kernel is unpacked; says what it fetched.
pub(crate) fn fetch(dry_run: bool, changed: &mut Vec<String>) -> anyhow::Result<()> {
    for suite in SUITES {
        let marker = Path::new(DIR).join(format!("{suite}.release"));
        if marker.exists() {
            continue;
        }
        changed.push(format!(
            "test kernel: Debian {suite}'s linux-image-amd64 (QEMU test)"
        ));
        if dry_run {
            continue;
        }
        if !util::is_root() {
            bail!("setup must run as root to fetch the test kernels into {DIR}");
        }
        let release = fetch_suite(suite)?;
        std::fs::write(&marker, &release)
            .with_context(|| format!("writing {}", marker.display()))?;
    }
    Ok(())
}

fn fetch_suite(suite: &str) -> anyhow::Result<String> {
    util::step(&format!(
        "fetching Debian {suite}'s kernel for the QEMU test"
    ));
    let root = PathBuf::from(DIR).join(format!("apt-{suite}"));
    for d in ["lists/partial", "cache/archives/partial", "parts", "debs"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::write(
        root.join("sources.list"),
        format!("deb {MIRROR} {suite} main\n"),
    )?;
    std::fs::write(root.join("status"), "")?;
    let args = apt_args(&root);
    util::run(Command::new("apt-get").args(&args).args(["-q", "update"]))?;
    let depends = util::output(
        Command::new("apt-cache")
            .args(&args)
            .args(["depends", "linux-image-amd64"]),
    )?;
    let package = depends
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
        .map(|v| format!("linux-image-{}", v.trim()))
        .context("linux-image-amd64 names no kernel package")?;
    let release = package.trim_start_matches("linux-image-").to_string();
    util::run(
        Command::new("apt-get")
            .args(&args)
            .args(["-q", "download", &package])
            .current_dir(root.join("debs")),
    )?;
    let deb = std::fs::read_dir(root.join("debs"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("{package} was not downloaded"))?;
    let out = PathBuf::from(DIR).join(&release);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&out))?;
    prune(&out.join("lib/modules").join(&release).join("kernel"))?;
    util::run(Command::new("depmod").arg("-b").arg(&out).arg(&release))?;
    // The package and the suite's indexes are of no further use.
    std::fs::remove_dir_all(&root)?;
    if !out.join("boot").join(format!("vmlinuz-{release}")).exists() {
        bail!("{package} has no boot/vmlinuz-{release}");
    }
    Ok(release)
}

/// Drops the modules of hardware a VM does not have.
fn prune(kernel: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(kernel.join("sound"));
    for e in std::fs::read_dir(kernel.join("drivers"))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !KEEP_DRIVERS.contains(&name.as_str()) {
            std::fs::remove_dir_all(e.path())?;
        }
    }
    for d in DROP_NET_DRIVERS {
        let _ = std::fs::remove_dir_all(kernel.join("drivers/net").join(d));
    }
    Ok(())
}
