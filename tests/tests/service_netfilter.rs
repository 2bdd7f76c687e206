//! The netfilter proxy (`rudder_proxy::netfilter`, for nodes where the
//! eBPF programs cannot load) with real sockets and the real iptables, in
//! both flavours: a node namespace routing between pod namespaces (each on
//! its own veth and /24), rules rendered from the same `ServiceSpec`s the
//! eBPF dataplane takes, and clients and servers in the pods.

use std::{
    collections::BTreeSet,
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use rudder_proxy::{
    Endpoint, Frontend, Proto, ServiceSpec,
    netfilter::{self, RenderConfig},
};
use rudder_test_harness::{AddressServer, NetNs, privileged_tests, tcp_ask};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// A node namespace and `n` pods: pod `i` is 10.244.(i+1).2 behind the
/// node's 10.244.(i+1).1.
struct Node {
    pods: Vec<NetNs>,
    ns: NetNs,
    bin: &'static str,
}

impl Node {
    fn new(n: u8, bin: &'static str) -> Self {
        let ns = NetNs::new();
        for knob in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            assert!(ns.exec("sysctl", &["-qw", knob]).status.success(), "{knob}");
        }
        // An uplink with a default route, as a node has: Service addresses
        // are routed (and then rejected or translated) rather than
        // unreachable.
        ns.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
        ns.ip(&["link", "set", "up1", "up"]);
        ns.ip(&["addr", "add", "192.168.50.1/24", "dev", "up0"]);
        ns.ip(&["link", "set", "up0", "up"]);
        ns.ip(&["route", "add", "default", "via", "192.168.50.2"]);
        let mut pods = Vec::new();
        for i in 0..n {
            let pod = NetNs::new();
            let net = i + 1;
            pod.veth_to(
                &ns,
                ("eth0", Some(&format!("10.244.{net}.2/24"))),
                (&format!("veth{i}"), Some(&format!("10.244.{net}.1/24"))),
            );
            pod.ip(&["route", "add", "default", "via", &format!("10.244.{net}.1")]);
            pods.push(pod);
        }
        Self { pods, ns, bin }
    }

    fn ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, i as u8 + 1, 2)
    }

    fn sync(&self, specs: &[ServiceSpec]) {
        let cfg = RenderConfig {
            cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0), 16)),
        };
        let tables = netfilter::render(specs, &cfg);
        let bin = self.bin;
        self.ns.run(|| netfilter::apply(bin, &tables)).unwrap();
    }

    fn saved(&self) -> String {
        let out = self.ns.exec(&format!("{}-save", self.bin), &[]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn spec(addr: Ipv4Addr, port: u16, backends: &[usize], affinity: Option<u32>) -> ServiceSpec {
    ServiceSpec {
        frontend: Frontend {
            addr,
            port,
            proto: Proto::Tcp,
        },
        endpoints: backends
            .iter()
            .map(|i| Endpoint::ready(Node::ip(*i), 8080))
            .collect(),
        affinity_timeout: affinity,
        keep_source: false,
        maglev: false,
    }
}

/// The servers that answered `n` connections from pod 0 to `to`.
fn answers(node: &Node, to: SocketAddrV4, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| {
            let a = tcp_ask(&node.pods[0], to).unwrap_or_else(|e| panic!("{to}: {e}"));
            a.split_whitespace().next().unwrap_or_default().to_owned()
        })
        .collect()
}

fn servers(node: &Node, pods: &[usize]) -> Vec<AddressServer> {
    pods.iter()
        .map(|i| {
            AddressServer::start_reporting_peer(
                &node.pods[*i],
                SocketAddrV4::new(Node::ip(*i), 8080),
            )
        })
        .collect()
}

fn services_through_netfilter(bin: &'static str) {
    let node = Node::new(4, bin);
    let _servers = servers(&node, &[1, 2, 3]);
    let vip = SocketAddrV4::new(VIP, 80);
    // Spread over every endpoint, replies un-NATed on the way back.
    node.sync(&[spec(VIP, 80, &[1, 2], None)]);
    let got = answers(&node, vip, 40);
    let want: BTreeSet<String> = [1, 2].iter().map(|i| Node::ip(*i).to_string()).collect();
    assert_eq!(got, want, "{bin}: ClusterIP spread");
    // An endpoint change replaces the rules: only the new set answers.
    node.sync(&[spec(VIP, 80, &[3], None)]);
    assert_eq!(
        answers(&node, vip, 5),
        BTreeSet::from([Node::ip(3).to_string()])
    );
    // ClientIP affinity: one client, one backend.
    node.sync(&[spec(VIP, 80, &[1, 2, 3], Some(10_800))]);
    assert_eq!(answers(&node, vip, 20).len(), 1, "{bin}: affinity");
    // No endpoints: refused at once, not left to time out.
    node.sync(&[spec(VIP, 80, &[], None)]);
    let started = Instant::now();
    let e = tcp_ask(&node.pods[0], vip).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{bin}: {e}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // A NodePort on the node's own address, masqueraded (the backend
    // sees the node), beside the ClusterIP.
    node.sync(&[
        spec(VIP, 80, &[1], None),
        spec(Ipv4Addr::UNSPECIFIED, 30080, &[2], None),
    ]);
    let np = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 1), 30080);
    let answer = tcp_ask(&node.pods[0], np).unwrap();
    assert_eq!(
        answer,
        format!("{} 10.244.3.1", Node::ip(2)),
        "{bin}: NodePort"
    );
    // The ClusterIP from a pod of the cluster keeps the pod's address.
    let answer = tcp_ask(&node.pods[0], vip).unwrap();
    assert_eq!(answer, format!("{} {}", Node::ip(1), Node::ip(0)));
    // Removed: nothing of ours is left, and other rules stay.
    node.ns.run(|| {
        let out = std::process::Command::new(bin)
            .args([
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                "192.0.2.0/24",
                "-j",
                "RETURN",
            ])
            .status()
            .unwrap();
        assert!(out.success());
    });
    node.ns.run(|| netfilter::remove(bin)).unwrap();
    let saved = node.saved();
    assert!(!saved.contains("RUDDER-"), "{bin}:\n{saved}");
    assert!(
        saved.contains("-A POSTROUTING -s 192.0.2.0/24 -j RETURN"),
        "{bin}:\n{saved}"
    );
    assert!(tcp_ask(&node.pods[0], vip).is_err());
}

privileged_tests! {
    fn services_through_iptables_nft() {
        services_through_netfilter("iptables-nft");
    }

    fn services_through_iptables_legacy() {
        services_through_netfilter("iptables-legacy");
    }
}
