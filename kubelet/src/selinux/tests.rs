//! The labels as containerd's CRI and go-selinux make them, the levels,
//! and the policy files read.

use super::*;

fn opts(user: &str, role: &str, kind: &str, level: &str) -> SELinuxOptions {
    let s = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    SELinuxOptions {
        user: s(user),
        role: s(role),
        type_: s(kind),
        level: s(level),
    }
}

#[test]
fn contexts_parse_and_print_with_levels_that_hold_colons() {
    let c: Context = "system_u:system_r:container_t:s0:c1,c2".parse().unwrap();
    assert_eq!(c.kind, "container_t");
    assert_eq!(c.level, "s0:c1,c2");
    assert_eq!(c.to_string(), "system_u:system_r:container_t:s0:c1,c2");
    assert!("system_u:system_r".parse::<Context>().is_err());
    assert!("a::b:s0".parse::<Context>().is_err());
}

#[test]
fn without_options_a_container_gets_the_policys_contexts_at_the_pods_level() {
    let l = labels(None, &Base::default(), "s0:c12,c345").unwrap();
    assert_eq!(l.process, "system_u:system_r:container_t:s0:c12,c345");
    assert_eq!(l.mount, "system_u:object_r:container_file_t:s0:c12,c345");
    // Empty options are no options.
    let l2 = labels(Some(&opts("", "", "", "")), &Base::default(), "s0:c12,c345").unwrap();
    assert_eq!(l, l2);
}

#[test]
fn options_change_the_labels_as_go_selinux_init_labels_does() {
    let base = Base::default();
    // type and role: the process only.
    let l = labels(Some(&opts("", "r_r", "spc_t", "")), &base, "s0:c1,c2").unwrap();
    assert_eq!(l.process, "system_u:r_r:spc_t:s0:c1,c2");
    assert_eq!(l.mount, "system_u:object_r:container_file_t:s0:c1,c2");
    // user and level: both.
    let l = labels(Some(&opts("u_u", "", "", "s0:c5,c6")), &base, "s0:c1,c2").unwrap();
    assert_eq!(l.process, "u_u:system_r:container_t:s0:c5,c6");
    assert_eq!(l.mount, "u_u:object_r:container_file_t:s0:c5,c6");
}

#[test]
fn fields_that_would_forge_a_label_are_refused() {
    let base = Base::default();
    for (o, field) in [
        (opts("", "", "container_t:s0:c9,c10", ""), "type"),
        (opts("a:b", "", "", ""), "user"),
        (opts("", "x y", "", ""), "role"),
    ] {
        match labels(Some(&o), &base, "s0:c1,c2") {
            Err(SelinuxError::Field { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{o:?}: {other:?}"),
        }
    }
    assert_eq!(
        labels(Some(&opts("", "", "", "s0:c1,c2:x")), &base, "s0:c1,c2"),
        Err(SelinuxError::Level("s0:c1,c2:x".into()))
    );
}

#[test]
fn levels_follow_containerds_pattern() {
    for ok in ["s0", "s0:c1,c2", "s0-s0:c0.c1023", "s0:c0.c4,c7", "s9"] {
        assert!(valid_level(ok), "{ok}");
    }
    for bad in [
        // One digit of sensitivity, as containerd's pattern has it.
        "",
        "s",
        "s10",
        "s15",
        "c1",
        "s0:",
        "s0:c",
        "s0:c12345",
        "s0:c1,",
        "s0-s",
        "s0:c1;c2",
        "s0 :c1",
    ] {
        assert!(!valid_level(bad), "{bad}");
    }
}

#[test]
fn each_pod_level_is_two_distinct_categories_unique_on_the_node() {
    let mut levels = Levels::default();
    // A generator that repeats itself: equal categories and pairs already
    // taken are drawn again.
    let seq = [3u32, 3, 5, 3, 3, 5, 1027, 9];
    let mut i = 0;
    let mut pick = || {
        let v = seq[i % seq.len()];
        i += 1;
        v
    };
    let a = levels.reserve(&mut pick);
    assert_eq!(a, "s0:c3,c5");
    let b = levels.reserve(&mut pick);
    // (5, 3) is taken; 1027 wraps to 3: (3, 9).
    assert_eq!(b, "s0:c3,c9");
    levels.release(&a);
    levels.claim("s0:c3,c9");
    let mut again = [5u32, 3].into_iter().cycle();
    assert_eq!(levels.reserve(|| again.next().unwrap()), "s0:c3,c5");
}

#[test]
fn a_pods_level_is_kept_in_its_directory_and_claimed_again_at_start() {
    let t = tempfile::tempdir().unwrap();
    let pods = t.path();
    let a = pods.join("uid-a");
    std::fs::create_dir_all(&a).unwrap();
    let node = NodeLabels::new(Base::default(), pods);
    let level = node.pod_level(&a).unwrap();
    assert!(valid_level(&level) && pair_of(&level).is_some(), "{level}");
    assert_eq!(node.pod_level(&a).unwrap(), level, "the same on every call");
    // A restarted agent reads it back and never hands it to another pod.
    let node = NodeLabels::new(Base::default(), pods);
    assert!(node.levels().used.contains(&pair_of(&level).unwrap()));
    assert_eq!(node.pod_level(&a).unwrap(), level);
    node.release(&a);
    assert!(node.levels().used.is_empty());
    // A file a pod could not write but that is damaged anyway is replaced.
    std::fs::write(a.join(LEVEL_FILE), "s0:c1,c2:x").unwrap();
    let fresh = node.pod_level(&a).unwrap();
    assert_ne!(fresh, "s0:c1,c2:x");
    assert_eq!(std::fs::read_to_string(a.join(LEVEL_FILE)).unwrap(), fresh);
}

#[test]
fn the_policys_lxc_contexts_are_read_from_its_config() {
    let t = tempfile::tempdir().unwrap();
    let etc = t.path();
    assert_eq!(Base::load(etc), Base::default());
    std::fs::write(etc.join("config"), "SELINUX=enforcing\nSELINUXTYPE=mls\n").unwrap();
    std::fs::create_dir_all(etc.join("mls/contexts")).unwrap();
    std::fs::write(
        etc.join("mls/contexts/lxc_contexts"),
        "process = \"system_u:system_r:svirt_lxc_net_t:s0\"\n\
         content = \"system_u:object_r:virt_var_lib_t:s0\"\n\
         file = \"system_u:object_r:svirt_sandbox_file_t:s0\"\n\
         sandbox_kvm_process = \"system_u:system_r:svirt_qemu_net_t:s0\"\n",
    )
    .unwrap();
    let base = Base::load(etc);
    assert_eq!(base.process.kind, "svirt_lxc_net_t");
    assert_eq!(base.file.kind, "svirt_sandbox_file_t");
    let l = labels(None, &base, "s0:c1,c2").unwrap();
    assert_eq!(l.mount, "system_u:object_r:svirt_sandbox_file_t:s0:c1,c2");
}

#[test]
fn the_container_options_win_over_the_pods_whole() {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "spec": {
            "securityContext": {"seLinuxOptions": {"level": "s0:c1,c2", "type": "a_t"}},
            "containers": [
                {"name": "own", "securityContext": {"seLinuxOptions": {"type": "b_t"}}},
                {"name": "inherits"}
            ]
        }
    }))
    .unwrap();
    let cs = &pod.spec.as_ref().unwrap().containers;
    let own = effective_options(&pod, &cs[0]).unwrap();
    assert_eq!(own.type_.as_deref(), Some("b_t"));
    assert_eq!(own.level, None, "not merged field by field");
    let inherited = effective_options(&pod, &cs[1]).unwrap();
    assert_eq!(inherited.level.as_deref(), Some("s0:c1,c2"));
}
