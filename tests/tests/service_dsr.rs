//! Direct server return (`rudder.io/forwarding-mode: dsr`): under
//! `BPF_PROG_TEST_RUN`, the exact bytes the node a client reached sends
//! to the backend (its destination translated, the client's address kept,
//! the service address in an IP option on each SYN and every UDP
//! datagram), the ICMP answer to a packet the option would take past the
//! MTU, what the backend's node learns from an option and what it refuses
//! to, and what XDP leaves to tc; then on a segment of namespaces, a client
//! talking TCP and UDP to a NodePort whose backend pod answers it straight
//! from its own node, path MTU discovery included.

mod support;

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::Duration,
};

use rudder_dataplane::{
    service::{Acceleration, ServiceDataplane},
    tc::AttachMode,
};
use rudder_ebpf_common::service::{DSR_OPT_TYPE, SCOPE_NODEPORT, SVC_F_DSR, SvcCounter};
use rudder_proxy::{Endpoint, Frontend, Proto, ServiceSpec, Translator};
use rudder_test_harness::{
    AddressServer, BpfPinDir, LoopbackRelay, NetNs, Underlay,
    packet::{self, Ipv4Packet, tcp, udp},
};

const TC_ACT_UNSPEC: i32 = -1;
const TC_ACT_REDIRECT: i32 = 7;
const XDP_PASS: i32 = 2;
const XDP_TX: i32 = 3;
const NODE: [u8; 4] = [192, 168, 77, 1];
const OUTSIDE: [u8; 4] = [192, 168, 77, 2];
/// Behind `GATEWAY`, out of the uplink: a backend on another node.
const B1: [u8; 4] = [10, 244, 2, 7];
const UPLINK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x01];
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x05];

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Turns on forwarding in `ns`, as a node has it.
fn forwarding(ns: &NetNs) {
    for knob in ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0"] {
        let out = ns.exec("sysctl", &["-qw", knob]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A node namespace: uplink `up0` (`NODE`/24, MTU 1500) with a permanent
/// neighbour for the gateway, the remote backends' subnet behind it.
fn node_ns() -> (NetNs, NetNs, u32) {
    let (ns, wire) = (NetNs::new(), NetNs::new());
    forwarding(&ns);
    ns.veth_to(&wire, ("up0", None), ("peer0", None));
    ns.ip(&["link", "set", "up0", "address", &mac(UPLINK_MAC)]);
    ns.ip(&["addr", "add", "192.168.77.1/24", "dev", "up0"]);
    ns.ip(&[
        "neigh",
        "replace",
        "192.168.77.5",
        "lladdr",
        &mac(GATEWAY_MAC),
        "dev",
        "up0",
        "nud",
        "permanent",
    ]);
    ns.ip(&["route", "add", "10.244.2.0/24", "via", "192.168.77.5"]);
    let out = ns.ip(&["-o", "link", "show", "up0"]);
    let ifindex = out.split(':').next().unwrap().trim().parse().unwrap();
    (ns, wire, ifindex)
}

fn node_port(proto: Proto, port: u16, backend: [u8; 4], dsr: bool) -> ServiceSpec {
    ServiceSpec {
        frontend: Frontend {
            addr: Ipv4Addr::UNSPECIFIED,
            port,
            proto,
        },
        endpoints: vec![Endpoint::ready(backend.into(), 8080)],
        affinity_timeout: None,
        keep_source: false,
        maglev: false,
        dsr,
    }
}

/// The option naming `vip:vport`.
fn option(vip: [u8; 4], vport: u16) -> [u8; 8] {
    let p = vport.to_be_bytes();
    [DSR_OPT_TYPE, 8, p[0], p[1], vip[0], vip[1], vip[2], vip[3]]
}

/// A TCP segment with IP options, built independently of the program.
fn tcp_opt(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8, opt: &[u8]) -> Vec<u8> {
    packet::tcp_with_options(src, sport, dst, dport, flags, b"", opt)
}

fn udp_opt(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    payload: &[u8],
    opt: &[u8],
) -> Vec<u8> {
    Ipv4Packet::udp(src, sport, dst, dport, payload)
        .with_options(opt)
        .build()
}

/// `frame` as sent to the gateway from the uplink.
fn to_gateway(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[..6].copy_from_slice(&GATEWAY_MAC);
    f[6..12].copy_from_slice(&UPLINK_MAC);
    f
}

struct Fixture {
    dp: ServiceDataplane,
    proxy: Translator,
    _pins: BpfPinDir,
}

impl Fixture {
    /// In the calling thread's namespace; `node` is this node's address
    /// and the only cluster node's known.
    fn new(node: [u8; 4]) -> Self {
        let pins = BpfPinDir::new();
        let mut dp = ServiceDataplane::load(pins.path()).expect("load the service object");
        let addrs = [Ipv4Addr::from(node)].into_iter().collect();
        dp.set_node_addrs(&addrs, Some(node.into())).unwrap();
        dp.set_dsr_nodes(&addrs).unwrap();
        Self {
            dp,
            proxy: Translator::new(),
            _pins: pins,
        }
    }

    fn sync(&mut self, services: &[ServiceSpec]) {
        let ops = self.proxy.sync(services);
        self.dp.apply(&ops).unwrap();
    }

    fn netdev(&mut self, frame: &[u8]) -> (i32, Vec<u8>) {
        let out = self.dp.test_run_netdev(frame).unwrap();
        (out.verdict, out.data)
    }

    fn pod(&mut self, from_pod: bool, frame: &[u8]) -> (i32, Vec<u8>) {
        let out = self.dp.test_run(from_pod, frame).unwrap();
        (out.verdict, out.data)
    }

    fn dsr(&self, name: &str) -> u64 {
        let counts = self.dp.dsr_counts().unwrap();
        counts.iter().find(|(n, _)| *n == name).unwrap().1
    }

    /// Entries of `REV_NAT`.
    fn rev_nat(&self) -> usize {
        self.dp.flow_tables().2
    }
}

/// An ICMP "fragmentation needed" from `src` to `dst` for `mtu`, quoting
/// the IP header and 8 bytes of `frame`, as the datapath builds its IP
/// header (identification 0, no flags, TTL 64).
fn frag_needed(src: [u8; 4], dst: [u8; 4], mtu: u16, frame: &[u8]) -> Vec<u8> {
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&frame[14..14 + 28]);
    let c = packet::checksum(&icmp, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = packet::checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&icmp);
    ip
}

rudder_test_harness::privileged_tests! {
    fn bytes_the_service_node_keeps_the_client_and_sends_the_service_address_in_an_option() {
        let (ns, _wire, _) = node_ns();
        ns.run(move || {
            let mut f = Fixture::new(NODE);
            f.sync(&[
                node_port(Proto::Tcp, 30080, B1, true),
                node_port(Proto::Udp, 30053, B1, true),
                node_port(Proto::Tcp, 30081, B1, false),
            ]);
            let opt = option(NODE, 30080);
            // A SYN: the destination translated, the client kept, the
            // service address in the option; routed to the gateway.
            let syn = tcp(OUTSIDE, 40000, NODE, 30080, 0x02, b"");
            let want = to_gateway(&tcp_opt(OUTSIDE, 40000, B1, 8080, 0x02, &opt));
            assert_eq!(f.netdev(&syn), (TC_ACT_REDIRECT, want.clone()));
            // The connection's other segments: no option.
            for (flags, payload) in [(0x10, &b""[..]), (0x18, b"GET / HTTP/1.1\r\n\r\n"), (0x11, b"")] {
                let (v, out) = f.netdev(&tcp(OUTSIDE, 40000, NODE, 30080, flags, payload));
                assert_eq!(v, TC_ACT_REDIRECT);
                assert_eq!(out, to_gateway(&tcp(OUTSIDE, 40000, B1, 8080, flags, payload)));
            }
            // A retransmitted SYN carries it again.
            assert_eq!(f.netdev(&syn), (TC_ACT_REDIRECT, want));
            // Every UDP datagram carries it, with and without a checksum.
            let uopt = option(NODE, 30053);
            for payload in [&b"query"[..], b"another query!"] {
                let (v, out) = f.netdev(&udp(OUTSIDE, 5353, NODE, 30053, payload));
                assert_eq!(v, TC_ACT_REDIRECT);
                assert_eq!(out, to_gateway(&udp_opt(OUTSIDE, 5353, B1, 8080, payload, &uopt)));
            }
            let mut no_sum = udp(OUTSIDE, 5354, NODE, 30053, b"q");
            no_sum[40..42].fill(0);
            let (_, out) = f.netdev(&no_sum);
            let mut want = to_gateway(&udp_opt(OUTSIDE, 5354, B1, 8080, b"q", &uopt));
            want[48..50].fill(0);
            assert_eq!(out, want);
            // No reverse entries here: the replies do not come back.
            assert_eq!(f.dp.flow_tables(), (0, 3, 0));
            assert_eq!(f.dsr("dsr_sent"), 5);
            assert_eq!(f.dp.counts().unwrap().get(SvcCounter::External), 3);
            // A node port without direct server return still takes source NAT.
            let (_, out) = f.netdev(&tcp(OUTSIDE, 40000, NODE, 30081, 0x02, b""));
            assert_eq!(out[14..], tcp(NODE, 40000, B1, 8080, 0x02, b"")[14..]);
            assert_eq!(f.rev_nat(), 1);
            // A SYN that already has IP options cannot take the option:
            // source NAT for that flow.
            let with_options = Ipv4Packet::tcp_syn(OUTSIDE, 40001, NODE, 30080).with_options(&[1, 1, 1, 1]).build();
            let (_, out) = f.netdev(&with_options);
            let want = Ipv4Packet::tcp_syn(NODE, 40001, B1, 8080).with_options(&[1, 1, 1, 1]).build();
            assert_eq!(out[14..], want[14..]);
            assert_eq!(f.dsr("dsr_sent"), 5);
            // A node port on an address of this node that no Node object
            // names (a backend's node would not believe the option):
            // source NAT to that address.
            let second = [192, 168, 77, 9];
            let addrs = [NODE, second].map(Ipv4Addr::from).into_iter().collect();
            f.dp.set_node_addrs(&addrs, Some(NODE.into())).unwrap();
            let (v, out) = f.netdev(&tcp(OUTSIDE, 40002, second, 30080, 0x02, b""));
            assert_eq!(v, TC_ACT_REDIRECT);
            assert_eq!(out, to_gateway(&tcp(second, 40002, B1, 8080, 0x02, b"")));
            assert_eq!(f.dsr("dsr_sent"), 5);
        });
    }

    fn bytes_a_changed_forwarding_mode_keeps_connections_and_applies_to_new_ones() {
        let (ns, _wire, _) = node_ns();
        ns.run(move || {
            let mut f = Fixture::new(NODE);
            f.sync(&[node_port(Proto::Tcp, 30080, B1, false)]);
            let snat = tcp(NODE, 40000, B1, 8080, 0x10, b"");
            f.netdev(&tcp(OUTSIDE, 40000, NODE, 30080, 0x02, b""));
            // Direct server return from now on: the open connection keeps
            // source NAT; a new one from the same address and port (a SYN)
            // takes the option.
            f.sync(&[node_port(Proto::Tcp, 30080, B1, true)]);
            let (_, out) = f.netdev(&tcp(OUTSIDE, 40000, NODE, 30080, 0x10, b""));
            assert_eq!(out[14..], snat[14..]);
            let (_, out) = f.netdev(&tcp(OUTSIDE, 40000, NODE, 30080, 0x02, b""));
            assert_eq!(out[14..], tcp_opt(OUTSIDE, 40000, B1, 8080, 0x02, &option(NODE, 30080))[14..]);
            // And back: the open connection keeps going directly; a new
            // one takes source NAT again.
            f.sync(&[node_port(Proto::Tcp, 30080, B1, false)]);
            let (_, out) = f.netdev(&tcp(OUTSIDE, 40000, NODE, 30080, 0x10, b""));
            assert_eq!(out[14..], tcp(OUTSIDE, 40000, B1, 8080, 0x10, b"")[14..]);
            let (_, out) = f.netdev(&tcp(OUTSIDE, 40000, NODE, 30080, 0x02, b""));
            assert_eq!(out[14..], tcp(NODE, 40000, B1, 8080, 0x02, b"")[14..]);
            assert_eq!(f.dp.counts().unwrap().get(SvcCounter::StaleBackend), 2);
        });
    }

    fn a_packet_the_option_would_take_past_the_mtu_gets_fragmentation_needed() {
        let (ns, _wire, _) = node_ns();
        ns.run(move || {
            let mut f = Fixture::new(NODE);
            f.sync(&[node_port(Proto::Udp, 30053, B1, true)]);
            // 1,500 bytes with DF on a 1,500-byte route: answered, quoting
            // the datagram as the client sent it, for 1,492 bytes.
            let full = Ipv4Packet::udp(OUTSIDE, 5353, NODE, 30053, &[7; 1472]).dont_fragment().build();
            let (v, out) = f.netdev(&full);
            assert_eq!(v, TC_ACT_REDIRECT, "sent back out");
            assert_eq!(out[14..], frag_needed(NODE, OUTSIDE, 1492, &full)[..]);
            assert_eq!(f.dsr("dsr_too_big"), 1);
            // 1,492 bytes fit with the option.
            let fits = Ipv4Packet::udp(OUTSIDE, 5353, NODE, 30053, &[7; 1464]).dont_fragment().build();
            let (v, out) = f.netdev(&fits);
            assert_eq!(v, TC_ACT_REDIRECT);
            let want = Ipv4Packet::udp(OUTSIDE, 5353, B1, 8080, &[7; 1464])
                .dont_fragment()
                .with_options(&option(NODE, 30053))
                .build();
            assert_eq!(out, to_gateway(&want));
            // Without DF it goes on with the option, for the stack to fragment.
            let may_fragment = Ipv4Packet::udp(OUTSIDE, 5353, NODE, 30053, &[7; 1472]).build();
            let (v, out) = f.netdev(&may_fragment);
            assert_eq!(v, TC_ACT_UNSPEC);
            let want = Ipv4Packet::udp(OUTSIDE, 5353, B1, 8080, &[7; 1472]).with_options(&option(NODE, 30053)).build();
            assert_eq!(out[14..], want[14..]);
            assert_eq!((f.dsr("dsr_too_big"), f.dsr("dsr_sent")), (1, 2));
        });
    }

    fn bytes_the_backends_node_learns_from_believed_options_only() {
        NetNs::new().run(backend_node_learns);
    }

    fn xdp_leaves_the_option_to_tc_and_forwards_the_rest() {
        let (ns, _wire, ifindex) = node_ns();
        ns.run(move || {
            let mut f = Fixture::new(NODE);
            f.sync(&[node_port(Proto::Tcp, 30080, B1, true), node_port(Proto::Udp, 30053, B1, true)]);
            let xdp = |f: &mut Fixture, frame: &[u8]| {
                let (out, _) = f.dp.test_run_xdp(frame, ifindex, 1).unwrap();
                (out.verdict, out.data)
            };
            // A new flow: to tc, untouched, no flow made.
            let syn = tcp(OUTSIDE, 40000, NODE, 30080, 0x02, b"");
            assert_eq!(xdp(&mut f, &syn), (XDP_PASS, syn.clone()));
            assert_eq!(f.dp.flow_count(), 0);
            f.netdev(&syn);
            // The connection's next segments at XDP: destination only.
            let ack = tcp(OUTSIDE, 40000, NODE, 30080, 0x10, b"data");
            assert_eq!(xdp(&mut f, &ack), (XDP_TX, to_gateway(&tcp(OUTSIDE, 40000, B1, 8080, 0x10, b"data"))));
            // A retransmitted SYN and UDP datagrams need the option: tc's.
            assert_eq!(xdp(&mut f, &syn), (XDP_PASS, syn.clone()));
            let q = udp(OUTSIDE, 5353, NODE, 30053, b"q");
            f.netdev(&q);
            assert_eq!(xdp(&mut f, &q), (XDP_PASS, q.clone()));
        });
    }

    fn the_proxy_daemon_follows_the_services_annotation() {
        let server = support::kube::Server::start();
        let k = support::kube::Kubectl {
            bin: support::kube::newest(),
            server: &server,
        };
        k.apply(&["apply", "-f", "-"], &support::proxy::node_port_service("dsr", 30098, "{rudder.io/forwarding-mode: dsr}"));
        let net = Underlay::new(&["192.168.82.2/24"]);
        let node = &net.hosts[0];
        let port: u16 = server.url().rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap();
        let _relay = LoopbackRelay::start(node, &[port]);
        let pins = BpfPinDir::new();
        // The node port's flags in the maps the daemon programs.
        let flags = || {
            node.run(|| {
                let dp = ServiceDataplane::load(pins.path()).unwrap();
                dp.installed()
                    .services
                    .iter()
                    .find(|(key, _)| key.scope == SCOPE_NODEPORT && u16::from_be(key.port) == 30098)
                    .map(|(_, v)| v.flags)
            })
        };
        let within = Duration::from_secs(30);
        support::proxy::with_daemon(node, &server, pins.path(), Acceleration::Disabled, || {
            // Read only once the daemon has made every pin (its uplink's
            // link is pinned after the maps): a load before would make them.
            let links = pins.path().join("links");
            rudder_test_harness::until("the daemon to attach to up0", within, || {
                std::fs::read_dir(&links).is_ok_and(|mut d| d.next().is_some())
            })
            .unwrap();
            rudder_test_harness::until("the node port with DSR", within, || {
                flags().is_some_and(|f| f & SVC_F_DSR != 0)
            })
            .unwrap();
            k.ok(&["annotate", "service", "dsr", "rudder.io/forwarding-mode=snat", "--overwrite"]);
            rudder_test_harness::until("the node port with source NAT", within, || {
                flags().is_some_and(|f| f & SVC_F_DSR == 0)
            })
            .unwrap();
            k.ok(&["annotate", "service", "dsr", "rudder.io/forwarding-mode=dsr", "--overwrite"]);
            rudder_test_harness::until("DSR again", within, || {
                flags().is_some_and(|f| f & SVC_F_DSR != 0)
            })
            .unwrap();
            // The nodes' addresses an option may name follow the Nodes.
            let dsr_nodes = || node.run(|| ServiceDataplane::load(pins.path()).unwrap().dsr_nodes());
            for (name, ip) in [("node-1", "192.168.82.2"), ("node-2", "192.168.82.3")] {
                k.apply(&["create", "-f", "-"], &NODE_OBJECT.replace("@NAME@", name).replace("@ADDR@", ip));
            }
            let both = ["192.168.82.2".parse().unwrap(), "192.168.82.3".parse().unwrap()];
            rudder_test_harness::until("both nodes' addresses", within, || {
                dsr_nodes() == both.into_iter().collect()
            })
            .unwrap();
            k.ok(&["delete", "node", "node-2"]);
            rudder_test_harness::until("node-2 forgotten", within, || {
                dsr_nodes() == both[..1].iter().copied().collect()
            })
            .unwrap();
        });
    }

    fn a_node_port_answers_straight_from_the_backends_node() {
        let net = Underlay::new(&["192.168.81.1/24", "192.168.81.2/24", "192.168.81.3/24"]);
        let (client, node, backend) = (&net.hosts[0], &net.hosts[1], &net.hosts[2]);
        for ns in [node, backend] {
            forwarding(ns);
        }
        // The backend pod on the third host, routed there from the node.
        let pod = NetNs::new();
        backend.veth_to(&pod, ("pod0", None), ("eth0", Some("10.244.9.10/32")));
        pod.ip(&["route", "add", "default", "dev", "eth0"]);
        backend.ip(&["route", "add", "10.244.9.10/32", "dev", "pod0"]);
        let out = backend.exec("sysctl", &["-qw", "net.ipv4.conf.pod0.proxy_arp=1"]);
        assert!(out.status.success());
        node.ip(&["route", "add", "10.244.9.0/24", "via", "192.168.81.3"]);
        let backend_addr = SocketAddrV4::new(Ipv4Addr::new(10, 244, 9, 10), 8080);
        let _server = AddressServer::start_reporting_peer(&pod, backend_addr);
        let services = [
            node_port(Proto::Tcp, 30080, [10, 244, 9, 10], true),
            node_port(Proto::Udp, 30053, [10, 244, 9, 10], true),
        ];
        let (node_pins, backend_pins) = (BpfPinDir::new(), BpfPinDir::new());
        let node_dp = node.run(|| {
            let mut dp = ServiceDataplane::load(node_pins.path()).unwrap();
            let ip = Ipv4Addr::new(192, 168, 81, 2);
            dp.set_node_addrs(&[ip].into_iter().collect(), Some(ip)).unwrap();
            let nodes = [ip, Ipv4Addr::new(192, 168, 81, 3)].into_iter().collect();
            dp.set_dsr_nodes(&nodes).unwrap();
            dp.apply(&Translator::new().sync(&services)).unwrap();
            dp.attach_node_interface("up0", AttachMode::Auto).unwrap();
            dp
        });
        let backend_dp = backend.run(|| {
            let mut dp = ServiceDataplane::load(backend_pins.path()).unwrap();
            let ip = Ipv4Addr::new(192, 168, 81, 3);
            dp.set_node_addrs(&[ip].into_iter().collect(), Some(ip)).unwrap();
            let nodes = [Ipv4Addr::new(192, 168, 81, 2), ip].into_iter().collect();
            dp.set_dsr_nodes(&nodes).unwrap();
            dp.apply(&Translator::new().sync(&services)).unwrap();
            dp.attach_node_interface("up0", AttachMode::Auto).unwrap();
            dp.attach_pod_interface("pod0", AttachMode::Auto).unwrap();
            dp
        });
        let target = SocketAddrV4::new(Ipv4Addr::new(192, 168, 81, 2), 30080);
        // TCP: the pod sees the client's own address, and answers.
        for _ in 0..3 {
            let answer = rudder_test_harness::tcp_ask(client, target).unwrap();
            assert_eq!(answer, "10.244.9.10 192.168.81.1");
        }
        // UDP on a connected socket (it takes only the service's answers).
        let udp_target = SocketAddrV4::new(Ipv4Addr::new(192, 168, 81, 2), 30053);
        client.run(|| {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.connect(udp_target).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = [0u8; 100];
            s.send(b"hello").unwrap();
            let n = s.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"10.244.9.10 192.168.81.1");
            // A full-size datagram (DF, as Linux sends them) would not fit
            // with the option: ICMP lowers the path MTU, and the same
            // datagram, sent again, fragmented to fit, is answered.
            s.send(&[1; 1472]).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let mut answered = false;
            for _ in 0..3 {
                let _ = s.send(&[1; 1472]);
                if let Ok(n) = s.recv(&mut buf) {
                    assert_eq!(&buf[..n], b"10.244.9.10 192.168.81.1");
                    answered = true;
                    break;
                }
            }
            assert!(answered, "no answer to a datagram after the path MTU dropped");
        });
        let route = client.ip(&["route", "get", "192.168.81.2"]);
        assert!(route.contains("mtu 1492"), "{route}");
        // The replies never came back through the node the client reached.
        let node_counts = node_dp.counts().unwrap();
        assert_eq!(node_counts.get(SvcCounter::Reverse), 0);
        assert_eq!(node_dp.flow_tables().2, 0, "no reverse entries on the service's node");
        let dsr = node_dp.dsr_counts().unwrap();
        let get = |c: &[(&str, u64)], n: &str| c.iter().find(|(name, _)| *name == n).unwrap().1;
        assert!(get(&dsr, "dsr_sent") >= 3 + 2, "{dsr:?}");
        assert_eq!(get(&dsr, "dsr_too_big"), 1, "{dsr:?}");
        // The backend's node translated them, from what the options said.
        let learned = backend_dp.dsr_counts().unwrap();
        assert!(get(&learned, "dsr_learned") >= 4, "{learned:?}");
        assert!(backend_dp.counts().unwrap().get(SvcCounter::Reverse) >= 3 * 2, "replies translated there");
    }
}

/// A NodePort Service asking for direct server return (node port 30098)
/// and its slice.
/// A Node named @NAME@ with InternalIP @ADDR@ (a Node's status may be set on
/// create, as the kubelet does).
const NODE_OBJECT: &str = r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "@NAME@"},
 "status": {"addresses": [{"type": "InternalIP", "address": "@ADDR@"}]}}"#;

/// The backend's node's side, in a namespace of its own (the replies'
/// route lookups find nothing: the bytes are what is checked).
fn backend_node_learns() {
    let mut f = Fixture::new([192, 168, 77, 3]);
    f.sync(&[
        node_port(Proto::Tcp, 30080, B1, true),
        node_port(Proto::Udp, 30053, B1, true),
        node_port(Proto::Tcp, 30081, B1, false),
    ]);
    let reply = tcp(B1, 8080, OUTSIDE, 40000, 0x12, b"");
    // A node port's option is believed only once the address it names is
    // a cluster node's.
    let syn = tcp_opt(OUTSIDE, 40000, B1, 8080, 0x02, &option(NODE, 30080));
    assert_eq!(f.pod(false, &syn), (TC_ACT_UNSPEC, syn.clone()));
    assert_eq!((f.rev_nat(), f.dsr("dsr_refused")), (0, 1));
    assert_eq!(f.pod(true, &reply).1, reply);
    let nodes = [Ipv4Addr::from(NODE), Ipv4Addr::new(192, 168, 77, 3)]
        .into_iter()
        .collect();
    assert!(f.dp.set_dsr_nodes(&nodes).unwrap());
    assert!(!f.dp.set_dsr_nodes(&nodes).unwrap(), "nothing changed");
    assert_eq!(f.dp.dsr_nodes(), nodes);
    // The SYN enters the pod as it came, option and all; the pod's
    // reply then leaves from the service address to the client.
    assert_eq!(f.pod(false, &syn), (TC_ACT_UNSPEC, syn.clone()));
    assert_eq!((f.rev_nat(), f.dsr("dsr_learned")), (1, 1));
    let (_, out) = f.pod(true, &reply);
    assert_eq!(out[14..], tcp(NODE, 30080, OUTSIDE, 40000, 0x12, b"")[14..]);
    for payload in [&b"x"[..], &[0xab; 999]] {
        let (_, out) = f.pod(true, &tcp(B1, 8080, OUTSIDE, 40000, 0x18, payload));
        assert_eq!(
            out[14..],
            tcp(NODE, 30080, OUTSIDE, 40000, 0x18, payload)[14..]
        );
    }
    // The same SYN again (a retransmission) changes nothing.
    f.pod(false, &syn);
    assert_eq!((f.rev_nat(), f.dsr("dsr_learned")), (1, 1));
    // UDP: the first datagram records, later ones find it recorded.
    for _ in 0..3 {
        let q = udp_opt(OUTSIDE, 5353, B1, 8080, b"query", &option(NODE, 30053));
        assert_eq!(f.pod(false, &q), (TC_ACT_UNSPEC, q.clone()));
    }
    assert_eq!((f.rev_nat(), f.dsr("dsr_learned")), (2, 2));
    let (_, out) = f.pod(true, &udp(B1, 8080, OUTSIDE, 5353, b"answer"));
    assert_eq!(out[14..], udp(NODE, 30053, OUTSIDE, 5353, b"answer")[14..]);

    // Options that are not believed: a service without direct server
    // return, a port that is no service, a UDP port named for TCP, a node
    // port on an address that is no node's (replies would leave from any
    // address a client chose); and options that are not this one (wrong
    // length, another type).
    let refused = [
        option(NODE, 30081),
        option(NODE, 31999),
        option(NODE, 30053),
        option([198, 51, 100, 7], 30080),
    ];
    for (i, opt) in refused.iter().enumerate() {
        let sport = 41000 + i as u16;
        let syn = tcp_opt(OUTSIDE, sport, B1, 8080, 0x02, opt);
        assert_eq!(f.pod(false, &syn), (TC_ACT_UNSPEC, syn.clone()));
        let reply = tcp(B1, 8080, OUTSIDE, sport, 0x12, b"");
        assert_eq!(
            f.pod(true, &reply).1,
            reply,
            "{opt:?}: the reply is not translated"
        );
    }
    assert_eq!(f.dsr("dsr_refused"), 5);
    let mut short = option(NODE, 30080);
    short[1] = 6;
    let mut other = option(NODE, 30080);
    other[0] = 0x94;
    for (i, opt) in [short, other].iter().enumerate() {
        let sport = 42000 + i as u16;
        f.pod(false, &tcp_opt(OUTSIDE, sport, B1, 8080, 0x02, opt));
        let reply = tcp(B1, 8080, OUTSIDE, sport, 0x12, b"");
        assert_eq!(f.pod(true, &reply).1, reply);
    }
    assert_eq!(
        (f.rev_nat(), f.dsr("dsr_refused"), f.dsr("dsr_learned")),
        (2, 5, 2)
    );

    // A SYN without the option on the same addresses and ports (a
    // direct connection) removes the stale entry; one with ACK does not.
    f.pod(false, &tcp(OUTSIDE, 40000, B1, 8080, 0x10, b""));
    assert_eq!(f.rev_nat(), 2);
    f.pod(false, &tcp(OUTSIDE, 40000, B1, 8080, 0x02, b""));
    assert_eq!(f.rev_nat(), 1);
    assert_eq!(f.pod(true, &reply).1, reply);
}
