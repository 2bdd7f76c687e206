//! A pod network of three nodes for tests and benchmarks: each node a
//! network namespace on an underlay bridge, running `rudder agent network`
//! against a shared apiserver double, with pods attached through the CNI
//! configuration its daemon wrote.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use rudder_cni::runtime::{Runtime, RuntimeConf, load_conflist};
use serde_json::json;

use crate::{
    AddressServer, ChildGuard, CniNode, FakeApiServer, NetNs, TempDir, tcp_ask, udp_ask,
    workspace_bin,
};

pub const API: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 50, 1), 6443);

/// One node: a namespace with its own CNI files, its underlay address,
/// its `rudder agent network` process and its pods.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub cni: CniNode,
    pub ip: Ipv4Addr,
    pub daemon: Option<ChildGuard>,
    pub pods: Vec<(NetNs, Ipv4Addr)>,
}

/// Three nodes on an underlay bridge (`192.168.50.0/24`, the apiserver
/// double and an "outside" host at `.1`), each running the network daemon.
#[derive(Debug)]
pub struct Cluster {
    pub backend: &'static str,
    /// More `[network]` keys for every node's configuration.
    pub extra_config: String,
    pub underlay: NetNs,
    pub api: FakeApiServer,
    pub dir: TempDir,
    pub nodes: Vec<Node>,
}

impl Node {
    pub fn config(&self, backend: &str, extra: &str) -> PathBuf {
        let path = self.cni.dir.join("agent.toml");
        std::fs::write(
            &path,
            format!(
                "[network]\nbackend = \"{backend}\"\ncluster-cidr = \"10.244.0.0/16\"\nsubnet-file = \"{}\"\nproxy-socket = \"{}\"\ncni-conf-dir = \"{}\"\ncni-bin-dirs = [\"{}\"]\n{extra}\n",
                self.cni.subnet_file().display(),
                self.cni.dir.join("proxy.sock").display(),
                self.cni.conf_dir().display(),
                self.cni.bin_dir().display()
            ),
        )
        .unwrap();
        path
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.cni.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn routes(&self) -> String {
        self.cni.ns.ip(&["route", "show", "proto", "82"])
    }
}

impl Cluster {
    pub fn new(backend: &'static str) -> Self {
        Self::with_config(backend, "")
    }

    /// Three nodes whose `[network]` sections also hold `extra` (TOML lines).
    pub fn with_config(backend: &'static str, extra: &str) -> Self {
        let underlay = NetNs::new();
        underlay.bridge("br0", Some("192.168.50.1/24"));
        let api = FakeApiServer::start(&underlay, API);
        let dir = TempDir::new();
        api.write_kubeconfig(&dir.join("kubeconfig"));
        let mut c = Self {
            backend,
            extra_config: extra.to_string(),
            underlay,
            api,
            dir,
            nodes: Vec::new(),
        };
        for i in 1..=3u8 {
            let cni = CniNode::new();
            let ip = Ipv4Addr::new(192, 168, 50, 10 + i);
            let port = format!("n{i}");
            cni.ns.veth_to(
                &c.underlay,
                ("eth0", Some(&format!("{ip}/24"))),
                (&port, None),
            );
            c.underlay.ip(&["link", "set", &port, "master", "br0"]);
            cni.ns
                .ip(&["route", "add", "default", "via", "192.168.50.1"]);
            let name = format!("node-{i}");
            c.api.put_node(json!({"metadata": {"name": name}, "spec": {"podCIDR": format!("10.244.{i}.0/24")}}));
            c.nodes.push(Node {
                name,
                cni,
                ip,
                daemon: None,
                pods: Vec::new(),
            });
        }
        for i in 0..3 {
            c.start(i);
        }
        c
    }

    pub fn start(&mut self, i: usize) {
        let kubeconfig = self.dir.join("kubeconfig");
        let n = &mut self.nodes[i];
        let cfg = n.config(self.backend, &self.extra_config);
        let log = std::fs::File::create(n.cni.dir.join("daemon.log")).unwrap();
        let mut cmd = Command::new(workspace_bin("rudder"));
        cmd.args(["agent", "network", "--node-name", &n.name])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--config")
            .arg(&cfg)
            .arg("--ipam-dir")
            .arg(n.cni.ipam_dir())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        n.daemon = Some(ChildGuard(
            n.cni
                .ns
                .spawn(&mut cmd)
                .expect("start rudder agent network"),
        ));
    }

    pub fn stop(&mut self, i: usize) {
        self.nodes[i].daemon = None;
    }

    /// Waits until `cond` holds, or fails with the daemons' logs.
    #[track_caller]
    pub fn wait(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if cond(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("--- {}:\n{}\nroutes: {}", n.name, n.log(), n.routes()))
            .collect();
        panic!("timed out waiting for {what}\n{}", logs.join("\n"));
    }

    /// Every running node has a route to every other node's pod subnet.
    pub fn converged(&self, nodes: &[usize]) -> bool {
        nodes.iter().all(|&i| {
            let r = self.nodes[i].routes();
            nodes
                .iter()
                .filter(|&&j| j != i)
                .all(|&j| r.contains(&format!("10.244.{}.0/24", j + 1)))
        })
    }

    /// Attaches a pod on node `i` through the conflist the daemon wrote.
    pub fn add_pod(&mut self, i: usize) -> Ipv4Addr {
        let n = &mut self.nodes[i];
        let list = load_conflist(&n.cni.conf_dir()).expect("the daemon wrote a CNI config");
        let rt = Runtime {
            bin_dirs: vec![n.cni.bin_dir()],
            cache_dir: n.cni.cache_dir(),
        };
        let pod = NetNs::new();
        let rc = RuntimeConf {
            container_id: format!("pod-{}-{}", i, n.pods.len()),
            netns: pod.path().display().to_string(),
            ifname: "eth0".into(),
            ..RuntimeConf::default()
        };
        let result = n
            .cni
            .ns
            .run(|| rt.add(&list, &rc))
            .unwrap_or_else(|e| panic!("ADD on {}: {e}", n.name));
        let ip: Ipv4Addr = result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        n.pods.push((pod, ip));
        ip
    }

    pub fn pod(&self, i: usize) -> (&NetNs, Ipv4Addr) {
        let (ns, ip) = &self.nodes[i].pods[0];
        (ns, *ip)
    }

    /// TCP, UDP and ICMP from the pod on node `from` to the pod on `to`,
    /// seen by the server with the client pod's own address (no NAT).
    #[track_caller]
    pub fn assert_pod_to_pod(&self, from: usize, to: usize) {
        let (src, src_ip) = self.pod(from);
        let (dst, dst_ip) = self.pod(to);
        let server = AddressServer::start_reporting_peer(dst, SocketAddrV4::new(dst_ip, 8080));
        let want = format!("{dst_ip} {src_ip}");
        let b = self.backend;
        assert_eq!(
            tcp_ask(src, SocketAddrV4::new(dst_ip, 8080))
                .unwrap_or_else(|e| panic!("{b}: TCP {src_ip} -> {dst_ip}: {e}")),
            want
        );
        assert_eq!(
            udp_ask(src, SocketAddrV4::new(dst_ip, 8080))
                .unwrap_or_else(|e| panic!("{b}: UDP {src_ip} -> {dst_ip}: {e}")),
            want
        );
        assert_eq!(
            src.ping(dst_ip, Duration::from_secs(3)),
            Some(dst_ip),
            "{b}: ICMP {src_ip} -> {dst_ip}"
        );
        drop(server);
    }
}
