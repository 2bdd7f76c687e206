//! The privileged test harness itself: every resource it makes is where it
//! should be while held, and gone after drop, including when the test panics.

use std::{panic, path::Path, process::Command};

use rudder_test_harness::{BpfPinDir, NetNs, TestCgroup, require_root};

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

#[test]
#[cfg_attr(rudder_skip_privileged, ignore = "RUDDER_SKIP_PRIVILEGED=1")]
fn namespaces_veth_and_bridges_are_private_and_removed() {
    require_root();
    let host_links = rudder_test_harness::run("ip", &["-o", "link", "show"]);
    let (a_name, b_name);
    {
        let a = NetNs::new();
        let b = NetNs::new();
        (a_name, b_name) = (a.name().to_string(), b.name().to_string());
        b.bridge("br0", Some("10.9.0.254/24"));
        a.veth_to(&b, ("eth0", Some("10.9.0.1/24")), ("port0", None));
        b.ip(&["link", "set", "port0", "master", "br0"]);
        // A datagram from a reaches a socket on b's bridge address.
        let sink = b.run(|| std::net::UdpSocket::bind("10.9.0.254:7000").unwrap());
        sink.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        a.run(|| {
            let s = std::net::UdpSocket::bind("10.9.0.1:0").unwrap();
            s.send_to(b"over the bridge", "10.9.0.254:7000").unwrap();
        });
        let mut buf = [0u8; 32];
        let (n, from) = sink.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from.ip().to_string().as_str()),
            (&b"over the bridge"[..], "10.9.0.1")
        );
        assert!(
            b.ip(&["-o", "link", "show", "port0"])
                .contains("master br0")
        );
        assert!(netns_exists(&a_name) && netns_exists(&b_name));
    }
    assert!(
        !netns_exists(&a_name) && !netns_exists(&b_name),
        "namespaces removed on drop"
    );
    assert_eq!(
        rudder_test_harness::run("ip", &["-o", "link", "show"]),
        host_links,
        "the host's links are untouched"
    );
}

#[test]
#[cfg_attr(rudder_skip_privileged, ignore = "RUDDER_SKIP_PRIVILEGED=1")]
fn a_panicking_test_still_cleans_up() {
    require_root();
    let mut names = (String::new(), std::path::PathBuf::new());
    let result = panic::catch_unwind(panic::AssertUnwindSafe(|| {
        let ns = NetNs::new();
        let pins = BpfPinDir::new();
        names = (ns.name().to_string(), pins.path().to_path_buf());
        panic!("the test fails midway");
    }));
    assert!(result.is_err());
    assert!(!netns_exists(&names.0), "netns {} left behind", names.0);
    assert!(
        !names.1.exists(),
        "pin dir {} left behind",
        names.1.display()
    );
}

#[test]
#[cfg_attr(rudder_skip_privileged, ignore = "RUDDER_SKIP_PRIVILEGED=1")]
fn bpf_pin_dirs_live_on_bpffs() {
    require_root();
    let path;
    {
        let pins = BpfPinDir::new();
        path = pins.path().to_path_buf();
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid path and a writable statfs buffer.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: see above.
        assert_eq!(unsafe { libc::statfs(c.as_ptr(), &raw mut st) }, 0);
        const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
        assert_eq!(st.f_type, BPF_FS_MAGIC, "{} is on bpffs", path.display());
    }
    assert!(!path.exists());
}

#[test]
#[cfg_attr(rudder_skip_privileged, ignore = "RUDDER_SKIP_PRIVILEGED=1")]
fn cgroups_hold_processes_and_are_removed_with_them() {
    require_root();
    let dirs;
    {
        let cg = TestCgroup::new(&["memory", "pids", "cpu"]);
        dirs = cg.dirs().to_vec();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        cg.add_pid(child.id());
        for d in &dirs {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap();
            assert!(
                procs.lines().any(|l| l.trim() == child.id().to_string()),
                "{}",
                d.display()
            );
        }
        drop(cg);
        // The drop killed what was inside so that the directories could go.
        let status = child.wait().unwrap();
        assert!(!status.success());
    }
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}
