//! `rudder agent take-over` on a network namespace set up the way
//! kube-proxy (iptables mode in both iptables flavours, nftables mode, the
//! IPVS mode's `kube-ipvs0`) and flannel (chains, VXLAN device, subnet file,
//! CNI configuration) leave a node, beside docker's rules and a FORWARD
//! policy of DROP, which must stay.

use rudder_test_harness::{NetNs, TempDir, privileged_tests, workspace_bin};

/// kube-proxy's, flannel's and docker's rules, abridged from real nodes.
const RULES: &str = include_str!("../../host/src/testdata/kube-proxy-flannel-docker.iptables-save");

fn sh(ns: &NetNs, script: &str) -> String {
    let out = ns.exec("sh", &["-c", script]);
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

privileged_tests! {
    fn kube_proxy_and_flannel_leave_nothing_and_the_rest_stays() {
        let ns = NetNs::new();
        let dir = TempDir::new();
        let rules = dir.path().join("rules");
        std::fs::write(&rules, RULES).unwrap();
        for flavour in ["iptables-legacy", "iptables-nft"] {
            sh(&ns, &format!("{flavour}-restore < {}", rules.display()));
        }
        sh(&ns, "nft add table ip kube-proxy && nft add chain ip kube-proxy services \
                 && nft add table ip6 kube-proxy && nft add table ip other");
        sh(&ns, "ip link add flannel.1 type vxlan id 1 dstport 8472");
        // The IPVS mode's device is a dummy; this kernel may lack the dummy
        // driver, and the name is what counts.
        sh(&ns, "ip link add kube-ipvs0 type dummy 2>/dev/null || ip link add kube-ipvs0 type bridge");
        let conf = dir.path().join("net.d");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("10-flannel.conflist"), "{}").unwrap();
        std::fs::write(conf.join("05-other.conflist"), "{}").unwrap();
        let subnet = dir.path().join("subnet.env");
        std::fs::write(&subnet, "FLANNEL_NETWORK=10.244.0.0/16\n").unwrap();

        let rudder = workspace_bin("rudder");
        let take_over = || {
            let out = ns.exec(
                &rudder.to_string_lossy(),
                &[
                    "agent", "take-over", "--kube-proxy", "--flannel",
                    "--cni-conf-dir", &conf.to_string_lossy(),
                    "--flannel-subnet-file", &subnet.to_string_lossy(),
                ],
            );
            assert!(out.status.success(), "take-over: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let said = take_over();
        for what in [
            "removed the KUBE-/FLANNEL- chains of iptables-legacy",
            "removed the KUBE-/FLANNEL- chains of iptables-nft",
            "deleted the nftables table ip kube-proxy",
            "deleted the nftables table ip6 kube-proxy",
            "deleted the device flannel.1",
            "deleted the device kube-ipvs0",
        ] {
            assert!(said.lines().any(|l| l == what), "did not say {what:?}:\n{said}");
        }
        for flavour in ["iptables-legacy", "iptables-nft"] {
            let save = sh(&ns, &format!("{flavour}-save"));
            assert!(!save.contains("KUBE-") && !save.contains("FLANNEL-"), "{flavour}:\n{save}");
            for kept in [
                ":FORWARD DROP [0:0]",
                "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
                "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
                "-A FORWARD -o docker0 -j ACCEPT",
            ] {
                assert!(save.lines().any(|l| l == kept), "{flavour} lost {kept:?}:\n{save}");
            }
        }
        let tables = sh(&ns, "nft list tables");
        assert!(!tables.contains("kube-proxy"), "{tables}");
        assert!(tables.contains("table ip other"), "{tables}");
        let links = ns.ip(&["-o", "link"]);
        assert!(!links.contains("flannel.1") && !links.contains("kube-ipvs0"), "{links}");
        assert!(!subnet.exists() && !conf.join("10-flannel.conflist").exists());
        assert!(conf.join("05-other.conflist").exists());
        // Idempotent: nothing is left to remove.
        assert_eq!(take_over().trim(), "nothing to remove");
    }
}
