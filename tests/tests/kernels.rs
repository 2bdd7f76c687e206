//! Other kernels than this machine's: each kernel `cargo xtask setup`
//! fetched from the package registry (Debian bullseye's 5.10 and
//! bookworm's 6.1) booted under QEMU, with this machine's root read-only
//! beneath a tmpfs overlay and `rudder agent preflight` as the work
//! (`tests/vm/guest.sh`): every BPF object the agent loads is loaded by
//! that kernel's verifier, and the test holds the agent to choosing its
//! Service proxy from what loaded, as `--proxy-mode auto` does: the eBPF
//! dataplane where the Service programs load; else nftables rules where
//! the kernel is 5.13 or later; else iptables rules. The kubelet's pod
//! cgroups are checked there too (`tests/tests/pod_cgroups.rs`): the
//! cgroupfs driver on the pure cgroup v2 hierarchy `guest.sh` mounts (on
//! 6.1: see `check_kernel` for 5.10), and
//! the systemd driver in bookworm's kernel booted with systemd as PID 1
//! (`tests/vm/guest-systemd.sh`), once on cgroup v2 and once on the v1
//! hierarchies CentOS 7 and RHEL 8 boot with.
//!
//! QEMU runs without KVM: this machine is itself a VM whose nested KVM
//! does not boot these kernels; emulated, a boot to the end of preflight
//! takes some 20 s, the exact-bytes tests a minute more.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use rudder_test_harness::{ChildGuard, TempDir, privileged_tests, workspace_bin};

/// Where `cargo xtask setup` unpacks the kernels (`xtask/src/kernels.rs`).
const KERNELS: &str = "/var/cache/rudder/test-kernels";
/// The modules the initramfs loads to reach the host's root.
const INITRD_MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_pci",
    "netfs",
    "fscache",
    "9pnet",
    "9pnet_virtio",
    "9p",
    "overlay",
];
const BOOT_TIMEOUT: Duration = Duration::from_secs(450);

/// The kernel releases fetched, by Debian suite.
fn kernels() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(KERNELS)
        .unwrap_or_else(|e| panic!("{KERNELS}: {e}: run `cargo xtask setup` first"))
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "release") {
            let suite = p.file_stem().unwrap().to_string_lossy().into_owned();
            out.insert(
                suite,
                std::fs::read_to_string(&p).unwrap().trim().to_owned(),
            );
        }
    }
    out
}

/// The modules to insert, dependencies first, for `wanted` (those the
/// release has as modules; built-in ones need nothing), from the
/// release's `modules.dep`.
fn load_order(modules: &Path, wanted: &[&str]) -> Vec<PathBuf> {
    let dep = std::fs::read_to_string(modules.join("modules.dep")).unwrap_or_default();
    let deps: BTreeMap<String, Vec<String>> = dep
        .lines()
        .filter_map(|l| {
            let (m, d) = l.split_once(':')?;
            Some((
                m.to_owned(),
                d.split_whitespace().map(str::to_owned).collect(),
            ))
        })
        .collect();
    let by_name = |name: &str| {
        deps.keys()
            .find(|k| {
                Path::new(k.as_str())
                    .file_name()
                    .is_some_and(|f| f.to_string_lossy() == format!("{name}.ko"))
            })
            .cloned()
    };
    fn visit(m: &str, deps: &BTreeMap<String, Vec<String>>, out: &mut Vec<String>) {
        if out.iter().any(|o| o == m) {
            return;
        }
        // modules.dep lists a module's dependencies last-loaded first.
        for d in deps.get(m).into_iter().flatten().rev() {
            visit(d, deps, out);
        }
        out.push(m.to_owned());
    }
    let mut out = Vec::new();
    for w in wanted {
        if let Some(m) = by_name(w) {
            visit(&m, &deps, &mut out);
        }
    }
    out.into_iter().map(|m| modules.join(m)).collect()
}

/// An initramfs: busybox, the modules that reach the host's root, and
/// `tests/vm/init`.
fn initramfs(dir: &Path, modules: &Path) -> PathBuf {
    let root = dir.join("initrd");
    for d in ["bin", "mods", "proc", "sys", "dev", "newroot"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static (cargo xtask setup installs it)");
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    let mut order = String::new();
    for (i, p) in load_order(modules, INITRD_MODULES).iter().enumerate() {
        let name = format!("{i:02}-{}", p.file_name().unwrap().to_string_lossy());
        std::fs::copy(p, root.join("mods").join(&name)).unwrap();
        order.push_str(&name);
        order.push('\n');
    }
    std::fs::write(root.join("mods/order"), order).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(repo.join("vm/init"), root.join("init")).unwrap();
    let image = dir.join("initrd.cpio");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | {busybox} cpio -o -H newc > {}",
            root.display(),
            image.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "cpio: {out:?}");
    image
}

/// The newest build of the test binary `name` (`tests/tests/<name>.rs`),
/// built beside this test.
fn test_binary(name: &str) -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    std::fs::read_dir(&deps)
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&format!("{name}-")) && !n.ends_with(".d")
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .unwrap_or_else(|| {
            panic!("the {name} test binary: build the tests first (`cargo xtask test` does)")
        })
}

/// Boots `release`, runs preflight, `tests`, the netfilter tests matching
/// `netfilter` and (with `newer`, for 6.1) the cgroupfs driver's test and
/// the XDP path's tests there, and returns what its serial console printed.
fn boot(release: &str, tests: &Path, netfilter: &str, newer: bool) -> String {
    let modules = Path::new(KERNELS)
        .join(release)
        .join("lib/modules")
        .join(release);
    let vm = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm");
    let append = format!(
        "GUEST={} MODULES={} RUDDER={} TESTBIN={} TESTBIN2={} FILTER2={netfilter} TESTBIN5={}{}",
        vm.join("guest.sh").display(),
        modules.display(),
        workspace_bin("rudder").display(),
        tests.display(),
        test_binary("service_netfilter").display(),
        test_binary("service_dsr").display(),
        if newer {
            // (Not the daemon's test: it needs kubectl and a server.)
            format!(
                " TESTBIN3={} TESTBIN4={} FILTER5=--skip=the_proxy_daemon",
                test_binary("pod_cgroups").display(),
                test_binary("service_xdp").display()
            )
        } else {
            // Direct server return's exact bytes only: its XDP test needs
            // an interface context for BPF_PROG_TEST_RUN (5.15), and its
            // path MTU test a FIB lookup that checks the length asked
            // about (5.12).
            " FILTER5=bytes_".to_string()
        },
    );
    let console = run_vm(release, &append);
    assert!(
        console.contains("RUDDER-VM: preflight exit"),
        "{release}: preflight did not run:\n{console}"
    );
    console
}

/// Boots `release` with `append` on its command line (after the console's
/// settings) and returns what its serial console printed by power-off.
fn run_vm(release: &str, append: &str) -> String {
    let kdir = Path::new(KERNELS).join(release);
    let modules = kdir.join("lib/modules").join(release);
    let scratch = TempDir::new();
    let initrd = initramfs(scratch.path(), &modules);
    let serial = scratch.join("serial.log");
    let append = format!("console=ttyS0 panic=-1 quiet {append}");
    let mut vm = ChildGuard(
        Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-cpu", "max", "-m", "4096", "-smp", "1"])
            .args(["-display", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-kernel")
            .arg(kdir.join("boot").join(format!("vmlinuz-{release}")))
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", &append])
            // The host's root, read-only: the guest writes to its overlay.
            .args([
                "-virtfs",
                "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 (cargo xtask setup installs qemu-system-x86)"),
    );
    let started = Instant::now();
    while vm.running() {
        assert!(
            started.elapsed() < BOOT_TIMEOUT,
            "{release}: no power-off within {BOOT_TIMEOUT:?}; the console said:\n{}",
            std::fs::read_to_string(&serial).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    String::from_utf8_lossy(&std::fs::read(&serial).unwrap()).into_owned()
}

/// The number of tests passed in the run that ends at `marker`.
fn passed_before(console: &str, marker: &str) -> Option<u32> {
    let end = console.find(marker)?;
    console[..end]
        .lines()
        .rev()
        .find_map(|l| {
            l.trim_start_matches(|c: char| c.is_control())
                .strip_prefix("test result: ok. ")
        })
        .and_then(|r| r.split(' ').next()?.parse::<u32>().ok())
}

/// The cgroupfs driver's test passed on the pure cgroup v2 hierarchy
/// `guest.sh` mounts.
fn check_cgroupfs_v2(release: &str, console: &str) {
    assert!(
        console.contains("RUDDER-VM: cgroup tests exit 0")
            && passed_before(console, "RUDDER-VM: cgroup tests exit") == Some(1),
        "{release}: the cgroupfs driver on cgroup v2:\n{console}"
    );
}

/// Boots bookworm's kernel with systemd as PID 1, on cgroup v2 or (with
/// `legacy`) the v1 hierarchies, and requires the systemd driver's test to
/// pass there.
fn check_systemd(legacy: bool) {
    let k = kernels();
    let release = k
        .get("bookworm")
        .expect("bookworm's kernel: run `cargo xtask setup`");
    let vm = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm");
    let append = format!(
        "GUEST={} WORK={} TESTBIN3={}{}",
        vm.join("guest-systemd.sh").display(),
        vm.join("systemd-work.sh").display(),
        test_binary("pod_cgroups").display(),
        if legacy {
            " systemd.unified_cgroup_hierarchy=0"
        } else {
            ""
        },
    );
    let console = run_vm(release, &append);
    let fs = if legacy { "tmpfs" } else { "cgroup2fs" };
    assert!(
        console.contains(&format!("RUDDER-VM: init systemd, /sys/fs/cgroup is {fs}")),
        "{release}: systemd did not run the checks on {fs}:\n{console}"
    );
    assert!(
        console.contains("RUDDER-VM: cgroup tests exit 0")
            && passed_before(&console, "RUDDER-VM: cgroup tests exit") == Some(1),
        "{release}: the systemd driver ({fs}):\n{console}"
    );
}

/// The preflight checks a console shows: name → (status, detail).
fn checks(console: &str) -> BTreeMap<String, (String, String)> {
    console
        .lines()
        .filter_map(|l| {
            let l = l.trim_start_matches(|c: char| c.is_control());
            let (status, rest) = l.strip_prefix('[')?.split_once("] ")?;
            let (name, detail) = rest.split_at(rest.len().min(23));
            Some((
                name.trim().to_owned(),
                (status.trim().to_owned(), detail.trim().to_owned()),
            ))
        })
        .collect()
}

fn kernel_version(release: &str) -> (u32, u32) {
    let mut p = release
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (p.next().unwrap_or(0), p.next().unwrap_or(0))
}

/// What every kernel must show, whatever its version; `netfilter` names
/// the netfilter modes' tests (`service_netfilter`) that must pass there,
/// `expected` of them.
fn check_kernel(release: &str, netfilter: &str, expected: u32) {
    // runc 1.1 cannot copy itself (its CVE-2019-5736 guard) from this
    // machine's root over 9p on 5.10 ("could not ensure we are a cloned
    // binary"), a limit of the VM's root, not of the node: the cgroupfs
    // driver's test runs on 6.1's, as do the XDP path's (their interface
    // context in BPF_PROG_TEST_RUN needs 5.15).
    let cgroups = kernel_version(release) >= (6, 1);
    let console = boot(
        release,
        &test_binary("service_test_run"),
        netfilter,
        cgroups,
    );
    let c = checks(&console);
    let get = |name: &str| {
        c.get(name)
            .unwrap_or_else(|| panic!("{release}: no {name:?} check in:\n{console}"))
    };
    assert_eq!(get("kernel").1, release);
    assert_eq!(get("kernel BTF").0, "ok", "{console}");
    assert_eq!(get("bpf filesystem").0, "ok", "{console}");
    assert_eq!(get("BPF tc program").0, "ok", "{console}");
    // TCX from 6.6, clsact before: either way a program attaches.
    let attach = get("tc attach");
    assert_eq!(attach.0, "ok", "{console}");
    if kernel_version(release) < (6, 6) {
        assert!(attach.1.starts_with("clsact"), "{release}: {attach:?}");
    }
    // The Service proxy is chosen from what loaded.
    let dataplane = get("Service dataplane");
    let proxy = get("Service proxy");
    // These kernels load every Service program, the node-interface one
    // included: each call chain's frames, rounded up to 32 bytes as their
    // verifiers count them, fit in 512 bytes.
    assert_eq!(dataplane.0, "ok", "{release}: {dataplane:?}");
    // And the NodePort XDP program.
    assert_eq!(get("NodePort XDP").0, "ok", "{release}: {console}");
    if dataplane.0 == "ok" || dataplane.1.contains("node-interface program") {
        assert!(
            proxy.1.contains("eBPF"),
            "{release}: {proxy:?} after {dataplane:?}"
        );
    } else {
        assert!(dataplane.1.contains("refused"), "{release}: {dataplane:?}");
        let want = if kernel_version(release) >= (5, 13) {
            "nftables rules"
        } else {
            "iptables rules"
        };
        assert!(proxy.1.starts_with(want), "{release}: {proxy:?}");
        assert_eq!(proxy.0, "warn");
    }
    assert!(
        console.contains("RUDDER-VM: preflight exit 0"),
        "{release}: the node must be usable:\n{console}"
    );
    // The programs translate packets on this kernel exactly as on this
    // machine's: the exact-bytes tests pass there.
    assert!(
        console.contains("RUDDER-VM: tests exit 0") && console.contains("test result: ok."),
        "{release}: the Service programs' tests:\n{console}"
    );
    // The netfilter fallbacks: nftables from 5.13 (kube-proxy's minimum,
    // checked by loading a sample table there), iptables everywhere; and
    // their tests pass with real sockets on this kernel.
    let fallback = get("netfilter fallback");
    let nft_usable = kernel_version(release) >= (5, 13);
    assert_eq!(
        fallback.1.starts_with("nftables mode usable"),
        nft_usable,
        "{release}: {fallback:?}"
    );
    assert!(
        fallback.1.ends_with("iptables mode usable"),
        "{release}: {fallback:?}"
    );
    let netfilter_passed = passed_before(&console, "RUDDER-VM: netfilter tests exit");
    assert!(
        console.contains("RUDDER-VM: netfilter tests exit 0") && netfilter_passed == Some(expected),
        "{release}: the netfilter tests ({netfilter}):\n{console}"
    );
    // Direct server return translates as on this machine's kernel (and,
    // from 6.1, end to end over veths, path MTU discovery included).
    let dsr_tests = if cgroups { 6 } else { 3 };
    assert!(
        console.contains("RUDDER-VM: dsr tests exit 0")
            && passed_before(&console, "RUDDER-VM: dsr tests exit") == Some(dsr_tests),
        "{release}: direct server return's tests:\n{console}"
    );
    if cgroups {
        check_cgroupfs_v2(release, &console);
        // The XDP path's exact bytes and its attachment in a veth's driver.
        assert!(
            console.contains("RUDDER-VM: xdp tests exit 0")
                && passed_before(&console, "RUDDER-VM: xdp tests exit") == Some(3),
            "{release}: the XDP path's tests:\n{console}"
        );
    }
    eprintln!(
        "{release}: Service dataplane [{}] {}; Service proxy: {}",
        dataplane.0, dataplane.1, proxy.1
    );
}

privileged_tests! {
    fn preflight_on_bullseyes_5_10_chooses_the_proxy_from_what_loads() {
        let k = kernels();
        let release = k.get("bullseye").expect("bullseye's kernel: run `cargo xtask setup`");
        assert!(release.starts_with("5.10."), "{release}");
        // Below the nftables mode's minimum: both iptables flavours.
        check_kernel(release, "services_through_iptables", 2);
    }

    fn preflight_on_bookworms_6_1_chooses_the_proxy_from_what_loads() {
        let k = kernels();
        let release = k.get("bookworm").expect("bookworm's kernel: run `cargo xtask setup`");
        assert!(release.starts_with("6.1."), "{release}");
        // nftables and both iptables flavours.
        check_kernel(release, "services_through", 3);
    }

    fn the_systemd_cgroup_driver_under_systemd_on_cgroup_v2() {
        check_systemd(false);
    }

    fn the_systemd_cgroup_driver_under_systemd_on_cgroup_v1() {
        check_systemd(true);
    }
}
