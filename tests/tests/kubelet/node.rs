//! The node as a whole: Services through the eBPF proxy, static pods,
//! usage from cgroups (`kubectl top`), autoscaling on real usage.

use super::*;

/// A GET over plain HTTP inside the node's namespace; the body.
fn http_get_in(ns: &NetNs, port: u16, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    ns.run(|| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

/// Ready endpoints of a Service's EndpointSlices.
fn ready_endpoints(k: &Kubectl<'_>, svc: &str) -> usize {
    let v: Value = serde_json::from_str(&k.ok(&[
        "get",
        "endpointslices",
        "-l",
        &format!("kubernetes.io/service-name={svc}"),
        "-o",
        "json",
    ]))
    .unwrap();
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] != false)
        .count()
}

/// A client pod that asks the `web` Service for its backend's host name
/// `n` times through the ClusterIP (from the service link variables, so
/// no DNS is involved), then prints `done`.
fn web_client(k: &Kubectl<'_>, name: &str, n: u32) {
    support::node::client(
        k,
        name,
        "http://$WEB_SERVICE_HOST:$WEB_SERVICE_PORT/hostname",
        n,
    );
}

/// The `web-lb` Service's `healthCheckNodePort` as a load balancer probes
/// it on this node, once it answers `status` with `endpoints` local ones.
fn health_check(node: &Node, k: &Kubectl<'_>, status: &str, endpoints: usize) -> String {
    let port: u16 = k
        .ok(&[
            "get",
            "service",
            "web-lb",
            "-o",
            "jsonpath={.spec.healthCheckNodePort}",
        ])
        .trim()
        .parse()
        .expect("a health check node port");
    assert!((30000..=32767).contains(&port), "{port}");
    let want = format!("\"localEndpoints\": {endpoints},");
    wait(&format!("the health check to answer {status}"), 30, || {
        let answer = http_get_in(&node.ns, port, "/");
        (answer.starts_with(&format!("HTTP/1.1 {status}")) && answer.contains(&want))
            .then_some(answer)
    })
}

#[test]
fn services_reach_pods_through_the_ebpf_proxy() {
    let node = Node::start_with_proxy();
    let k = node.kubectl();
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
    ]);
    k.ok(&["expose", "deployment", "web", "--port=80"]);
    wait("2 ready endpoints of web", 90, || {
        (ready_endpoints(&k, "web") == 2).then_some(())
    });
    let backends: Vec<String> = k
        .ok(&["get", "pods", "-l", "app=web", "-o", "name"])
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_string())
        .collect();
    assert_eq!(backends.len(), 2);

    // Both backends answer through the ClusterIP, from a pod started after
    // the Service (the datapath is on its interface before it runs).
    web_client(&k, "client", 40);
    let log = wait("the client to finish", 90, || {
        let p = node.pod("client");
        (phase(&p) == "Succeeded" || phase(&p) == "Failed").then(|| k.ok(&["logs", "client"]))
    });
    let answers: Vec<&str> = log
        .lines()
        .filter(|l| !l.is_empty() && *l != "done")
        .collect();
    assert_eq!(answers.len(), 40, "{log}");
    for b in &backends {
        assert!(
            answers.iter().any(|a| a == b),
            "backend {b} never answered:\n{log}"
        );
    }
    assert!(
        answers.iter().all(|a| backends.iter().any(|b| b == a)),
        "every request is answered by a backend:\n{log}"
    );

    // Metrics: both Services (web and the apiserver's `kubernetes`), the
    // backends, and the translated connections.
    let (_, port) = node.proxy.as_ref().unwrap();
    let metrics = http_get_in(&node.ns, *port, "/metrics");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{metrics}"))
    };
    assert!(value("rudder_proxy_services") >= 2.0, "{metrics}");
    assert!(value("rudder_proxy_backends") >= 2.0, "{metrics}");
    // kube-proxy's own metrics, by its names.
    assert!(
        value("kubeproxy_sync_proxy_rules_duration_seconds_count") >= 1.0,
        "{metrics}"
    );
    assert!(
        value("kubeproxy_sync_proxy_rules_last_timestamp_seconds") > 1.7e9,
        "{metrics}"
    );
    assert!(
        value("kubeproxy_sync_proxy_rules_service_changes_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        value("kubeproxy_sync_proxy_rules_endpoint_changes_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        value(r#"rudder_proxy_packets_total{action="new_flow"}"#) >= 40.0,
        "{metrics}"
    );
    assert!(http_get_in(&node.ns, *port, "/healthz").contains("200 OK"));
    // kube-proxy's health server, as load balancers probe it: JSON with
    // the node's eligibility; the autoscaler's deletion taint makes it 503
    // while /livez stays 200.
    let healthz = http_get_in(&node.ns, 10256, "/healthz");
    assert!(healthz.starts_with("HTTP/1.1 200 OK"), "{healthz}");
    assert!(
        healthz.contains("content-type: application/json"),
        "{healthz}"
    );
    assert!(healthz.contains(", \"nodeEligible\": true}"), "{healthz}");
    k.ok(&[
        "taint",
        "node",
        &node.name,
        "ToBeDeletedByClusterAutoscaler=1700000000:NoSchedule",
    ]);
    wait("healthz 503 on a node being removed", 20, || {
        http_get_in(&node.ns, 10256, "/healthz")
            .starts_with("HTTP/1.1 503")
            .then_some(())
    });
    assert!(http_get_in(&node.ns, 10256, "/livez").starts_with("HTTP/1.1 200 OK"));
    k.ok(&[
        "taint",
        "node",
        &node.name,
        "ToBeDeletedByClusterAutoscaler-",
    ]);

    // externalTrafficPolicy Local: the apiserver allocates a health check
    // node port, and the proxy answers on it as kube-proxy does.
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: web-lb}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    );
    let answer = health_check(&node, &k, "200", 2);
    assert!(
        answer.contains("content-type: application/json")
            && answer.ends_with(
                "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"web-lb\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
            ),
        "{answer}"
    );
    // Only where it applies: refused on a ClusterIP Service, dropped when
    // the policy goes back to Cluster.
    let refused = k.fails(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Service\nmetadata: {name: web-hc}\nspec:\n  selector: {app: web}\n  healthCheckNodePort: 31999\n  ports: [{port: 80}]\n"),
    );
    assert!(
        refused.contains(
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"
        ),
        "{refused}"
    );

    // Scaled to one: only the remaining backend answers.
    k.ok(&["scale", "deployment", "web", "--replicas=1"]);
    wait("1 ready endpoint of web", 90, || {
        (ready_endpoints(&k, "web") == 1
            && k.ok(&["get", "pods", "-l", "app=web", "-o", "name"])
                .lines()
                .count()
                == 1)
            .then_some(())
    });
    let left = k.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
    let left = left.trim().trim_start_matches("pod/");
    web_client(&k, "client2", 10);
    let log = wait("client2 to finish", 90, || {
        let p = node.pod("client2");
        (phase(&p) == "Succeeded" || phase(&p) == "Failed").then(|| k.ok(&["logs", "client2"]))
    });
    let answers: Vec<&str> = log
        .lines()
        .filter(|l| !l.is_empty() && *l != "done")
        .collect();
    assert_eq!(answers, vec![left; 10], "{log}");

    // No endpoints: refused at once, not a 3 s timeout.
    k.ok(&["scale", "deployment", "web", "--replicas=0"]);
    wait("no endpoint of web", 90, || {
        (ready_endpoints(&k, "web") == 0).then_some(())
    });
    web_client(&k, "client3", 3);
    let log = wait("client3 to finish", 60, || {
        let p = node.pod("client3");
        (phase(&p) == "Succeeded" || phase(&p) == "Failed").then(|| k.ok(&["logs", "client3"]))
    });
    assert_eq!(log.matches("Connection refused").count(), 3, "{log}");
    assert!(!log.contains("Terminated"), "{log}");
    // No local endpoint: the load balancer is told to go elsewhere.
    health_check(&node, &k, "503", 0);
    k.ok(&[
        "patch",
        "service",
        "web-lb",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Cluster"}}"#,
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "service",
            "web-lb",
            "-o",
            "jsonpath={.spec.healthCheckNodePort}"
        ])
        .trim(),
        ""
    );
    let metrics = http_get_in(&node.ns, *port, "/metrics");
    assert!(
        metrics.contains(r#"rudder_proxy_packets_total{action="reject_tcp"}"#),
        "{metrics}"
    );
}

#[test]
fn static_pods_run_from_files_and_are_mirrored() {
    let node = Node::start();
    let k = node.kubectl();
    let dir = node.dir.join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = |cmd: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: kube-system\n  labels: {{tier: static}}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.28\n    command: ['sh', '-c', '{cmd}']\n"
        )
    };
    // A file that is not a pod is skipped, the others still run.
    std::fs::write(dir.join("junk.yaml"), "kind: [not a pod").unwrap();
    std::fs::write(dir.join(".hidden.yaml"), manifest("exit 1")).unwrap();
    std::fs::write(
        dir.join("web.yaml"),
        manifest("date +%s%N > /tmp/started; echo one > /tmp/which; sleep 3600"),
    )
    .unwrap();
    let name = format!("web-{}", node.name);
    let get = |name: &str| -> Option<Value> {
        let (ok, out) = support::kube::kubectl_at(
            &newest(),
            &node.server.kubeconfig(),
            &["get", "pod", "-n", "kube-system", name, "-o", "json"],
        );
        ok.then(|| serde_json::from_str(&out).unwrap())
    };
    let running = |p: &Value| {
        p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true
    };
    let mirror = wait("the mirror pod, Running", 90, || get(&name).filter(running));
    let ann = &mirror["metadata"]["annotations"];
    assert_eq!(ann["kubernetes.io/config.source"], "file", "{ann}");
    assert_eq!(
        ann["kubernetes.io/config.mirror"], ann["kubernetes.io/config.hash"],
        "{ann}"
    );
    let owner = &mirror["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str()),
        (Some("Node"), Some(node.name.as_str()))
    );
    assert!(
        !mirror.to_string().contains("kube-api-access"),
        "a mirror pod has no API credentials"
    );
    let exec = |args: &[&str]| {
        let mut a = vec!["exec", "-n", "kube-system", &name, "--"];
        a.extend_from_slice(args);
        k.ok(&a)
    };
    let started = exec(&["cat", "/tmp/started"]);
    assert_eq!(exec(&["cat", "/tmp/which"]).trim(), "one");
    let hidden = k.ok(&["get", "pods", "-A", "-o", "name"]);
    assert!(
        !hidden.contains("hidden") && !hidden.contains("junk"),
        "{hidden}"
    );

    // A mirror deleted by hand comes back; the pod itself keeps running.
    let uid = mirror["metadata"]["uid"].as_str().unwrap().to_string();
    k.ok(&["delete", "pod", "-n", "kube-system", &name, "--wait=false"]);
    wait("the mirror pod, made again", 60, || {
        get(&name).filter(|p| p["metadata"]["uid"].as_str() != Some(&uid) && running(p))
    });
    assert_eq!(exec(&["cat", "/tmp/started"]), started, "not restarted");

    // A changed file replaces the pod.
    let hash = ann["kubernetes.io/config.hash"].clone();
    std::fs::write(
        dir.join("web.yaml"),
        manifest("echo two > /tmp/which; sleep 3600"),
    )
    .unwrap();
    wait("the changed static pod, Running", 90, || {
        get(&name).filter(|p| {
            p["metadata"]["annotations"]["kubernetes.io/config.hash"] != hash && running(p)
        })
    });
    wait("the new container", 30, || {
        let (ok, out) = support::kube::kubectl_at(
            &newest(),
            &node.server.kubeconfig(),
            &[
                "exec",
                "-n",
                "kube-system",
                &name,
                "--",
                "cat",
                "/tmp/which",
            ],
        );
        (ok && out.trim() == "two").then_some(())
    });

    // A removed file stops the pod and deletes its mirror.
    std::fs::remove_file(dir.join("web.yaml")).unwrap();
    wait("the mirror pod to go", 90, || {
        get(&name).is_none().then_some(())
    });
    wait("the static pod's containers to go", 60, || {
        node.containers_of().is_empty().then_some(())
    });
}

/// A setting of the node's cgroup `rel`: the v1 controller's file, or the
/// v2 one.
fn cgroup_setting(rel: &str, v1: (&str, &str), v2: &str) -> Option<String> {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let p = if root.join("cgroup.controllers").exists() {
        root.join(rel).join(v2)
    } else {
        root.join(v1.0).join(rel).join(v1.1)
    };
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

/// Pods in the QoS tiers the kubelet makes (`--cgroups-per-qos`, the
/// cgroupfs driver): each pod's cgroup in its class's tier with the
/// kubelet's limits, its containers inside it, and the cgroup gone with
/// the pod.
#[test]
fn pods_get_cgroups_in_their_qos_tier() {
    let node = Node::start();
    let k = node.kubectl();
    let pod = |name: &str, resources: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  \
             - {{name: c, image: 'busybox:1.28', command: [sleep, '3600'], resources: {resources}}}\n"
        )
    };
    let manifests = [
        pod("guaranteed", "{limits: {cpu: 200m, memory: 64Mi}}"),
        pod(
            "burstable",
            "{requests: {cpu: 100m}, limits: {memory: 96Mi}}",
        ),
        pod("besteffort", "{}"),
    ];
    k.apply(&["apply", "-f", "-"], &manifests.join("---\n"));
    let root = node.cgroup_root.trim_start_matches('/').to_owned();
    let mut dirs = vec![];
    for (name, tier) in [
        ("guaranteed", ""),
        ("burstable", "burstable/"),
        ("besteffort", "besteffort/"),
    ] {
        let p = node.wait_pod(name, "Running", 90, |p| phase(p) == "Running");
        let uid = p["metadata"]["uid"].as_str().unwrap().to_owned();
        assert_eq!(
            p["status"]["qosClass"].as_str().unwrap().to_lowercase(),
            name
        );
        let dir = format!("{root}/kubepods/{tier}pod{uid}");
        // The container runc started is inside the pod's cgroup.
        let id = p["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .unwrap()
            .trim_start_matches("containerd://")
            .to_owned();
        let procs = cgroup_setting(
            &format!("{dir}/{id}"),
            ("memory", "cgroup.procs"),
            "cgroup.procs",
        );
        assert!(
            procs.as_deref().is_some_and(|p| !p.is_empty()),
            "{name}: no process in {dir}/{id}: {procs:?}"
        );
        dirs.push((name, dir));
    }
    let memory = |d: &str| cgroup_setting(d, ("memory", "memory.limit_in_bytes"), "memory.max");
    let quota = |d: &str| cgroup_setting(d, ("cpu", "cpu.cfs_quota_us"), "cpu.max");
    let unlimited = |v: Option<String>| {
        v.is_some_and(|v| v == "max" || v.starts_with("max ") || v == "-1" || v.len() >= 18)
    };
    let (g, b, e) = (&dirs[0].1, &dirs[1].1, &dirs[2].1);
    assert_eq!(memory(g).as_deref(), Some("67108864"));
    assert!(
        matches!(quota(g).as_deref(), Some("20000" | "20000 100000")),
        "{:?}",
        quota(g)
    );
    assert_eq!(memory(b).as_deref(), Some("100663296"));
    assert!(unlimited(quota(b)), "{:?}", quota(b));
    assert!(unlimited(memory(e)), "{:?}", memory(e));
    // The burstable tier's shares follow its one pod's 100m.
    let shares = |d: &str| cgroup_setting(d, ("cpu", "cpu.shares"), "cpu.weight");
    let tier = format!("{root}/kubepods/burstable");
    assert!(
        matches!(shares(&tier).as_deref(), Some("102" | "4")),
        "{:?}",
        shares(&tier)
    );
    assert!(
        matches!(shares(e).as_deref(), Some("2" | "1")),
        "{:?}",
        shares(e)
    );
    k.ok(&[
        "delete",
        "pod",
        "guaranteed",
        "burstable",
        "besteffort",
        "--grace-period=1",
    ]);
    for (name, dir) in &dirs {
        wait(&format!("{name}'s cgroup to go"), 60, || {
            memory(dir).is_none().then_some(())
        });
    }
    assert!(
        matches!(shares(&tier).as_deref(), Some("2" | "1")),
        "{:?}",
        shares(&tier)
    );
}

#[test]
fn kubectl_top_shows_node_and_pod_usage_from_cgroups() {
    let node = Node::start();
    let k = node.kubectl();
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: burner, labels: {app: burner}}
spec:
  containers:
  - name: spin
    image: busybox:1.28
    command: ['sh', '-c', 'while :; do :; done']
  - name: idle
    image: busybox:1.28
    command: ['sh', '-c', 'head -c 8388608 /dev/zero > /dev/shm/fill; sleep 3600']
"#,
    );
    node.wait_pod("burner", "Running", 90, |p| phase(p) == "Running");
    // A busy loop uses about a core; the idle container hardly any, and
    // the 8 MiB it wrote to /dev/shm (tmpfs) count in its working set.
    let out = wait("kubectl top pod", 60, || {
        let (ok, out) = support::kube::kubectl_at(
            &newest(),
            &node.server.kubeconfig(),
            &["top", "pod", "burner", "--containers", "--no-headers"],
        );
        // Until the idle container has filled its tmpfs file.
        let filled = out.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 4
                && f[1] == "idle"
                && f[3]
                    .trim_end_matches("Mi")
                    .parse::<u64>()
                    .is_ok_and(|m| m >= 8)
        });
        (ok && out.contains("spin") && filled).then_some(out)
    });
    let row = |c: &str| -> (u64, u64) {
        let l = out
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(c))
            .unwrap_or_else(|| panic!("no row for {c}:\n{out}"));
        let f: Vec<&str> = l.split_whitespace().collect();
        (
            f[2].trim_end_matches('m').parse().unwrap(),
            f[3].trim_end_matches("Mi").parse().unwrap(),
        )
    };
    let (spin_cpu, _) = row("spin");
    let (idle_cpu, idle_mem) = row("idle");
    assert!(spin_cpu >= 300, "a busy loop: {spin_cpu}m\n{out}");
    assert!(idle_cpu < 100, "an idle shell: {idle_cpu}m\n{out}");
    assert!(idle_mem >= 8, "8 MiB on tmpfs: {idle_mem}Mi\n{out}");
    // The node's own usage, and a label selector.
    let out = k.ok(&["top", "node", "--no-headers"]);
    assert!(out.starts_with(&node.name), "{out}");
    let out = k.ok(&["top", "pod", "-l", "app=burner", "--no-headers"]);
    assert!(out.starts_with("burner"), "{out}");
    let (ok, out) = support::kube::kubectl_at(
        &newest(),
        &node.server.kubeconfig(),
        &["top", "pod", "nope"],
    );
    assert!(!ok && out.contains("not found"), "{out}");
    k.ok(&["delete", "pod", "burner", "--grace-period=1"]);
}

/// The HPA on a real node: busy-looping pods limited to 200m CPU against a
/// 100m request run at about 200 % of it; with a 50 % target the
/// autoscaler (reading the kubelet's cgroup figures through the
/// apiserver's metrics API) takes the Deployment to its maximum.
#[test]
fn the_autoscaler_scales_a_busy_deployment_on_real_usage() {
    let node = Node::start();
    let k = node.kubectl();
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: busy}
spec:
  replicas: 1
  selector: {matchLabels: {app: busy}}
  template:
    metadata: {labels: {app: busy}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: spin
        image: busybox:1.28
        command: ['sh', '-c', 'while :; do :; done']
        resources: {requests: {cpu: 100m}, limits: {cpu: 200m}}
"#,
    );
    wait("a running busy pod", 90, || {
        k.ok(&["get", "pods", "-l", "app=busy", "--no-headers"])
            .contains("Running")
            .then_some(())
    });
    k.ok(&[
        "autoscale",
        "deployment",
        "busy",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);
    // The default 15 s sync period: one or two rounds.
    wait("the autoscaler to take busy to 3 replicas", 120, || {
        (k.ok(&[
            "get",
            "deployment",
            "busy",
            "-o",
            "jsonpath={.spec.replicas}",
        ]) == "3")
            .then_some(())
    });
    let described = k.ok(&["describe", "hpa", "busy"]);
    assert!(
        described.contains("SuccessfulRescale") && described.contains("above target"),
        "{described}"
    );
    // NAME REFERENCE cpu: NOW%/50% ...
    let (row, pct) = wait("a measured utilisation", 60, || {
        let row = k.ok(&["get", "hpa", "busy", "--no-headers"]);
        let pct: u64 = row
            .split_whitespace()
            .nth(3)
            .and_then(|t| t.split('%').next())
            .and_then(|v| v.parse().ok())?;
        Some((row, pct))
    });
    assert!(pct >= 100, "about 200 % of the request measured: {row}");
    k.ok(&["delete", "hpa", "busy"]);
    k.ok(&["delete", "deployment", "busy"]);
}
