//! The Service dataplane with real sockets: a node namespace with a bridge,
//! pod namespaces on veth pairs, `from_pod`/`to_pod` on each pod's host-side
//! veth, servers and clients in the pods.

use std::{
    io::{ErrorKind, Read as _},
    net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use rudder_dataplane::{service::ServiceDataplane, tc::AttachMode};
use rudder_proxy::{Endpoint, Frontend, Limits, Proto, ServiceSpec, Translator};
use rudder_test_harness::{AddressServer, BpfPinDir, NetNs, Udp, require_root};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const HAIRPIN: Ipv4Addr = Ipv4Addr::new(169, 254, 42, 1);

/// One node: a bridge 10.244.1.1/24 and pods on it, each with the dataplane
/// attached (by TCX, so nothing is left to detach by netlink) to its veth.
struct Node {
    pods: Vec<(NetNs, Ipv4Addr)>,
    /// The pods' host-side interfaces, in the node namespace.
    ifaces: Vec<String>,
    /// `None` while the "agent" is down.
    dp: Option<ServiceDataplane>,
    proxy: Translator,
    // Dropped last: the dataplane's maps are pinned here.
    ns: NetNs,
    _pins: BpfPinDir,
}

impl Node {
    fn new(pods: u8) -> Self {
        require_root();
        let pins = BpfPinDir::new();
        let ns = NetNs::new();
        ns.bridge("br0", Some("10.244.1.1/24"));
        for knob in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            let out = ns.exec("sysctl", &["-qw", knob]);
            assert!(
                out.status.success(),
                "sysctl {knob}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut dp = ServiceDataplane::load(pins.path()).unwrap();
        dp.set_hairpin_addr(HAIRPIN).unwrap();
        let mut node = Self {
            pods: vec![],
            ifaces: vec![],
            dp: Some(dp),
            proxy: Translator::new(),
            ns,
            _pins: pins,
        };
        for i in 0..pods {
            let pod = NetNs::new();
            let ip = Ipv4Addr::new(10, 244, 1, 10 + i);
            let host_if = format!("veth{i}");
            pod.veth_to(
                &node.ns,
                ("eth0", Some(&format!("{ip}/24"))),
                (&host_if, None),
            );
            pod.ip(&["route", "add", "default", "via", "10.244.1.1"]);
            node.ns.ip(&["link", "set", &host_if, "master", "br0"]);
            let dp = node.dp.as_mut().unwrap();
            node.ns
                .run(|| dp.attach_pod_interface(&host_if, AttachMode::Tcx).unwrap());
            node.pods.push((pod, ip));
            node.ifaces.push(host_if);
        }
        node
    }

    fn sync(&mut self, services: &[ServiceSpec]) {
        let ops = self.proxy.sync(services);
        self.dp.as_mut().unwrap().apply(&ops).unwrap();
    }

    /// What a restarted agent does: load from the pins, adopt what the maps
    /// hold, attach again to every pod interface (swapping programs in the
    /// pinned links).
    fn start_agent(&mut self) {
        let mut dp = ServiceDataplane::load(self._pins.path()).unwrap();
        let installed = dp.installed();
        self.proxy = Translator::adopt(&installed.services, &installed.slots, &installed.backends);
        for host_if in &self.ifaces {
            self.ns
                .run(|| dp.attach_pod_interface(host_if, AttachMode::Tcx).unwrap());
        }
        self.dp = Some(dp);
    }

    fn pod(&self, i: usize) -> &NetNs {
        &self.pods[i].0
    }

    fn ip(&self, i: usize) -> Ipv4Addr {
        self.pods[i].1
    }
}

fn service(proto: Proto, backends: &[Ipv4Addr], affinity: Option<u32>) -> ServiceSpec {
    ServiceSpec {
        frontend: Frontend {
            addr: VIP,
            port: 80,
            proto,
        },
        endpoints: backends.iter().map(|b| Endpoint::ready(*b, 8080)).collect(),
        affinity_timeout: affinity,
        keep_source: false,
        maglev: false,
        dsr: false,
    }
}

/// Connects from `pod` to the VIP and returns who answered and who the
/// client thought it was talking to.
fn tcp_ask(pod: &NetNs) -> std::io::Result<(String, SocketAddrV4)> {
    pod.run(|| {
        let mut s =
            TcpStream::connect_timeout(&SocketAddrV4::new(VIP, 80).into(), Duration::from_secs(3))?;
        let peer = match s.peer_addr()? {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok((answer, peer))
    })
}

fn udp_ask(pod: &NetNs) -> std::io::Result<(String, SocketAddrV4)> {
    pod.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.connect(SocketAddrV4::new(VIP, 80))?;
        s.send(b"who?")?;
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf)?;
        let from = match from {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
    })
}

/// A cgroup v2 directory of the test's own (under the unified hierarchy,
/// wherever it is mounted), removed on drop.
struct Cgroup2(std::path::PathBuf);

impl Cgroup2 {
    fn new() -> Self {
        let root = rudder_proxy::daemon::cgroup2_mount().expect("a cgroup2 mount");
        let dir = root.join(rudder_test_harness::unique_name());
        std::fs::create_dir(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Cgroup2 {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What a process of the node (in `cg`, in the node's namespace) sees when
/// it asks the VIP over TCP (answer and getpeername) and UDP (answer and
/// the reply's source), `n` times each, one line per answer.
fn node_process_asks(node: &Node, cg: &Cgroup2, n: u32) -> String {
    let script = format!(
        r#"
import socket
for _ in range({n}):
    s = socket.create_connection(("{VIP}", 80), timeout=3)
    peer = s.getpeername()
    data = b""
    while True:
        b = s.recv(64)
        if not b:
            break
        data += b
    print("tcp", data.decode(), "%s:%d" % peer)
    s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(3)
    u.sendto(b"who?", ("{VIP}", 80))
    data, src = u.recvfrom(64)
    print("udp", data.decode(), "%s:%d" % src)
    u.close()
"#
    );
    let procs = cg.0.join("cgroup.procs");
    let out = node
        .ns
        .output(std::process::Command::new("sh").args([
            "-c",
            &format!("echo $$ > {} && exec python3 -c \"$0\"", procs.display()),
            &script,
        ]))
        .unwrap();
    assert!(
        out.status.success(),
        "client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A node with a local backend pod, an outside client on one node
/// interface and a remote node's backend pod behind another (routed like
/// host-gw), `from_netdev` on both node interfaces.
struct NodePortNet {
    node: Node,
    outside: NetNs,
    remote: NetNs,
}

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 10);

impl NodePortNet {
    fn new() -> Self {
        let mut node = Node::new(2);
        let outside = NetNs::new();
        node.ns.veth_to(
            &outside,
            ("up0", Some("192.168.77.1/24")),
            ("eth0", Some("192.168.77.2/24")),
        );
        let remote = NetNs::new();
        node.ns.veth_to(
            &remote,
            ("up1", Some("192.168.78.1/24")),
            ("eth0", Some("192.168.78.2/24")),
        );
        remote.ip(&["addr", "add", "10.244.2.10/24", "dev", "eth0"]);
        remote.ip(&["route", "add", "default", "via", "192.168.78.1"]);
        node.ns
            .ip(&["route", "add", "10.244.2.0/24", "via", "192.168.78.2"]);
        let dp = node.dp.as_mut().unwrap();
        node.ns.run(|| {
            dp.attach_node_interface("up0", AttachMode::Tcx).unwrap();
            dp.attach_node_interface("up1", AttachMode::Tcx).unwrap();
        });
        let addrs = [
            NODE_IP,
            Ipv4Addr::new(192, 168, 78, 1),
            Ipv4Addr::new(10, 244, 1, 1),
        ];
        dp.set_node_addrs(&addrs.into_iter().collect(), Some(NODE_IP))
            .unwrap();
        Self {
            node,
            outside,
            remote,
        }
    }

    fn node_port(&mut self, proto: Proto, backends: &[Ipv4Addr], keep_source: bool) -> ServiceSpec {
        ServiceSpec {
            frontend: Frontend {
                addr: Ipv4Addr::UNSPECIFIED,
                port: 30080,
                proto,
            },
            endpoints: backends.iter().map(|b| Endpoint::ready(*b, 8080)).collect(),
            affinity_timeout: None,
            keep_source,
            maglev: false,
            dsr: false,
        }
    }
}

/// Asks `addr` from `ns` over TCP: (answer, the client's own view of the peer).
fn tcp_ask_at(ns: &NetNs, addr: SocketAddrV4) -> std::io::Result<(String, SocketAddrV4)> {
    ns.run(|| {
        let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let peer = match s.peer_addr()? {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok((answer, peer))
    })
}

fn udp_ask_at(ns: &NetNs, addr: SocketAddrV4) -> std::io::Result<(String, SocketAddrV4)> {
    ns.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.send_to(b"who?", addr)?;
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf)?;
        let from = match from {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
    })
}

rudder_test_harness::privileged_tests! {
    fn node_port_from_outside_reaches_local_and_remote_backends() {
        let mut net = NodePortNet::new();
        let local = net.node.ip(1);
        let _s1 = AddressServer::start_reporting_peer(net.node.pod(1), SocketAddrV4::new(local, 8080));
        let _s2 = AddressServer::start_reporting_peer(&net.remote, SocketAddrV4::new(REMOTE_POD, 8080));
        let tcp_np = net.node_port(Proto::Tcp, &[local, REMOTE_POD], false);
        let udp_np = net.node_port(Proto::Udp, &[local, REMOTE_POD], false);
        net.node.sync(&[tcp_np, udp_np]);
        let front = SocketAddrV4::new(NODE_IP, 30080);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..30 {
            let (answer, peer) = tcp_ask_at(&net.outside, front).unwrap();
            assert_eq!(peer, front);
            let (server, client) = answer.split_once(' ').unwrap();
            // Cluster policy: the backends see the node's address.
            assert_eq!(client, NODE_IP.to_string(), "{answer}");
            seen.insert(server.to_string());
        }
        assert_eq!(seen, [local.to_string(), REMOTE_POD.to_string()].into_iter().collect());
        let mut udp_seen = std::collections::BTreeSet::new();
        for _ in 0..30 {
            let (answer, from) = udp_ask_at(&net.outside, front).unwrap();
            assert_eq!(from, front, "the reply comes from the node port");
            udp_seen.insert(answer.split_once(' ').unwrap().0.to_string());
        }
        assert_eq!(udp_seen.len(), 2, "{udp_seen:?}");

        // From a pod of the node, to the node's address.
        let (answer, peer) = tcp_ask_at(net.node.pod(0), SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 1), 30080)).unwrap();
        assert_eq!(peer, SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 1), 30080));
        assert!(answer.contains(&net.node.ip(0).to_string()), "pods keep their address: {answer}");

        // Ports that are no service are the node's own: refused by its
        // stack, not swallowed.
        let err = tcp_ask_at(&net.outside, SocketAddrV4::new(NODE_IP, 30081)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    }

    fn a_remote_backends_port_unreachable_reaches_the_outside_client() {
        let mut net = NodePortNet::new();
        // The remote backend pod is up, but nothing listens on UDP 9999:
        // its kernel answers the node (the datagram's source after source
        // NAT) with port unreachable. Only once translated and routed back
        // does the client's socket see it.
        let mut np = net.node_port(Proto::Udp, &[REMOTE_POD], false);
        np.endpoints[0].port = 9999;
        net.node.sync(&[np]);
        let front = SocketAddrV4::new(NODE_IP, 30080);
        let start = Instant::now();
        let err = net
            .outside
            .run(|| {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                s.connect(front)?;
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                s.send(b"who?")?;
                let mut buf = [0u8; 64];
                s.recv(&mut buf)
            })
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
        let counts = net.node.dp.as_ref().unwrap().counts().unwrap();
        assert_eq!(counts.get(rudder_ebpf_common::service::SvcCounter::IcmpError), 1);
    }

    fn external_traffic_policy_local_keeps_the_client_address() {
        let mut net = NodePortNet::new();
        let local = net.node.ip(1);
        let _s1 = AddressServer::start_reporting_peer(net.node.pod(1), SocketAddrV4::new(local, 8080));
        let np = net.node_port(Proto::Tcp, &[local], true);
        net.node.sync(&[np]);
        let front = SocketAddrV4::new(NODE_IP, 30080);
        for _ in 0..5 {
            let (answer, peer) = tcp_ask_at(&net.outside, front).unwrap();
            assert_eq!(peer, front);
            assert_eq!(answer, format!("{local} {OUTSIDE_IP}"), "the backend sees the client");
        }
        // No local endpoint: refused at once.
        let np = net.node_port(Proto::Tcp, &[], true);
        net.node.sync(&[np]);
        let start = Instant::now();
        let err = tcp_ask_at(&net.outside, front).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    fn cluster_ip_from_the_node_itself_through_socket_hooks() {
        let mut node = Node::new(3);
        let _s1 = AddressServer::start(node.pod(1), SocketAddrV4::new(node.ip(1), 8080), Udp::Answer);
        let _s2 = AddressServer::start(node.pod(2), SocketAddrV4::new(node.ip(2), 8080), Udp::Answer);
        let cg = Cgroup2::new();
        let dp = node.dp.as_mut().unwrap();
        let hooks = node.ns.run(|| dp.attach_node_cgroup(&cg.0)).unwrap();
        assert!(hooks.contains(&"sock_connect4") && hooks.contains(&"sock_recvmsg4"), "{hooks:?}");
        node.sync(&[
            service(Proto::Tcp, &[node.ip(1), node.ip(2)], None),
            service(Proto::Udp, &[node.ip(1), node.ip(2)], None),
        ]);
        let out = node_process_asks(&node, &cg, 20);
        let vip = format!("{VIP}:80");
        let mut seen = std::collections::BTreeSet::new();
        let mut lines = 0;
        for line in out.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f.len(), 3, "{out}");
            if f[0] == "tcp" && hooks.contains(&"sock_getpeername4") {
                assert_eq!(f[2], vip, "getpeername shows the service address:\n{out}");
            }
            if f[0] == "udp" {
                assert_eq!(f[2], vip, "the reply comes from the service address:\n{out}");
            }
            seen.insert(f[1].to_string());
            lines += 1;
        }
        assert_eq!(lines, 40, "{out}");
        assert_eq!(
            seen,
            [node.ip(1).to_string(), node.ip(2).to_string()].into_iter().collect(),
            "both backends answer"
        );
        let counts = node.dp.as_ref().unwrap().counts().unwrap();
        assert_eq!(counts.get(rudder_ebpf_common::service::SvcCounter::HostSocket), 40);

        // Only sockets in the cgroup are translated: this thread is not in
        // it, so the VIP goes to the (absent) default route.
        let direct = node.ns.run(|| {
            TcpStream::connect_timeout(&SocketAddrV4::new(VIP, 80).into(), Duration::from_millis(500))
        });
        assert!(direct.is_err(), "{direct:?}");

        // A restarted agent attaches again: its hooks replace the pinned
        // ones (no duplicates left), and the node's processes still reach
        // the service.
        node.dp = None;
        node.start_agent();
        let dp = node.dp.as_mut().unwrap();
        assert_eq!(node.ns.run(|| dp.attach_node_cgroup(&cg.0)).unwrap(), hooks);
        let pins = std::fs::read_dir(node._pins.path().join("cgroup-links")).unwrap().count();
        assert_eq!(pins, hooks.len());
        let out = node_process_asks(&node, &cg, 2);
        assert_eq!(out.lines().count(), 4, "{out}");

        // No endpoints: the connect is refused at once.
        node.sync(&[service(Proto::Tcp, &[], None)]);
        let procs = cg.0.join("cgroup.procs");
        let out = node
            .ns
            .output(std::process::Command::new("sh").args([
                "-c",
                &format!(
                    "echo $$ > {} && exec python3 -c 'import socket; socket.create_connection((\"{VIP}\", 80), timeout=3)'",
                    procs.display()
                ),
            ]))
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("PermissionError"), "{err}");
        assert_eq!(
            node.dp.as_ref().unwrap().counts().unwrap().get(rudder_ebpf_common::service::SvcCounter::HostReject),
            1
        );
    }

    fn cluster_ip_from_a_pod_balances_tcp_and_udp() {
        let mut node = Node::new(3);
        let _s1 = AddressServer::start(node.pod(1), SocketAddrV4::new(node.ip(1), 8080), Udp::Answer);
        let _s2 = AddressServer::start(node.pod(2), SocketAddrV4::new(node.ip(2), 8080), Udp::Answer);
        node.sync(&[
            service(Proto::Tcp, &[node.ip(1), node.ip(2)], None),
            service(Proto::Udp, &[node.ip(1), node.ip(2)], None),
        ]);
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..40 {
            let (who, peer) = tcp_ask(node.pod(0)).unwrap();
            assert_eq!(peer, SocketAddrV4::new(VIP, 80), "the client sees the service address");
            *seen.entry(who).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 2, "both backends answered: {seen:?}");
        let mut udp_seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let (who, from) = udp_ask(node.pod(0)).unwrap();
            assert_eq!(from, SocketAddrV4::new(VIP, 80), "the reply comes from the service address");
            udp_seen.insert(who);
        }
        assert_eq!(udp_seen.len(), 2, "{udp_seen:?}");
    }

    fn a_service_without_endpoints_refuses_at_once() {
        let mut node = Node::new(1);
        node.sync(&[service(Proto::Tcp, &[], None), service(Proto::Udp, &[], None)]);
        let start = Instant::now();
        let err = tcp_ask(node.pod(0)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        let err = udp_ask(node.pod(0)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "ICMP port unreachable: {err}");
        assert!(start.elapsed() < Duration::from_secs(2), "refused, not timed out: {:?}", start.elapsed());
    }

    fn a_closed_backend_port_refuses_through_the_service() {
        let mut node = Node::new(2);
        let _s = AddressServer::start(node.pod(1), SocketAddrV4::new(node.ip(1), 8080), Udp::Answer);
        // The backend pod is up, but nothing listens on UDP port 9999: its
        // kernel answers with ICMP port unreachable about backend:9999, which
        // the client's socket only matches once translated back.
        let closed = ServiceSpec {
            frontend: Frontend { addr: VIP, port: 80, proto: Proto::Udp },
            endpoints: vec![Endpoint::ready(node.ip(1), 9999)],
            affinity_timeout: None,
            keep_source: false,
            maglev: false,
            dsr: false,
        };
        node.sync(&[closed]);
        let start = Instant::now();
        let err = udp_ask(node.pod(0)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    }

    fn session_affinity_keeps_a_client_on_one_backend() {
        let mut node = Node::new(3);
        let _s1 = AddressServer::start(node.pod(1), SocketAddrV4::new(node.ip(1), 8080), Udp::Answer);
        let _s2 = AddressServer::start(node.pod(2), SocketAddrV4::new(node.ip(2), 8080), Udp::Answer);
        node.sync(&[service(Proto::Tcp, &[node.ip(1), node.ip(2)], Some(10800))]);
        let first = tcp_ask(node.pod(0)).unwrap().0;
        for _ in 0..20 {
            assert_eq!(tcp_ask(node.pod(0)).unwrap().0, first);
        }
    }

    fn a_pod_reaches_itself_through_its_service() {
        let mut node = Node::new(1);
        let _s = AddressServer::start(node.pod(0), SocketAddrV4::new(node.ip(0), 8080), Udp::Answer);
        node.sync(&[service(Proto::Tcp, &[node.ip(0)], None), service(Proto::Udp, &[node.ip(0)], None)]);
        let (who, peer) = tcp_ask(node.pod(0)).unwrap();
        assert_eq!((who, peer), (node.ip(0).to_string(), SocketAddrV4::new(VIP, 80)));
        let (who, from) = udp_ask(node.pod(0)).unwrap();
        assert_eq!((who, from), (node.ip(0).to_string(), SocketAddrV4::new(VIP, 80)));
    }

    fn endpoint_changes_take_effect_for_new_connections() {
        let mut node = Node::new(3);
        let _s1 = AddressServer::start(node.pod(1), SocketAddrV4::new(node.ip(1), 8080), Udp::Answer);
        let _s2 = AddressServer::start(node.pod(2), SocketAddrV4::new(node.ip(2), 8080), Udp::Answer);
        node.sync(&[service(Proto::Tcp, &[node.ip(1)], None)]);
        assert_eq!(tcp_ask(node.pod(0)).unwrap().0, node.ip(1).to_string());
        node.sync(&[service(Proto::Tcp, &[node.ip(2)], None)]);
        for _ in 0..10 {
            assert_eq!(tcp_ask(node.pod(0)).unwrap().0, node.ip(2).to_string());
        }
        // Not ready any more, and no other: refused.
        let not_ready = ServiceSpec {
            endpoints: vec![Endpoint { addr: node.ip(2), port: 8080, ready: false, serving: false, terminating: false }],
            ..service(Proto::Tcp, &[], None)
        };
        node.sync(&[not_ready]);
        assert_eq!(tcp_ask(node.pod(0)).unwrap_err().kind(), ErrorKind::ConnectionRefused);
    }

    fn a_terminating_endpoint_keeps_its_connections_and_gets_no_new_ones() {
        use std::io::{BufRead as _, BufReader, Write as _};
        let mut node = Node::new(3);
        // pod 1: a line echo server that names itself; pod 2: answers once.
        let listener = node.pod(1).run(|| std::net::TcpListener::bind((node.ip(1), 8080)).unwrap());
        let me = node.ip(1).to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let me = me.clone();
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().unwrap();
                    for line in BufReader::new(conn).lines().map_while(Result::ok) {
                        if writeln!(w, "{me} {line}").is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let _s2 = AddressServer::start(node.pod(2), SocketAddrV4::new(node.ip(2), 8080), Udp::Answer);
        node.sync(&[service(Proto::Tcp, &[node.ip(1)], None)]);
        let conn = node.pod(0).run(|| TcpStream::connect_timeout(&SocketAddrV4::new(VIP, 80).into(), Duration::from_secs(3)).unwrap());
        conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut lines = BufReader::new(conn.try_clone().unwrap());
        let mut say = |w: &str| {
            writeln!(&conn, "{w}").unwrap();
            let mut l = String::new();
            lines.read_line(&mut l).unwrap();
            l.trim().to_owned()
        };
        assert_eq!(say("one"), format!("{} one", node.ip(1)));
        // Pod 1 terminates (still serving), pod 2 is ready: new
        // connections go to pod 2, the open one stays with pod 1.
        let terminating = ServiceSpec {
            endpoints: vec![
                Endpoint { addr: node.ip(1), port: 8080, ready: false, serving: true, terminating: true },
                Endpoint::ready(node.ip(2), 8080),
            ],
            ..service(Proto::Tcp, &[], None)
        };
        node.sync(&[terminating]);
        for _ in 0..5 {
            assert_eq!(tcp_ask(node.pod(0)).unwrap().0, node.ip(2).to_string());
        }
        assert_eq!(say("two"), format!("{} two", node.ip(1)));
        // Not serving any more: still draining.
        let stopping = ServiceSpec {
            endpoints: vec![
                Endpoint { addr: node.ip(1), port: 8080, ready: false, serving: false, terminating: true },
                Endpoint::ready(node.ip(2), 8080),
            ],
            ..service(Proto::Tcp, &[], None)
        };
        node.sync(&[stopping]);
        assert_eq!(say("three"), format!("{} three", node.ip(1)));
    }

    fn restarting_the_agent_never_interrupts_traffic() {
        let mut node = Node::new(2);
        let _s = AddressServer::start(node.pod(1), SocketAddrV4::new(node.ip(1), 8080), Udp::Answer);
        let desired = [service(Proto::Tcp, &[node.ip(1)], None), service(Proto::Udp, &[node.ip(1)], None)];
        node.sync(&desired);
        // A UDP flow that lives across the restart.
        let udp = node.pod(0).run(|| {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.connect(SocketAddrV4::new(VIP, 80)).unwrap();
            s
        });
        let ask = |s: &UdpSocket| {
            s.send(b"?").unwrap();
            let mut b = [0u8; 32];
            let n = s.recv(&mut b).expect("UDP reply");
            String::from_utf8_lossy(&b[..n]).into_owned()
        };
        assert_eq!(ask(&udp), node.ip(1).to_string());

        let stop = AtomicBool::new(false);
        let done = std::sync::atomic::AtomicU32::new(0);
        // The client pod's namespace, held apart from the node so the node
        // can be restarted while the client runs.
        let (client_ns, _) = node.pods.remove(0);
        let (ok, failed) = std::thread::scope(|scope| {
            let client_ns = &client_ns;
            let (stop, done) = (&stop, &done);
            let client = scope.spawn(move || {
                let (mut ok, mut failed) = (0u32, vec![]);
                while !stop.load(Ordering::Relaxed) {
                    match tcp_ask(client_ns) {
                        Ok(_) => {
                            ok += 1;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            });
            std::thread::sleep(Duration::from_millis(300));
            // The agent stops: its programs stay attached through the pins.
            node.dp = None;
            let at_stop = done.load(Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(500));
            let during = done.load(Ordering::Relaxed) - at_stop;
            assert!(during > 5, "connections while the agent was down: {during}");
            // And comes back.
            node.start_agent();
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
            client.join().unwrap()
        });
        assert!(failed.is_empty(), "{} of {} connections failed: {failed:?}", failed.len(), ok as usize + failed.len());
        assert!(ok > 20, "the client kept connecting ({ok})");
        assert_eq!(ask(&udp), node.ip(0).to_string(), "the UDP flow survived");
        // The restarted agent's translator adopted the maps: nothing to redo.
        assert_eq!(node.proxy.sync(&desired), vec![]);
    }

    fn a_service_too_big_for_the_maps_is_refused_alone_on_real_maps() {
        let mut node = Node::new(3);
        let _s1 = AddressServer::start(node.pod(1), SocketAddrV4::new(node.ip(1), 8080), Udp::Answer);
        let _s2 = AddressServer::start(node.pod(2), SocketAddrV4::new(node.ip(2), 8080), Udp::Answer);
        // Maps that take two backends per service: a third is "overflow".
        node.proxy = Translator::with_limits(Limits { backends_per_service: 2, ..Limits::default() });
        let fits = service(Proto::Tcp, &[node.ip(1), node.ip(2)], None);
        let mut too_big = service(Proto::Udp, &[node.ip(1), node.ip(2), Ipv4Addr::new(10, 244, 1, 99)], None);
        too_big.frontend.port = 81;
        node.sync(&[too_big.clone(), fits.clone()]);
        // The one that fits answers through the real maps; the other has no
        // front end at all (nothing half-written), and a later update of it
        // is refused alone, with its reason.
        let (who, _) = tcp_ask(node.pod(0)).unwrap();
        assert!(who.contains("10.244.1.1"), "{who}");
        let refused = node.proxy.update(&too_big).unwrap_err();
        assert!(refused.to_string().contains('3'), "{refused}");
        let installed = node.dp.as_mut().unwrap().installed();
        assert_eq!(installed.services.len(), 1, "only the service that fits: {:?}", installed.services);
        // Growing the good one past the limit leaves it as it was, answering.
        let grown = service(Proto::Tcp, &[node.ip(1), node.ip(2), Ipv4Addr::new(10, 244, 1, 99)], None);
        assert!(node.proxy.update(&grown).is_err());
        for _ in 0..10 {
            let (who, _) = tcp_ask(node.pod(0)).unwrap();
            assert!(who.contains("10.244.1.11") || who.contains("10.244.1.12"), "{who}");
        }
    }

    fn links_of_deleted_pods_are_pruned_and_uninstall_removes_everything() {
        let mut node = Node::new(2);
        let dp = node.dp.as_mut().unwrap();
        assert_eq!(dp.pinned_interfaces().len(), 2);
        // Pod 1 goes away while its links are pinned. Its veth is deleted
        // as CNI DEL does (synchronously; a namespace's own teardown would
        // remove it later, from a kernel workqueue).
        node.ns.ip(&["link", "del", "veth1"]);
        let (pod, _) = node.pods.pop().unwrap();
        drop(pod);
        let ns = &node.ns;
        let alive = |name: &str, ifindex: u32| {
            ns.run(|| {
                let c = std::ffi::CString::new(name).unwrap();
                // SAFETY: a valid NUL-terminated name.
                unsafe { libc::if_nametoindex(c.as_ptr()) == ifindex }
            })
        };
        assert_eq!(dp.prune_links(alive).unwrap(), 2, "from_pod and to_pod of veth1");
        assert_eq!(dp.pinned_interfaces().into_iter().map(|(n, _)| n).collect::<Vec<_>>(), vec!["veth0"]);
        let pins = node._pins.path().to_path_buf();
        node.dp.take().unwrap().uninstall().unwrap();
        assert!(!pins.exists());
        // Nothing is attached to the remaining pod's interface any more.
        let out = node.ns.exec("bpftool", &["net", "show", "dev", "veth0"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("from_pod") && !text.contains("to_pod"), "{text}");
    }
}
