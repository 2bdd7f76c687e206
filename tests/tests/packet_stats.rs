//! The `packet-stats` tc classifier: `BPF_PROG_TEST_RUN` on crafted packets
//! (well-formed, tagged, fragmented, truncated and malformed), asserting the
//! verdict, the output bytes and exactly which counters moved; and the same
//! program attached to a veth in test namespaces, with real traffic, through
//! TCX and through clsact.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    time::Duration,
};

use rudder_dataplane::{
    packet_stats::{Counts, PacketStats},
    tc::{AttachMode, Attached, Direction},
};
use rudder_ebpf_common::packet_stats::Counter::{self, *};
use rudder_test_harness::{
    NetNs,
    packet::{self, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV6, Ipv4Packet, L4},
};

/// `TC_ACT_UNSPEC`: the program never decides a packet's fate.
const TC_ACT_UNSPEC: i32 = -1;
const A: [u8; 4] = [10, 1, 0, 1];
const B: [u8; 4] = [10, 1, 0, 2];

/// Runs the classifier once on `frame` and returns the counters that moved,
/// asserting that the packet came out byte for byte as it went in.
fn run_once(frame: &[u8]) -> Counts {
    let mut stats = PacketStats::load().expect("load packet-stats");
    let before = stats.counts().unwrap();
    let out = stats
        .test_run(frame)
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {frame:02x?}: {e:?}"));
    assert_eq!(out.verdict, TC_ACT_UNSPEC, "verdict");
    assert_eq!(out.data, frame, "the program must not change the packet");
    stats.counts().unwrap().since(&before)
}

#[track_caller]
fn assert_counts(frame: &[u8], expected: &[(Counter, u64)]) {
    let got = run_once(frame);
    let mut want: Vec<(&str, u64)> = vec![("packets", 1), ("bytes", frame.len() as u64)];
    want.extend(expected.iter().map(|(c, n)| (c.name(), *n)));
    want.sort_by_key(|(name, _)| Counter::ALL.iter().position(|c| c.name() == *name));
    assert_eq!(
        got.non_zero(),
        want,
        "counters for a {}-byte frame",
        frame.len()
    );
}

rudder_test_harness::privileged_tests! {
    fn udp_tcp_icmp() {
        assert_counts(&Ipv4Packet::udp(A, 4000, B, 53, b"query").build(), &[(Ipv4, 1), (Udp, 1)]);
        assert_counts(&Ipv4Packet::tcp_syn(A, 4000, B, 80).build(), &[(Ipv4, 1), (Tcp, 1)]);
        assert_counts(&Ipv4Packet::icmp_echo(A, B).build(), &[(Ipv4, 1), (Icmp, 1)]);
        let gre = Ipv4Packet::new(A.into(), B.into(), L4::Raw { protocol: 47, bytes: vec![0; 8] });
        assert_counts(&gre.build(), &[(Ipv4, 1), (OtherL4, 1)]);
    }

    fn vlan_and_qinq_tags() {
        let one = Ipv4Packet::udp(A, 1, B, 2, b"x").with_vlan(ETH_P_8021Q, 100).build();
        assert_counts(&one, &[(Vlan, 1), (Ipv4, 1), (Udp, 1)]);
        let two = Ipv4Packet::tcp_syn(A, 1, B, 2)
            .with_vlan(ETH_P_8021AD, 10)
            .with_vlan(ETH_P_8021Q, 20)
            .build();
        assert_counts(&two, &[(Vlan, 1), (Ipv4, 1), (Tcp, 1)]);
    }

    fn ip_options_move_the_l4_header() {
        // Router Alert (4 bytes) + NOPs: IHL 7; the TCP header follows them.
        let f = Ipv4Packet::tcp_syn(A, 1, B, 2).with_options(&[0x94, 4, 0, 0, 1, 1, 1, 1]).build();
        assert_eq!(f[14] & 0x0f, 7);
        assert_counts(&f, &[(Ipv4, 1), (Ipv4Options, 1), (Tcp, 1)]);
    }

    fn fragments() {
        let first = Ipv4Packet::udp(A, 1, B, 2, &[7; 64]).fragment(true, 0).build();
        assert_counts(&first, &[(Ipv4, 1), (Fragment, 1), (Udp, 1)]);
        // A later fragment carries payload bytes where a header would be: it
        // must not be read as UDP.
        let later = Ipv4Packet::new(A.into(), B.into(), L4::Raw { protocol: 17, bytes: vec![0xab; 40] })
            .fragment(false, 185)
            .build();
        assert_counts(&later, &[(Ipv4, 1), (Fragment, 1), (FragmentNonFirst, 1)]);
        let middle = Ipv4Packet::new(A.into(), B.into(), L4::Raw { protocol: 6, bytes: vec![1; 8] })
            .fragment(true, 1)
            .build();
        assert_counts(&middle, &[(Ipv4, 1), (Fragment, 1), (FragmentNonFirst, 1)]);
    }

    fn other_ethertypes_pass_untouched() {
        assert_counts(&packet::ethernet(&[], ETH_P_ARP, &[0; 28]), &[(OtherEtherType, 1)]);
        assert_counts(&packet::ethernet(&[], ETH_P_IPV6, &[0x60; 48]), &[(OtherEtherType, 1)]);
        assert_counts(&packet::ethernet(&[(ETH_P_8021Q, 5)], ETH_P_ARP, &[0; 28]), &[(Vlan, 1), (OtherEtherType, 1)]);
    }

    fn truncated_l2() {
        // A VLAN TPID with the tag cut off (BPF_PROG_TEST_RUN needs ≥ 14 bytes).
        let mut f = packet::ethernet(&[], ETH_P_8021Q, &[]);
        assert_eq!(f.len(), 14);
        assert_counts(&f, &[(TruncatedL2, 1)]);
        // A QinQ frame whose inner tag is cut short.
        f = packet::ethernet(&[(ETH_P_8021AD, 1)], ETH_P_8021Q, &[0]);
        assert_counts(&f, &[(TruncatedL2, 1)]);
    }

    fn truncated_and_bad_ip_headers() {
        let good = Ipv4Packet::udp(A, 1, B, 2, b"abcd").build();
        // Cut inside the IP header. BPF_PROG_TEST_RUN refuses such a frame
        // under the IPv4 EtherType (EINVAL), so it goes behind a VLAN tag
        // here; `real_traffic` injects the untagged one on a veth.
        let tagged = Ipv4Packet::udp(A, 1, B, 2, b"abcd").with_vlan(ETH_P_8021Q, 7).build();
        assert_counts(&tagged[..18 + 12], &[(Vlan, 1), (TruncatedL3, 1)]);
        // Cut inside the payload: shorter than the total length says.
        assert_counts(&good[..good.len() - 2], &[(TruncatedL3, 1)]);
        // IHL 4 (16 bytes) is below the minimum.
        let mut bad = good.clone();
        bad[14] = 0x44;
        assert_counts(&bad, &[(BadIpHeader, 1)]);
        // IPv6 version nibble under the IPv4 EtherType.
        bad = good.clone();
        bad[14] = 0x65;
        assert_counts(&bad, &[(BadIpHeader, 1)]);
        // Total length smaller than the header.
        bad = good.clone();
        bad[16..18].copy_from_slice(&19u16.to_be_bytes());
        assert_counts(&bad, &[(BadIpHeader, 1)]);
        // IHL 15 (60 bytes) and total length 60 in a 32-byte packet.
        bad = good.clone();
        bad[14] = 0x4f;
        bad[16..18].copy_from_slice(&60u16.to_be_bytes());
        assert_counts(&bad, &[(TruncatedL3, 1)]);
        // IHL 15 but total length 32: the header cannot fit, so it is invalid.
        bad = good;
        bad[14] = 0x4f;
        assert_counts(&bad, &[(BadIpHeader, 1)]);
    }

    fn truncated_l4_headers() {
        // TCP with 12 header bytes inside the IP total length.
        let tcp = Ipv4Packet::new(A.into(), B.into(), L4::Raw { protocol: 6, bytes: vec![0; 12] });
        assert_counts(&tcp.build(), &[(Ipv4, 1), (TruncatedL4, 1)]);
        // TCP data offset 15 (60 bytes) in a 20-byte segment.
        let mut f = Ipv4Packet::tcp_syn(A, 1, B, 2).build();
        f[14 + 20 + 12] = 0xf0;
        assert_counts(&f, &[(Ipv4, 1), (TruncatedL4, 1)]);
        // TCP data offset 4 (16 bytes) is below the minimum.
        f[14 + 20 + 12] = 0x40;
        assert_counts(&f, &[(Ipv4, 1), (TruncatedL4, 1)]);
        let udp = Ipv4Packet::new(A.into(), B.into(), L4::Raw { protocol: 17, bytes: vec![0; 4] });
        assert_counts(&udp.build(), &[(Ipv4, 1), (TruncatedL4, 1)]);
        let icmp = Ipv4Packet::new(A.into(), B.into(), L4::Raw { protocol: 1, bytes: vec![8, 0, 0] });
        assert_counts(&icmp.build(), &[(Ipv4, 1), (TruncatedL4, 1)]);
    }

    fn ethernet_padding_is_not_a_header() {
        // A bare IPv4 header claiming TCP, padded to the 60-byte Ethernet
        // minimum: the padding must not be parsed as a TCP header.
        let ip_only = Ipv4Packet::new(A.into(), B.into(), L4::Raw { protocol: 6, bytes: vec![] });
        let mut f = ip_only.build();
        f.resize(60, 0);
        assert_counts(&f, &[(Ipv4, 1), (TruncatedL4, 1)]);
        // And a padded UDP datagram is counted once, as UDP.
        let mut f = Ipv4Packet::udp(A, 1, B, 2, b"").build();
        f.resize(60, 0);
        assert_counts(&f, &[(Ipv4, 1), (Udp, 1)]);
    }

    fn attached_with_tcx_counts_real_traffic() {
        real_traffic(AttachMode::Tcx, Attached::Tcx);
    }

    fn attached_with_clsact_counts_real_traffic() {
        real_traffic(AttachMode::Clsact, Attached::Clsact);
    }

    fn auto_attach_picks_tcx_on_this_kernel_and_detaches_on_drop() {
        let ns = NetNs::new();
        let other = NetNs::new();
        ns.veth_to(&other, ("v0", None), ("v1", None));
        let mode = ns.run(|| {
            let mut s = PacketStats::load().unwrap();
            s.attach("v0", Direction::Egress, AttachMode::Auto).unwrap()
        });
        // The kernels this project targets in CI are ≥ 6.6, where TCX exists.
        assert_eq!(mode, Attached::Tcx);
        // Dropped inside the thread: nothing remains attached.
        let filters = ns.exec("tc", &["filter", "show", "dev", "v0", "egress"]);
        assert!(String::from_utf8_lossy(&filters.stdout).trim().is_empty());
    }
}

/// Waits until `f()` holds (the kernel processes veth traffic in softirq
/// context, slightly after the sender returns).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let (within, every) = (Duration::from_secs(5), Duration::from_millis(20));
    rudder_test_harness::wait::poll_every(what, within, every, || f().then_some(())).unwrap();
}

/// Two namespaces joined by a veth; the classifier on B's ingress counts
/// what A sends: UDP datagrams, a TCP exchange, ICMP echoes, and a datagram
/// fragmented by A's stack.
fn real_traffic(mode: AttachMode, expect: Attached) {
    let a = NetNs::new();
    let b = NetNs::new();
    a.veth_to(
        &b,
        ("eth0", Some("10.1.0.1/24")),
        ("eth0", Some("10.1.0.2/24")),
    );
    let (ip_a, ip_b) = (Ipv4Addr::from(A), Ipv4Addr::from(B));

    b.run(|| {
        let mut stats = PacketStats::load().unwrap();
        assert_eq!(
            stats.attach("eth0", Direction::Ingress, mode).unwrap(),
            expect
        );
        let listener = TcpListener::bind(SocketAddrV4::new(ip_b, 8080)).unwrap();
        let sink = UdpSocket::bind(SocketAddrV4::new(ip_b, 9000)).unwrap();

        // Resolve the neighbours first so ARP does not mix into the counts.
        a.run(|| {
            let s = UdpSocket::bind(SocketAddrV4::new(ip_a, 0)).unwrap();
            s.send_to(b"warm-up", SocketAddrV4::new(ip_b, 9000))
                .unwrap();
        });
        eventually("the warm-up datagram", || {
            stats.counts().unwrap().get(Udp) == 1
        });
        let mut buf = [0u8; 8192];
        sink.recv_from(&mut buf).unwrap();

        // 20 UDP datagrams.
        let before = stats.counts().unwrap();
        a.run(|| {
            let s = UdpSocket::bind(SocketAddrV4::new(ip_a, 0)).unwrap();
            for i in 0..20u8 {
                s.send_to(&[i; 100], SocketAddrV4::new(ip_b, 9000)).unwrap();
            }
        });
        eventually("20 UDP datagrams", || {
            stats.counts().unwrap().since(&before).get(Udp) == 20
        });
        let d = stats.counts().unwrap().since(&before);
        assert_eq!(
            (d.get(Ipv4), d.get(Tcp), d.get(Fragment)),
            (20, 0, 0),
            "{:?}",
            d.non_zero()
        );

        // A TCP exchange through the classifier: it passes the packets on.
        let before = stats.counts().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let (mut c, _) = listener.accept().unwrap();
                let mut got = [0u8; 5];
                c.read_exact(&mut got).unwrap();
                c.write_all(&got).unwrap();
            });
            a.run(|| {
                let mut c = TcpStream::connect(SocketAddrV4::new(ip_b, 8080)).unwrap();
                c.write_all(b"hello").unwrap();
                let mut back = [0u8; 5];
                c.read_exact(&mut back).unwrap();
                assert_eq!(&back, b"hello");
            });
        });
        // SYN, ACK, data, ACK of the echo at least.
        eventually("TCP segments", || {
            stats.counts().unwrap().since(&before).get(Tcp) >= 4
        });

        // Three ICMP echo requests from a raw socket.
        let before = stats.counts().unwrap();
        a.run(|| {
            let fd = icmp_socket();
            for seq in 1..=3u16 {
                let mut msg = vec![8, 0, 0, 0, 0, 42, 0, seq as u8];
                let c = packet::checksum(&msg, 0);
                msg[2..4].copy_from_slice(&c.to_be_bytes());
                send_raw(fd, &msg, ip_b);
            }
            // SAFETY: fd is an open socket we own.
            unsafe { libc::close(fd) };
        });
        eventually("3 ICMP echoes", || {
            stats.counts().unwrap().since(&before).get(Icmp) == 3
        });

        // A 4,000-byte datagram over a 1,500-byte MTU: three fragments, the
        // first with the UDP header.
        let before = stats.counts().unwrap();
        a.run(|| {
            let s = UdpSocket::bind(SocketAddrV4::new(ip_a, 0)).unwrap();
            let dont: libc::c_int = libc::IP_PMTUDISC_DONT;
            // SAFETY: a valid socket and a pointer to an int of the stated size.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_MTU_DISCOVER,
                    (&raw const dont).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0);
            s.send_to(&[9u8; 4000], SocketAddrV4::new(ip_b, 9000))
                .unwrap();
        });
        eventually("3 fragments", || {
            stats.counts().unwrap().since(&before).get(Fragment) == 3
        });
        let d = stats.counts().unwrap().since(&before);
        assert_eq!(
            (d.get(FragmentNonFirst), d.get(Udp)),
            (2, 1),
            "{:?}",
            d.non_zero()
        );
        let (n, _) = sink.recv_from(&mut buf).unwrap();
        assert!(n == 100 || n == 4000);
        let t = stats.counts().unwrap();
        for bad in [TruncatedL2, TruncatedL3, BadIpHeader, TruncatedL4] {
            assert_eq!(t.get(bad), 0, "{}", bad.name());
        }

        // Malformed frames written raw onto the link: an IPv4 header cut
        // after 12 bytes, and one with IHL 4. Counted, and passed on.
        let before = stats.counts().unwrap();
        let good = Ipv4Packet::udp(A, 1, B, 9000, b"abcd").build();
        let mut bad_ihl = good.clone();
        bad_ihl[14] = 0x44;
        a.run(|| {
            inject(&a_link_index(), &good[..14 + 12]);
            inject(&a_link_index(), &bad_ihl);
        });
        // Waits for the two counters rather than for a packet count: the
        // link's own IPv6 traffic (router solicitations) may arrive too.
        eventually("2 malformed frames", || {
            let d = stats.counts().unwrap().since(&before);
            d.get(TruncatedL3) + d.get(BadIpHeader) >= 2
        });
        let d = stats.counts().unwrap().since(&before);
        assert_eq!(
            (d.get(TruncatedL3), d.get(BadIpHeader), d.get(Ipv4)),
            (1, 1, 0),
            "{:?}",
            d.non_zero()
        );
    });
}

/// The index of `eth0` in the calling thread's namespace.
fn a_link_index() -> libc::c_int {
    // SAFETY: a NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
    assert!(i > 0, "no eth0");
    i as libc::c_int
}

/// Sends `frame` as is (with its own Ethernet header) out of interface `ifindex`.
fn inject(ifindex: &libc::c_int, frame: &[u8]) {
    let mut frame = frame.to_vec();
    frame[..6].copy_from_slice(&[0xff; 6]); // broadcast: B's stack looks at it.
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: an all-zero sockaddr_ll is valid; the fields set below are plain data.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = *ifindex;
    addr.sll_halen = 6;
    // SAFETY: `frame` and `addr` are valid for the lengths passed.
    let n = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    assert_eq!(
        n,
        frame.len() as isize,
        "packet sendto: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is an open socket we own.
    unsafe { libc::close(fd) };
}

fn icmp_socket() -> i32 {
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    assert!(
        fd >= 0,
        "raw ICMP socket: {}",
        std::io::Error::last_os_error()
    );
    fd
}

fn send_raw(fd: i32, msg: &[u8], to: Ipv4Addr) {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(to).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `msg` and `addr` are valid for the lengths passed.
    let n = unsafe {
        libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(
        n,
        msg.len() as isize,
        "sendto: {}",
        std::io::Error::last_os_error()
    );
}
