//! Building the eBPF programs (nightly, `-Z build-std=core`, bpf-linker) for
//! `cargo xtask build-ebpf`, `up` and `test`, and running clippy on them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rudder_ebpf_build::{Build, check_prerequisites};

use crate::util;

/// Builds the BPF objects into `out`.
pub(crate) fn build(root: &Path, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    util::step("building eBPF objects (nightly, bpfel-unknown-none, bpf-linker)");
    let prereq = check_prerequisites().context("the eBPF toolchain is incomplete")?;
    let objects = Build::for_repo(root, &util::target_dir(root), out).run(&prereq)?;
    Ok(objects)
}

/// Runs clippy on the eBPF crate (nightly, BPF target), denying warnings.
pub(crate) fn clippy(root: &Path) -> anyhow::Result<()> {
    util::step("cargo clippy on the eBPF crate (nightly, bpfel-unknown-none)");
    let prereq = check_prerequisites().context("the eBPF toolchain is incomplete")?;
    let target = util::target_dir(root);
    Build::for_repo(root, &target, &target.join("bpf")).clippy(&prereq)?;
    Ok(())
}
