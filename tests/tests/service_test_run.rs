//! The Service datapath under `BPF_PROG_TEST_RUN`: each translation path,
//! each refusal and each packet it must leave alone, asserting the verdict
//! and the exact bytes that come out (checksums included, computed here
//! independently by the packet builder).

use std::net::Ipv4Addr;

use rudder_dataplane::service::ServiceDataplane;
use rudder_ebpf_common::service::SvcCounter;
use rudder_proxy::{Endpoint, Frontend, Proto, ServiceSpec, Translator};
use rudder_test_harness::{
    BpfPinDir,
    packet::{self, ETH_P_ARP, Ipv4Packet, L4, tcp, udp},
    require_root,
};

const TC_ACT_UNSPEC: i32 = -1;
const TC_ACT_REDIRECT: i32 = 7;
const CLIENT: [u8; 4] = [10, 244, 1, 5];
const VIP: [u8; 4] = [10, 96, 0, 10];
const B1: [u8; 4] = [10, 244, 2, 7];
const B2: [u8; 4] = [10, 244, 3, 9];
const HAIRPIN: [u8; 4] = [169, 254, 42, 1];

struct Fixture {
    dp: ServiceDataplane,
    proxy: Translator,
    _pins: BpfPinDir,
}

impl Fixture {
    fn new() -> Self {
        require_root();
        let pins = BpfPinDir::new();
        let mut dp = ServiceDataplane::load(pins.path()).expect("load the service object");
        dp.set_hairpin_addr(HAIRPIN.into()).unwrap();
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

    /// Runs `from_pod` (or `to_pod`) and returns (verdict, bytes).
    fn run(&mut self, from_pod: bool, frame: &[u8]) -> (i32, Vec<u8>) {
        let out = self
            .dp
            .test_run(from_pod, frame)
            .expect("BPF_PROG_TEST_RUN");
        (out.verdict, out.data)
    }

    fn count(&self, c: SvcCounter) -> u64 {
        self.dp.counts().unwrap().get(c)
    }
}

fn service(proto: Proto, backends: &[[u8; 4]], affinity: Option<u32>) -> ServiceSpec {
    ServiceSpec {
        frontend: Frontend {
            addr: VIP.into(),
            port: 80,
            proto,
        },
        endpoints: backends
            .iter()
            .map(|b| Endpoint::ready(Ipv4Addr::from(*b), 8080))
            .collect(),
        affinity_timeout: affinity,
        keep_source: false,
        maglev: false,
        dsr: false,
    }
}

/// An ICMP error from `src` to `dst` quoting `quote` (an IP header and
/// what follows), with correct checksums.
fn icmp_error(src: [u8; 4], dst: [u8; 4], typ: u8, code: u8, quote: &[u8]) -> Vec<u8> {
    let mut icmp = vec![typ, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quote);
    let c = packet::checksum(&icmp, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Ipv4Packet::new(
        src.into(),
        dst.into(),
        L4::Raw {
            protocol: 1,
            bytes: icmp,
        },
    )
    .build()
}

/// What an ICMP error quotes of a UDP datagram `frame`: its IP header and
/// 8 bytes of UDP.
fn quote(frame: &[u8]) -> &[u8] {
    &frame[14..14 + 28]
}

/// The quote an endpoint must see in an error about the datagram it sent
/// (`sent`): its own headers, with the UDP checksum of the datagram as it
/// went on the wire (`on_wire`), which the translation leaves as it is.
fn quote_as_sent(sent: &[u8], on_wire: &[u8]) -> Vec<u8> {
    let mut q = quote(sent).to_vec();
    q[26..28].copy_from_slice(&on_wire[40..42]);
    q
}

/// The destination address of a frame's IPv4 header.
fn daddr(frame: &[u8]) -> [u8; 4] {
    frame[30..34].try_into().unwrap()
}

rudder_test_harness::privileged_tests! {
    fn node_port_from_outside_is_translated_with_source_nat() {
        let mut f = Fixture::new();
        let node: [u8; 4] = [192, 168, 77, 1];
        let outside: [u8; 4] = [192, 168, 77, 2];
        f.dp.set_node_addrs(&[Ipv4Addr::from(node)].into_iter().collect(), Some(node.into())).unwrap();
        let mut np = service(Proto::Tcp, &[B1], None);
        np.frontend = Frontend { addr: Ipv4Addr::UNSPECIFIED, port: 30080, proto: Proto::Tcp };
        f.sync(&[np.clone()]);
        // A SYN to the node port: to the backend, from the node's address,
        // the client's port kept. (The verdict depends on the FIB lookup of
        // the test run's context: it is not what is checked here.)
        let syn = tcp(outside, 40000, node, 30080, 0x02, b"");
        let out = f.dp.test_run_netdev(&syn).unwrap();
        assert_eq!(&out.data[14..], &tcp(node, 40000, B1, 8080, 0x02, b"")[14..]);
        // The backend's reply (remote backend: arriving on a node
        // interface) goes back to the client from the node port.
        let reply = tcp(B1, 8080, node, 40000, 0x12, b"");
        let out = f.dp.test_run_netdev(&reply).unwrap();
        assert_eq!(&out.data[14..], &tcp(node, 30080, outside, 40000, 0x12, b"")[14..]);
        // Or leaving a local backend pod.
        let (_, out) = f.run(true, &reply);
        assert_eq!(&out[14..], &tcp(node, 30080, outside, 40000, 0x12, b"")[14..]);
        // Another client with the same port: another source port is picked,
        // and its reply still reaches it.
        let other: [u8; 4] = [192, 168, 77, 3];
        let out = f.dp.test_run_netdev(&tcp(other, 40000, node, 30080, 0x02, b"")).unwrap();
        let sport = u16::from_be_bytes([out.data[34], out.data[35]]);
        assert_ne!(sport, 40000);
        assert!((32768..61000).contains(&sport), "{sport}");
        assert_eq!(&out.data[14..], &tcp(node, sport, B1, 8080, 0x02, b"")[14..]);
        let out = f.dp.test_run_netdev(&tcp(B1, 8080, node, sport, 0x12, b"")).unwrap();
        assert_eq!(&out.data[14..], &tcp(node, 30080, other, 40000, 0x12, b"")[14..]);
        assert_eq!(f.count(SvcCounter::External), 2);

        // externalTrafficPolicy: Local keeps the client's address.
        np.keep_source = true;
        f.sync(&[np]);
        let syn = tcp(outside, 40001, node, 30080, 0x02, b"");
        let out = f.dp.test_run_netdev(&syn).unwrap();
        assert_eq!(&out.data[14..], &tcp(outside, 40001, B1, 8080, 0x02, b"")[14..]);
        let (_, out) = f.run(true, &tcp(B1, 8080, outside, 40001, 0x12, b""));
        assert_eq!(&out[14..], &tcp(node, 30080, outside, 40001, 0x12, b"")[14..]);

        // Not a node address, not a service: untouched.
        let stray = tcp(outside, 40000, [192, 168, 77, 9], 30080, 0x02, b"");
        let out = f.dp.test_run_netdev(&stray).unwrap();
        assert_eq!((out.verdict, out.data), (TC_ACT_UNSPEC, stray));
        let other_port = tcp(outside, 40000, node, 22, 0x02, b"");
        let out = f.dp.test_run_netdev(&other_port).unwrap();
        assert_eq!((out.verdict, out.data), (TC_ACT_UNSPEC, other_port));
    }

    fn maglev_node_ports_agree_across_nodes_and_move_few_flows() {
        const NODE: [u8; 4] = [192, 168, 77, 1];
        let backends: Vec<[u8; 4]> = (1..=4).map(|i| [10, 244, 2, i]).collect();
        // A "node": its own maps and programs, one Maglev NodePort.
        let node = |backends: &[[u8; 4]]| {
            let mut f = Fixture::new();
            f.dp.set_node_addrs(&[Ipv4Addr::from(NODE)].into_iter().collect(), Some(NODE.into()))
                .unwrap();
            let mut np = service(Proto::Tcp, backends, None);
            np.frontend = Frontend { addr: Ipv4Addr::UNSPECIFIED, port: 30080, proto: Proto::Tcp };
            np.maglev = true;
            f.sync(&[np]);
            f
        };
        // Where 400 new flows from outside go (their SYNs' new destination).
        let place = |f: &mut Fixture| -> Vec<[u8; 4]> {
            (0..400u16)
                .map(|i| {
                    let client = [198, 51, 100, (i % 50) as u8 + 1];
                    let syn = tcp(client, 20_000 + i, NODE, 30080, 0x02, b"");
                    daddr(&f.dp.test_run_netdev(&syn).unwrap().data)
                })
                .collect()
        };
        let mut a = node(&backends);
        let mut b = node(&backends);
        let on_a = place(&mut a);
        assert_eq!(on_a, place(&mut b), "two nodes send every flow to the same backend");
        for be in &backends {
            let n = on_a.iter().filter(|d| *d == be).count();
            assert!((60..=140).contains(&n), "{n} of 400 flows to {be:?}");
        }
        // A node whose service lost one backend of four: the flows of the
        // other three stay where they were (up to the table's few moved
        // slots), those of the lost one spread over the rest.
        let mut c = node(&backends[..3]);
        let on_c = place(&mut c);
        let kept = on_a
            .iter()
            .zip(&on_c)
            .filter(|(x, _)| **x != backends[3])
            .filter(|(x, y)| x == y)
            .count();
        let stayed = on_a.iter().filter(|x| **x != backends[3]).count();
        assert!(kept * 100 >= stayed * 95, "{kept} of {stayed} flows kept their backend");
        assert!(on_c.iter().all(|d| *d != backends[3]));
        // Without Maglev, the same flows would be spread at random: two
        // nodes disagree on most of them.
        let mut d = Fixture::new();
        d.dp.set_node_addrs(&[Ipv4Addr::from(NODE)].into_iter().collect(), Some(NODE.into())).unwrap();
        let mut np = service(Proto::Tcp, &backends, None);
        np.frontend = Frontend { addr: Ipv4Addr::UNSPECIFIED, port: 30080, proto: Proto::Tcp };
        d.sync(&[np]);
        let same = place(&mut d).iter().zip(&on_a).filter(|(x, y)| x == y).count();
        assert!(same < 200, "random choice agreed with Maglev on {same} of 400");
    }

    fn node_port_icmp_errors_and_fragments_are_translated() {
        let mut f = Fixture::new();
        let node: [u8; 4] = [192, 168, 77, 1];
        let outside: [u8; 4] = [192, 168, 77, 2];
        let router: [u8; 4] = [192, 168, 77, 254];
        f.dp.set_node_addrs(&[Ipv4Addr::from(node)].into_iter().collect(), Some(node.into())).unwrap();
        let mut np = service(Proto::Udp, &[B1], None);
        np.frontend = Frontend { addr: Ipv4Addr::UNSPECIFIED, port: 30053, proto: Proto::Udp };
        f.sync(&[np]);
        // (Verdicts depend on the FIB lookup of the test run's context:
        // only the bytes are checked.)
        let sent = udp(outside, 40000, node, 30053, b"query");
        let translated = f.dp.test_run_netdev(&sent).unwrap().data;
        assert_eq!(&translated[14..], &udp(node, 40000, B1, 8080, b"query")[14..]);
        // The quote the client must see: its own datagram's header, with the
        // quoted UDP checksum as the network sent it.
        let want_quote = quote_as_sent(&sent, &translated);

        // The remote backend answers port unreachable: it reaches the
        // client, from the node port's address, about what the client sent.
        let err = icmp_error(B1, node, 3, 3, quote(&translated));
        let out = f.dp.test_run_netdev(&err).unwrap();
        assert_eq!(&out.data[14..], &icmp_error(node, outside, 3, 3, &want_quote)[14..]);
        // A router between the node and the backend keeps its address.
        let err = icmp_error(router, node, 11, 0, quote(&translated));
        let out = f.dp.test_run_netdev(&err).unwrap();
        assert_eq!(&out.data[14..], &icmp_error(router, outside, 11, 0, &want_quote)[14..]);

        // The backend's reply goes to the client from the node port; an
        // error about it (a router's "fragmentation needed", or the client's
        // own port unreachable) reaches the backend about the reply it sent.
        let reply = udp(B1, 8080, node, 40000, b"answer");
        let reply_out = f.dp.test_run_netdev(&reply).unwrap().data;
        assert_eq!(&reply_out[14..], &udp(node, 30053, outside, 40000, b"answer")[14..]);
        let want_quote = quote_as_sent(&reply, &reply_out);
        let err = icmp_error(router, node, 3, 4, quote(&reply_out));
        let out = f.dp.test_run_netdev(&err).unwrap();
        assert_eq!(&out.data[14..], &icmp_error(router, B1, 3, 4, &want_quote)[14..]);
        let err = icmp_error(outside, node, 3, 3, quote(&reply_out));
        let out = f.dp.test_run_netdev(&err).unwrap();
        assert_eq!(&out.data[14..], &icmp_error(node, B1, 3, 3, &want_quote)[14..]);
        assert_eq!(f.count(SvcCounter::IcmpError), 4);

        // An error about a flow never translated, and one to another
        // address: untouched.
        let other = udp(node, 40001, B2, 53, b"x");
        for err in [icmp_error(B2, node, 3, 3, quote(&other)), icmp_error(B1, [192, 168, 77, 9], 3, 3, quote(&translated))] {
            let out = f.dp.test_run_netdev(&err).unwrap();
            assert_eq!((out.verdict, out.data), (TC_ACT_UNSPEC, err));
        }

        // A fragmented datagram: the later fragment follows the first one,
        // source NAT included.
        let first = Ipv4Packet::udp(outside, 40002, node, 30053, &[5; 64]).fragment(true, 0);
        let out = f.dp.test_run_netdev(&first.build()).unwrap();
        let mut want_first = first.clone();
        want_first.src = node.into();
        want_first.dst = B1.into();
        want_first.l4 = L4::Udp { sport: 40002, dport: 8080, payload: vec![5; 64] };
        assert_eq!(&out.data[14..], &want_first.build()[14..]);
        let later = Ipv4Packet::new(outside.into(), node.into(), L4::Raw { protocol: 17, bytes: vec![6; 40] }).fragment(false, 9);
        let out = f.dp.test_run_netdev(&later.build()).unwrap();
        let mut want_later = later.clone();
        want_later.src = node.into();
        want_later.dst = B1.into();
        assert_eq!(&out.data[14..], &want_later.build()[14..]);
        assert_eq!(f.count(SvcCounter::Fragment), 1);
    }

    fn node_port_without_endpoints_is_refused() {
        let mut f = Fixture::new();
        let node: [u8; 4] = [192, 168, 77, 1];
        f.dp.set_node_addrs(&[Ipv4Addr::from(node)].into_iter().collect(), None).unwrap();
        let mut np = service(Proto::Tcp, &[], None);
        np.frontend = Frontend { addr: Ipv4Addr::UNSPECIFIED, port: 30080, proto: Proto::Tcp };
        f.sync(&[np]);
        let out = f.dp.test_run_netdev(&tcp([192, 168, 77, 2], 40000, node, 30080, 0x02, b"")).unwrap();
        assert_eq!(out.verdict, TC_ACT_REDIRECT, "a RST sent back out");
        assert_eq!(out.data[47] & 0x04, 0x04, "RST");
        assert_eq!(f.count(SvcCounter::RejectTcp), 1);
    }

    fn tcp_flow_is_translated_both_ways() {
        let mut f = Fixture::new();
        f.sync(&[service(Proto::Tcp, &[B1], None)]);
        let syn = tcp(CLIENT, 40000, VIP, 80, 0x02, b"");
        assert_eq!(f.run(true, &syn), (TC_ACT_UNSPEC, tcp(CLIENT, 40000, B1, 8080, 0x02, b"")));
        // The rest of the flow, with a payload.
        let data = tcp(CLIENT, 40000, VIP, 80, 0x18, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(f.run(true, &data).1, tcp(CLIENT, 40000, B1, 8080, 0x18, b"GET / HTTP/1.1\r\n\r\n"));
        // The reply, seen entering the client pod (remote backend) ...
        let reply = tcp(B1, 8080, CLIENT, 40000, 0x12, b"");
        assert_eq!(f.run(false, &reply), (TC_ACT_UNSPEC, tcp(VIP, 80, CLIENT, 40000, 0x12, b"")));
        // ... or leaving the backend pod (local backend).
        assert_eq!(f.run(true, &reply), (TC_ACT_UNSPEC, tcp(VIP, 80, CLIENT, 40000, 0x12, b"")));
        assert_eq!((f.count(SvcCounter::NewFlow), f.count(SvcCounter::Established), f.count(SvcCounter::Reverse)), (1, 1, 2));
    }

    fn udp_checksums_including_zero() {
        let mut f = Fixture::new();
        f.sync(&[service(Proto::Udp, &[B1], None)]);
        let q = udp(CLIENT, 5353, VIP, 80, b"query");
        assert_eq!(f.run(true, &q).1, udp(CLIENT, 5353, B1, 8080, b"query"));
        // A zero UDP checksum means "none": it must stay zero.
        let mut q0 = udp(CLIENT, 5354, VIP, 80, b"query");
        q0[40..42].copy_from_slice(&[0, 0]);
        let mut want = udp(CLIENT, 5354, B1, 8080, b"query");
        want[40..42].copy_from_slice(&[0, 0]);
        assert_eq!(f.run(true, &q0).1, want);
        let r = udp(B1, 8080, CLIENT, 5353, b"answer");
        assert_eq!(f.run(false, &r).1, udp(VIP, 80, CLIENT, 5353, b"answer"));
    }

    fn tcp_to_a_service_without_backends_gets_a_rst() {
        let mut f = Fixture::new();
        f.sync(&[service(Proto::Tcp, &[], None)]);
        let syn = tcp(CLIENT, 40000, VIP, 80, 0x02, b"");
        let (verdict, out) = f.run(true, &syn);
        assert_eq!(verdict, TC_ACT_REDIRECT, "sent back to the pod");
        // Ethernet addresses swapped; IPv4 VIP → client; TCP 80 → 40000,
        // RST|ACK acknowledging the SYN (its seq is 1).
        let mut want = packet::ethernet(&[], 0x0800, &[]);
        want[..6].copy_from_slice(&syn[6..12]);
        want[6..12].copy_from_slice(&syn[..6]);
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&VIP);
        ip.extend_from_slice(&CLIENT);
        let c = packet::checksum(&ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut t = vec![0, 80, 0x9c, 0x40, 0, 0, 0, 0, 0, 0, 0, 2, 0x50, 0x14, 0, 0, 0, 0, 0, 0];
        let mut pseudo = 0u32;
        for w in [&VIP[..2], &VIP[2..], &CLIENT[..2], &CLIENT[2..]] {
            pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        let c = packet::checksum(&t, pseudo + 6 + 20);
        t[16..18].copy_from_slice(&c.to_be_bytes());
        want.extend_from_slice(&ip);
        want.extend_from_slice(&t);
        assert_eq!(out, want);
        assert_eq!(f.count(SvcCounter::RejectTcp), 1);
        // A segment with ACK gets a RST with that sequence number; a RST
        // is never answered.
        let ack = tcp(CLIENT, 40001, VIP, 80, 0x10, b"x");
        let (_, out) = f.run(true, &ack);
        assert_eq!((out[47], &out[38..42]), (0x04, &[0u8, 0, 0, 0][..]), "RST, seq = the segment's ack (0)");
        let rst = tcp(CLIENT, 40002, VIP, 80, 0x04, b"");
        assert_ne!(f.run(true, &rst).0, TC_ACT_REDIRECT);
    }

    fn udp_to_a_service_without_backends_gets_icmp_port_unreachable() {
        let mut f = Fixture::new();
        f.sync(&[service(Proto::Udp, &[], None)]);
        let q = udp(CLIENT, 5353, VIP, 80, b"hello?");
        let (verdict, out) = f.run(true, &q);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let quote = &q[14..14 + 20 + 8];
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(quote);
        let c = packet::checksum(&icmp, 0);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, (20 + icmp.len()) as u8, 0, 0, 0, 0, 64, 1, 0, 0];
        ip.extend_from_slice(&VIP);
        ip.extend_from_slice(&CLIENT);
        let c = packet::checksum(&ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut want = Vec::new();
        want.extend_from_slice(&q[6..12]);
        want.extend_from_slice(&q[..6]);
        want.extend_from_slice(&[0x08, 0x00]);
        want.extend_from_slice(&ip);
        want.extend_from_slice(&icmp);
        assert_eq!(out, want);
        assert_eq!(f.count(SvcCounter::RejectUdp), 1);
    }

    fn known_flows_keep_their_backend_until_it_is_removed() {
        let mut f = Fixture::new();
        f.sync(&[service(Proto::Udp, &[B1], None)]);
        let q = udp(CLIENT, 7000, VIP, 80, b"1");
        assert_eq!(daddr(&f.run(true, &q).1), B1);
        // A new backend does not move the existing flow.
        f.sync(&[service(Proto::Udp, &[B1, B2], None)]);
        for _ in 0..20 {
            assert_eq!(daddr(&f.run(true, &q).1), B1);
        }
        // Removing B1 purges its flows: the next datagram goes to B2.
        assert_eq!(f.dp.flow_count(), 1);
        f.sync(&[service(Proto::Udp, &[B2], None)]);
        assert_eq!(f.dp.flow_count(), 0, "the UDP flow to the removed backend was purged");
        assert_eq!(daddr(&f.run(true, &q).1), B2);
    }

    fn a_pods_flow_takes_one_entry_found_by_both_directions() {
        let mut f = Fixture::new();
        f.sync(&[service(Proto::Tcp, &[B1], None)]);
        let syn = tcp(CLIENT, 41000, VIP, 80, 0x02, b"");
        assert_eq!(f.run(true, &syn).1, tcp(CLIENT, 41000, B1, 8080, 0x02, b""));
        assert_eq!(f.dp.flow_tables(), (1, 0, 0), "one FLOWS entry, nothing else");
        // The backend's reply, on the client's interface and on the
        // backend's own, is translated back by the same entry.
        let reply = tcp(B1, 8080, CLIENT, 41000, 0x12, b"");
        let want = tcp(VIP, 80, CLIENT, 41000, 0x12, b"");
        assert_eq!(f.run(false, &reply), (TC_ACT_UNSPEC, want.clone()));
        assert_eq!(f.run(true, &reply), (TC_ACT_UNSPEC, want));
        // A packet from the backend to the client's socket from another
        // port is not the flow's: untouched.
        let other = tcp(B1, 9090, CLIENT, 41000, 0x12, b"");
        assert_eq!(f.run(false, &other), (TC_ACT_UNSPEC, other.clone()));
        assert_eq!(f.count(SvcCounter::Reverse), 2);
    }

    fn one_socket_talking_to_two_services_keeps_both_flows_apart() {
        const VIP2: [u8; 4] = [10, 96, 0, 11];
        let mut f = Fixture::new();
        let mut second = service(Proto::Udp, &[B2], None);
        second.frontend.addr = VIP2.into();
        f.sync(&[service(Proto::Udp, &[B1], None), second]);
        // An unconnected UDP socket sends to both services from one port.
        let to_first = udp(CLIENT, 5353, VIP, 80, b"a");
        let to_second = udp(CLIENT, 5353, VIP2, 80, b"b");
        assert_eq!(f.run(true, &to_first).1, udp(CLIENT, 5353, B1, 8080, b"a"));
        assert_eq!(f.run(true, &to_second).1, udp(CLIENT, 5353, B2, 8080, b"b"));
        // The second flow, whose socket already had an entry, is tracked by
        // its 5-tuple, with its reply by its own key.
        assert_eq!(f.dp.flow_tables(), (1, 1, 1));
        for _ in 0..3 {
            assert_eq!(f.run(true, &to_first).1, udp(CLIENT, 5353, B1, 8080, b"a"));
            assert_eq!(f.run(true, &to_second).1, udp(CLIENT, 5353, B2, 8080, b"b"));
        }
        // Each reply comes back from its own service's address.
        let r1 = f.run(false, &udp(B1, 8080, CLIENT, 5353, b"A")).1;
        assert_eq!(r1, udp(VIP, 80, CLIENT, 5353, b"A"));
        let r2 = f.run(false, &udp(B2, 8080, CLIENT, 5353, b"B")).1;
        assert_eq!(r2, udp(VIP2, 80, CLIENT, 5353, b"B"));
        assert_eq!(f.count(SvcCounter::NewFlow), 2);
        assert_eq!(f.count(SvcCounter::Established), 6);
    }

    fn flows_an_older_agent_tracked_by_5_tuple_keep_their_backends_after_an_upgrade() {
        const VIP2: [u8; 4] = [10, 96, 0, 11];
        let mut f = Fixture::new();
        let mut second = service(Proto::Udp, &[B2], None);
        second.frontend.addr = VIP2.into();
        f.sync(&[service(Proto::Udp, &[B1], None), second.clone()]);
        // The second flow of a socket is tracked as agents before the socket
        // table tracked every flow: CONNTRACK and REV_NAT.
        f.run(true, &udp(CLIENT, 5353, VIP, 80, b"a"));
        let to_second = udp(CLIENT, 5353, VIP2, 80, b"b");
        assert_eq!(f.run(true, &to_second).1, udp(CLIENT, 5353, B2, 8080, b"b"));
        // Such an agent's pins have no FLOWS table.
        let dir = f._pins.path().to_path_buf();
        std::fs::remove_file(dir.join("FLOWS")).unwrap();
        f.dp = ServiceDataplane::load(&dir).unwrap();
        assert_eq!(f.dp.flow_tables(), (1, 1, 1), "the flow was adopted into FLOWS");
        // More backends: a new flow could go elsewhere, the adopted one stays.
        second.endpoints.push(Endpoint::ready(B1.into(), 8080));
        f.sync(&[service(Proto::Udp, &[B1], None), second]);
        for _ in 0..10 {
            assert_eq!(f.run(true, &to_second).1, udp(CLIENT, 5353, B2, 8080, b"b"));
        }
        let reply = f.run(false, &udp(B2, 8080, CLIENT, 5353, b"B")).1;
        assert_eq!(reply, udp(VIP2, 80, CLIENT, 5353, b"B"));
        assert_eq!(f.count(SvcCounter::StaleBackend), 0);
    }

    fn members_of_services_without_affinity_are_pruned_at_load() {
        let mut f = Fixture::new();
        let mut affine = service(Proto::Tcp, &[B1, B2], Some(60));
        f.sync(std::slice::from_ref(&affine));
        assert_eq!(f.dp.installed().members.len(), 2);
        // Affinity off: the translator takes its members away.
        affine.affinity_timeout = None;
        f.sync(std::slice::from_ref(&affine));
        assert!(f.dp.installed().members.is_empty());
        // An older agent wrote members for every service: a stray one.
        let service_id = f.dp.installed().services.values().next().unwrap().service_id;
        let stray = rudder_ebpf_common::service::MemberKey {
            service_id,
            backend_id: 1,
        };
        f.dp.apply(&[rudder_dataplane::MapOp::PutMember(stray)]).unwrap();
        let dir = f._pins.path().to_path_buf();
        f.dp = ServiceDataplane::load(&dir).unwrap();
        assert!(f.dp.installed().members.is_empty());
    }

    fn a_known_flow_checks_its_backend_only_after_the_set_changed() {
        let mut f = Fixture::new();
        f.sync(&[service(Proto::Tcp, &[B1], None)]);
        let syn = tcp(CLIENT, 42000, VIP, 80, 0x02, b"");
        assert_eq!(daddr(&f.run(true, &syn).1), B1);
        // B2 joins: the set changes, B1 still exists, the flow stays.
        f.sync(&[service(Proto::Tcp, &[B1, B2], None)]);
        let ack = tcp(CLIENT, 42000, VIP, 80, 0x10, b"x");
        for _ in 0..10 {
            assert_eq!(f.run(true, &ack).1, tcp(CLIENT, 42000, B1, 8080, 0x10, b"x"));
        }
        assert_eq!(f.count(SvcCounter::StaleBackend), 0);
        assert_eq!(f.count(SvcCounter::Established), 10);
    }

    fn a_flow_whose_backend_vanished_is_rebalanced_in_the_datapath() {
        let mut f = Fixture::new();
        f.sync(&[service(Proto::Tcp, &[B1], None)]);
        let syn = tcp(CLIENT, 41000, VIP, 80, 0x02, b"");
        assert_eq!(daddr(&f.run(true, &syn).1), B1);
        // Switch the service to B2 but skip the flow purge, as if the agent
        // had died between the two: the conntrack entry still names B1.
        let ops: Vec<_> = f
            .proxy
            .sync(&[service(Proto::Tcp, &[B2], None)])
            .into_iter()
            .filter(|op| !matches!(op, rudder_dataplane::MapOp::PurgeBackendFlows(..)))
            .collect();
        f.dp.apply(&ops).unwrap();
        assert_eq!(f.dp.flow_count(), 1);
        let again = tcp(CLIENT, 41000, VIP, 80, 0x10, b"");
        // B1 is gone from BACKENDS: the datapath re-balances the flow.
        let out = f.run(true, &again).1;
        assert_eq!(daddr(&out), B2);
        assert_eq!(f.count(SvcCounter::StaleBackend), 1);
    }

    fn new_flows_spread_over_backends() {
        let mut f = Fixture::new();
        f.sync(&[service(Proto::Tcp, &[B1, B2], None)]);
        let mut to_b1 = 0;
        for port in 0..400u16 {
            let out = f.run(true, &tcp(CLIENT, 20000 + port, VIP, 80, 0x02, b"")).1;
            match daddr(&out) {
                d if d == B1 => to_b1 += 1,
                d => assert_eq!(d, B2),
            }
        }
        // Binomial(400, 1/2): outside 140..=260 has probability < 1e-9.
        assert!((140..=260).contains(&to_b1), "{to_b1} of 400 to B1");
    }

    fn session_affinity_sticks_and_expires() {
        let mut f = Fixture::new();
        f.sync(&[service(Proto::Tcp, &[B1, B2], Some(100))]);
        let first = daddr(&f.run(true, &tcp(CLIENT, 30000, VIP, 80, 0x02, b"")).1);
        for port in 1..50u16 {
            assert_eq!(daddr(&f.run(true, &tcp(CLIENT, 30000 + port, VIP, 80, 0x02, b"")).1), first);
        }
        assert_eq!(f.count(SvcCounter::AffinityHit), 49);
        // Another client is balanced independently (it may land anywhere, but
        // it does not take the first client's entry).
        let other = tcp([10, 244, 1, 6], 30000, VIP, 80, 0x02, b"");
        f.run(true, &other);
        assert_eq!(f.count(SvcCounter::AffinityHit), 49);
        // Still sticky at exactly the timeout ...
        f.dp.set_clock_offset(100).unwrap();
        assert_eq!(daddr(&f.run(true, &tcp(CLIENT, 31000, VIP, 80, 0x02, b"")).1), first);
        // ... and no longer after it: new flows are balanced again.
        let mut seen = std::collections::BTreeSet::new();
        for (i, port) in (32000..32064u16).enumerate() {
            f.dp.set_clock_offset(100 + 101 * (i as u32 + 1)).unwrap();
            seen.insert(daddr(&f.run(true, &tcp(CLIENT, port, VIP, 80, 0x02, b"")).1));
        }
        assert_eq!(seen.len(), 2, "after expiry both backends are used");
    }

    fn affinity_does_not_follow_a_backend_that_left_the_service() {
        let mut f = Fixture::new();
        f.sync(&[service(Proto::Tcp, &[B1], Some(10800))]);
        assert_eq!(daddr(&f.run(true, &tcp(CLIENT, 1, VIP, 80, 0x02, b"")).1), B1);
        // B1 stays a backend of another service, so it stays in BACKENDS,
        // but it is no longer this service's.
        let other = ServiceSpec {
            frontend: Frontend { addr: Ipv4Addr::new(10, 96, 0, 99), port: 80, proto: Proto::Tcp },
            endpoints: vec![Endpoint::ready(B1.into(), 8080)],
            affinity_timeout: None,
            keep_source: false,
            maglev: false,
            dsr: false,
        };
        f.sync(&[service(Proto::Tcp, &[B2], Some(10800)), other]);
        assert_eq!(daddr(&f.run(true, &tcp(CLIENT, 2, VIP, 80, 0x02, b"")).1), B2);
    }

    fn a_pod_reaching_itself_through_its_service() {
        let mut f = Fixture::new();
        f.sync(&[service(Proto::Tcp, &[CLIENT], None)]);
        let syn = tcp(CLIENT, 40000, VIP, 80, 0x02, b"");
        // Masqueraded as the hairpin address so the reply comes back here.
        assert_eq!(f.run(true, &syn), (TC_ACT_UNSPEC, tcp(HAIRPIN, 40000, CLIENT, 8080, 0x02, b"")));
        let reply = tcp(CLIENT, 8080, HAIRPIN, 40000, 0x12, b"");
        let (verdict, out) = f.run(true, &reply);
        assert_eq!(verdict, TC_ACT_REDIRECT, "straight back into the pod");
        let mut want = tcp(VIP, 80, CLIENT, 40000, 0x12, b"");
        let (dst, src) = (reply[..6].to_vec(), reply[6..12].to_vec());
        want[..6].copy_from_slice(&src);
        want[6..12].copy_from_slice(&dst);
        assert_eq!(out, want);
    }

    fn fragments_follow_their_first_fragment() {
        let mut f = Fixture::new();
        f.sync(&[service(Proto::Udp, &[B1], None)]);
        let first = Ipv4Packet::udp(CLIENT, 6000, VIP, 80, &[5; 64]).fragment(true, 0);
        let mut want_first = first.clone();
        want_first.dst = B1.into();
        want_first.l4 = L4::Udp { sport: 6000, dport: 8080, payload: vec![5; 64] };
        // The UDP checksum covers the whole datagram; the builder computed it
        // over this fragment's payload only, and so did the sender, so the
        // incremental update must give the builder's value for the new tuple.
        assert_eq!(f.run(true, &first.build()).1, want_first.build());
        let later = Ipv4Packet::new(CLIENT.into(), VIP.into(), L4::Raw { protocol: 17, bytes: vec![6; 40] }).fragment(false, 9);
        let mut want_later = later.clone();
        want_later.dst = B1.into();
        assert_eq!(f.run(true, &later.build()), (TC_ACT_UNSPEC, want_later.build()));
        assert_eq!(f.count(SvcCounter::Fragment), 1);
        // A later fragment of a datagram never seen is left alone.
        let mut stray = later;
        stray.src = [10, 244, 1, 77].into();
        let stray = stray.build();
        assert_eq!(f.run(true, &stray), (TC_ACT_UNSPEC, stray.clone()));
    }

    fn packets_it_does_not_own_pass_untouched() {
        let mut f = Fixture::new();
        f.sync(&[service(Proto::Tcp, &[B1], None)]);
        let untouched = [
            tcp(CLIENT, 1, [10, 96, 0, 11], 80, 0x02, b""),                  // another address
            tcp(CLIENT, 1, VIP, 81, 0x02, b""),                              // another port
            udp(CLIENT, 1, VIP, 80, b"udp"),                                 // another protocol
            Ipv4Packet::icmp_echo(CLIENT, VIP).build(),                      // ping to the VIP
            packet::ethernet(&[], ETH_P_ARP, &[0; 28]),                      // ARP
            Ipv4Packet::new(CLIENT.into(), VIP.into(), L4::Raw { protocol: 6, bytes: vec![0; 12] }).build(), // TCP header cut short
        ];
        for frame in untouched {
            assert_eq!(f.run(true, &frame), (TC_ACT_UNSPEC, frame.clone()), "{frame:02x?}");
            assert_eq!(f.run(false, &frame), (TC_ACT_UNSPEC, frame.clone()), "{frame:02x?}");
        }
        let bad_ihl = {
            let mut b = tcp(CLIENT, 1, VIP, 80, 0x02, b"");
            b[14] = 0x44;
            b
        };
        assert_eq!(f.run(true, &bad_ihl), (TC_ACT_UNSPEC, bad_ihl.clone()));
        assert_eq!(f.count(SvcCounter::NewFlow), 0);
    }

    fn icmp_errors_about_translated_flows_are_translated_back() {
        let mut f = Fixture::new();
        f.sync(&[service(Proto::Udp, &[B1], None)]);
        let sent = udp(CLIENT, 5353, VIP, 80, b"query");
        let translated = f.run(true, &sent).1;
        // What the network quotes: the translated IP header + 8 bytes of UDP.
        let wire_quote = quote(&translated);
        // What the client must see: its own packet's header, and the UDP
        // header with the service port (the quoted UDP checksum is left as
        // it was).
        let want_quote = quote_as_sent(&sent, &translated);
        // Port unreachable from the backend: the error comes from the
        // service. Through to_pod (remote backend) and from_pod (local).
        let err = icmp_error(B1, CLIENT, 3, 3, wire_quote);
        let want = icmp_error(VIP, CLIENT, 3, 3, &want_quote);
        assert_eq!(f.run(false, &err), (TC_ACT_UNSPEC, want.clone()));
        assert_eq!(f.run(true, &err), (TC_ACT_UNSPEC, want));
        // Time exceeded from a router on the way: it keeps its own address.
        let router = [10, 244, 9, 9];
        let err = icmp_error(router, CLIENT, 11, 0, wire_quote);
        assert_eq!(f.run(false, &err).1, icmp_error(router, CLIENT, 11, 0, &want_quote));
        assert_eq!(f.count(SvcCounter::IcmpError), 3);
        // An error about a flow the dataplane never translated: untouched.
        let other = udp(CLIENT, 9999, B2, 53, b"x");
        let unrelated = icmp_error(B2, CLIENT, 3, 3, quote(&other));
        assert_eq!(f.run(false, &unrelated), (TC_ACT_UNSPEC, unrelated.clone()));
        // Echo requests and replies are not errors.
        let echo = Ipv4Packet::icmp_echo(B1, CLIENT).build();
        assert_eq!(f.run(false, &echo), (TC_ACT_UNSPEC, echo.clone()));
    }

    fn ten_thousand_services() {
        let mut f = Fixture::new();
        let services: Vec<ServiceSpec> = (0..10_000u32)
            .map(|i| ServiceSpec {
                frontend: Frontend { addr: Ipv4Addr::from(0x0a60_0000 + i), port: 80, proto: Proto::Tcp },
                endpoints: (0..2).map(|j| Endpoint::ready(Ipv4Addr::from(0x0af4_0000 + 2 * i + j), 8080)).collect(),
                affinity_timeout: None,
                keep_source: false,
                maglev: false,
                dsr: false,
            })
            .collect();
        f.sync(&services);
        for i in [0u32, 4_999, 9_999] {
            let vip = Ipv4Addr::from(0x0a60_0000 + i).octets();
            let out = f.run(true, &tcp(CLIENT, 1000 + i as u16, vip, 80, 0x02, b"")).1;
            let d = u32::from(Ipv4Addr::from(daddr(&out)));
            assert!(d == 0x0af4_0000 + 2 * i || d == 0x0af4_0000 + 2 * i + 1, "service {i} → {d:x}");
        }
        f.sync(&[]);
        let vip = Ipv4Addr::from(0x0a60_0000u32).octets();
        let syn = tcp(CLIENT, 9, vip, 80, 0x02, b"");
        assert_eq!(f.run(true, &syn).1, syn, "all removed");
    }
}
