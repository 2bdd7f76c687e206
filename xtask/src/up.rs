//! `cargo xtask up` / `down`: what exists today of the one-node cluster.

use std::{path::Path, process::Command};

use crate::{ebpf, images, registry, setup, util};

pub(crate) fn up(root: &Path) -> anyhow::Result<()> {
    if util::is_root() {
        util::step("checking and installing prerequisites");
        setup::run(false)?;
    } else {
        println!("not root: skipping `cargo xtask setup` (run it as root on a fresh machine)");
    }
    ebpf::build(root, &root.join("target/bpf"))?;
    util::step("building the rudder binary (release)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    util::run(Command::new(&cargo).args(["build", "--quiet", "--release", "--package", "rudder"]))?;
    images::run(root, registry::DEFAULT_ADDR)?;
    util::step("checking this node's kernel: rudder agent preflight");
    let rudder = util::target_dir(root).join("release/rudder");
    util::run(Command::new(&rudder).args(["agent", "preflight"]))?;
    println!(
        "\nReady: the eBPF objects are in target/bpf/, the test images in the registry at {}, \
         and this kernel passed the agent's checks.\n\
         Not yet here: `rudder server` (control plane) and the kubelet, so no cluster starts yet; \
         see the README's table of what works.\n\
         Stop the registry with `cargo xtask down`.",
        registry::DEFAULT_ADDR
    );
    Ok(())
}

pub(crate) fn down(root: &Path) -> anyhow::Result<()> {
    if registry::stop(root)? {
        println!("stopped the local registry");
    } else {
        println!("nothing to stop");
    }
    Ok(())
}
