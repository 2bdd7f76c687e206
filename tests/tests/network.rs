//! The pod network across nodes: three nodes as network namespaces on an
//! underlay bridge, each running `rudder agent network` against a shared
//! apiserver (a test double serving Nodes to the real Kubernetes client),
//! pods attached through the CNI configuration the daemon writes.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use rudder_host::kernel_release;
use rudder_network::config::ChecksumOffload;
use rudder_test_harness::{
    AddressServer, ChildGuard, CniNode, FakeApiServer, NetNs, TempDir,
    podnet::{API, Cluster, Node},
    privileged_tests, tcp_ask, workspace_bin,
};
use serde_json::json;

/// `bridge fdb show dev rudder.1` in a node's namespace.
fn fdb(ns: &NetNs) -> String {
    let out = ns
        .run(|| {
            Command::new("bridge")
                .args(["fdb", "show", "dev", "rudder.1"])
                .output()
        })
        .expect("run bridge fdb show");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the node's VXLAN device has transmit checksum offload on.
fn tx_checksumming(n: &Node) -> bool {
    let k = n.cni.ns.exec("ethtool", &["-k", "rudder.1"]);
    let k = String::from_utf8_lossy(&k.stdout);
    assert!(k.contains("tx-checksumming:"), "ethtool -k: {k}");
    k.contains("tx-checksumming: on")
}

fn run_backend(backend: &'static str) {
    let mut c = Cluster::new(backend);
    c.wait("routes between all nodes", |c| c.converged(&[0, 1, 2]));

    // What each daemon published and made.
    for n in &c.nodes {
        let node = c.api.node(&n.name).unwrap();
        let ann = &node["metadata"]["annotations"];
        assert_eq!(ann["rudder.io/backend-type"], backend);
        assert_eq!(ann["rudder.io/public-ip"], n.ip.to_string());
        let subnet = std::fs::read_to_string(n.cni.subnet_file()).unwrap();
        assert!(subnet.contains("RUDDER_NETWORK=10.244.0.0/16"), "{subnet}");
        if backend == "vxlan" {
            let dev = n.cni.ns.ip(&["-d", "link", "show", "rudder.1"]);
            assert!(
                dev.contains("mtu 1450")
                    && dev.contains("vxlan id 1")
                    && dev.contains("dstport 8472"),
                "{dev}"
            );
            assert!(
                dev.contains(ann["rudder.io/vtep-mac"].as_str().unwrap()),
                "VTEP MAC not published: {dev}"
            );
            assert!(subnet.contains("RUDDER_MTU=1450"), "{subnet}");
            // Offload as the kernel allows ("auto"), and the log says why.
            let (on, why) = ChecksumOffload::Auto.decide(&kernel_release());
            assert_eq!(tx_checksumming(n), on, "{why}");
            assert!(
                n.log().contains("vxlan tx checksum offload") && n.log().contains(&why),
                "the decision is not logged: {}",
                n.log()
            );
            // One permanent neighbour and one FDB entry per other node.
            let neigh = n
                .cni
                .ns
                .ip(&["neigh", "show", "dev", "rudder.1", "nud", "permanent"]);
            assert_eq!(neigh.lines().count(), 2, "{neigh}");
            let fdb = fdb(&n.cni.ns);
            assert_eq!(
                fdb.lines()
                    .filter(|l| l.contains(" dst 192.168.50."))
                    .count(),
                2,
                "{fdb}"
            );
        } else {
            let r = n.routes();
            assert!(
                r.lines()
                    .all(|l| l.contains("via 192.168.50.1") && l.contains("dev eth0")),
                "{r}"
            );
        }
    }

    for i in 0..3 {
        c.add_pod(i);
    }
    for (from, to) in [(0, 1), (0, 2), (1, 2), (2, 0)] {
        c.assert_pod_to_pod(from, to);
    }

    // Leaving the cluster network: masqueraded to the node's address.
    let outside = AddressServer::start_reporting_peer(
        &c.underlay,
        SocketAddrV4::new(Ipv4Addr::new(192, 168, 50, 1), 9000),
    );
    let (pod, _) = c.pod(0);
    let answer = tcp_ask(pod, SocketAddrV4::new(Ipv4Addr::new(192, 168, 50, 1), 9000)).unwrap();
    assert_eq!(
        answer, "192.168.50.1 192.168.50.11",
        "{backend}: pod to outside not masqueraded"
    );
    drop(outside);

    // Node 3 leaves: the others drop its route (and ARP and FDB entries).
    c.stop(2);
    c.api.delete_node("node-3");
    c.wait("node-3's entries to go", |c| {
        (0..2).all(|i| {
            let n = &c.nodes[i];
            !n.routes().contains("10.244.3.0")
                && (backend != "vxlan"
                    || (!n
                        .cni
                        .ns
                        .ip(&["neigh", "show", "dev", "rudder.1"])
                        .contains("10.244.3.0")
                        && !fdb(&n.cni.ns).contains("192.168.50.13")))
        })
    });
    c.assert_pod_to_pod(0, 1);

    // Node 2 changes address: after its daemon restarts, node 1 follows.
    c.stop(1);
    let n2 = &c.nodes[1];
    n2.cni
        .ns
        .ip(&["addr", "del", "192.168.50.12/24", "dev", "eth0"]);
    n2.cni
        .ns
        .ip(&["addr", "add", "192.168.50.22/24", "dev", "eth0"]);
    n2.cni
        .ns
        .ip(&["route", "replace", "default", "via", "192.168.50.1"]);
    c.nodes[1].ip = Ipv4Addr::new(192, 168, 50, 22);
    // …and comes back with checksum offload forced off, beside peers
    // that keep it as their kernel allows.
    c.extra_config = "vxlan-checksum-offload = false".into();
    c.start(1);
    c.wait("node-1 to follow node-2's new address", |c| {
        c.api.node("node-2").unwrap()["metadata"]["annotations"]["rudder.io/public-ip"]
            == "192.168.50.22"
            && if backend == "vxlan" {
                fdb(&c.nodes[0].cni.ns).contains("dst 192.168.50.22")
            } else {
                c.nodes[0].routes().contains("via 192.168.50.22")
            }
    });
    if backend == "vxlan" {
        assert!(!tx_checksumming(&c.nodes[1]), "offload not turned off");
    }
    c.assert_pod_to_pod(0, 1);
    c.assert_pod_to_pod(1, 0);

    // Uninstall on node 1 removes exactly what the daemon made.
    c.stop(0);
    let n1 = &c.nodes[0];
    let cfg = n1.config(backend, "");
    let out = n1
        .cni
        .ns
        .output(
            Command::new(workspace_bin("rudder"))
                .args(["agent", "network", "--uninstall", "--config"])
                .arg(&cfg),
        )
        .unwrap();
    assert!(
        out.status.success(),
        "uninstall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(n1.routes().trim(), "", "routes left");
    assert!(!n1.cni.links().contains(&"rudder.1".to_string()));
    let nft = n1
        .cni
        .ns
        .run(|| {
            Command::new("nft")
                .args(["list", "table", "ip", "rudder-nat"])
                .output()
        })
        .unwrap();
    assert!(!nft.status.success(), "masquerade table left");
    assert!(!n1.cni.subnet_file().exists());
    assert!(
        n1.cni
            .ns
            .ip(&["route", "show", "default"])
            .contains("via 192.168.50.1"),
        "touched a route it did not make"
    );
}

privileged_tests! {
    /// A node whose iptables FORWARD policy is DROP (docker, firewalld), in
    /// either flavour: the daemon accepts pod traffic in a chain of its own
    /// (once, however often it starts), pods reach each other across
    /// nodes, and the uninstall removes the chain and keeps the policy.
    fn forward_drop_policy_is_met_with_accept_rules_for_pods() {
        let mut c = Cluster::new("vxlan");
        c.wait("routes between all nodes", |c| c.converged(&[0, 1, 2]));
        for i in 0..2 {
            c.add_pod(i);
        }
        let flavours = ["iptables-legacy", "iptables-nft"];
        for (i, flavour) in flavours.iter().enumerate() {
            let out = c.nodes[i].cni.ns.exec(flavour, &["-P", "FORWARD", "DROP"]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        // What docker does to a node: its pods are cut off…
        let (pod, _) = c.pod(0);
        let (_, other) = c.pod(1);
        assert_eq!(pod.ping(other, Duration::from_secs(1)), None, "FORWARD DROP let a ping through");
        // …until the daemon (re)starts. Twice: the second start finds its
        // rules in place.
        for i in 0..flavours.len() {
            for _ in 0..2 {
                c.stop(i);
                c.start(i);
            }
        }
        c.wait("routes between all nodes", |c| c.converged(&[0, 1, 2]));
        // A restarted daemon adopts the routes and entries it finds for
        // peers that are still there: nothing deleted and made again (a
        // second after it is ready, its first syncs are done).
        c.wait("the restarted daemons to be ready", |c| {
            (0..2).all(|i| c.nodes[i].log().contains("pod network ready"))
        });
        std::thread::sleep(Duration::from_secs(1));
        for i in 0..2 {
            let log = c.nodes[i].log();
            assert!(!log.contains("op=Del"), "node {} after its restart:\n{log}", i + 1);
        }
        c.assert_pod_to_pod(0, 1);
        c.assert_pod_to_pod(1, 0);
        let save = |c: &Cluster, i: usize, flavour: &str| {
            String::from_utf8_lossy(&c.nodes[i].cni.ns.exec(&format!("{flavour}-save"), &[]).stdout).into_owned()
        };
        for (i, flavour) in flavours.iter().enumerate() {
            let s = save(&c, i, flavour);
            assert!(s.contains(":FORWARD DROP"), "{s}");
            assert_eq!(s.matches("-j RUDDER-FWD").count(), 1, "{flavour}:\n{s}");
            assert_eq!(s.matches("-A RUDDER-FWD -s 10.244.0.0/16").count(), 1, "{flavour}:\n{s}");
            assert_eq!(s.matches("-A RUDDER-FWD -d 10.244.0.0/16").count(), 1, "{flavour}:\n{s}");
            assert!(c.nodes[i].log().contains("FORWARD drops by default"), "{}", c.nodes[i].log());
        }
        // Node 3 accepts by default: nothing added there.
        assert!(!save(&c, 2, "iptables-legacy").contains("RUDDER-FWD") && !save(&c, 2, "iptables-nft").contains("RUDDER-FWD"));
        c.stop(0);
        let cfg = c.nodes[0].config("vxlan", "");
        let out = c.nodes[0].cni.ns.exec(
            &workspace_bin("rudder").to_string_lossy(),
            &["agent", "network", "--uninstall", "--config", &cfg.to_string_lossy()],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let s = save(&c, 0, "iptables-legacy");
        assert!(!s.contains("RUDDER-FWD") && s.contains(":FORWARD DROP"), "{s}");
    }

    fn three_nodes_over_vxlan() {
        run_backend("vxlan");
    }

    fn three_nodes_over_host_gw() {
        run_backend("host-gw");
    }

    /// Before the Node has a pod CIDR, the daemon waits and says why, and the
    /// plugin answers "try again later"; once assigned, pods start.
    fn waits_for_the_pod_cidr() {
        let underlay = NetNs::new();
        underlay.bridge("br0", Some("192.168.50.1/24"));
        let api = FakeApiServer::start(&underlay, API);
        let dir = TempDir::new();
        api.write_kubeconfig(&dir.join("kubeconfig"));
        let cni = CniNode::new();
        cni.ns.veth_to(&underlay, ("eth0", Some("192.168.50.11/24")), ("n1", None));
        underlay.ip(&["link", "set", "n1", "master", "br0"]);
        cni.ns.ip(&["route", "add", "default", "via", "192.168.50.1"]);
        api.put_node(json!({"metadata": {"name": "node-1"}, "spec": {}}));
        let mut node = Node { name: "node-1".into(), cni, ip: Ipv4Addr::new(192, 168, 50, 11), daemon: None, pods: vec![] };
        let cfg = node.config("vxlan", "");
        // No plugins where this node looks: the daemon must say so.
        let empty = TempDir::new();
        let text = std::fs::read_to_string(&cfg).unwrap();
        let text = text.replace(&node.cni.bin_dir().display().to_string(), &empty.path().display().to_string());
        std::fs::write(&cfg, text).unwrap();
        let log = std::fs::File::create(node.cni.dir.join("daemon.log")).unwrap();
        let mut cmd = Command::new(workspace_bin("rudder"));
        cmd.args(["agent", "network", "--node-name", "node-1"]).arg("--kubeconfig").arg(dir.join("kubeconfig"))
            .arg("--config").arg(&cfg).stdout(Stdio::null()).stderr(log);
        node.daemon = Some(ChildGuard(node.cni.ns.spawn(&mut cmd).unwrap()));
        let end = Instant::now() + Duration::from_secs(20);
        while !node.log().contains("pod CIDR is not assigned") {
            assert!(Instant::now() < end, "no waiting message: {}", node.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        let pod = NetNs::new();
        let call = node.cni.call("ADD", &node.cni.rudder_conf("1.0.0"), "c", &pod.path().display().to_string(), "eth0");
        assert_eq!(call.code(), 11, "{}", call.stdout);
        api.put_node(json!({"metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.244.7.0/24"}}));
        let end = Instant::now() + Duration::from_secs(20);
        while !node.cni.subnet_file().exists() {
            assert!(Instant::now() < end, "no subnet file: {}", node.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        let call = node.cni.call("ADD", &node.cni.rudder_conf("1.0.0"), "c", &pod.path().display().to_string(), "eth0");
        assert!(call.success, "{}", call.stdout);
        assert_eq!(call.stdout["ips"][0]["address"], "10.244.7.2/24");
        let end = Instant::now() + Duration::from_secs(10);
        while !node.log().contains("missing from the CNI bin dirs") {
            assert!(Instant::now() < end, "no warning about missing plugins: {}", node.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(node.log().contains("portmap"), "{}", node.log());
        assert!(node.cni.call("DEL", &node.cni.rudder_conf("1.0.0"), "c", &pod.path().display().to_string(), "eth0").success);
        node.daemon = None;
        let out = node.cni.ns.output(Command::new(workspace_bin("rudder")).args(["agent", "network", "--uninstall", "--config"]).arg(&cfg)).unwrap();
        assert!(out.status.success());
    }
}
