//! The netfilter proxies (`rudder_proxy::nftables` and
//! `rudder_proxy::netfilter`, for nodes where the eBPF programs cannot
//! load) with real sockets, the real `nft` and the real iptables in both
//! flavours: a node namespace routing between pod namespaces (each on its
//! own veth and /24), rules rendered from the same `ServiceSpec`s the eBPF
//! dataplane takes, and clients and servers in the pods; then the proxy
//! daemon in each mode, following a real `rudder server`.

mod support;

use std::{
    collections::BTreeSet,
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use rudder_proxy::{
    ServiceSpec,
    netfilter::{self, RenderConfig},
    nftables,
};
use rudder_test_harness::{AddressServer, LoopbackRelay, NetNs, privileged_tests, tcp_ask};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The proxy's metrics, on the node namespace's loopback.
const METRICS: std::net::SocketAddr =
    std::net::SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10249));

/// Which rules serve.
#[derive(Debug, Clone, Copy)]
enum Rules {
    /// iptables with this binary.
    Iptables(&'static str),
    Nftables,
}

/// A node namespace and `n` pods: pod `i` is 10.244.(i+1).2 behind the
/// node's 10.244.(i+1).1.
struct Node {
    pods: Vec<NetNs>,
    ns: NetNs,
    rules: Rules,
    /// The nftables table as last written: later syncs change only what
    /// differs, as the daemon's do.
    written: std::cell::RefCell<Option<nftables::Ruleset>>,
    /// Likewise for the iptables rules.
    written_iptables: std::cell::RefCell<Option<netfilter::Tables>>,
}

impl Node {
    fn new(n: u8, rules: Rules) -> Self {
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
        Self {
            pods,
            ns,
            rules,
            written: std::cell::RefCell::default(),
            written_iptables: std::cell::RefCell::default(),
        }
    }

    fn ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, i as u8 + 1, 2)
    }

    fn sync(&self, specs: &[ServiceSpec]) {
        let cfg = RenderConfig {
            cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0), 16)),
        };
        match self.rules {
            Rules::Iptables(bin) => {
                let tables = netfilter::render(specs, &cfg);
                let prev = self.written_iptables.take();
                self.ns
                    .run(|| netfilter::apply(bin, prev.as_ref(), &tables))
                    .unwrap();
                self.written_iptables.replace(Some(tables));
            }
            Rules::Nftables => {
                let r = nftables::render(specs, &cfg);
                let prev = self.written.take();
                self.ns.run(|| nftables::apply(prev.as_ref(), &r)).unwrap();
                self.written.replace(Some(r));
            }
        }
    }

    /// What a restarted proxy knows of the rules it wrote: nothing.
    fn forget(&self) {
        self.written.take();
        self.written_iptables.take();
    }

    /// Every rule of the node's namespace.
    fn saved(&self) -> String {
        let out = match self.rules {
            Rules::Iptables(bin) => self.ns.exec(&format!("{bin}-save"), &[]),
            Rules::Nftables => self.ns.exec("nft", &["list", "ruleset"]),
        };
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn remove(&self) {
        match self.rules {
            Rules::Iptables(bin) => self.ns.run(|| netfilter::remove(bin)).unwrap(),
            Rules::Nftables => self.ns.run(nftables::remove).unwrap(),
        }
    }

    /// A rule of someone else's, which removing ours must leave: its text
    /// as [`Node::saved`] shows it.
    fn foreign_rule(&self) -> &'static str {
        let status = match self.rules {
            Rules::Iptables(bin) => self.ns.run(|| {
                std::process::Command::new(bin)
                    .args(["-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-j", "RETURN"])
                    .status()
                    .unwrap()
            }),
            Rules::Nftables => self.ns.exec(
                "nft",
                &["add table ip other; add chain ip other c { type filter hook input priority 0; }; add rule ip other c ip saddr 192.0.2.0/24 accept"],
            ).status,
        };
        assert!(status.success());
        match self.rules {
            Rules::Iptables(_) => "-A POSTROUTING -s 192.0.2.0/24 -j RETURN",
            Rules::Nftables => "ip saddr 192.0.2.0/24 accept",
        }
    }

    /// Whether [`Node::saved`] shows anything of ours.
    fn has_ours(&self) -> bool {
        let saved = self.saved();
        match self.rules {
            Rules::Iptables(_) => saved.contains("RUDDER-"),
            Rules::Nftables => saved.contains(nftables::TABLE),
        }
    }
}

fn spec(addr: Ipv4Addr, port: u16, backends: &[usize], affinity: Option<u32>) -> ServiceSpec {
    let mut s = ServiceSpec::tcp(addr, port, backends.iter().map(|i| (Node::ip(*i), 8080)));
    s.affinity_timeout = affinity;
    s
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

fn services_through_netfilter(rules: Rules) {
    let node = Node::new(4, rules);
    let _servers = servers(&node, &[1, 2, 3]);
    let vip = SocketAddrV4::new(VIP, 80);
    // The first write of many service ports (more than one step of the
    // nftables mode's build-up), the measured one last in address order;
    // then spread over every endpoint, replies un-NATed on the way back.
    let many: Vec<ServiceSpec> = (0..1500u16)
        .map(|i| {
            let [a, b] = i.to_be_bytes();
            spec(Ipv4Addr::new(10, 95, a, b), 80, &[3], None)
        })
        .chain([spec(VIP, 80, &[1, 2], None)])
        .collect();
    node.sync(&many);
    assert!(
        answers(&node, vip, 5)
            .iter()
            .all(|a| a != &Node::ip(3).to_string())
    );
    node.sync(&[spec(VIP, 80, &[1, 2], None)]);
    let got = answers(&node, vip, 40);
    let want: BTreeSet<String> = [1, 2].iter().map(|i| Node::ip(*i).to_string()).collect();
    assert_eq!(got, want, "{rules:?}: ClusterIP spread");
    // An endpoint change replaces the rules: only the new set answers.
    node.sync(&[spec(VIP, 80, &[3], None)]);
    assert_eq!(
        answers(&node, vip, 5),
        BTreeSet::from([Node::ip(3).to_string()])
    );
    // A restarted proxy remembers nothing: its first write replaces what
    // the last one left (its chains for endpoint 3 included).
    node.forget();
    node.sync(&[spec(VIP, 80, &[2], None)]);
    assert_eq!(
        answers(&node, vip, 5),
        BTreeSet::from([Node::ip(2).to_string()])
    );
    let stale = format!("{}:8080", Node::ip(3));
    assert!(
        !node.saved().contains(&stale),
        "{rules:?}:\n{}",
        node.saved()
    );
    // ClientIP affinity: one client, one backend.
    node.sync(&[spec(VIP, 80, &[1, 2, 3], Some(10_800))]);
    let chosen = answers(&node, vip, 20);
    assert_eq!(chosen.len(), 1, "{rules:?}: affinity");
    // Syncs for other Services keep the client on its endpoint (a lost
    // affinity record would pick again: the same one three times running
    // has odds of 1 in 27).
    for other in 11..14 {
        node.sync(&[
            spec(VIP, 80, &[1, 2, 3], Some(10_800)),
            spec(Ipv4Addr::new(10, 96, 0, other), 80, &[1], None),
        ]);
        assert_eq!(answers(&node, vip, 3), chosen, "{rules:?}: affinity kept");
    }
    // No endpoints: refused at once, not left to time out.
    node.sync(&[spec(VIP, 80, &[], None)]);
    let started = Instant::now();
    let e = tcp_ask(&node.pods[0], vip).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{rules:?}: {e}");
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
        "{rules:?}: NodePort"
    );
    // The ClusterIP from a pod of the cluster keeps the pod's address.
    let answer = tcp_ask(&node.pods[0], vip).unwrap();
    assert_eq!(answer, format!("{} {}", Node::ip(1), Node::ip(0)));
    // Removed: nothing of ours is left, and other rules stay.
    let foreign = node.foreign_rule();
    node.remove();
    let saved = node.saved();
    assert!(!node.has_ours(), "{rules:?}:\n{saved}");
    assert!(saved.contains(foreign), "{rules:?}:\n{saved}");
    assert!(tcp_ask(&node.pods[0], vip).is_err());
}

/// A selectorless Service on `VIP:80` and its EndpointSlice, to pods 1
/// and 2 on 8080.
const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: "", port: 8080, protocol: TCP}]
endpoints:
- addresses: ["10.244.2.2"]
  conditions: {ready: true}
- addresses: ["10.244.3.2"]
  conditions: {ready: true}
"#;

/// A selectorless LoadBalancer Service whose traffic stays on the node
/// (kube-proxy serves its health check node port), and a slice with an
/// endpoint on this node (`node-1`).
const LB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: default}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  ports: [{port: 81, targetPort: 8080, protocol: TCP}]
"#;
const LB_LOCAL_SLICE: &str = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: lb-1
  namespace: default
  labels: {kubernetes.io/service-name: lb}
addressType: IPv4
ports: [{name: "", port: 8080, protocol: TCP}]
endpoints:
- addresses: ["10.244.2.2"]
  conditions: {ready: true}
  nodeName: node-1
"#;

/// The proxy daemon in the mode of `rules`, in the node namespace, until
/// `stop` fires.
async fn proxy_daemon(
    rules: Rules,
    kubeconfig: std::path::PathBuf,
    metrics: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let mut cfg = rudder_proxy::daemon::ProxyConfig::new("node-1");
    cfg.mode = match rules {
        Rules::Iptables(bin) => rudder_proxy::daemon::ProxyMode::Iptables(bin.into()),
        Rules::Nftables => rudder_proxy::daemon::ProxyMode::Nftables,
    };
    cfg.cluster_cidr = Some((Ipv4Addr::new(10, 244, 0, 0), 16));
    cfg.metrics_addr = Some(metrics);
    cfg.healthz_addr = None;
    let (_rescan, rx) = rudder_host::Rescan::channel();
    tokio::select! {
        r = rudder_proxy::daemon::run(client, cfg, rx) => panic!("the proxy stopped: {r:?}"),
        _ = stop => {}
    }
}

/// The proxy daemon in the mode of `rules` against a real `rudder
/// server`: a Service answers from its endpoints, the metrics name the
/// mode, a `healthCheckNodePort` counts the node's endpoints, the
/// endpoints' removal makes the Service refuse, and nothing of ours is left
/// after.
fn the_proxy_daemon_serves(rules: Rules, mode: &str) {
    let server = support::kube::Server::start();
    let k = support::kube::Kubectl {
        bin: support::kube::newest(),
        server: &server,
    };
    let node = Node::new(3, rules);
    let _servers = servers(&node, &[1, 2]);
    // The apiserver on the host's loopback, reachable from the node's.
    let url = server.url();
    let port: u16 = url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let _relay = LoopbackRelay::start(&node.ns, &[port]);
    k.apply(&["apply", "-f", "-"], WEB);
    let vip = SocketAddrV4::new(VIP, 80);
    let (stop, stopped) = tokio::sync::oneshot::channel();
    std::thread::scope(|s| {
        let daemon = s.spawn(|| {
            node.ns.run(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(proxy_daemon(rules, server.kubeconfig(), METRICS, stopped));
            });
        });
        rudder_test_harness::until("the Service to answer", Duration::from_secs(30), || {
            tcp_ask(&node.pods[0], vip).is_ok()
        })
        .unwrap();
        let want: BTreeSet<String> = [1, 2].iter().map(|i| Node::ip(*i).to_string()).collect();
        assert_eq!(answers(&node, vip, 30), want);
        // kube-proxy's metrics, and the mode, on the metrics port.
        let metrics = node.ns.run(|| {
            use std::io::{Read as _, Write as _};
            let mut c = std::net::TcpStream::connect(METRICS).unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            out
        });
        assert!(
            metrics.contains(&format!("rudder_proxy_mode{{mode=\"{mode}\"}} 1")),
            "{metrics}"
        );
        assert!(
            metrics.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds"),
            "{metrics}"
        );
        let ports: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("rudder_proxy_services "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_default();
        assert!(ports >= 1.0, "{metrics}");
        // kube-proxy's healthCheckNodePort of a LoadBalancer Service with
        // externalTrafficPolicy Local: 503 without local endpoints, 200
        // once this node has one.
        k.apply(&["apply", "-f", "-"], LB);
        let hc: u16 = k
            .ok(&[
                "get",
                "service",
                "lb",
                "-o",
                "jsonpath={.spec.healthCheckNodePort}",
            ])
            .trim()
            .parse()
            .unwrap();
        let health = |want: &str| {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], hc));
            let what = format!("health check port {hc} to say {want}");
            rudder_test_harness::until(&what, Duration::from_secs(30), || {
                node.ns.run(|| {
                    use std::io::{Read as _, Write as _};
                    let Ok(mut c) = std::net::TcpStream::connect(addr) else {
                        return false;
                    };
                    let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                    let mut out = String::new();
                    let _ = c.read_to_string(&mut out);
                    out.starts_with(&format!("HTTP/1.1 {want}")) && out.contains("\"name\": \"lb\"")
                })
            })
            .unwrap();
        };
        health("503");
        k.apply(&["apply", "-f", "-"], LB_LOCAL_SLICE);
        health("200");
        // The endpoints go: refused, from the rules the watch rewrote.
        k.ok(&["delete", "endpointslice", "web-1"]);
        rudder_test_harness::until("the Service to refuse", Duration::from_secs(30), || {
            tcp_ask(&node.pods[0], vip).is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
        })
        .unwrap();
        stop.send(()).unwrap();
        daemon.join().unwrap();
    });
    node.remove();
    assert!(!node.has_ours(), "{}", node.saved());
}

privileged_tests! {
    fn the_proxy_daemon_serves_services_with_iptables_rules() {
        the_proxy_daemon_serves(Rules::Iptables("iptables"), "iptables");
    }

    fn the_proxy_daemon_serves_services_with_nftables_rules() {
        the_proxy_daemon_serves(Rules::Nftables, "nftables");
    }

    fn services_through_nftables() {
        services_through_netfilter(Rules::Nftables);
    }

    fn services_through_iptables_nft() {
        services_through_netfilter(Rules::Iptables("iptables-nft"));
    }

    fn services_through_iptables_legacy() {
        services_through_netfilter(Rules::Iptables("iptables-legacy"));
    }
}
