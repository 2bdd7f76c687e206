//! `cargo xtask setup`: installs what the project needs, idempotently.

use std::process::Command;

use anyhow::{Context as _, bail};
use rudder_ebpf_build::{BuildError, check_prerequisites};

use crate::util;

/// Debian/Ubuntu packages and what each is for.
const APT_PACKAGES: &[(&str, &str)] = &[
    (
        "containerd",
        "container runtime the kubelet drives (1.6 native API)",
    ),
    ("runc", "OCI runtime behind containerd's runc shim"),
    (
        "containernetworking-plugins",
        "reference CNI plugins (bridge, host-local, portmap, ...)",
    ),
    ("docker-registry", "local OCI registry for test images"),
    ("skopeo", "inspecting and copying images"),
    ("busybox-static", "the busybox test image's binary"),
    (
        "curl",
        "raw HTTPS requests in the hostile-input and kubelet API tests",
    ),
    ("iproute2", "ip, tc: namespaces and links in tests"),
    (
        "iptables",
        "kube-proxy rule shapes in benchmarks, masquerade",
    ),
    ("nftables", "kube-proxy nftables rule shapes in benchmarks"),
    ("conntrack", "conntrack inspection in dataplane tests"),
    ("ethtool", "offload checks on VXLAN devices"),
    ("tcpdump", "packet captures when debugging tests"),
    ("iperf3", "throughput benchmarks"),
    ("wrk", "HTTP load in benchmarks"),
    ("bpftool", "inspecting loaded BPF programs and maps"),
    ("etcd-server", "external etcd store backend and comparisons"),
    ("etcd-client", "etcdctl"),
    (
        "python3-venv",
        "a virtualenv for the official Python client in tests",
    ),
    (
        "nodejs",
        "node and npm (NodeSource's package carries both) for the official JavaScript client in tests",
    ),
    ("mount", "mounting bpffs in tests"),
    (
        "qemu-system-x86",
        "booting other kernels (Debian's 5.10 and 6.1) in the preflight test",
    ),
    ("kmod", "depmod for the test kernels' modules"),
    (
        "protobuf-compiler",
        "protoc, for containerd's gRPC bindings (containerd-client)",
    ),
];

/// The same needs on RHEL/CentOS/Fedora (dnf/yum names; some are in EPEL or
/// Docker's repository, as noted).
const DNF_PACKAGES: &str = "\
  dnf install -y protobuf-compiler runc iproute iptables nftables conntrack-tools ethtool tcpdump iperf3 wrk bpftool skopeo \\
      containernetworking-plugins etcd util-linux nodejs npm
  dnf install -y containerd.io          # from Docker's repository (download.docker.com/linux/centos)
  dnf install -y busybox docker-distribution   # from EPEL (`dnf install -y epel-release`)
  rustup toolchain install nightly --component rust-src
  cargo install bpf-linker@0.10.0 --locked";

pub(crate) fn run(dry_run: bool) -> anyhow::Result<()> {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |k: &str| {
        os.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let (id, like) = (field("ID"), field("ID_LIKE"));
    let debian_like = id == "debian" || id == "ubuntu" || like.split(' ').any(|l| l == "debian");
    let mut changed = vec![];
    if debian_like {
        apt(dry_run, &mut changed)?;
    } else {
        println!(
            "setup: {id} is not Debian/Ubuntu; install these yourself, then re-run `cargo xtask setup`:\n{DNF_PACKAGES}"
        );
        bail!("automatic install is only done on Debian/Ubuntu");
    }
    rust(dry_run, &mut changed)?;
    crate::kernels::fetch(dry_run, &mut changed)?;
    python(dry_run, &mut changed)?;
    javascript(dry_run, &mut changed)?;
    if changed.is_empty() {
        println!("setup: nothing to do, everything is installed");
    } else {
        println!(
            "setup: {}:",
            if dry_run {
                "would install"
            } else {
                "installed"
            }
        );
        for c in changed {
            println!("  {c}");
        }
    }
    Ok(())
}

fn apt(dry_run: bool, changed: &mut Vec<String>) -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    for p in &missing {
        let why = APT_PACKAGES
            .iter()
            .find(|(n, _)| n == p)
            .map_or("", |(_, w)| w);
        changed.push(format!("apt: {p} ({why})"));
    }
    if dry_run {
        return Ok(());
    }
    if !util::is_root() {
        bail!("setup must run as root to install {}", missing.join(" "));
    }
    util::step(&format!("apt-get install {}", missing.join(" ")));
    util::run(Command::new("apt-get").args(["update", "-q"]))?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The official Python client (`kubernetes` on PyPI) for the client
/// compatibility tests, and kopf (the operator framework) for the operator
/// test, in a virtualenv of their own: the client's dependency pins
/// (python-dateutil) clash with other packages of a system Python.
const PYTHON_VENV: &str = "target/rudder/python";
const PYTHON_PACKAGES: &[&str] = &["kubernetes==37.0.2", "kopf==1.45.2"];

fn python(dry_run: bool, changed: &mut Vec<String>) -> anyhow::Result<()> {
    let py = format!("{PYTHON_VENV}/bin/python");
    let has_client = Command::new(&py)
        .args(["-c", "import kubernetes, kopf"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_client {
        return Ok(());
    }
    let what = format!(
        "python3 -m venv {PYTHON_VENV} && {PYTHON_VENV}/bin/pip install {}",
        PYTHON_PACKAGES.join(" ")
    );
    changed.push(what.clone());
    if dry_run {
        return Ok(());
    }
    util::step(&what);
    util::run(Command::new("python3").args(["-m", "venv", PYTHON_VENV]))?;
    util::run(
        Command::new(format!("{PYTHON_VENV}/bin/pip"))
            .args(["install", "--quiet"])
            .args(PYTHON_PACKAGES),
    )?;
    Ok(())
}

/// The official JavaScript client, at the version `tests/js/package-lock.json`
/// pins, into tests/js/node_modules (where the flow scripts import it from).
const JS_DIR: &str = "tests/js";

fn javascript(dry_run: bool, changed: &mut Vec<String>) -> anyhow::Result<()> {
    let installed =
        std::path::Path::new(JS_DIR).join("node_modules/@kubernetes/client-node/package.json");
    let lock = std::path::Path::new(JS_DIR).join("package-lock.json");
    let fresh = match (std::fs::metadata(&installed), std::fs::metadata(&lock)) {
        (Ok(i), Ok(l)) => i.modified().ok() >= l.modified().ok(),
        _ => false,
    };
    if fresh {
        return Ok(());
    }
    let what = format!("npm ci in {JS_DIR} (@kubernetes/client-node)");
    changed.push(what.clone());
    if dry_run {
        return Ok(());
    }
    util::step(&what);
    util::run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(JS_DIR),
    )?;
    // npm ci keeps the packages' own times; mark the install as done.
    std::fs::File::options()
        .append(true)
        .open(&installed)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()))?;
    Ok(())
}

fn rust(dry_run: bool, changed: &mut Vec<String>) -> anyhow::Result<()> {
    // Each pass fixes the first missing piece; at most three are missing.
    for _ in 0..4 {
        let fix: (&str, Vec<&str>) = match check_prerequisites() {
            Ok(_) => return Ok(()),
            Err(BuildError::NoRustup) => bail!("{}", BuildError::NoRustup),
            Err(BuildError::NoNightly { .. }) => (
                "rustup toolchain install nightly --profile minimal --component rust-src",
                vec![
                    "rustup",
                    "toolchain",
                    "install",
                    "nightly",
                    "--profile",
                    "minimal",
                    "--component",
                    "rust-src",
                ],
            ),
            Err(BuildError::NoRustSrc(_)) => (
                "rustup component add rust-src --toolchain nightly",
                vec![
                    "rustup",
                    "component",
                    "add",
                    "rust-src",
                    "--toolchain",
                    "nightly",
                ],
            ),
            Err(BuildError::NoBpfLinker) => (
                "cargo install bpf-linker@0.10.0 --locked",
                vec!["cargo", "install", "bpf-linker@0.10.0", "--locked"],
            ),
            Err(BuildError::WrongBpfLinker { .. }) => (
                "cargo install bpf-linker@0.10.0 --locked --force",
                vec![
                    "cargo",
                    "install",
                    "bpf-linker@0.10.0",
                    "--locked",
                    "--force",
                ],
            ),
            Err(e) => return Err(e).context("checking the eBPF toolchain"),
        };
        changed.push(fix.0.to_string());
        if dry_run {
            return Ok(());
        }
        util::step(fix.0);
        util::run(Command::new(fix.1[0]).args(&fix.1[1..]))?;
    }
    bail!(
        "the eBPF toolchain is still incomplete after installing it: {:?}",
        check_prerequisites().err()
    )
}
