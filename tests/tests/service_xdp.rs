//! NodePort acceleration at XDP (`xdp_from_netdev`): under
//! `BPF_PROG_TEST_RUN`, as if each frame had arrived on the uplink of a node
//! namespace with real routes and neighbours, the exact bytes it sends back
//! out (`XDP_TX`) and every packet it must pass on untouched; then attached
//! in the driver of a veth uplink, a NodePort answering through it; then the
//! proxy daemon, following a real `rudder server`, accelerating its node's
//! uplink when asked to and removing the program when no longer asked.

mod support;

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpListener, TcpStream},
    time::Duration,
};

use rudder_dataplane::{
    service::{Acceleration, ServiceDataplane},
    tc::AttachMode,
};
use rudder_ebpf_common::service::SvcCounter;
use rudder_proxy::{Endpoint, Frontend, Proto, ServiceSpec, Translator};
use rudder_test_harness::{
    BpfPinDir, LoopbackRelay, NetNs, Underlay,
    packet::{Ipv4Packet, tcp, udp},
};

const XDP_PASS: i32 = 2;
const XDP_TX: i32 = 3;
const NODE: [u8; 4] = [192, 168, 77, 1];
const OUTSIDE: [u8; 4] = [192, 168, 77, 2];
/// Behind `GATEWAY`, out of the uplink: a remote backend.
const B1: [u8; 4] = [10, 244, 2, 7];
/// On another interface of the node: a local backend.
const LOCAL: [u8; 4] = [10, 244, 3, 9];
/// Behind a next hop without a neighbour entry.
const UNRESOLVED: [u8; 4] = [10, 244, 4, 4];
const UPLINK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x01];
const OUTSIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x02];
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x05];

/// A client, a node and a backend node on the segment `192.168.<subnet>.0/24`
/// (.1, .2, .3): the node forwards and routes the backend pod
/// 10.244.9.10 (on the backend node's loopback) via the backend node, as
/// host-gw does; the wire's ports pass everything at XDP.
fn segment(subnet: u8) -> (Underlay, (ServiceDataplane, BpfPinDir)) {
    let addrs: Vec<String> = (1..=3)
        .map(|i| format!("192.168.{subnet}.{i}/24"))
        .collect();
    let net = Underlay::new(&addrs.iter().map(String::as_str).collect::<Vec<_>>());
    let (node, backend) = (&net.hosts[1], &net.hosts[2]);
    forwarding(node);
    let wire_xdp = pass_on_wire(&net);
    backend.ip(&["addr", "add", "10.244.9.10/32", "dev", "lo"]);
    node.ip(&[
        "route",
        "add",
        "10.244.9.0/24",
        "via",
        &format!("192.168.{subnet}.3"),
    ]);
    (net, wire_xdp)
}

/// The service program with empty maps (it passes everything) at XDP on
/// the wire's ports: a veth flushes frames another veth sends back out at
/// XDP (`XDP_TX`) to its peer only when the peer has an XDP program.
fn pass_on_wire(net: &Underlay) -> (ServiceDataplane, BpfPinDir) {
    let pins = BpfPinDir::new();
    let dp = net.wire.run(|| {
        let mut dp = ServiceDataplane::load(pins.path()).unwrap();
        for port in &net.ports {
            dp.attach_xdp(port).unwrap();
        }
        dp
    });
    (dp, pins)
}

/// A node forwards (as Kubernetes requires of its nodes): the FIB lookups of
/// both programs refuse to route in a namespace that does not, and a new
/// namespace's default depends on the host's
/// `net.core.devconf_inherit_init_net`.
fn forwarding(ns: &NetNs) {
    let out = ns.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A node namespace: uplink `up0` (`NODE`/24) with permanent neighbours for
/// the client and the gateway, a route to the remote backends' subnet via
/// the gateway, the local one on `pods0`, and one via a next hop that never
/// resolves. The other end of `up0` is in a namespace of its own.
struct Node {
    ns: NetNs,
    _wire: NetNs,
}

impl Node {
    fn new() -> Self {
        let (ns, wire) = (NetNs::new(), NetNs::new());
        forwarding(&ns);
        ns.veth_to(&wire, ("up0", None), ("peer0", None));
        ns.ip(&["link", "set", "up0", "address", &mac(UPLINK_MAC)]);
        ns.ip(&["addr", "add", "192.168.77.1/24", "dev", "up0"]);
        for (addr, m) in [("192.168.77.2", OUTSIDE_MAC), ("192.168.77.5", GATEWAY_MAC)] {
            ns.ip(&[
                "neigh",
                "replace",
                addr,
                "lladdr",
                &mac(m),
                "dev",
                "up0",
                "nud",
                "permanent",
            ]);
        }
        ns.ip(&["route", "add", "10.244.2.0/24", "via", "192.168.77.5"]);
        ns.ip(&["route", "add", "10.244.4.0/24", "via", "192.168.77.6"]);
        ns.veth_to(&wire, ("pods0", None), ("peer1", None));
        ns.ip(&["route", "add", "10.244.3.0/24", "dev", "pods0"]);
        Self { ns, _wire: wire }
    }

    fn uplink_index(&self) -> u32 {
        let out = self.ns.ip(&["-o", "link", "show", "up0"]);
        out.split(':').next().unwrap().trim().parse().unwrap()
    }
}

struct Fixture {
    dp: ServiceDataplane,
    proxy: Translator,
    ifindex: u32,
    _pins: BpfPinDir,
}

impl Fixture {
    /// In the calling thread's namespace (the node's).
    fn new(ifindex: u32) -> Self {
        let pins = BpfPinDir::new();
        let mut dp = ServiceDataplane::load(pins.path()).expect("load the service object");
        dp.set_node_addrs(
            &[Ipv4Addr::from(NODE)].into_iter().collect(),
            Some(NODE.into()),
        )
        .unwrap();
        Self {
            dp,
            proxy: Translator::new(),
            ifindex,
            _pins: pins,
        }
    }

    fn sync(&mut self, services: &[ServiceSpec]) {
        let ops = self.proxy.sync(services);
        self.dp.apply(&ops).unwrap();
    }

    fn xdp(&mut self, frame: &[u8]) -> (i32, Vec<u8>) {
        let (out, _) = self.dp.test_run_xdp(frame, self.ifindex, 1).unwrap();
        (out.verdict, out.data)
    }

    fn xdp_count(&mut self, name: &str) -> u64 {
        let counts = self.dp.xdp_counts().unwrap();
        counts.iter().find(|(n, _)| *n == name).unwrap().1
    }
}

fn node_port(proto: Proto, port: u16, backends: &[[u8; 4]]) -> ServiceSpec {
    ServiceSpec {
        frontend: Frontend {
            addr: Ipv4Addr::UNSPECIFIED,
            port,
            proto,
        },
        endpoints: backends
            .iter()
            .map(|b| Endpoint::ready(Ipv4Addr::from(*b), 8080))
            .collect(),
        affinity_timeout: None,
        keep_source: false,
        maglev: false,
        dsr: false,
    }
}

/// `frame` as sent to `dst_mac` from the uplink.
fn on_uplink(dst_mac: [u8; 6], frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&UPLINK_MAC);
    f
}

rudder_test_harness::privileged_tests! {
    fn node_port_flows_to_remote_backends_go_back_out_translated_at_xdp() {
        let node = Node::new();
        let ifindex = node.uplink_index();
        node.ns.run(move || {
            let mut f = Fixture::new(ifindex);
            f.sync(&[node_port(Proto::Tcp, 30080, &[B1]), node_port(Proto::Udp, 30053, &[B1])]);
            // A SYN to the node port: to the backend via the gateway, from
            // the node's address with the client's port, sent back out.
            let (v, out) = f.xdp(&tcp(OUTSIDE, 40000, NODE, 30080, 0x02, b""));
            assert_eq!(v, XDP_TX);
            assert_eq!(out, on_uplink(GATEWAY_MAC, &tcp(NODE, 40000, B1, 8080, 0x02, b"")));
            // The backend's reply goes back to the client from the node port.
            let (v, out) = f.xdp(&tcp(B1, 8080, NODE, 40000, 0x12, b""));
            assert_eq!(v, XDP_TX);
            assert_eq!(out, on_uplink(OUTSIDE_MAC, &tcp(NODE, 30080, OUTSIDE, 40000, 0x12, b"")));
            // The flow's next packets, with data of every length's parity.
            for payload in [&b"x"[..], b"GET / HTTP/1.1\r\n\r\n", &[0xff; 1001]] {
                let (v, out) = f.xdp(&tcp(OUTSIDE, 40000, NODE, 30080, 0x18, payload));
                assert_eq!(v, XDP_TX);
                assert_eq!(out, on_uplink(GATEWAY_MAC, &tcp(NODE, 40000, B1, 8080, 0x18, payload)));
            }
            // The tc program finds the flow XDP made and translates as it does.
            let ack = tcp(OUTSIDE, 40000, NODE, 30080, 0x10, b"");
            let tc = f.dp.test_run_netdev(&ack).unwrap().data;
            let (_, xdp) = f.xdp(&ack);
            assert_eq!(tc[14..], xdp[14..]);
            assert_eq!(f.dp.counts().unwrap().get(SvcCounter::External), 0);
            assert_eq!(f.dp.counts().unwrap().get(SvcCounter::Established), 1);
            // Many source ports: source NAT keeps each, checksums follow.
            for sport in (1024..65535).step_by(977) {
                let (v, out) = f.xdp(&tcp(OUTSIDE, sport, NODE, 30080, 0x02, b"hi"));
                assert_eq!(v, XDP_TX);
                assert_eq!(out, on_uplink(GATEWAY_MAC, &tcp(NODE, sport, B1, 8080, 0x02, b"hi")));
            }
            // UDP, with a checksum and without one (0 stays 0).
            let (v, out) = f.xdp(&udp(OUTSIDE, 5353, NODE, 30053, b"query"));
            assert_eq!(v, XDP_TX);
            assert_eq!(out, on_uplink(GATEWAY_MAC, &udp(NODE, 5353, B1, 8080, b"query")));
            let mut no_sum = udp(OUTSIDE, 5354, NODE, 30053, b"query");
            no_sum[40..42].fill(0);
            let (v, out) = f.xdp(&no_sum);
            assert_eq!(v, XDP_TX);
            let mut want = on_uplink(GATEWAY_MAC, &udp(NODE, 5354, B1, 8080, b"query"));
            want[40..42].fill(0);
            assert_eq!(out, want);
            let (v, out) = f.xdp(&udp(B1, 8080, NODE, 5353, b"answer"));
            assert_eq!(v, XDP_TX);
            assert_eq!(out, on_uplink(OUTSIDE_MAC, &udp(NODE, 30053, OUTSIDE, 5353, b"answer")));
            assert_eq!(f.xdp_count("xdp_new_flow"), 2 + 67 + 1);
            assert_eq!(f.xdp_count("xdp_established"), 3 + 1);
            assert_eq!(f.xdp_count("xdp_reverse"), 2);
            assert_eq!(f.xdp_count("xdp_passed"), 0);
        });
    }

    fn what_xdp_does_not_send_back_out_passes_untouched() {
        let node = Node::new();
        let ifindex = node.uplink_index();
        node.ns.run(move || {
            let mut f = Fixture::new(ifindex);
            f.sync(&[
                node_port(Proto::Tcp, 30080, &[B1]),
                node_port(Proto::Tcp, 30081, &[LOCAL]),
                node_port(Proto::Tcp, 30082, &[UNRESOLVED]),
                node_port(Proto::Tcp, 30083, &[]),
            ]);
            let syn = |dport| tcp(OUTSIDE, 40000, NODE, dport, 0x02, b"");
            let mut passed = 0;
            let mut pass = |f: &mut Fixture, frame: Vec<u8>, why: &str| {
                assert_eq!(f.xdp(&frame), (XDP_PASS, frame), "{why}");
                passed += 1;
            };
            pass(&mut f, syn(30081), "a local backend, behind another interface");
            pass(&mut f, syn(30082), "a next hop without a neighbour");
            pass(&mut f, syn(30083), "no endpoints: tc refuses it");
            pass(&mut f, syn(22), "no service");
            pass(&mut f, tcp(OUTSIDE, 40000, [192, 168, 77, 9], 30080, 0x02, b""), "not a node address");
            let first = Ipv4Packet::tcp_syn(OUTSIDE, 40001, NODE, 30080).fragment(true, 0).build();
            pass(&mut f, first, "a first fragment (tc records it)");
            let later = Ipv4Packet::tcp_syn(OUTSIDE, 40001, NODE, 30080).fragment(false, 3).build();
            pass(&mut f, later, "a later fragment");
            let tagged = Ipv4Packet::tcp_syn(OUTSIDE, 40002, NODE, 30080).with_vlan(0x8100, 5).build();
            pass(&mut f, tagged, "VLAN-tagged");
            let options = Ipv4Packet::tcp_syn(OUTSIDE, 40003, NODE, 30080).with_options(&[1, 1, 1, 1]).build();
            pass(&mut f, options, "IP options");
            let mut cut = syn(30080);
            cut.truncate(14 + 20 + 12);
            cut[16..18].copy_from_slice(&32u16.to_be_bytes());
            pass(&mut f, cut, "a TCP header cut short");
            let mut long = syn(30080);
            long[16..18].copy_from_slice(&200u16.to_be_bytes());
            pass(&mut f, long, "an IP length past the frame");
            pass(&mut f, Ipv4Packet::icmp_echo(OUTSIDE, NODE).build(), "ICMP");
            // None of them made a flow.
            assert_eq!(f.dp.flow_count(), 0);
            // The local backend's flow, made by tc, stays tc's.
            let out = f.dp.test_run_netdev(&syn(30081)).unwrap();
            assert_eq!(&out.data[14..], &tcp(NODE, 40000, LOCAL, 8080, 0x02, b"")[14..]);
            pass(&mut f, tcp(OUTSIDE, 40000, NODE, 30081, 0x10, b""), "a known flow to a local backend");
            pass(&mut f, tcp(B1, 8080, NODE, 41000, 0x12, b""), "a reply to no flow");
            assert_eq!(f.xdp_count("xdp_passed"), passed);
            assert_eq!(f.xdp_count("xdp_new_flow"), 0);
        });
    }

    fn xdp_attaches_in_the_driver_and_a_node_port_answers_through_it() {
        let (net, _wire_xdp) = segment(78);
        let (client, node, backend) = (&net.hosts[0], &net.hosts[1], &net.hosts[2]);
        let listener = backend.run(|| TcpListener::bind("10.244.9.10:8080").unwrap());
        let server = std::thread::spawn(move || {
            for _ in 0..3 {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).unwrap();
                s.write_all(&buf).unwrap();
            }
        });
        let pins = BpfPinDir::new();
        let counts = node.run(|| {
            let mut dp = ServiceDataplane::load(pins.path()).unwrap();
            let ip = Ipv4Addr::new(192, 168, 78, 2);
            dp.set_node_addrs(&[ip].into_iter().collect(), Some(ip)).unwrap();
            let np = node_port(Proto::Tcp, 30080, &[[10, 244, 9, 10]]);
            dp.apply(&Translator::new().sync(&[np])).unwrap();
            dp.attach_node_interface("up0", AttachMode::Auto).unwrap();
            dp.attach_xdp("up0").unwrap();
            // Attaching again (a restarted agent) swaps the program in.
            dp.attach_xdp("up0").unwrap();
            // Another loader's XDP program is not replaced.
            let other = BpfPinDir::new();
            let mut second = ServiceDataplane::load(other.path()).unwrap();
            assert!(second.attach_xdp("up0").is_err());
            drop(second);
            client.run(|| {
                for i in 0..3u8 {
                    let mut s = TcpStream::connect_timeout(
                        &"192.168.78.2:30080".parse().unwrap(),
                        Duration::from_secs(5),
                    )
                    .unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    s.write_all(&[i; 5]).unwrap();
                    let mut back = [0u8; 5];
                    s.read_exact(&mut back).unwrap();
                    assert_eq!(back, [i; 5]);
                }
            });
            let counts = dp.xdp_counts().unwrap();
            assert!(dp.detach_xdp("up0").unwrap());
            assert!(!dp.detach_xdp("up0").unwrap());
            counts
        });
        server.join().unwrap();
        let get = |n: &str| counts.iter().find(|(name, _)| *name == n).unwrap().1;
        // The first SYN goes by tc (the backend node's address not yet
        // resolved); the rest of the three connections by XDP.
        assert!(get("xdp_new_flow") >= 2, "{counts:?}");
        assert!(get("xdp_established") >= 9, "{counts:?}");
        assert!(get("xdp_reverse") >= 9, "{counts:?}");
    }

    fn the_proxy_daemon_accelerates_its_uplink_when_asked() {
        let server = support::kube::Server::start();
        let k = support::kube::Kubectl {
            bin: support::kube::newest(),
            server: &server,
        };
        k.apply(&["apply", "-f", "-"], &support::proxy::node_port_service("np", 30099, "{}"));
        let (net, _wire_xdp) = segment(80);
        let (client, node, backend) = (&net.hosts[0], &net.hosts[1], &net.hosts[2]);
        let pod = std::net::SocketAddrV4::new(Ipv4Addr::new(10, 244, 9, 10), 8080);
        let _server = rudder_test_harness::AddressServer::start(backend, pod, rudder_test_harness::Udp::Answer);
        let port: u16 = server.url().rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap();
        let _relay = LoopbackRelay::start(node, &[port]);
        let pins = BpfPinDir::new();
        let xdp_attached = || node.ip(&["-d", "link", "show", "up0"]).contains("prog/xdp");
        let target = std::net::SocketAddrV4::new(Ipv4Addr::new(192, 168, 80, 2), 30099);
        // Asked for native acceleration: the uplink gets XDP, and the
        // NodePort's traffic goes through it.
        support::proxy::with_daemon(node, &server, pins.path(), Acceleration::Native, || {
            rudder_test_harness::until("the NodePort to answer", Duration::from_secs(30), || {
                rudder_test_harness::tcp_ask(client, target).is_ok()
            })
            .unwrap();
            assert!(xdp_attached(), "{}", node.ip(&["-d", "link", "show", "up0"]));
            for _ in 0..5 {
                assert_eq!(rudder_test_harness::tcp_ask(client, target).unwrap(), "10.244.9.10");
            }
            // The XDP path's counters on the proxy's metrics.
            let metrics = node.run(|| {
                let mut c = TcpStream::connect(("127.0.0.1", 10249)).unwrap();
                c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
                let mut out = String::new();
                c.read_to_string(&mut out).unwrap();
                out
            });
            assert!(metrics.contains("rudder_proxy_packets_total{action=\"xdp_reverse\"}"), "{metrics}");
        });
        let counts = node.run(|| ServiceDataplane::load(pins.path()).unwrap().xdp_counts().unwrap());
        let get = |n: &str| counts.iter().find(|(name, _)| *name == n).unwrap().1;
        assert!(get("xdp_new_flow") >= 4 && get("xdp_reverse") >= 8, "{counts:?}");
        // The program stays while the agent is away (its link is pinned).
        assert!(xdp_attached());
        // Restarted with acceleration disabled: the program goes, and the
        // NodePort still answers, on tc.
        support::proxy::with_daemon(node, &server, pins.path(), Acceleration::Disabled, || {
            rudder_test_harness::until("XDP to be removed", Duration::from_secs(30), || !xdp_attached())
                .unwrap();
            assert_eq!(rudder_test_harness::tcp_ask(client, target).unwrap(), "10.244.9.10");
        });
    }
}
