//! The layout's names under both drivers, the kubelet's resource rules,
//! and the cgroupfs driver on a directory tree standing in for each
//! hierarchy shape.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Container, PodSpec, ResourceRequirements},
    apimachinery::pkg::api::resource::Quantity,
};

use super::*;

const UID: &str = "3f1e2d9c-0b6a-4a8e-9d2c-1b7f5e4a3c21";

#[test]
fn cgroupfs_names_follow_the_kubelet() {
    let l = Layout::new(Driver::Cgroupfs, "/");
    let g = l.pod(QosClass::Guaranteed, UID).unwrap();
    let b = l.pod(QosClass::Burstable, UID).unwrap();
    let e = l.pod(QosClass::BestEffort, UID).unwrap();
    assert_eq!(l.dir(&g), format!("/kubepods/pod{UID}"));
    assert_eq!(l.dir(&b), format!("/kubepods/burstable/pod{UID}"));
    assert_eq!(l.dir(&e), format!("/kubepods/besteffort/pod{UID}"));
    assert_eq!(
        l.container_cgroups_path(&b, "abc"),
        format!("/kubepods/burstable/pod{UID}/abc")
    );
    assert_eq!(
        l.container_dir(&b, "abc"),
        l.container_cgroups_path(&b, "abc")
    );
    // A root of its own (one per node on a machine running several).
    let l = Layout::new(Driver::Cgroupfs, "/rudder-local/node-1/");
    assert_eq!(
        l.dir(&l.tier(QosClass::BestEffort)),
        "/rudder-local/node-1/kubepods/besteffort"
    );
}

#[test]
fn systemd_names_follow_the_kubelet_and_containerd() {
    let l = Layout::new(Driver::Systemd, "/");
    let b = l.pod(QosClass::Burstable, UID).unwrap();
    let escaped = UID.replace('-', "_");
    assert_eq!(
        l.dir(&b),
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{escaped}.slice")
    );
    assert_eq!(
        b.to_systemd_unit(),
        format!("kubepods-burstable-pod{escaped}.slice")
    );
    assert_eq!(b.parent_unit(), "kubepods-burstable.slice");
    assert_eq!(l.kubepods().parent_unit(), "-.slice");
    // containerd's CRI plugin: `<slice>:cri-containerd:<id>`, and the
    // scope runc makes of it.
    assert_eq!(
        l.container_cgroups_path(&b, "abc"),
        format!("kubepods-burstable-pod{escaped}.slice:cri-containerd:abc")
    );
    assert_eq!(
        l.container_dir(&b, "abc"),
        format!("{}/cri-containerd-abc.scope", l.dir(&b))
    );
    let g = l.pod(QosClass::Guaranteed, UID).unwrap();
    assert_eq!(
        l.dir(&g),
        format!("/kubepods.slice/kubepods-pod{escaped}.slice")
    );
    // Dashes inside a component never split a slice.
    let l = Layout::new(Driver::Systemd, "/rudder-local/node-1");
    assert_eq!(
        l.dir(l.kubepods()),
        "/rudder_local.slice/rudder_local-node_1.slice/rudder_local-node_1-kubepods.slice"
    );
    assert_eq!(CgroupName::default().to_systemd(), "/");
}

#[test]
fn uids_that_could_leave_the_tree_are_refused() {
    let l = Layout::new(Driver::Cgroupfs, "/");
    for bad in ["", "../x", "a/b", "a b", "a:b", &"a".repeat(65), "x\0"] {
        assert!(
            matches!(l.pod(QosClass::Burstable, bad), Err(CgroupError::BadUid(_))),
            "{bad:?}"
        );
    }
    assert!(l.pod_candidates("../x").is_empty());
    assert_eq!(l.pod_candidates(UID).len(), 3);
}

#[test]
fn shares_quota_and_weight_conversions() {
    assert_eq!(milli_cpu_to_shares(0), 2);
    assert_eq!(milli_cpu_to_shares(1), 2);
    assert_eq!(milli_cpu_to_shares(100), 102);
    assert_eq!(milli_cpu_to_shares(1000), 1024);
    assert_eq!(milli_cpu_to_shares(1_000_000), 262_144);
    assert_eq!(milli_cpu_to_quota(0, CPU_PERIOD_US), 0);
    assert_eq!(milli_cpu_to_quota(5, CPU_PERIOD_US), 1000);
    assert_eq!(milli_cpu_to_quota(250, CPU_PERIOD_US), 25_000);
    assert_eq!(milli_cpu_to_quota(2000, CPU_PERIOD_US), 200_000);
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1024), 39);
    assert_eq!(shares_to_weight(262_144), 10_000);
}

fn q(list: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
    (!list.is_empty()).then(|| {
        list.iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    })
}

fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
    Container {
        name: "c".into(),
        resources: Some(ResourceRequirements {
            requests: q(requests),
            limits: q(limits),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn spec(containers: Vec<Container>, init: Vec<Container>) -> PodSpec {
    PodSpec {
        containers,
        init_containers: (!init.is_empty()).then_some(init),
        ..Default::default()
    }
}

#[test]
fn pod_resources_by_class() {
    // BestEffort: the least shares, nothing capped.
    let be = spec(vec![container(&[], &[])], vec![]);
    assert_eq!(pod_resources(&be), Resources::shares(2));
    // Guaranteed: shares, quota and memory from the sums.
    let g = spec(
        vec![
            container(
                &[("cpu", "500m"), ("memory", "64Mi")],
                &[("cpu", "500m"), ("memory", "64Mi")],
            ),
            container(
                &[("cpu", "250m"), ("memory", "32Mi")],
                &[("cpu", "250m"), ("memory", "32Mi")],
            ),
        ],
        vec![],
    );
    assert_eq!(
        pod_resources(&g),
        Resources {
            cpu_shares: 768,
            cpu_quota_us: Some(75_000),
            memory_limit: Some(96 << 20),
        }
    );
    // Burstable: a cap only where every container declares one.
    let b = spec(
        vec![
            container(&[("cpu", "100m")], &[("cpu", "200m"), ("memory", "100Mi")]),
            container(&[("memory", "10Mi")], &[("cpu", "100m")]),
        ],
        vec![],
    );
    assert_eq!(
        pod_resources(&b),
        Resources {
            cpu_shares: 102,
            cpu_quota_us: Some(30_000),
            memory_limit: None,
        }
    );
    // An init container without a memory limit takes the pod's away; its
    // larger cpu request counts (the peak of init and app containers).
    let i = spec(
        vec![container(
            &[("cpu", "100m")],
            &[("cpu", "100m"), ("memory", "1Gi")],
        )],
        vec![container(&[("cpu", "1")], &[("cpu", "1")])],
    );
    assert_eq!(
        pod_resources(&i),
        Resources {
            cpu_shares: 1024,
            cpu_quota_us: Some(100_000),
            memory_limit: None,
        }
    );
    // Fractions of a byte round up, as Quantity::Value does.
    let f = spec(vec![container(&[], &[("memory", "1500m")])], vec![]);
    assert_eq!(pod_resources(&f).memory_limit, Some(2));
}

/// A stand-in for `/sys/fs/cgroup` whose files are plain files.
fn fake_root(unified: bool) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    if unified {
        std::fs::write(
            t.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
    } else {
        for c in ["cpu", "memory", "pids", "systemd"] {
            std::fs::create_dir(t.path().join(c)).unwrap();
        }
    }
    t
}

#[test]
fn cgroupfs_v1_writes_each_controller() {
    let t = fake_root(false);
    let h = fs::Hierarchy::at(t.path());
    assert!(!h.unified);
    let res = Resources {
        cpu_shares: 768,
        cpu_quota_us: Some(75_000),
        memory_limit: Some(1 << 20),
    };
    h.ensure("/kubepods/burstable/podx", &res).unwrap();
    let read = |p: &str| std::fs::read_to_string(t.path().join(p)).unwrap();
    assert_eq!(read("cpu/kubepods/burstable/podx/cpu.shares"), "768");
    assert_eq!(
        read("cpu/kubepods/burstable/podx/cpu.cfs_quota_us"),
        "75000"
    );
    assert_eq!(
        read("cpu/kubepods/burstable/podx/cpu.cfs_period_us"),
        "100000"
    );
    assert_eq!(
        read("memory/kubepods/burstable/podx/memory.limit_in_bytes"),
        "1048576"
    );
    assert!(t.path().join("pids/kubepods/burstable/podx").is_dir());
    assert!(h.exists("/kubepods/burstable/podx"));
    // Unlimited again.
    h.ensure("/kubepods/burstable/podx", &Resources::shares(2))
        .unwrap();
    assert_eq!(read("cpu/kubepods/burstable/podx/cpu.cfs_quota_us"), "-1");
    assert_eq!(
        read("memory/kubepods/burstable/podx/memory.limit_in_bytes"),
        "-1"
    );
    // Removal takes the pod's leftovers in every hierarchy, named ones too,
    // and never follows a link.
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir(outside.path().join("keep")).unwrap();
    std::fs::create_dir_all(t.path().join("systemd/kubepods/burstable/podx/ctr")).unwrap();
    std::os::unix::fs::symlink(
        outside.path(),
        t.path().join("cpu/kubepods/burstable/podx/ln"),
    )
    .unwrap();
    for f in ["cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us"] {
        std::fs::remove_file(t.path().join("cpu/kubepods/burstable/podx").join(f)).unwrap();
    }
    std::fs::remove_file(
        t.path()
            .join("memory/kubepods/burstable/podx/memory.limit_in_bytes"),
    )
    .unwrap();
    h.remove("/kubepods/burstable/podx");
    assert!(!t.path().join("systemd/kubepods/burstable/podx").exists());
    assert!(!t.path().join("memory/kubepods/burstable/podx").exists());
    assert!(outside.path().join("keep").is_dir());
    assert!(t.path().join("memory/kubepods/burstable").is_dir());
}

#[test]
fn cgroupfs_v2_enables_controllers_down_the_path() {
    let t = fake_root(true);
    let h = fs::Hierarchy::at(t.path());
    assert!(h.unified);
    // What the kernel offers each child once the parent enables it.
    std::fs::create_dir_all(t.path().join("kubepods")).unwrap();
    std::fs::write(
        t.path().join("kubepods/cgroup.controllers"),
        "cpu memory pids\n",
    )
    .unwrap();
    let res = Resources {
        cpu_shares: 1024,
        cpu_quota_us: Some(50_000),
        memory_limit: Some(4096),
    };
    h.ensure("/kubepods/podx", &res).unwrap();
    let read = |p: &str| std::fs::read_to_string(t.path().join(p)).unwrap();
    assert_eq!(read("cgroup.subtree_control"), "+cpu +memory +pids");
    assert_eq!(
        read("kubepods/cgroup.subtree_control"),
        "+cpu +memory +pids"
    );
    assert_eq!(read("kubepods/podx/cpu.weight"), "39");
    assert_eq!(read("kubepods/podx/cpu.max"), "50000 100000");
    assert_eq!(read("kubepods/podx/memory.max"), "4096");
    h.ensure("/kubepods/podx", &Resources::shares(2)).unwrap();
    assert_eq!(read("kubepods/podx/cpu.max"), "max 100000");
    assert_eq!(read("kubepods/podx/memory.max"), "max");
}

#[test]
fn systemd_properties_as_libcontainer_sets_them() {
    use zbus::zvariant::Value;
    let res = Resources {
        cpu_shares: 1024,
        cpu_quota_us: Some(25_001),
        memory_limit: Some(1 << 30),
    };
    let find = |props: &[(&str, Value<'_>)], k: &str| {
        props
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| u64::try_from(v).unwrap())
    };
    let v2 = systemd::resource_properties(true, &res);
    // 25,001 µs per 100 ms is 250,010 µs per second, rounded up to 10 ms.
    assert_eq!(find(&v2, "CPUQuotaPerSecUSec"), Some(260_000));
    assert_eq!(find(&v2, "CPUWeight"), Some(39));
    assert_eq!(find(&v2, "MemoryMax"), Some(1 << 30));
    assert_eq!(find(&v2, "CPUShares"), None);
    let v1 = systemd::resource_properties(false, &Resources::shares(2));
    assert_eq!(find(&v1, "CPUShares"), Some(2));
    assert_eq!(find(&v1, "MemoryLimit"), Some(u64::MAX));
    assert_eq!(find(&v1, "CPUQuotaPerSecUSec"), Some(u64::MAX));
}
