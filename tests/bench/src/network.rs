//! `rudder-bench network`: the pod network, in one run.
//!
//! - CNI ADD and DEL latency (p50/p99, the plugin process from spawn to
//!   exit, sequential, one pod namespace re-used) for Rudder's plugin and
//!   for the reference `bridge` + `host-local` plugins, same node, same
//!   subnet.
//! - Pod-to-pod across nodes, on the three-node network of the tests
//!   (namespaces on an underlay bridge, `rudder agent network` per node):
//!   TCP throughput (iperf3, one stream) and TCP request latency (1-byte
//!   request/response on one connection, p50/p99), via VXLAN, via host-gw,
//!   and over a plain veth pair between two namespaces as the baseline.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use rudder_test_harness::{ChildGuard, CniNode, NetNs, podnet::Cluster};
use serde_json::{Value, json};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// ADD/DEL latencies (µs) of one plugin configuration.
fn cni_latency(
    node: &CniNode,
    plugin: &str,
    conf: &Value,
    rounds: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let pod = NetNs::new();
    let netns = pod.path().display().to_string();
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    let stdin = conf.to_string();
    for i in 0..rounds {
        let id = format!("bench{i}");
        let env = [
            ("CNI_CONTAINERID", id.as_str()),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
        ];
        let t = Instant::now();
        let add = node.call_raw(plugin, "ADD", &env, stdin.as_bytes());
        adds.push(t.elapsed().as_secs_f64() * 1e6);
        if !add.success {
            bail!("{plugin} ADD failed: {} {}", add.stdout, add.stderr);
        }
        let t = Instant::now();
        let del = node.call_raw(plugin, "DEL", &env, stdin.as_bytes());
        dels.push(t.elapsed().as_secs_f64() * 1e6);
        if !del.success {
            bail!("{plugin} DEL failed: {}", del.stdout);
        }
    }
    Ok((adds, dels))
}

/// Throughput (Gbit/s) from `src` to `dst_ip` with iperf3.
fn throughput(src: &NetNs, dst: &NetNs, dst_ip: Ipv4Addr, seconds: u64) -> anyhow::Result<f64> {
    let _server = ChildGuard(
        dst.spawn(
            Command::new("iperf3")
                .args(["-s", "-1", "-p", "5201"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .context("iperf3 (install it: cargo xtask setup)")?,
    );
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let out = src.output(Command::new("iperf3").args([
            "-c",
            &dst_ip.to_string(),
            "-p",
            "5201",
            "-J",
            "-t",
            &seconds.to_string(),
        ]))?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            return Ok(bps / 1e9);
        }
        if Instant::now() > end {
            bail!(
                "iperf3 to {dst_ip} failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Request/response round trips (µs) on one TCP connection.
fn request_latency(
    src: &NetNs,
    dst: &NetNs,
    dst_ip: Ipv4Addr,
    rounds: usize,
) -> anyhow::Result<Vec<f64>> {
    let addr = SocketAddrV4::new(dst_ip, 5300);
    let listener = dst.run(|| TcpListener::bind(addr))?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut c, _) = listener.accept()?;
        c.set_nodelay(true)?;
        let mut b = [0u8; 1];
        while c.read_exact(&mut b).is_ok() {
            c.write_all(&b)?;
        }
        Ok(())
    });
    let mut c = src.run(|| TcpStream::connect_timeout(&addr.into(), Duration::from_secs(3)))?;
    c.set_nodelay(true)?;
    let mut out = Vec::with_capacity(rounds);
    let mut b = [7u8; 1];
    for i in 0..rounds + 500 {
        let t = Instant::now();
        c.write_all(&b)?;
        c.read_exact(&mut b)?;
        if i >= 500 {
            out.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(c);
    let _ = server.join();
    Ok(out)
}

struct PathRow {
    name: &'static str,
    gbps: f64,
    p50: f64,
    p99: f64,
}

fn measure(
    name: &'static str,
    src: &NetNs,
    dst: &NetNs,
    dst_ip: Ipv4Addr,
    seconds: u64,
    rounds: usize,
) -> anyhow::Result<PathRow> {
    let gbps = throughput(src, dst, dst_ip, seconds)?;
    let mut lat = request_latency(src, dst, dst_ip, rounds)?;
    Ok(PathRow {
        name,
        gbps,
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
    })
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut rounds = 200usize;
    let mut seconds = 3u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--cni-rounds" => rounds = v.parse()?,
            "--seconds" => seconds = v.parse()?,
            other => bail!("unknown option {other} (network: --cni-rounds N, --seconds S)"),
        }
    }
    println!("{}", crate::hardware());

    // CNI latency.
    let node = CniNode::new();
    node.write_subnet("10.244.0.0/16", "10.244.1.1/24", 1450);
    let rudder = node.rudder_conf("1.0.0");
    let reference = json!({
        "cniVersion": "1.0.0", "name": "ref", "type": "bridge", "bridge": "cni1",
        "isGateway": true, "isDefaultGateway": true, "hairpinMode": true, "mtu": 1450,
        "ipam": {"type": "host-local", "dataDir": node.ipam_dir(), "ranges": [[{"subnet": "10.244.2.0/24"}]]}
    });
    println!(
        "CNI ADD/DEL latency ({rounds} sequential ADD+DEL each, plugin process spawn to exit):"
    );
    println!(
        "  {:<22} {:>10} {:>10} {:>10} {:>10}",
        "plugin", "ADD p50", "ADD p99", "DEL p50", "DEL p99"
    );
    let mut figures: Vec<(String, String)> = Vec::new();
    for (label, plugin, conf) in [
        ("rudder", "rudder", &rudder),
        ("bridge + host-local", "bridge", &reference),
    ] {
        let (mut a, mut d) = cni_latency(&node, plugin, conf, rounds)?;
        let key = if plugin == "rudder" {
            "rudder"
        } else {
            "reference"
        };
        figures.push((
            format!("cni_add_p99_us_{key}"),
            format!("{:.0}", pct(&mut a, 0.99)),
        ));
        figures.push((
            format!("cni_del_p99_us_{key}"),
            format!("{:.0}", pct(&mut d, 0.99)),
        ));
        println!(
            "  {:<22} {:>8.0}µs {:>8.0}µs {:>8.0}µs {:>8.0}µs",
            label,
            pct(&mut a, 0.5),
            pct(&mut a, 0.99),
            pct(&mut d, 0.5),
            pct(&mut d, 0.99)
        );
    }
    drop(node);

    // Pod to pod.
    let mut rows = Vec::new();
    let a = NetNs::new();
    let b = NetNs::new();
    a.veth_to(
        &b,
        ("eth0", Some("10.99.0.1/24")),
        ("eth0", Some("10.99.0.2/24")),
    );
    rows.push(measure(
        "plain veth (baseline)",
        &a,
        &b,
        Ipv4Addr::new(10, 99, 0, 2),
        seconds,
        20_000,
    )?);
    drop((a, b));
    let release = rudder_host::kernel_release();
    let (offload, why) = rudder_network::config::ChecksumOffload::Auto.decide(&release);
    println!(
        "VXLAN tx checksum offload by default here: {} ({why})",
        if offload { "on" } else { "off" }
    );
    for (backend, extra, label) in [
        ("vxlan", "", "across nodes: vxlan"),
        (
            "vxlan",
            "vxlan-checksum-offload = false",
            "across nodes: vxlan, offload off",
        ),
        ("host-gw", "", "across nodes: host-gw"),
    ] {
        let mut c = Cluster::with_config(backend, extra);
        c.wait("routes between all nodes", |c| c.converged(&[0, 1, 2]));
        c.add_pod(0);
        c.add_pod(1);
        let (src, _) = c.pod(0);
        let (dst, dst_ip) = c.pod(1);
        rows.push(measure(label, src, dst, dst_ip, seconds, 20_000)?);
    }
    println!(
        "Pod-to-pod TCP ({seconds} s iperf3, one stream; 20,000 1-byte request/response round trips on one connection):"
    );
    println!(
        "  {:<34} {:>12} {:>12} {:>12}",
        "path", "throughput", "RTT p50", "RTT p99"
    );
    for r in &rows {
        println!(
            "  {:<34} {:>7.2} Gb/s {:>10.1}µs {:>10.1}µs",
            r.name, r.gbps, r.p50, r.p99
        );
    }
    let gbps = |name: &str| rows.iter().find(|r| r.name == name).map_or(0.0, |r| r.gbps);
    let (vxlan, host_gw) = (gbps("across nodes: vxlan"), gbps("across nodes: host-gw"));
    figures.push((
        "veth_gbps".into(),
        format!("{:.2}", gbps("plain veth (baseline)")),
    ));
    figures.push(("host_gw_gbps".into(), format!("{host_gw:.2}")));
    figures.push(("vxlan_gbps".into(), format!("{vxlan:.2}")));
    figures.push((
        "vxlan_offload_off_gbps".into(),
        format!("{:.2}", gbps("across nodes: vxlan, offload off")),
    ));
    figures.push((
        "vxlan_to_host_gw".into(),
        format!("{:.2}", if host_gw > 0.0 { vxlan / host_gw } else { 0.0 }),
    ));
    for (name, value) in figures {
        crate::figure(&name, value);
    }
    Ok(())
}
