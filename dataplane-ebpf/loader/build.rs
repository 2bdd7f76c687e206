//! Builds the eBPF objects and leaves them in `OUT_DIR` for `include_bytes!`,
//! so the agent binary (through this crate) carries its BPF programs. Set `RUDDER_SKIP_EBPF_BUILD=1`
//! to skip (for a quick `cargo check` without nightly): the agent then builds
//! with empty objects and refuses to load them, saying why.

use std::{env, fs, path::PathBuf};

use rudder_ebpf_build::{Build, PROGRAMS, check_prerequisites, object_file_name};

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let repo = manifest_dir
        .ancestors()
        .nth(2)
        .expect("dataplane-ebpf/loader/ sits two levels below the repository root")
        .to_path_buf();
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo.join("target"), PathBuf::from);
    let build = Build::for_repo(&repo, &target, &out_dir);

    println!("cargo::rerun-if-env-changed=RUDDER_SKIP_EBPF_BUILD");
    println!("cargo::rustc-check-cfg=cfg(rudder_ebpf_skipped)");
    if env::var_os("RUDDER_SKIP_EBPF_BUILD").is_some_and(|v| v == "1") {
        println!(
            "cargo::warning=RUDDER_SKIP_EBPF_BUILD=1: the agent is built without its eBPF objects and will refuse to load them"
        );
        println!("cargo::rustc-cfg=rudder_ebpf_skipped");
        for name in PROGRAMS {
            fs::write(out_dir.join(object_file_name(name)), []).expect("write empty object");
        }
        return;
    }
    for input in build.inputs() {
        println!("cargo::rerun-if-changed={}", input.display());
    }
    let prereq = match check_prerequisites() {
        Ok(p) => p,
        Err(e) => {
            println!("cargo::error=cannot build the eBPF objects: {e}");
            println!("cargo::error=run `cargo xtask setup` to install what is missing");
            std::process::exit(1);
        }
    };
    println!("cargo::rerun-if-changed={}", prereq.bpf_linker.display());
    if let Err(e) = build.run(&prereq) {
        for line in e.to_string().lines() {
            println!("cargo::error={line}");
        }
        std::process::exit(1);
    }
}
