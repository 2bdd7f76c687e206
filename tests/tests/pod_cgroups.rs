//! The kubelet's pod cgroups (`rudder_kubelet::cgroups`) with the real
//! kernel and runc: a Burstable pod's cgroup is made in its QoS tier with
//! the limits the kubelet gives it, runc (as containerd's shim calls it)
//! starts a container inside it from the `cgroupsPath` the kubelet writes,
//! the tier's shares follow the pod's request, and removal leaves nothing.
//!
//! The cgroupfs driver runs here on this machine's cgroup v1 hierarchies,
//! and (by `tests/tests/kernels.rs`) on a pure cgroup v2 hierarchy in a VM.
//! The systemd driver needs systemd as PID 1, which this machine does not
//! have: it is ignored here and `kernels.rs` runs it in a VM booted with
//! systemd as its init, on cgroup v2 and on the v1 hierarchies CentOS 7
//! and RHEL 8 boot with.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Container, PodSpec, ResourceRequirements},
    apimachinery::pkg::api::resource::Quantity,
};
use rudder_kubelet::cgroups::{Driver, Layout, PodCgroups};
use rudder_test_harness::{TempDir, privileged_tests, unique_name};

const UID: &str = "6b0c7a4e-3f2d-4e1a-9c8b-7d6e5f4a3b21";
const ROOT: &str = "/sys/fs/cgroup";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One container: requests 250m cpu; limits 500m cpu and 64 MiB.
fn burstable() -> PodSpec {
    let q = |l: &[(&str, &str)]| {
        Some(
            l.iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        )
    };
    PodSpec {
        containers: vec![Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: q(&[("cpu", "250m")]),
                limits: q(&[("cpu", "500m"), ("memory", "64Mi")]),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn unified() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// A setting of the cgroup `rel`, by its v1 controller and file or its v2
/// file.
fn setting(rel: &str, v1: (&str, &str), v2: &str) -> String {
    let rel = rel.trim_start_matches('/');
    let p = if unified() {
        Path::new(ROOT).join(rel).join(v2)
    } else {
        Path::new(ROOT).join(v1.0).join(rel).join(v1.1)
    };
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_owned()
}

/// A runc bundle of busybox sleeping, in the cgroup `cgroups_path`.
fn bundle(dir: &Path, cgroups_path: &str) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static (cargo xtask setup installs it)");
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    for d in ["proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    let out = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(dir)
        .output()
        .expect("runc");
    assert!(out.status.success(), "runc spec: {out:?}");
    let path = dir.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/busybox", "sleep", "60"]);
    spec["linux"]["cgroupsPath"] = cgroups_path.into();
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    dir.to_path_buf()
}

/// runc with the driver's cgroup flag and a state directory of its own;
/// its output goes to a file beside the state, since a detached
/// container keeps the standard streams it was given.
fn runc(state: &Path, driver: Driver, args: &[&str]) -> (bool, String) {
    std::fs::create_dir_all(state).unwrap();
    let log = state.with_extension("log");
    let file = std::fs::File::create(&log).unwrap();
    let status = Command::new("runc")
        .arg("--root")
        .arg(state)
        .args((driver == Driver::Systemd).then_some("--systemd-cgroup"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .expect("runc");
    (
        status.success(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

/// The cgroup a process is in, as `/proc/<pid>/cgroup` says: the unified
/// line on v2, the memory controller's on v1.
fn cgroup_of(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            let want = if unified() {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == "memory")
            };
            want.then(|| path.to_owned())
        })
        .unwrap_or_else(|| panic!("no cgroup line in:\n{text}"))
}

/// Removes this test's tree however the test ends: the cgroupfs driver's
/// directories, or systemd's slices (stopping the top one stops the rest).
struct Cleanup {
    driver: Driver,
    top_unit: String,
    top_dir: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.driver == Driver::Systemd {
            let _ = Command::new("systemctl")
                .args(["stop", &self.top_unit])
                .status();
        }
        let rel = self.top_dir.trim_start_matches('/');
        let mut bases = vec![PathBuf::from(ROOT)];
        bases.extend(
            std::fs::read_dir(ROOT)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path()),
        );
        for b in bases {
            remove_tree(&b.join(rel));
        }
    }
}

fn remove_tree(p: &Path) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
        let _ = std::fs::remove_dir(p);
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The flow both drivers must pass.
fn pod_in_its_tier_with_a_runc_container(driver: Driver) {
    let cgroup_root = format!("/{}", unique_name());
    let layout = Layout::new(driver, &cgroup_root);
    let top = rudder_kubelet::cgroups::CgroupName::parse_cgroupfs(&cgroup_root);
    let _cleanup = Cleanup {
        driver,
        top_unit: top.to_systemd_unit(),
        top_dir: if driver == Driver::Systemd {
            top.to_systemd()
        } else {
            cgroup_root.clone()
        },
    };
    let rt = runtime();
    let cgroups = rt
        .block_on(PodCgroups::open(driver, &cgroup_root, 2000))
        .unwrap_or_else(|e| panic!("{driver:?}: {e}"));
    eprintln!(
        "{driver:?} on cgroup {}: kubepods at {}",
        if unified() { "v2" } else { "v1" },
        layout.dir(layout.kubepods())
    );
    // The node's two cores' shares on kubepods; the tiers at the least.
    let kubepods = layout.dir(layout.kubepods());
    let tier = layout.dir(&layout.tier(rudder_k8s::qos::QosClass::Burstable));
    if unified() {
        assert_eq!(setting(&kubepods, ("", ""), "cpu.weight"), "79");
        assert_eq!(setting(&tier, ("", ""), "cpu.weight"), "1");
    } else {
        assert_eq!(setting(&kubepods, ("cpu", "cpu.shares"), ""), "2048");
        assert_eq!(setting(&tier, ("cpu", "cpu.shares"), ""), "2");
    }

    let pod = rt.block_on(cgroups.ensure_pod(UID, &burstable())).unwrap();
    let dir = layout.dir(&pod);
    let expected_dir = match driver {
        Driver::Cgroupfs => format!("{cgroup_root}/kubepods/burstable/pod{UID}"),
        Driver::Systemd => format!(
            "{}/{}-kubepods-burstable-pod{}.slice",
            layout.dir(&layout.tier(rudder_k8s::qos::QosClass::Burstable)),
            cgroup_root.trim_start_matches('/').replace('-', "_"),
            UID.replace('-', "_")
        ),
    };
    assert_eq!(dir, expected_dir);
    // The pod's limits: 64 MiB, half a cpu; its tier's shares follow it.
    assert_eq!(
        setting(&dir, ("memory", "memory.limit_in_bytes"), "memory.max"),
        (64u64 << 20).to_string()
    );
    if unified() {
        assert_eq!(setting(&dir, ("", ""), "cpu.max"), "50000 100000");
        assert_eq!(setting(&dir, ("", ""), "cpu.weight"), "10");
        assert_eq!(setting(&tier, ("", ""), "cpu.weight"), "10");
    } else {
        assert_eq!(setting(&dir, ("cpu", "cpu.cfs_quota_us"), ""), "50000");
        assert_eq!(setting(&dir, ("cpu", "cpu.shares"), ""), "256");
        assert_eq!(setting(&tier, ("cpu", "cpu.shares"), ""), "256");
    }

    // A container from the path the kubelet writes into its OCI spec.
    let scratch = TempDir::new();
    let id = unique_name();
    let b = bundle(
        &scratch.join("bundle"),
        &layout.container_cgroups_path(&pod, &id),
    );
    let state = scratch.join("runc");
    let out = runc(
        &state,
        driver,
        &["run", "-d", "--bundle", b.to_str().unwrap(), &id],
    );
    assert!(out.0, "runc run: {}", out.1);
    let out = runc(&state, driver, &["state", &id]);
    let st: serde_json::Value =
        serde_json::from_str(&out.1).unwrap_or_else(|e| panic!("runc state: {e}: {}", out.1));
    let pid = st["pid"].as_u64().unwrap() as u32;
    assert_eq!(cgroup_of(pid), layout.container_dir(&pod, &id));
    assert_eq!(
        cgroups.find_container_dir(UID, &id).as_deref(),
        Some(layout.container_dir(&pod, &id).as_str())
    );
    let _ = runc(&state, driver, &["kill", &id, "KILL"]);
    wait_until("the container to stop", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    let out = runc(&state, driver, &["delete", "--force", &id]);
    assert!(out.0, "runc delete: {}", out.1);

    // Removal: the pod's cgroup goes and its tier's shares come back.
    rt.block_on(cgroups.remove_pod(UID));
    let gone = |rel: &str| {
        let rel = rel.trim_start_matches('/');
        if unified() {
            !Path::new(ROOT).join(rel).exists()
        } else {
            ["cpu", "memory", "pids"]
                .iter()
                .all(|c| !Path::new(ROOT).join(c).join(rel).exists())
        }
    };
    wait_until("the pod's cgroup to go", || gone(&dir));
    if unified() {
        assert_eq!(setting(&tier, ("", ""), "cpu.weight"), "1");
    } else {
        assert_eq!(setting(&tier, ("cpu", "cpu.shares"), ""), "2");
    }
}

privileged_tests! {
    fn cgroupfs_pods_sit_in_their_qos_tier_and_runc_runs_in_them() {
        pod_in_its_tier_with_a_runc_container(Driver::Cgroupfs);
    }

    #[ignore = "needs systemd as PID 1: tests/tests/kernels.rs runs it in a VM booted with systemd"]
    fn systemd_pods_are_slices_and_runc_containers_scopes_in_them() {
        assert!(
            Path::new("/run/systemd/system").is_dir(),
            "systemd is not this machine's init"
        );
        pod_in_its_tier_with_a_runc_container(Driver::Systemd);
    }
}
