//! `rudder-bench dataplane`: Rudder's eBPF Service dataplane against the two
//! kube-proxy rule shapes, generated here, on one topology, in one run.
//!
//! Topology (network namespaces made by the benchmark): a client pod and four
//! backend pods on veth pairs into a node namespace with a bridge and IP
//! forwarding. The same service set (N services × 4 endpoints, TCP port 80;
//! the measured service, in the middle of the list, also has UDP port 80) is
//! programmed as:
//! - `ebpf`: Rudder's `service` object on the pods' host-side veths;
//! - `iptables`: `KUBE-SERVICES` → `KUBE-SVC-*` (`statistic` random) →
//!   `KUBE-SEP-*` DNAT, in the node's nat table (iptables-nft);
//! - `nftables`: kube-proxy's nftables shape: a `service-ips` verdict map,
//!   per-service `numgen` vmap, per-endpoint DNAT chains, loaded in
//!   1,000-service transactions. The kernel's cost per new set grows with
//!   the sets already in the table, so past a time budget the rest of the
//!   services are loaded without their per-service set (the measured
//!   service always has it); the table then says so and shows no
//!   program-all time;
//! - `rudder-nft` and `rudder-ipt`: Rudder's own netfilter modes (the
//!   fallbacks for nodes without the eBPF dataplane), rendered from the
//!   same `ServiceSpec`s by `rudder_proxy::nftables` and `::netfilter` and
//!   written as the proxy daemon writes them (the tables whole, then one
//!   endpoint change as a partial transaction: only the changed chains). Not run above 10,000 services unless `--modes`
//!   names them: like kube-proxy's nftables shape, they give each service
//!   an anonymous verdict set, whose kernel cost grows with the table.
//!
//! Measured per scale and mode:
//! - time to program all services, and to apply one endpoint change;
//! - per-packet cost of translating a new flow: UDP packets, each a new
//!   flow, sent from the client through the node; the cost is the time per
//!   packet minus that of the same packets sent straight to a backend with
//!   nothing programmed (the sender's softirq runs the whole path inline);
//! - for `ebpf`, the program's own cost under `BPF_PROG_TEST_RUN` (kernel
//!   timer), for a new flow and for a packet of a known flow;
//! - new TCP connections per second (connect, read a reply, close, one at a
//!   time) and their latency p50/p99.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    process::{Command, Stdio},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use rudder_dataplane::{service::ServiceDataplane, tc::AttachMode};
use rudder_proxy::{Endpoint, Frontend, Proto, ServiceSpec, Translator};
use rudder_test_harness::{AddressServer, BpfPinDir, NetNs, Udp, packet::Ipv4Packet};

use crate::{figure, hardware};

const BACKENDS: usize = 4;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
/// New flows per round of the per-packet measurement; five rounds, each
/// from another source address, so no packet ever belongs to a known flow.
const PACKETS: u16 = 20_000;
const ROUNDS: u8 = 5;
/// How long `iptables-restore` or `nft -f` may take before it is reported
/// as a timeout (`--timeout`).
static COMMAND_TIMEOUT_S: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(600);
/// How long loading kube-proxy's nftables shape may take before the rest of
/// the services are loaded without per-service sets (`--nft-budget`).
static NFT_BUDGET_S: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(300);

/// `--program-only`: measure programming and the eBPF program alone, skip
/// the packets through the node and the connections (for working on the
/// program).
static PROGRAM_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn backend_ip(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 11 + j as u8)
}

fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a60_0001 + i)
}

/// Endpoints of service `i`: the measured one gets the real backends, the
/// others addresses that nothing uses.
fn endpoints(i: u32, measured: u32) -> Vec<Ipv4Addr> {
    if i == measured {
        (0..BACKENDS).map(backend_ip).collect()
    } else {
        (0..BACKENDS as u32)
            .map(|j| Ipv4Addr::from(0x0af5_0000 + 4 * i + j))
            .collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Ebpf,
    Iptables,
    Nftables,
    RudderNft,
    RudderIpt,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Ebpf => "ebpf",
            Mode::Iptables => "iptables",
            Mode::Nftables => "nftables",
            Mode::RudderNft => "rudder-nft",
            Mode::RudderIpt => "rudder-ipt",
        }
    }
}

/// The largest scale at which the default mode list runs Rudder's own
/// netfilter modes.
const RUDDER_NETFILTER_DEFAULT_MAX: u32 = 10_000;

#[derive(Default)]
struct Row {
    program: Option<Duration>,
    change: Option<Duration>,
    packet_ns: Option<f64>,
    test_run_new_ns: Option<f64>,
    test_run_known_ns: Option<f64>,
    conn_per_s: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    note: String,
}

/// `rudder-bench dataplane [options]`.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut scales = vec![10u32, 1_000, 10_000, 100_000];
    let mut seconds = 2u64;
    let mut modes = vec![
        Mode::Ebpf,
        Mode::Iptables,
        Mode::Nftables,
        Mode::RudderNft,
        Mode::RudderIpt,
    ];
    let mut modes_named = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--program-only" {
            PROGRAM_ONLY.store(true, Ordering::Relaxed);
            continue;
        }
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--scales" => scales = v.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--seconds" => seconds = v.parse()?,
            "--timeout" => COMMAND_TIMEOUT_S.store(v.parse()?, Ordering::Relaxed),
            "--nft-budget" => NFT_BUDGET_S.store(v.parse()?, Ordering::Relaxed),
            "--modes" => {
                modes_named = true;
                modes = v
                    .split(',')
                    .map(|m| match m {
                        "ebpf" => Ok(Mode::Ebpf),
                        "iptables" => Ok(Mode::Iptables),
                        "nftables" => Ok(Mode::Nftables),
                        "rudder-nft" => Ok(Mode::RudderNft),
                        "rudder-ipt" => Ok(Mode::RudderIpt),
                        other => bail!("unknown mode {other}"),
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            other => bail!("unknown option {other}"),
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark needs root (network namespaces, BPF, netfilter)");
    }
    // Remove what killed earlier runs left behind, then start.
    rudder_test_harness::require_root();
    println!("{}", hardware());
    println!(
        "services × {BACKENDS} endpoints; per-packet cost: median of {ROUNDS} rounds of {PACKETS} new UDP flows; connections for {seconds} s\n"
    );
    let mut rows = vec![];
    for &n in &scales {
        for &mode in &modes {
            if !modes_named
                && matches!(mode, Mode::RudderNft | Mode::RudderIpt)
                && n > RUDDER_NETFILTER_DEFAULT_MAX
            {
                continue;
            }
            eprintln!("==> {n} services, {}", mode.name());
            let row = run_one(n, mode, Duration::from_secs(seconds)).unwrap_or_else(|e| Row {
                note: format!("failed: {e:#}"),
                ..Row::default()
            });
            rows.push((n, mode, row));
        }
    }
    print_table(&rows);
    // The headline figures: the program alone at its worst over the scales
    // (it is meant to be flat), and programming 100,000 services.
    let ebpf = || rows.iter().filter(|(_, m, _)| *m == Mode::Ebpf);
    let worst = |f: fn(&Row) -> Option<f64>| ebpf().filter_map(|(_, _, r)| f(r)).reduce(f64::max);
    if let Some(v) = worst(|r| r.test_run_new_ns) {
        figure("ebpf_new_flow_ns", format!("{v:.0}"));
    }
    if let Some(v) = worst(|r| r.test_run_known_ns) {
        figure("ebpf_known_flow_ns", format!("{v:.0}"));
    }
    if let Some(d) = ebpf()
        .find(|(n, _, _)| *n == 100_000)
        .and_then(|(_, _, r)| r.program)
    {
        figure(
            "ebpf_program_100000_ms",
            format!("{:.0}", d.as_secs_f64() * 1e3),
        );
    }
    for (n, mode, r) in &rows {
        let m = mode.name();
        let figures = [
            ("pkt_ns", r.packet_ns, 0),
            ("program_ms", r.program.map(|d| d.as_secs_f64() * 1e3), 1),
            ("change_ms", r.change.map(|d| d.as_secs_f64() * 1e3), 2),
            ("conn_per_s", r.conn_per_s, 0),
            ("test_run_new_ns", r.test_run_new_ns, 0),
            ("test_run_est_ns", r.test_run_known_ns, 0),
        ];
        for (what, v, digits) in figures {
            if let Some(v) = v {
                figure(&format!("{m}_{n}_{what}"), format!("{v:.digits$}"));
            }
        }
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

fn print_table(rows: &[(u32, Mode, Row)]) {
    println!(
        "{:>8} {:<9} {:>12} {:>11} {:>10} {:>13} {:>13} {:>9} {:>9} {:>9}  note",
        "services",
        "mode",
        "program ms",
        "change ms",
        "pkt ns",
        "test-run new",
        "test-run est",
        "conn/s",
        "p50 µs",
        "p99 µs"
    );
    for (n, mode, r) in rows {
        println!(
            "{:>8} {:<9} {:>12} {:>11} {:>10} {:>13} {:>13} {:>9} {:>9} {:>9}  {}",
            n,
            mode.name(),
            fmt_opt(r.program.map(|d| d.as_secs_f64() * 1e3), 1),
            fmt_opt(r.change.map(|d| d.as_secs_f64() * 1e3), 2),
            fmt_opt(r.packet_ns, 0),
            fmt_opt(r.test_run_new_ns, 0),
            fmt_opt(r.test_run_known_ns, 0),
            fmt_opt(r.conn_per_s, 0),
            fmt_opt(r.p50_us, 0),
            fmt_opt(r.p99_us, 0),
            r.note
        );
    }
    println!(
        "\npkt ns: time per new-flow UDP packet through the node minus the same with nothing programmed (iptables/nftables include netfilter conntrack, which kube-proxy needs);\n\
         test-run: the eBPF program alone under BPF_PROG_TEST_RUN; the measured service is in the middle of the list (iptables walks half of KUBE-SERVICES)."
    );
}

/// The namespaces of one run.
struct Topo {
    client: NetNs,
    backends: Vec<NetNs>,
    ifaces: Vec<String>,
    node: NetNs,
}

impl Topo {
    fn new() -> anyhow::Result<Self> {
        let node = NetNs::new();
        node.bridge("br0", Some("10.244.1.1/24"));
        for knob in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            let out = node.exec("sysctl", &["-qw", knob]);
            if !out.status.success() {
                bail!("sysctl {knob} failed");
            }
        }
        let mut pods = vec![];
        let mut ifaces = vec![];
        for (k, ip) in std::iter::once(CLIENT)
            .chain((0..BACKENDS).map(backend_ip))
            .enumerate()
        {
            let pod = NetNs::new();
            let host_if = format!("veth{k}");
            pod.veth_to(&node, ("eth0", Some(&format!("{ip}/24"))), (&host_if, None));
            pod.ip(&["route", "add", "default", "via", "10.244.1.1"]);
            node.ip(&["link", "set", &host_if, "master", "br0"]);
            pods.push(pod);
            ifaces.push(host_if);
        }
        let client = pods.remove(0);
        Ok(Self {
            client,
            backends: pods,
            ifaces,
            node,
        })
    }
}

fn services(n: u32) -> Vec<ServiceSpec> {
    let measured = n / 2;
    let mut out = Vec::with_capacity(n as usize + 1);
    for i in 0..n {
        let eps: Vec<Endpoint> = endpoints(i, measured)
            .into_iter()
            .map(|a| Endpoint::ready(a, 8080))
            .collect();
        out.push(ServiceSpec {
            frontend: Frontend {
                addr: vip(i),
                port: 80,
                proto: Proto::Tcp,
            },
            endpoints: eps.clone(),
            affinity_timeout: None,
            keep_source: false,
            maglev: false,
            dsr: false,
        });
        if i == measured {
            out.push(ServiceSpec {
                frontend: Frontend {
                    addr: vip(i),
                    port: 80,
                    proto: Proto::Udp,
                },
                endpoints: eps,
                affinity_timeout: None,
                keep_source: false,
                maglev: false,
                dsr: false,
            });
        }
    }
    out
}

fn run_one(n: u32, mode: Mode, seconds: Duration) -> anyhow::Result<Row> {
    let topo = Topo::new()?;
    let _servers: Vec<AddressServer> = topo
        .backends
        .iter()
        .enumerate()
        .map(|(j, pod)| {
            AddressServer::start(pod, SocketAddrV4::new(backend_ip(j), 8080), Udp::Sink)
        })
        .collect();
    let measured = n / 2;
    let target = vip(measured);
    let mut row = Row::default();

    // Baseline: new flows straight to a backend, nothing programmed; one
    // round first to warm caches and neighbours, then the median of rounds.
    send_new_flows(&topo.client, backend_ip(0), 8080, 99)?;
    let base = median(
        (0..ROUNDS + 2)
            .map(|r| send_new_flows(&topo.client, backend_ip(0), 8080, 100 + r))
            .collect::<anyhow::Result<_>>()?,
    );

    let pins = BpfPinDir::new();
    let mut dp = None;
    match mode {
        Mode::Ebpf => {
            let mut d = ServiceDataplane::load(pins.path())?;
            for iface in &topo.ifaces {
                topo.node
                    .run(|| d.attach_pod_interface(iface, AttachMode::Tcx))?;
            }
            let mut proxy = Translator::new();
            let desired = services(n);
            let start = Instant::now();
            let ops = proxy.sync(&desired);
            let translated = start.elapsed();
            d.apply(&ops)?;
            row.program = Some(start.elapsed());
            row.note = format!(
                "translate {:.0} ms + maps {:.0} ms; ",
                translated.as_secs_f64() * 1e3,
                (start.elapsed() - translated).as_secs_f64() * 1e3
            );
            row.change = Some(time_ebpf_change(&mut d, &mut proxy, desired)?);
            let (new, known, overhead) = test_run_costs(&mut d, target)?;
            row.test_run_new_ns = Some(new);
            row.test_run_known_ns = Some(known);
            row.note += &format!("test-run call overhead {overhead:.0} ns subtracted; ");
            if PROGRAM_ONLY.load(Ordering::Relaxed) {
                return Ok(row);
            }
            dp = Some(d);
        }
        Mode::Iptables => {
            let rules = iptables_rules(n);
            row.program = Some(restore(&topo.node, "iptables-restore", &[], &rules)?);
            row.change = Some(restore(
                &topo.node,
                "iptables-restore",
                &["--noflush"],
                &iptables_change(),
            )?);
        }
        Mode::Nftables => {
            let load = nft_load(
                &topo.node,
                n,
                Duration::from_secs(NFT_BUDGET_S.load(Ordering::Relaxed)),
            )?;
            // All in kube-proxy's shape, or no program-all time.
            row.program = load.fill.is_none().then_some(load.exact.1);
            if let Some((rest, fill)) = load.fill {
                row.note = format!(
                    "kube-proxy's shape: {} of {n} services loaded in {:.0} s, then the budget ran out; the other {rest} loaded without per-service sets in {:.0} s (the measured service's path is the same); ",
                    load.exact.0,
                    load.exact.1.as_secs_f64(),
                    fill.as_secs_f64()
                );
            }
            row.change = Some(restore(&topo.node, "nft", &["-f", "-"], &nft_change())?);
        }
        Mode::RudderNft | Mode::RudderIpt => rudder_netfilter(&topo.node, n, mode, &mut row)?,
    }
    let through = median(
        (0..ROUNDS)
            .map(|r| send_new_flows(&topo.client, target, 80, 150 + r))
            .collect::<anyhow::Result<_>>()?,
    );
    row.packet_ns = Some(through - base);
    let (rate, p50, p99) = connections(&topo.client, target, seconds)?;
    row.conn_per_s = Some(rate);
    row.p50_us = Some(p50);
    row.p99_us = Some(p99);
    row.note += &format!("through the node: {through:.0} ns, with nothing programmed {base:.0} ns");
    drop(dp);
    Ok(row)
}

/// Rudder's netfilter modes: every service written as the proxy daemon
/// writes its first sync, then one endpoint of service 0 replaced as it
/// writes the next, timed (rendering included).
fn rudder_netfilter(node: &NetNs, n: u32, mode: Mode, row: &mut Row) -> anyhow::Result<()> {
    use rudder_proxy::{netfilter, nftables};
    let cfg = netfilter::RenderConfig {
        cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0), 16)),
    };
    let mut desired = services(n);
    let start = Instant::now();
    if mode == Mode::RudderNft {
        let first = nftables::render(&desired, &cfg);
        node.run(|| nftables::apply(None, &first))?;
        row.program = Some(start.elapsed());
        desired[0].endpoints[0].addr = Ipv4Addr::new(10, 250, 0, 1);
        let start = Instant::now();
        let next = nftables::render(&desired, &cfg);
        node.run(|| nftables::apply(Some(&first), &next))?;
        row.change = Some(start.elapsed());
    } else {
        let first = netfilter::render(&desired, &cfg);
        node.run(|| netfilter::apply("iptables-nft", None, &first))?;
        row.program = Some(start.elapsed());
        desired[0].endpoints[0].addr = Ipv4Addr::new(10, 250, 0, 1);
        let start = Instant::now();
        let next = netfilter::render(&desired, &cfg);
        node.run(|| netfilter::apply("iptables-nft", Some(&first), &next))?;
        row.change = Some(start.elapsed());
    }
    row.note = "the whole table, then only the changed chains; ".into();
    Ok(())
}

/// Replaces one endpoint of service 0 as the proxy does on an EndpointSlice
/// event, and times it.
fn time_ebpf_change(
    d: &mut ServiceDataplane,
    proxy: &mut Translator,
    mut desired: Vec<ServiceSpec>,
) -> anyhow::Result<Duration> {
    desired[0].endpoints[0].addr = Ipv4Addr::new(10, 250, 0, 1);
    let start = Instant::now();
    let ops = proxy.update(&desired[0])?;
    d.apply(&ops)?;
    Ok(start.elapsed())
}

/// Kernel-timed cost of the `from_pod` program for a new flow (a new source
/// port each run) and for a packet of a known flow: the median of single
/// runs (robust to the interrupts a mean would fold in), net of the fixed
/// cost of a one-run `BPF_PROG_TEST_RUN` call (measured here as the median
/// single run of a packet the program passes untouched, minus its mean
/// over 100,000 runs in one call). Returns (new, known, overhead) in ns.
fn test_run_costs(d: &mut ServiceDataplane, target: Ipv4Addr) -> anyhow::Result<(f64, f64, f64)> {
    // On one CPU throughout: a run that moves to another CPU meets cold
    // caches and the other CPU's LRU lists, and the medians wander by a
    // third from one process to the next.
    let _pinned = PinnedToCpu::new()?;
    let runs: u32 = 4_000;
    let ns = |t: Duration| t.as_nanos() as f64;
    // Warm-up, not counted: the first thousand runs of a fresh process are
    // up to half again slower (caches, the kernel's first allocations).
    for i in 0..1_000u16 {
        let p = Ipv4Packet::udp(
            CLIENT.octets(),
            60_000 + i % 5_000,
            target.octets(),
            80,
            b"x",
        );
        d.test_run_timed(true, &p.build(), 1)?;
    }
    let idle = Ipv4Packet::udp(CLIENT.octets(), 1, [10, 250, 9, 9], 80, b"x").build();
    let once = (0..runs)
        .map(|_| d.test_run_timed(true, &idle, 1).map(ns))
        .collect::<Result<Vec<_>, _>>()?;
    let repeated = ns(d.test_run_timed(true, &idle, 100_000)?);
    let overhead = (median(once) - repeated).max(0.0);
    let new = (0..runs)
        .map(|i| {
            let p = Ipv4Packet::udp(
                CLIENT.octets(),
                10_000 + (i % 50_000) as u16,
                target.octets(),
                80,
                b"x",
            )
            .build();
            d.test_run_timed(true, &p, 1).map(ns)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let known = Ipv4Packet::udp(CLIENT.octets(), 9_999, target.octets(), 80, b"x").build();
    d.test_run_timed(true, &known, 1)?;
    let known = (0..runs)
        .map(|_| d.test_run_timed(true, &known, 1).map(ns))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((median(new) - overhead, median(known) - overhead, overhead))
}

/// Keeps the calling thread on the CPU it is on until dropped, then lets it
/// run anywhere again.
struct PinnedToCpu(libc::cpu_set_t);

impl PinnedToCpu {
    fn new() -> anyhow::Result<Self> {
        // SAFETY: plain libc calls on valid, zero-initialised cpu sets owned
        // here; pid 0 is the calling thread.
        unsafe {
            let mut before: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut before) != 0 {
                bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
            }
            let cpu = libc::sched_getcpu();
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(usize::try_from(cpu).unwrap_or(0), &mut one);
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one) != 0 {
                bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
            }
            Ok(Self(before))
        }
    }
}

impl Drop for PinnedToCpu {
    fn drop(&mut self) {
        // SAFETY: restores the set read in `new`.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.0) };
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Sends `PACKETS` UDP packets, each a new flow (source 10.244.1.`src`, a
/// new source port each), from the client to `dst:port` through a raw
/// socket, and returns the mean time per packet in ns. The node's processing
/// runs in the sender's softirq.
fn send_new_flows(client: &NetNs, dst: Ipv4Addr, port: u16, src: u8) -> anyhow::Result<f64> {
    let packets: Vec<Vec<u8>> = (0..PACKETS + 100)
        .map(|i| {
            let src = [10, 244, 1, src];
            let mut f = Ipv4Packet::udp(src, 1024 + i, dst.octets(), port, b"bench").build();
            f.drain(..14);
            f
        })
        .collect();
    client.run(|| -> anyhow::Result<f64> {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            bail!("raw socket: {}", std::io::Error::last_os_error());
        }
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        let send = |p: &[u8]| {
            // SAFETY: valid buffers for the lengths passed.
            unsafe {
                libc::sendto(
                    fd,
                    p.as_ptr().cast(),
                    p.len(),
                    0,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                )
            }
        };
        // Warm up neighbours and caches with flows not used below.
        for p in packets.iter().rev().take(100) {
            send(p);
        }
        std::thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        for p in &packets[..packets.len() - 100] {
            if send(p) < 0 {
                bail!("sendto: {}", std::io::Error::last_os_error());
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / (packets.len() - 100) as f64;
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
        Ok(ns)
    })
}

/// New TCP connections to `vip:80` for `seconds`, one at a time: rate and
/// latency p50/p99 (µs) of connect + reply + close.
fn connections(
    client: &NetNs,
    vip: Ipv4Addr,
    seconds: Duration,
) -> anyhow::Result<(f64, f64, f64)> {
    client.run(|| -> anyhow::Result<(f64, f64, f64)> {
        let mut lat = vec![];
        let start = Instant::now();
        while start.elapsed() < seconds {
            let t = Instant::now();
            let mut s = TcpStream::connect_timeout(
                &SocketAddrV4::new(vip, 80).into(),
                Duration::from_secs(5),
            )
            .with_context(|| format!("connect {vip}:80"))?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            lat.push(t.elapsed());
        }
        let total = start.elapsed().as_secs_f64();
        lat.sort();
        let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
        Ok((lat.len() as f64 / total, pct(0.5), pct(0.99)))
    })
}

/// Runs `tool` in the node namespace with `input` on stdin; returns its time.
fn restore(node: &NetNs, tool: &str, args: &[&str], input: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", node.name(), tool])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {tool}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    loop {
        if let Some(status) = child.try_wait()? {
            let took = start.elapsed();
            if !status.success() {
                let mut err = String::new();
                child.stderr.take().map(|mut e| e.read_to_string(&mut err));
                bail!(
                    "{tool} failed: {}",
                    err.lines().take(3).collect::<Vec<_>>().join(" / ")
                );
            }
            return Ok(took);
        }
        let limit = COMMAND_TIMEOUT_S.load(Ordering::Relaxed);
        if start.elapsed() > Duration::from_secs(limit) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{tool} did not finish within {limit} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn chain_id(i: u32) -> String {
    format!("{i:016X}")
}

/// kube-proxy's iptables shape for `n` services.
fn iptables_rules(n: u32) -> String {
    use std::fmt::Write as _;
    let measured = n / 2;
    let mut chains = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n",
    );
    let mut rules = String::from(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n",
    );
    let svc = |i: u32, proto: &str, eps: &[Ipv4Addr], chains: &mut String, rules: &mut String| {
        let id = format!(
            "{}{}",
            &chain_id(i)[1..],
            if proto == "udp" { "U" } else { "T" }
        );
        let _ = writeln!(chains, ":KUBE-SVC-{id} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {}/32 -p {proto} -m comment --comment \"default/svc-{i}:http cluster IP\" -m {proto} --dport 80 -j KUBE-SVC-{id}",
            vip(i)
        );
        let k = eps.len();
        for (j, ep) in eps.iter().enumerate() {
            let sep = format!("{}{j}", &id[..15]);
            let _ = writeln!(chains, ":KUBE-SEP-{sep} - [0:0]");
            if j + 1 < k {
                let _ = writeln!(
                    rules,
                    "-A KUBE-SVC-{id} -m comment --comment \"default/svc-{i}:http -> {ep}:8080\" -m statistic --mode random --probability {:.11} -j KUBE-SEP-{sep}",
                    1.0 / (k - j) as f64
                );
            } else {
                let _ = writeln!(
                    rules,
                    "-A KUBE-SVC-{id} -m comment --comment \"default/svc-{i}:http -> {ep}:8080\" -j KUBE-SEP-{sep}"
                );
            }
            let _ = writeln!(rules, "-A KUBE-SEP-{sep} -s {ep}/32 -j KUBE-MARK-MASQ");
            let _ = writeln!(
                rules,
                "-A KUBE-SEP-{sep} -p {proto} -m {proto} -j DNAT --to-destination {ep}:8080"
            );
        }
    };
    for i in 0..n {
        let eps = endpoints(i, measured);
        svc(i, "tcp", &eps, &mut chains, &mut rules);
        if i == measured {
            svc(i, "udp", &eps, &mut chains, &mut rules);
        }
    }
    chains + &rules + "COMMIT\n"
}

/// One endpoint of service 0 replaced, as kube-proxy's partial restore does:
/// only the changed chains.
fn iptables_change() -> String {
    let id = format!("{}T", &chain_id(0)[1..]);
    let new_sep = format!("{}9", &id[..15]);
    let mut s = format!("*nat\n:KUBE-SVC-{id} - [0:0]\n:KUBE-SEP-{new_sep} - [0:0]\n");
    let eps = [Ipv4Addr::new(10, 250, 0, 1)]
        .into_iter()
        .chain(endpoints(0, u32::MAX).into_iter().skip(1))
        .collect::<Vec<_>>();
    for j in 0..eps.len() {
        let sep = if j == 0 {
            new_sep.clone()
        } else {
            format!("{}{j}", &id[..15])
        };
        if j + 1 < eps.len() {
            s += &format!(
                "-A KUBE-SVC-{id} -m statistic --mode random --probability {:.11} -j KUBE-SEP-{sep}\n",
                1.0 / (eps.len() - j) as f64
            );
        } else {
            s += &format!("-A KUBE-SVC-{id} -j KUBE-SEP-{sep}\n");
        }
    }
    s += &format!("-A KUBE-SEP-{new_sep} -s {}/32 -j KUBE-MARK-MASQ\n", eps[0]);
    s += &format!(
        "-A KUBE-SEP-{new_sep} -p tcp -m tcp -j DNAT --to-destination {}:8080\n",
        eps[0]
    );
    s + "COMMIT\n"
}

/// The fixed part of kube-proxy's nftables shape.
const NFT_HEADER: &str = "table ip kube-proxy {
  map service-ips {
    type ipv4_addr . inet_proto . inet_service : verdict
  }
  chain mark-for-masquerade {
    meta mark set meta mark or 0x4000
  }
  chain services {
    ip daddr . meta l4proto . th dport vmap @service-ips
  }
  chain nat-prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    jump services
  }
}
";

/// Services per `nft -f` transaction in kube-proxy's shape. nft's cost
/// grows faster than linearly with a transaction's size (one transaction of
/// 10,000 services took 110 s here, ten of 1,000 about 10 s), and
/// kube-proxy too syncs incrementally.
const NFT_CHUNK: usize = 1_000;
/// Services per transaction of the set-free completion (see [`nft_load`]).
const NFT_FILL_CHUNK: usize = 10_000;

/// The order services are loaded in: the measured one first, so that it is
/// in kube-proxy's exact shape even when the budget cuts the rest short.
fn nft_order(n: u32) -> Vec<u32> {
    let measured = n / 2;
    std::iter::once(measured)
        .chain((0..n).filter(|&i| i != measured))
        .collect()
}

/// kube-proxy's nftables shape for services `ids` (`pkg/proxy/nftables`):
/// per service port a `service-ips` element and a `service-*` chain whose
/// one rule is `numgen random mod N vmap { … }` (an anonymous verdict map)
/// over per-endpoint chains that mark hairpin traffic for masquerade and
/// DNAT (`meta l4proto <proto> dnat to …`).
///
/// `exact: false` writes the same chains and elements but replaces the
/// `numgen` vmap by a `goto` to the first endpoint: no set per service.
/// The kernel keeps a table's sets in a list that every new set walks
/// (`nf_tables_newset`, `nft_set_lookup_global`), so kube-proxy's shape
/// costs O(sets) per service; past ~20,000 services here a 1,000-service
/// transaction took 20 s and growing. Packets of the measured service
/// (always exact) walk the same path either way: the `service-ips` lookup,
/// its chain, its vmap, an endpoint chain.
fn nft_services(ids: &[u32], measured: u32, exact: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for &i in ids {
        let eps = endpoints(i, measured);
        let protos: &[&str] = if i == measured {
            &["tcp", "udp"]
        } else {
            &["tcp"]
        };
        for proto in protos {
            let svc = format!("service-{i}-{proto}");
            let _ = writeln!(out, "add chain ip kube-proxy {svc}");
            for (j, ep) in eps.iter().enumerate() {
                let chain = format!("endpoint-{i}-{proto}-{j}");
                let _ = writeln!(out, "add chain ip kube-proxy {chain}");
                let _ = writeln!(
                    out,
                    "add rule ip kube-proxy {chain} ip saddr {ep} jump mark-for-masquerade"
                );
                let _ = writeln!(
                    out,
                    "add rule ip kube-proxy {chain} meta l4proto {proto} dnat to {ep}:8080"
                );
            }
            if exact || i == measured {
                let vmap: Vec<String> = (0..eps.len())
                    .map(|j| format!("{j} : goto endpoint-{i}-{proto}-{j}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "add rule ip kube-proxy {svc} numgen random mod {} vmap {{ {} }}",
                    eps.len(),
                    vmap.join(", ")
                );
            } else {
                let _ = writeln!(
                    out,
                    "add rule ip kube-proxy {svc} goto endpoint-{i}-{proto}-0"
                );
            }
            let _ = writeln!(
                out,
                "add element ip kube-proxy service-ips {{ {} . {proto} . 80 : goto {svc} }}",
                vip(i)
            );
        }
    }
    out
}

/// What loading the nftables rule set did.
struct NftLoad {
    /// Services loaded in kube-proxy's shape, and the time they took.
    exact: (usize, Duration),
    /// Time to load the rest without per-service sets, if any.
    fill: Option<(usize, Duration)>,
}

/// Loads `n` services in kube-proxy's shape, 1,000 per transaction, until
/// all are loaded or `budget` is spent; the rest, if any, without
/// per-service sets ([`nft_services`]), so that the packet path can still
/// be measured at that scale.
fn nft_load(node: &NetNs, n: u32, budget: Duration) -> anyhow::Result<NftLoad> {
    let measured = n / 2;
    let order = nft_order(n);
    let mut total = restore(node, "nft", &["-f", "-"], NFT_HEADER)?;
    let mut done = 0;
    for chunk in order.chunks(NFT_CHUNK) {
        if total > budget {
            break;
        }
        let took = restore(
            node,
            "nft",
            &["-f", "-"],
            &nft_services(chunk, measured, true),
        )?;
        total += took;
        done += chunk.len();
        eprintln!(
            "    nft: {done} services in kube-proxy's shape: last {} in {:.1} s (total {:.0} s)",
            chunk.len(),
            took.as_secs_f64(),
            total.as_secs_f64()
        );
    }
    if done == order.len() {
        return Ok(NftLoad {
            exact: (done, total),
            fill: None,
        });
    }
    let mut fill = Duration::ZERO;
    for chunk in order[done..].chunks(NFT_FILL_CHUNK) {
        fill += restore(
            node,
            "nft",
            &["-f", "-"],
            &nft_services(chunk, measured, false),
        )?;
    }
    eprintln!(
        "    nft: the other {} services without per-service sets in {:.0} s",
        order.len() - done,
        fill.as_secs_f64()
    );
    Ok(NftLoad {
        exact: (done, total),
        fill: Some((order.len() - done, fill)),
    })
}

/// One endpoint of service 0 replaced, as kube-proxy's incremental sync
/// does: the new endpoint's chain, the service chain rewritten.
fn nft_change() -> String {
    let ep = Ipv4Addr::new(10, 250, 0, 1);
    let mut s = String::from("add chain ip kube-proxy endpoint-0-tcp-9\n");
    s += &format!(
        "add rule ip kube-proxy endpoint-0-tcp-9 ip saddr {ep} jump mark-for-masquerade\n"
    );
    s += &format!("add rule ip kube-proxy endpoint-0-tcp-9 meta l4proto tcp dnat to {ep}:8080\n");
    s += "flush chain ip kube-proxy service-0-tcp\n";
    s += "add rule ip kube-proxy service-0-tcp numgen random mod 4 vmap { 0 : goto endpoint-0-tcp-9, 1 : goto endpoint-0-tcp-1, 2 : goto endpoint-0-tcp-2, 3 : goto endpoint-0-tcp-3 }\n";
    s
}
