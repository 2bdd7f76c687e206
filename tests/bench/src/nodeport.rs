//! `rudder-bench nodeport`: requests per second through a NodePort whose
//! backend is on another node, in four modes measured in one run: the
//! node's `from_netdev` on tc alone, and with `xdp_from_netdev` in the
//! uplink's driver in front of it; each with source NAT (replies back
//! through the node) and with direct server return (replies from the
//! backend's node straight to the client).
//!
//! Three namespaces on one underlay segment (`rudder_test_harness::Underlay`,
//! veth uplinks): a client, the node with the Service dataplane (NodePort
//! 30080), and a backend node with the Service dataplane on its uplink and
//! on the veth of the backend pod (a namespace of its own), which the node
//! routes to via the backend node, as host-gw does. Two workloads, for
//! `--seconds` each, with `--clients` threads: a new TCP connection per
//! request (connect, 64-byte request and reply, close: each request a new
//! flow), and requests on connections kept open (the known-flow path both
//! ways). The modes alternate over `--rounds` rounds and the median round is
//! reported, with the softirq CPU time of the whole machine per request
//! (where the nodes' forwarding is spent; the client's and backend's stacks
//! are in it too, the same in every mode).
//!
//! The wire's ports run the service program with empty maps at XDP (it
//! passes everything), in every mode: a veth delivers frames another veth
//! sends back out at XDP to its peer only when the peer has an XDP program.
//! On a NIC none of that is needed; the figures here compare the paths on
//! this machine, they are not a NIC's.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use rudder_dataplane::{service::ServiceDataplane, tc::AttachMode};
use rudder_proxy::{Endpoint, Frontend, Proto, ServiceSpec, Translator};
use rudder_test_harness::{BpfPinDir, NetNs, Underlay};

const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 79, 2);
const BACKEND_NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 79, 3);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 9, 10);
const NODE_PORT: u16 = 30080;
const MSG: usize = 64;

struct Options {
    seconds: Duration,
    clients: usize,
    rounds: usize,
}

fn options(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        seconds: Duration::from_secs(3),
        clients: 4,
        rounds: 3,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--seconds" => o.seconds = Duration::from_secs(v.parse()?),
            "--clients" => o.clients = v.parse()?,
            "--rounds" => o.rounds = v.parse()?,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

/// One workload's result in one mode.
#[derive(Clone, Copy, Default)]
struct Measured {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    softirq_us: f64,
}

/// The modes, in the order they alternate: (name, XDP, direct server return).
const MODES: [(&str, bool, bool); 4] = [
    ("tc, source NAT", false, false),
    ("XDP + tc, source NAT", true, false),
    ("tc, DSR", false, true),
    ("XDP + tc, DSR", true, true),
];

/// The node's and the backend node's dataplanes, and what they translate.
struct Nodes<'a> {
    node: &'a NetNs,
    dps: [(ServiceDataplane, Translator); 2],
}

impl Nodes<'_> {
    /// Puts both nodes in `mode`: the NodePort's forwarding mode, XDP on
    /// the node's uplink or not.
    fn set(&mut self, (_, xdp, dsr): (&str, bool, bool)) -> anyhow::Result<()> {
        let spec = ServiceSpec {
            frontend: Frontend {
                addr: Ipv4Addr::UNSPECIFIED,
                port: NODE_PORT,
                proto: Proto::Tcp,
            },
            endpoints: vec![Endpoint::ready(POD, 8080)],
            affinity_timeout: None,
            keep_source: false,
            maglev: false,
            dsr,
        };
        for (dp, translator) in &mut self.dps {
            dp.apply(&translator.sync(std::slice::from_ref(&spec)))?;
        }
        let dp = &mut self.dps[0].0;
        self.node.run(|| {
            if xdp {
                dp.attach_xdp("up0")
            } else {
                dp.detach_xdp("up0").map(drop)
            }
        })?;
        Ok(())
    }
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let o = options(args)?;
    let net = Underlay::new(&["192.168.79.1/24", "192.168.79.2/24", "192.168.79.3/24"]);
    let (client, node, backend) = (&net.hosts[0], &net.hosts[1], &net.hosts[2]);
    let wire_pins = BpfPinDir::new();
    let _wire = net.wire.run(|| -> anyhow::Result<ServiceDataplane> {
        let mut dp = ServiceDataplane::load(wire_pins.path())?;
        for port in &net.ports {
            dp.attach_xdp(port)?;
        }
        Ok(dp)
    })?;
    let pod = NetNs::new();
    backend.veth_to(&pod, ("pod0", None), ("eth0", Some(&format!("{POD}/32"))));
    pod.ip(&["route", "add", "default", "dev", "eth0"]);
    backend.ip(&["route", "add", &format!("{POD}/32"), "dev", "pod0"]);
    node.ip(&["route", "add", "10.244.9.0/24", "via", "192.168.79.3"]);
    let listener = pod.run(|| TcpListener::bind((POD, 8080)))?;
    // A new connection per request leaves the client's side in TIME_WAIT:
    // the whole port range, and ports reused by timestamps.
    // The nodes forward, as Kubernetes requires (a new namespace's
    // default follows the host's `net.core.devconf_inherit_init_net`),
    // and the backend node answers the pod's neighbour requests for the
    // addresses it routes (the pod's default route is its link).
    for (ns, key, value) in [
        (client, "net.ipv4.ip_local_port_range", "1024 65535"),
        (client, "net.ipv4.tcp_tw_reuse", "1"),
        (node, "net.ipv4.ip_forward", "1"),
        (backend, "net.ipv4.ip_forward", "1"),
        (backend, "net.ipv4.conf.pod0.proxy_arp", "1"),
    ] {
        let out = ns.exec("sysctl", &["-qw", &format!("{key}={value}")]);
        anyhow::ensure!(out.status.success(), "sysctl {key} in {}", ns.name());
    }
    let stop = AtomicBool::new(false);
    let pins = [BpfPinDir::new(), BpfPinDir::new()];
    let load = |ns: &NetNs, pins: &BpfPinDir, addr: Ipv4Addr, pod_if: Option<&str>| {
        ns.run(|| -> anyhow::Result<(ServiceDataplane, Translator)> {
            let mut dp = ServiceDataplane::load(pins.path())?;
            dp.set_node_addrs(&[addr].into_iter().collect(), Some(addr))?;
            // Both nodes, as the proxy has them from the Node objects:
            // the backend's believes options naming the first's address.
            dp.set_dsr_nodes(&[NODE, BACKEND_NODE].into_iter().collect())?;
            dp.attach_node_interface("up0", AttachMode::Auto)?;
            if let Some(iface) = pod_if {
                dp.attach_pod_interface(iface, AttachMode::Auto)?;
            }
            Ok((dp, Translator::new()))
        })
    };
    let mut nodes = Nodes {
        node,
        dps: [
            load(node, &pins[0], NODE, None)?,
            load(backend, &pins[1], BACKEND_NODE, Some("pod0"))?,
        ],
    };
    let rows = std::thread::scope(|s| -> anyhow::Result<Vec<[Measured; 4]>> {
        for _ in 0..o.clients.max(1) * 2 {
            let listener = listener.try_clone()?;
            let stop = &stop;
            s.spawn(move || serve(&listener, stop));
        }
        let result = measure_all(&o, client, &mut nodes);
        stop.store(true, Ordering::Relaxed);
        // Wake every server thread blocked in accept (more connections
        // than threads: the rest are reset with the listener).
        pod.run(|| {
            for _ in 0..o.clients.max(1) * 4 {
                let _ = TcpStream::connect((POD, 8080));
            }
        });
        result
    })?;
    print_report(&o, &rows, &nodes)
}

/// Both workloads, the modes alternating over the rounds: per workload, the
/// median round of each mode.
fn measure_all(
    o: &Options,
    client: &NetNs,
    nodes: &mut Nodes<'_>,
) -> anyhow::Result<Vec<[Measured; 4]>> {
    let mut rows = vec![];
    for kept_open in [false, true] {
        let mut runs: [Vec<Measured>; 4] = Default::default();
        for _ in 0..o.rounds.max(1) {
            for (i, mode) in MODES.into_iter().enumerate() {
                nodes.set(mode)?;
                runs[i].push(requests(client, o, kept_open)?);
            }
        }
        let median = |mut v: Vec<Measured>| {
            v.sort_by(|a, b| a.rps.total_cmp(&b.rps));
            v[v.len() / 2]
        };
        rows.push(runs.map(median));
    }
    nodes.set(MODES[0])?;
    Ok(rows)
}

/// The backend: echoes 64-byte messages until the peer closes.
fn serve(listener: &TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut s, _)) = listener.accept() else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let mut buf = [0u8; MSG];
        while s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {}
    }
}

/// `clients` threads sending requests for `seconds`: rate, latency p50/p99
/// and the machine's softirq time per request.
fn requests(client: &NetNs, o: &Options, kept_open: bool) -> anyhow::Result<Measured> {
    let target = SocketAddr::from((NODE, NODE_PORT));
    let softirq0 = softirq_seconds()?;
    let start = Instant::now();
    let lat = std::thread::scope(|s| -> anyhow::Result<Vec<Duration>> {
        let workers: Vec<_> = (0..o.clients.max(1))
            .map(|_| s.spawn(|| client.run(|| worker(target, o.seconds, kept_open))))
            .collect();
        let mut all = vec![];
        for w in workers {
            let v = w
                .join()
                .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
            all.extend(v);
        }
        Ok(all)
    })?;
    let wall = start.elapsed().as_secs_f64();
    let softirq = softirq_seconds()? - softirq0;
    let mut lat = lat;
    lat.sort();
    anyhow::ensure!(!lat.is_empty(), "no request completed");
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    Ok(Measured {
        rps: lat.len() as f64 / wall,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        softirq_us: softirq / lat.len() as f64 * 1e6,
    })
}

/// One client thread: request/reply latencies until `seconds` have passed.
fn worker(target: SocketAddr, seconds: Duration, kept_open: bool) -> anyhow::Result<Vec<Duration>> {
    let connect = || -> anyhow::Result<TcpStream> {
        let s = TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .with_context(|| format!("connect {target}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(s)
    };
    let mut lat = vec![];
    let mut open = if kept_open { Some(connect()?) } else { None };
    let (req, mut reply) = ([7u8; MSG], [0u8; MSG]);
    let start = Instant::now();
    while start.elapsed() < seconds {
        let t = Instant::now();
        let mut fresh;
        let s = match open.as_mut() {
            Some(s) => s,
            None => {
                fresh = connect()?;
                &mut fresh
            }
        };
        s.write_all(&req)?;
        s.read_exact(&mut reply).context("read the reply")?;
        lat.push(t.elapsed());
    }
    Ok(lat)
}

/// The machine's softirq time so far (`/proc/stat`, all CPUs).
fn softirq_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("empty /proc/stat")?;
    // cpu user nice system idle iowait irq softirq ...
    let ticks: u64 = cpu
        .split_whitespace()
        .nth(7)
        .context("/proc/stat without softirq")?
        .parse()?;
    // SAFETY: sysconf reads a configuration value; no memory is touched.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks as f64 / per_s.max(1) as f64)
}

fn print_report(o: &Options, rows: &[[Measured; 4]], nodes: &Nodes<'_>) -> anyhow::Result<()> {
    println!("NodePort benchmark; {}", crate::hardware());
    println!(
        "NodePort {NODE_PORT} on the node → a backend pod on another node (host-gw); {} client threads, {} s per round, median of {} rounds per mode\n",
        o.clients,
        o.seconds.as_secs(),
        o.rounds
    );
    println!(
        "{:<28} {:<22} {:>10} {:>9} {:>9} {:>12}",
        "workload", "node path", "req/s", "p50 µs", "p99 µs", "softirq µs/req"
    );
    let names = ["new connection per request", "requests on open connections"];
    for (name, row) in names.iter().zip(rows) {
        for ((mode, _, _), m) in MODES.iter().zip(row) {
            println!(
                "{name:<28} {mode:<22} {:>10.0} {:>9.0} {:>9.0} {:>12.1}",
                m.rps, m.p50_us, m.p99_us, m.softirq_us
            );
        }
    }
    let (node, backend) = (&nodes.dps[0].0, &nodes.dps[1].0);
    println!(
        "\nthe node's XDP counters over the run: {:?}",
        node.xdp_counts()?
    );
    println!("the node's DSR counters: {:?}", node.dsr_counts()?);
    println!(
        "the backend node's DSR counters: {:?}",
        backend.dsr_counts()?
    );
    let (conn, open) = (&rows[0], &rows[1]);
    crate::figure("nodeport_tc_rps", format!("{:.0}", open[0].rps));
    crate::figure("nodeport_xdp_rps", format!("{:.0}", open[1].rps));
    crate::figure("nodeport_dsr_rps", format!("{:.0}", open[2].rps));
    crate::figure("nodeport_xdp_dsr_rps", format!("{:.0}", open[3].rps));
    crate::figure("nodeport_tc_conn_rps", format!("{:.0}", conn[0].rps));
    crate::figure("nodeport_xdp_conn_rps", format!("{:.0}", conn[1].rps));
    crate::figure("nodeport_dsr_conn_rps", format!("{:.0}", conn[2].rps));
    crate::figure(
        "nodeport_xdp_to_tc",
        format!("{:.2}", open[1].rps / open[0].rps.max(1.0)),
    );
    crate::figure(
        "nodeport_dsr_to_snat",
        format!("{:.2}", open[2].rps / open[0].rps.max(1.0)),
    );
    Ok(())
}
