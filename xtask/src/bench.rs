//! `cargo xtask bench`: builds the benchmark binary (release) and runs it.

use std::process::Command;

use anyhow::bail;

use crate::util;

const BENCHES: &[&str] = &[
    "dataplane",
    "network",
    "control",
    "kubelet",
    "scheduler",
    "nodeport",
];

pub(crate) fn run(name: &str, args: &[String]) -> anyhow::Result<()> {
    if !BENCHES.contains(&name) {
        bail!(
            "unknown benchmark `{name}`; there is: {}",
            BENCHES.join(", ")
        );
    }
    if !util::is_root() {
        bail!("benchmarks need root (network namespaces, BPF, netfilter)");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The network benchmark runs the workspace's binaries (CNI plugin,
    // `rudder`), built with the same profile.
    util::step("building the benchmark and the workspace's binaries (release)");
    util::run(Command::new(&cargo).args([
        "build",
        "--quiet",
        "--release",
        "--workspace",
        "--bins",
    ]))?;
    let bin = util::target_dir(&util::repo_root()?).join("release/rudder-bench");
    util::run(Command::new(bin).arg(name).args(args))
}
