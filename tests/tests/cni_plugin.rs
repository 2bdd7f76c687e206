//! Rudder's CNI plugin against the spec, on real namespaces: every test
//! runs the plugin binary inside a node namespace of its own, with pods as
//! namespaces of their own.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use rudder_test_harness::{CniNode, NetNs, cni::links_in, privileged_tests};
use serde_json::{Value, json};

const NETWORK: &str = "10.244.0.0/16";
const SUBNET: &str = "10.244.1.1/24";

fn node() -> CniNode {
    let n = CniNode::new();
    n.write_subnet(NETWORK, SUBNET, 1450);
    n
}

fn pod_ip(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {result}"))
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// No pod interfaces left on the node (only lo and the bridge may remain).
#[track_caller]
fn assert_no_pod_links(node: &CniNode) {
    let left: Vec<_> = node
        .links()
        .into_iter()
        .filter(|l| l != "lo" && l != "cni0")
        .collect();
    assert!(left.is_empty(), "links left on the node: {left:?}");
}

/// The MAC address of `dev` in `ns`.
#[track_caller]
fn mac_of(ns: &NetNs, dev: &str) -> String {
    let out = ns.ip(&["-o", "link", "show", "dev", dev]);
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {out}"))
        .to_string()
}

privileged_tests! {
    fn the_bridge_keeps_its_address_when_pods_go() {
        // A bridge nobody gave an address follows its lowest port's, and
        // changes when that port goes: pods that had resolved the gateway
        // then send to an address no port has, and lose every connection
        // through the node until their neighbour entry expires.
        let node = node();
        let conf = node.rudder_conf("1.1.0");
        let pods: Vec<NetNs> = (0..3).map(|_| NetNs::new()).collect();
        let mut host_ends = Vec::new();
        for (i, pod) in pods.iter().enumerate() {
            let netns = pod.path().display().to_string();
            let add = node.call("ADD", &conf, &format!("c{i}"), &netns, "eth0");
            assert!(add.success, "ADD failed: {}", add.stdout);
            host_ends.push(add.stdout["interfaces"][1]["name"].as_str().unwrap().to_string());
        }
        let bridge_mac = mac_of(&node.ns, "cni0");
        for h in &host_ends {
            assert_ne!(mac_of(&node.ns, h), bridge_mac, "the bridge is on {h}'s address");
        }
        let gw: std::net::Ipv4Addr = "10.244.1.1".parse().unwrap();
        assert_eq!(pods[0].ping(gw, Duration::from_secs(2)), Some(gw));
        let neigh = pods[0].ip(&["neigh", "show", "10.244.1.1"]);
        assert!(neigh.contains(&bridge_mac), "pod 0 resolved the gateway as {neigh}, not {bridge_mac}");
        for (i, pod) in pods.iter().enumerate().skip(1) {
            let netns = pod.path().display().to_string();
            assert!(node.call("DEL", &conf, &format!("c{i}"), &netns, "eth0").success);
            assert_eq!(mac_of(&node.ns, "cni0"), bridge_mac, "the bridge's address changed at DEL of c{i}");
        }
        assert_eq!(pods[0].ping(gw, Duration::from_secs(2)), Some(gw));

        // A bridge someone else made (or an older Rudder) has taken its
        // first port's address: the next ADD makes it keep that one.
        let node = self::node();
        node.ns.ip(&["link", "add", "cni0", "type", "bridge"]);
        let a = NetNs::new();
        let b = NetNs::new();
        let (na, nb) = (a.path().display().to_string(), b.path().display().to_string());
        let add_a = node.call("ADD", &conf, "a", &na, "eth0");
        assert!(add_a.success, "ADD failed: {}", add_a.stdout);
        let a_host = add_a.stdout["interfaces"][1]["name"].as_str().unwrap().to_string();
        let add_b = node.call("ADD", &conf, "b", &nb, "eth0");
        assert!(add_b.success, "ADD failed: {}", add_b.stdout);
        let b_host = add_b.stdout["interfaces"][1]["name"].as_str().unwrap().to_string();
        let before = mac_of(&node.ns, "cni0");
        let owner = if mac_of(&node.ns, &a_host) == before {
            ("a", &na)
        } else {
            assert_eq!(mac_of(&node.ns, &b_host), before, "the bridge took neither port's address");
            ("b", &nb)
        };
        assert!(node.call("DEL", &conf, owner.0, owner.1, "eth0").success);
        assert_eq!(mac_of(&node.ns, "cni0"), before, "the bridge followed its ports after DEL of {}", owner.0);
    }

    /// ADD asks the proxy's attach socket (when the configuration names
    /// one) before it returns, so the Service dataplane is on the pod's
    /// interface before the pod runs; without a proxy there, ADD goes on.
    fn add_asks_the_proxy_to_attach_before_it_returns() {
        use std::io::{Read as _, Write as _};
        let node = node();
        let dir = rudder_test_harness::TempDir::new();
        let socket = dir.path().join("proxy.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let asked = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 7];
            s.read_exact(&mut req).unwrap();
            // A proxy busy attaching for half a second.
            std::thread::sleep(Duration::from_millis(500));
            s.write_all(b"ok\n").unwrap();
            req
        });
        let mut conf = node.rudder_conf("1.1.0");
        conf["proxySocket"] = json!(socket);
        let pod = NetNs::new();
        let netns = pod.path().display().to_string();
        let began = std::time::Instant::now();
        let add = node.call("ADD", &conf, "asks", &netns, "eth0");
        assert!(add.success, "ADD failed: {} {}", add.stdout, add.stderr);
        assert!(began.elapsed() >= Duration::from_millis(500), "ADD returned before the proxy answered");
        assert_eq!(&asked.join().unwrap(), b"attach\n");
        // No proxy on the node: the same ADD succeeds, quietly.
        std::fs::remove_file(&socket).unwrap();
        let other = NetNs::new();
        let add = node.call("ADD", &conf, "alone", &other.path().display().to_string(), "eth0");
        assert!(add.success, "ADD failed without a proxy: {} {}", add.stdout, add.stderr);
        assert!(add.stderr.is_empty(), "stderr: {}", add.stderr);
    }

    fn add_check_del_on_real_namespaces() {
        let node = node();
        let pod = NetNs::new();
        let netns = pod.path().display().to_string();
        let conf = node.rudder_conf("1.1.0");

        let add = node.call("ADD", &conf, "ctr1", &netns, "eth0");
        assert!(add.success, "ADD failed: {} {}", add.stdout, add.stderr);
        let r = &add.stdout;
        assert_eq!(r["cniVersion"], "1.1.0");
        assert_eq!(r["ips"][0]["address"], "10.244.1.2/24");
        assert_eq!(r["ips"][0]["gateway"], "10.244.1.1");
        assert_eq!(r["ips"][0]["interface"], 2);
        assert_eq!(r["interfaces"][2]["name"], "eth0");
        assert_eq!(r["interfaces"][2]["sandbox"], netns);
        assert_eq!(r["routes"][0], json!({"dst": "0.0.0.0/0", "gw": "10.244.1.1"}));

        // What the kernel has: address, MTU, default route in the pod; the
        // host end on the bridge with hairpin on; the gateway on the bridge.
        let addr = pod.ip(&["-o", "-4", "addr", "show", "dev", "eth0"]);
        assert!(addr.contains("10.244.1.2/24"), "{addr}");
        assert!(pod.ip(&["link", "show", "eth0"]).contains("mtu 1450"));
        assert!(pod.ip(&["route", "show", "default"]).contains("via 10.244.1.1 dev eth0"));
        let host_end = r["interfaces"][1]["name"].as_str().unwrap();
        let detail = node.ns.ip(&["-d", "link", "show", host_end]);
        assert!(detail.contains("master cni0") && detail.contains("hairpin on"), "{detail}");
        assert!(node.ns.ip(&["-o", "-4", "addr", "show", "dev", "cni0"]).contains("10.244.1.1/24"));
        assert_eq!(
            pod.ping("10.244.1.1".parse().unwrap(), Duration::from_secs(2)),
            Some("10.244.1.1".parse().unwrap()),
            "the pod cannot reach its gateway"
        );

        // CHECK with the result as prevResult.
        let mut check_conf = conf.clone();
        check_conf["prevResult"] = r.clone();
        let check = node.call("CHECK", &check_conf, "ctr1", &netns, "eth0");
        assert!(check.success, "CHECK failed: {}", check.stdout);
        // CHECK notices an attachment that drifted from its result.
        pod.ip(&["addr", "flush", "dev", "eth0"]);
        let check = node.call("CHECK", &check_conf, "ctr1", &netns, "eth0");
        assert_eq!(check.code(), 102);
        assert!(check.stdout["msg"].as_str().unwrap().contains("10.244.1.2"));

        // ADD of an interface that exists is refused and changes nothing.
        let again = node.call("ADD", &conf, "ctr1b", &netns, "eth0");
        assert_eq!(again.code(), 7, "{}", again.stdout);
        assert_eq!(node.allocations("cbr0").len(), 1);

        // DEL removes both ends and the address; repeated DEL succeeds.
        let del = node.call("DEL", &conf, "ctr1", &netns, "eth0");
        assert!(del.success, "DEL failed: {}", del.stdout);
        assert_eq!(del.stdout, Value::Null, "DEL prints nothing");
        assert!(!links_in(&pod).contains(&"eth0".to_string()));
        assert_no_pod_links(&node);
        assert!(node.allocations("cbr0").is_empty());
        assert!(node.call("DEL", &conf, "ctr1", &netns, "eth0").success);

        // Round robin: the next pod gets the next address, not the freed one.
        let add2 = node.call("ADD", &conf, "ctr2", &netns, "eth0");
        assert!(add2.success, "{}", add2.stdout);
        assert_eq!(pod_ip(&add2.stdout), "10.244.1.3");

        // DEL after the namespace is gone still releases everything.
        drop(pod);
        let del = node.call("DEL", &conf, "ctr2", &netns, "eth0");
        assert!(del.success, "DEL without netns failed: {}", del.stdout);
        assert!(node.allocations("cbr0").is_empty());
        assert_no_pod_links(&node);
    }

    fn cni_0_4_0_results_carry_the_ip_version() {
        let node = node();
        let pod = NetNs::new();
        let netns = pod.path().display().to_string();
        let add = node.call("ADD", &node.rudder_conf("0.4.0"), "c", &netns, "eth0");
        assert!(add.success, "{}", add.stdout);
        assert_eq!(add.stdout["cniVersion"], "0.4.0");
        assert_eq!(add.stdout["ips"][0]["version"], "4");
        assert!(node.call("DEL", &node.rudder_conf("0.4.0"), "c", &netns, "eth0").success);
    }

    fn malformed_input_gets_the_right_code_and_leaves_nothing() {
        let node = node();
        let pod = NetNs::new();
        let netns = pod.path().display().to_string();
        let good = node.rudder_conf("1.0.0");
        let env = |id: &'static str| {
            vec![("CNI_CONTAINERID", id), ("CNI_IFNAME", "eth0")]
        };
        type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u64);
        let cases: Vec<Case<'_>> = vec![
            ("empty stdin", env("a"), b"".to_vec(), 6),
            ("not JSON", env("a"), b"{\"cniVersion\":".to_vec(), 6),
            ("unsupported version", env("a"),
                json!({"cniVersion": "0.2.0", "name": "cbr0", "type": "rudder"}).to_string().into_bytes(), 1),
            ("no cniVersion", env("a"), json!({"name": "cbr0", "type": "rudder"}).to_string().into_bytes(), 7),
            ("bad mtu", env("a"), {
                let mut c = good.clone(); c["mtu"] = json!(10); c.to_string().into_bytes()
            }, 7),
            ("bad bridge name", env("a"), {
                let mut c = good.clone(); c["bridge"] = json!("much-too-long-bridge"); c.to_string().into_bytes()
            }, 7),
            ("name with a slash", env("a"), {
                let mut c = good.clone(); c["name"] = json!("../etc"); c.to_string().into_bytes()
            }, 7),
            ("no CNI_CONTAINERID", vec![("CNI_IFNAME", "eth0")], good.to_string().into_bytes(), 4),
            ("bad CNI_CONTAINERID", env("-x"), good.to_string().into_bytes(), 4),
            ("no CNI_NETNS", env("a"), good.to_string().into_bytes(), 4),
        ];
        for (what, mut e, stdin, code) in cases {
            if what != "no CNI_NETNS" {
                e.push(("CNI_NETNS", &netns));
            }
            let call = node.call_raw("rudder", "ADD", &e, &stdin);
            assert_eq!(call.code(), code, "{what}: {}", call.stdout);
            assert!(call.stdout["msg"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
            assert!(call.stdout["cniVersion"].is_string(), "{what}");
        }
        // A netns that does not exist, an unknown command, no command.
        let call = node.call("ADD", &good, "a", "/run/netns/rdt-does-not-exist", "eth0");
        assert_eq!(call.code(), 4);
        assert!(call.stdout["msg"].as_str().unwrap().contains("rdt-does-not-exist"));
        let call = node.call_raw("rudder", "FROB", &env("a"), good.to_string().as_bytes());
        assert_eq!(call.code(), 4);

        // No subnet file yet: "try again later", naming the file.
        std::fs::remove_file(node.subnet_file()).unwrap();
        let call = node.call("ADD", &good, "a", &netns, "eth0");
        assert_eq!(call.code(), 11);
        assert!(call.stdout["msg"].as_str().unwrap().contains("subnet.env"), "{}", call.stdout);
        // A corrupt one: invalid network config.
        std::fs::write(node.subnet_file(), "RUDDER_NETWORK=10.244.0.0/16\n").unwrap();
        assert_eq!(node.call("ADD", &good, "a", &netns, "eth0").code(), 7);

        // Nothing was made by any of them (not even the bridge).
        assert!(node.allocations("cbr0").is_empty());
        assert_eq!(node.links(), ["lo"]);
        assert!(!links_in(&pod).contains(&"eth0".to_string()));

        // A bridge that carries an address from another pod CIDR (the
        // node's CIDR changed) is refused by name, with nothing made.
        node.write_subnet(NETWORK, SUBNET, 1450);
        node.ns.bridge("cni0", Some("10.244.9.1/24"));
        let call = node.call("ADD", &good, "a", &netns, "eth0");
        assert_eq!(call.code(), 7);
        let msg = call.stdout["msg"].as_str().unwrap();
        assert!(msg.contains("cni0") && msg.contains("10.244.9.1/24") && msg.contains("10.244.1.0/24"), "{msg}");
        assert!(node.allocations("cbr0").is_empty());
        assert_no_pod_links(&node);
    }

    fn version_status_and_gc() {
        let node = node();
        // VERSION: everything we speak, in the caller's version.
        let v = node.call_raw("rudder", "VERSION", &[], br#"{"cniVersion":"1.0.0"}"#);
        assert!(v.success);
        assert_eq!(v.stdout["cniVersion"], "1.0.0");
        let supported: Vec<_> = v.stdout["supportedVersions"].as_array().unwrap().iter()
            .map(|s| s.as_str().unwrap().to_string()).collect();
        for want in ["0.4.0", "1.0.0", "1.1.0"] {
            assert!(supported.contains(&want.to_string()), "{supported:?}");
        }

        // STATUS: ready with a subnet file, 50 without.
        let conf = node.rudder_conf("1.1.0");
        let s = node.call_raw("rudder", "STATUS", &[], conf.to_string().as_bytes());
        assert!(s.success, "{}", s.stdout);
        std::fs::rename(node.subnet_file(), node.dir.join("away")).unwrap();
        let s = node.call_raw("rudder", "STATUS", &[], conf.to_string().as_bytes());
        assert_eq!(s.code(), 50);
        std::fs::rename(node.dir.join("away"), node.subnet_file()).unwrap();

        // GC keeps the valid attachments and removes everything else.
        let pods: Vec<NetNs> = (0..3).map(|_| NetNs::new()).collect();
        let mut results = Vec::new();
        for (i, p) in pods.iter().enumerate() {
            let r = node.call("ADD", &conf, &format!("c{i}"), &p.path().display().to_string(), "eth0");
            assert!(r.success, "{}", r.stdout);
            results.push(r.stdout);
        }
        let mut gc = conf.clone();
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
        let r = node.call_raw("rudder", "GC", &[], gc.to_string().as_bytes());
        assert!(r.success, "GC failed: {}", r.stdout);
        let left = node.allocations("cbr0");
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].1, "c1\r\neth0");
        let kept = results[1]["interfaces"][1]["name"].as_str().unwrap().to_string();
        let host_ends: Vec<_> = node.links().into_iter().filter(|l| l.starts_with("rdr")).collect();
        assert_eq!(host_ends, [kept]);
        // GC with the spec-v1.1.0 key name works too, and keeps nothing.
        let mut gc = conf.clone();
        gc["cni.dev/attachments"] = json!([]);
        assert!(node.call_raw("rudder", "GC", &[], gc.to_string().as_bytes()).success);
        assert!(node.allocations("cbr0").is_empty());
        assert_no_pod_links(&node);
    }

    /// 1,000 ADD/DEL cycles from 8 concurrent callers, ~1 in 8 ADDs killed
    /// part-way (then DEL'd, as a runtime must): no address is ever held
    /// twice, and nothing is left at the end.
    fn concurrent_cycles_with_kills_leak_nothing() {
        let node = Arc::new(node());
        let conf = node.rudder_conf("1.0.0").to_string();
        let live: Arc<Mutex<HashSet<String>>> = Arc::default();
        let killed = Arc::new(std::sync::atomic::AtomicU32::new(0));
        std::thread::scope(|s| {
            for caller in 0..8u64 {
                let (node, conf, live, killed) = (node.clone(), conf.clone(), live.clone(), killed.clone());
                s.spawn(move || {
                    let pod = NetNs::new();
                    let netns = pod.path().display().to_string();
                    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (caller << 32) ^ u64::from(std::process::id());
                    let mut next = move || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
                    for cycle in 0..125 {
                        let id = format!("c{caller}-{cycle}");
                        let env = [("CNI_CONTAINERID", id.as_str()), ("CNI_NETNS", netns.as_str()), ("CNI_IFNAME", "eth0")];
                        if next() % 8 == 0 {
                            // Kill the plugin after 0-4 ms, wherever it is.
                            let mut cmd = std::process::Command::new(node.bin_dir().join("rudder"));
                            cmd.env_clear().env("CNI_COMMAND", "ADD").envs(env)
                                .stdin(std::process::Stdio::piped())
                                .stdout(std::process::Stdio::null())
                                .stderr(std::process::Stdio::null());
                            let mut child = node.ns.spawn(&mut cmd).unwrap();
                            {
                                use std::io::Write as _;
                                let _ = child.stdin.take().unwrap().write_all(conf.as_bytes());
                            }
                            std::thread::sleep(Duration::from_micros(next() % 4000));
                            let _ = child.kill();
                            let _ = child.wait();
                            killed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        } else {
                            let add = node.call_raw("rudder", "ADD", &env, conf.as_bytes());
                            assert!(add.success, "{id}: ADD failed: {}", add.stdout);
                            let ip = pod_ip(&add.stdout);
                            assert!(live.lock().unwrap().insert(ip.clone()), "{ip} handed out twice");
                            std::thread::sleep(Duration::from_micros(next() % 2000));
                            live.lock().unwrap().remove(&ip);
                        }
                        let del = node.call_raw("rudder", "DEL", &env, conf.as_bytes());
                        assert!(del.success, "{id}: DEL failed: {}", del.stdout);
                        assert!(!links_in(&pod).contains(&"eth0".to_string()), "{id}: eth0 left in the pod");
                    }
                });
            }
        });
        assert!(killed.load(std::sync::atomic::Ordering::Relaxed) > 50, "too few kills to mean anything");
        assert!(node.allocations("cbr0").is_empty(), "leaked: {:?}", node.allocations("cbr0"));
        assert_no_pod_links(&node);
        let stray: Vec<_> = std::fs::read_dir(node.ipam_dir().join("cbr0")).unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
            .collect();
        assert!(stray.is_empty(), "stray IPAM files: {stray:?}");
    }
}

/// The two configurations a kubelet could be given: Rudder's plugin, or the
/// reference bridge + host-local, each followed by portmap and bandwidth.
fn conflists(node: &CniNode) -> [(&'static str, Value); 2] {
    let chained = [
        json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
    ];
    let rudder =
        json!({"type": "rudder", "subnetFile": node.subnet_file(), "dataDir": node.ipam_dir()});
    let reference = json!({
        "type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
        "hairpinMode": true, "mtu": 1450,
        "ipam": {"type": "host-local", "dataDir": node.ipam_dir(),
                 "ranges": [[{"subnet": "10.244.1.0/24"}]]}
    });
    let list = |first: Value| {
        json!({
            "cniVersion": "1.0.0", "name": "cbr0",
            "plugins": [first, chained[0].clone(), chained[1].clone()]
        })
    };
    [
        ("rudder", list(rudder)),
        ("bridge+host-local", list(reference)),
    ]
}

privileged_tests! {
    /// The same runtime code (what the kubelet uses) drives either
    /// configuration from the conf dir; only the file changes. Both chain
    /// portmap and bandwidth, give pods working addresses, and clean up.
    fn reference_and_rudder_plugins_swap_in_the_conf_dir() {
        use rudder_cni::runtime::{Runtime, RuntimeConf, load_conflist};
        use rudder_test_harness::{AddressServer, tcp_ask};
        for pick in [1, 0] {
            let node = node();
            let (which, list) = conflists(&node)[pick].clone();
            std::fs::write(node.conf_dir().join("10-cbr0.conflist"), list.to_string()).unwrap();
            let conf = load_conflist(&node.conf_dir()).unwrap();
            let rt = Runtime { bin_dirs: vec![node.bin_dir()], cache_dir: node.cache_dir() };
            let pods = [NetNs::new(), NetNs::new()];
            let rc = |i: usize| {
                let mut rc = RuntimeConf {
                    container_id: format!("pod{i}"),
                    netns: pods[i].path().display().to_string(),
                    ifname: "eth0".into(),
                    args: vec![("K8S_POD_NAMESPACE".into(), "default".into()), ("K8S_POD_NAME".into(), format!("p{i}"))],
                    ..RuntimeConf::default()
                };
                if i == 0 {
                    rc.capability_args.insert("portMappings".into(),
                        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]));
                    rc.capability_args.insert("bandwidth".into(),
                        json!({"ingressRate": 100_000_000, "ingressBurst": 1_000_000, "egressRate": 100_000_000, "egressBurst": 1_000_000}));
                }
                rc
            };
            let results: Vec<Value> = (0..2)
                .map(|i| node.ns.run(|| rt.add(&conf, &rc(i))).unwrap_or_else(|e| panic!("{which}: ADD pod{i}: {e}")))
                .collect();
            let ip = |i: usize| -> std::net::Ipv4Addr { pod_ip(&results[i]).parse().unwrap() };
            // CHECK of the first plugin through the runtime (Debian's portmap
            // 1.1.1 fails its own CHECK on IPv4-only pods, with either first
            // plugin: "could not check ipv6 dnat").
            let mut first = conf.clone();
            first.plugins.truncate(1);
            node.ns.run(|| rt.check(&first, &rc(0))).unwrap_or_else(|e| panic!("{which}: CHECK: {e}"));

            // Pod to pod, no NAT; host port to pod through portmap.
            let srv = AddressServer::start_reporting_peer(&pods[0], std::net::SocketAddrV4::new(ip(0), 80));
            let answer = tcp_ask(&pods[1], std::net::SocketAddrV4::new(ip(0), 80)).unwrap();
            assert_eq!(answer, format!("{} {}", ip(0), ip(1)), "{which}: pod to pod");
            let answer = tcp_ask(&node.ns, "10.244.1.1:8080".parse().unwrap())
                .unwrap_or_else(|e| panic!("{which}: hostPort 8080: {e}"));
            assert!(answer.starts_with(&ip(0).to_string()), "{which}: hostPort answered {answer}");
            // bandwidth put its qdisc on the pod's host end.
            let host_end = results[0]["interfaces"].as_array().unwrap().iter()
                .find(|i| i.get("sandbox").is_none() && i["name"] != "cni0")
                .and_then(|i| i["name"].as_str()).unwrap().to_string();
            let qdisc = node.ns.run(|| std::process::Command::new("tc").args(["qdisc", "show", "dev", &host_end]).output()).unwrap();
            assert!(String::from_utf8_lossy(&qdisc.stdout).contains("tbf"), "{which}: no bandwidth qdisc on {host_end}");

            drop(srv); // While its address still exists (the drop connects to it).
            for i in 0..2 {
                node.ns.run(|| rt.del(&conf, &rc(i))).unwrap_or_else(|e| panic!("{which}: DEL pod{i}: {e}"));
            }
            assert!(node.allocations("cbr0").is_empty(), "{which}: {:?}", node.allocations("cbr0"));
            let left: Vec<_> = node.links().into_iter().filter(|l| l != "lo" && l != "cni0" && !l.starts_with("bwp")).collect();
            assert!(left.is_empty(), "{which}: links left: {left:?}");
            let nat = node.ns.run(|| std::process::Command::new("iptables-save").args(["-t", "nat"]).output()).unwrap();
            let nat = String::from_utf8_lossy(&nat.stdout);
            assert!(!nat.contains(&ip(0).to_string()), "{which}: portmap rules left: {nat}");
        }
    }
}
