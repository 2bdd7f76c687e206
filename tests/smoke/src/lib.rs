//! The smoke checks: a running cluster checked the way a user first tries
//! one (workloads across nodes, Services from pods and from the machine,
//! DNS, a DaemonSet, a lost node, logs/exec/port-forward, a rolling update
//! under load, Jobs and CronJobs, `kubectl top`), each a named test of
//! this crate's `smoke` test target (`tests/smoke.rs`), which `cargo xtask
//! smoke` runs against the cluster `cargo xtask up` started.
//!
//! The cluster is named by the environment: `RUDDER_SMOKE_KUBECONFIG` (an
//! admin kubeconfig) and, for the check that freezes a node's agent,
//! `RUDDER_SMOKE_RUN_DIR` (where `up` keeps its pid files). The checks work
//! in a namespace of their own, deleted afterwards whatever happened.
//! Most use `web`, a Deployment behind a NodePort Service that the first
//! check rolls out (and that a check run alone rolls out first).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use rudder_test_harness::Kubectl;

mod workloads;

/// Asks `f` every 500 ms until it gives a value; fails after `secs`.
fn poll<T>(what: &str, secs: u64, f: &dyn Fn() -> Option<T>) -> anyhow::Result<T> {
    rudder_test_harness::poll(what, Duration::from_secs(secs), f).context("smoke")
}

/// Asks `f` every 500 ms until it holds; fails after `secs`.
fn until(what: &str, secs: u64, f: &dyn Fn() -> bool) -> anyhow::Result<()> {
    poll(what, secs, &|| f().then_some(()))
}

/// What the checks share: the cluster, the namespace they work in, and
/// what earlier checks made.
#[derive(Debug)]
pub struct Ctx {
    kc: Kubectl,
    /// Where `cargo xtask up` keeps its pid files, if known.
    run_dir: Option<PathBuf>,
    ns: String,
    /// (name, InternalIP) of every node.
    nodes: Vec<(String, String)>,
    /// web's replicas: one per node, at least two.
    replicas: usize,
    /// web's pods, once rolled out.
    pods: Vec<String>,
}

impl Ctx {
    /// The cluster the environment names, its nodes read, and a namespace
    /// of the checks' own made in it.
    pub fn from_env() -> anyhow::Result<Self> {
        let kubeconfig = std::env::var_os("RUDDER_SMOKE_KUBECONFIG")
            .map(PathBuf::from)
            .context(
                "RUDDER_SMOKE_KUBECONFIG is not set: the smoke checks run against a cluster \
             (`cargo xtask up`, then `cargo xtask smoke`)",
            )?;
        if !kubeconfig.exists() {
            bail!(
                "no cluster: {} is missing (run `cargo xtask up` first)",
                kubeconfig.display()
            );
        }
        let ns = format!(
            "smoke-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs()
        );
        let mut cx = Ctx {
            kc: Kubectl::new(kubeconfig),
            run_dir: std::env::var_os("RUDDER_SMOKE_RUN_DIR").map(PathBuf::from),
            ns,
            nodes: vec![],
            replicas: 0,
            pods: vec![],
        };
        cx.nodes = cx
            .run(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.addresses[?(@.type==\"InternalIP\")].address}{\"\\n\"}{end}",
            ])?
            .lines()
            .filter_map(|l| {
                let (n, ip) = l.split_once(' ')?;
                Some((n.to_string(), ip.trim().to_string()))
            })
            .collect();
        if cx.nodes.is_empty() {
            bail!("smoke: the cluster has no nodes");
        }
        cx.replicas = cx.nodes.len().max(2);
        cx.run(&["create", "namespace", &cx.ns])?;
        println!(
            "smoke checks in namespace {} on {} node(s)",
            cx.ns,
            cx.nodes.len()
        );
        Ok(cx)
    }

    /// Deletes the checks' namespace (and all they made in it).
    pub fn clean_up(&self) -> anyhow::Result<()> {
        self.run(&[
            "delete",
            "namespace",
            &self.ns,
            "--wait=true",
            "--timeout=120s",
        ])?;
        println!("namespace {} deleted", self.ns);
        Ok(())
    }

    /// Whether a check applies to this cluster.
    pub fn applies(&self, a: Applies) -> bool {
        match a {
            Applies::Always => true,
            Applies::OneNode => !self.multi(),
            Applies::SeveralNodes => self.multi(),
        }
    }

    /// Runs check `name`, rolling `web` out first if the check needs it
    /// and no earlier check did.
    pub fn check(&mut self, name: &str) -> anyhow::Result<()> {
        let Some(check) = CHECKS.iter().find(|c| c.name == name) else {
            bail!("no smoke check named {name}");
        };
        if !self.applies(check.applies) {
            bail!(
                "{name} applies to {:?} clusters; this one has {} node(s)",
                check.applies,
                self.nodes.len()
            );
        }
        if name != WEB && self.pods.is_empty() {
            web_rolls_out(self).context("rolling out web, which this check uses")?;
        }
        (check.run)(self)
    }

    /// kubectl with these arguments; its output, or its error.
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        Ok(self.kc.run(args)?)
    }

    fn multi(&self) -> bool {
        self.nodes.len() > 1
    }

    /// A field of web's `kind` (its Deployment or Service), by JSONPath;
    /// `None` if it cannot be read.
    fn web(&self, kind: &str, jsonpath: &str) -> Option<String> {
        self.kc.output(&[
            "-n",
            &self.ns,
            "get",
            kind,
            "web",
            "-o",
            &format!("jsonpath={jsonpath}"),
        ])
    }

    /// A field of each of web's endpoints, by JSONPath over its
    /// EndpointSlices; empty if they cannot be read.
    fn web_endpoints(&self, jsonpath: &str) -> String {
        self.kc
            .output(&[
                "-n",
                &self.ns,
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                &format!("jsonpath={jsonpath}"),
            ])
            .unwrap_or_default()
    }

    /// A pod's phase (empty if it cannot be read).
    fn phase(&self, pod: &str) -> String {
        self.kc
            .output(&[
                "-n",
                &self.ns,
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.phase}",
            ])
            .unwrap_or_default()
    }

    fn finished(&self, pod: &str) -> bool {
        matches!(self.phase(pod).as_str(), "Succeeded" | "Failed")
    }

    /// The pid of one of `up`'s processes (its pid file, a live process).
    fn pid_of(&self, name: &str) -> Option<i32> {
        rudder_test_harness::live_pid(&self.run_dir.as_ref()?.join(format!("{name}.pid")))
    }
}

/// The clusters a check applies to; on others its test is reported
/// ignored, not passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applies {
    Always,
    /// This machine is the cluster's one node.
    OneNode,
    /// The cluster has several nodes.
    SeveralNodes,
}

/// One named check.
#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub applies: Applies,
    run: fn(&mut Ctx) -> anyhow::Result<()>,
}

const fn check(
    name: &'static str,
    applies: Applies,
    run: fn(&mut Ctx) -> anyhow::Result<()>,
) -> Check {
    Check { name, applies, run }
}

/// The check that makes `web`.
const WEB: &str = "web-rolls-out";

/// The checks, in order: later ones use what earlier ones made (web, its
/// Service); the rollout replaces web's pods, so it comes after the checks
/// that name them.
pub const CHECKS: &[Check] = &[
    check(WEB, Applies::Always, web_rolls_out),
    check("web-spread-over-nodes", Applies::SeveralNodes, web_spread),
    check("services-and-dns-from-a-pod", Applies::Always, from_a_pod),
    check(
        "clusterip-from-this-node",
        Applies::OneNode,
        clusterip_from_this_node,
    ),
    check(
        "nodeport-on-every-node",
        Applies::Always,
        nodeport_on_every_node,
    ),
    check(
        "daemonset-on-every-node",
        Applies::Always,
        daemonset_on_every_node,
    ),
    check("node-stops", Applies::SeveralNodes, node_stops),
    check(
        "logs-exec-port-forward",
        Applies::Always,
        logs_exec_port_forward,
    ),
    check(
        "rollout-and-rollback-under-load",
        Applies::Always,
        workloads::rollout_under_load,
    ),
    check(
        "session-affinity",
        Applies::Always,
        workloads::session_affinity,
    ),
    check(
        "init-container-waits-for-dns",
        Applies::Always,
        workloads::init_container_waits_for_dns,
    ),
    check(
        "job-and-cronjob",
        Applies::Always,
        workloads::job_and_cronjob,
    ),
    check("kubectl-top", Applies::Always, workloads::kubectl_top),
];

/// A Deployment of nginx (with a short preStop sleep, as users add so a
/// pod leaves the endpoints before it stops answering) behind a NodePort
/// Service: rolled out, its endpoints published.
fn web_rolls_out(cx: &mut Ctx) -> anyhow::Result<()> {
    let (kc, ns) = (&cx.kc, cx.ns.as_str());
    let run = |a: &[&str]| cx.run(a);
    let replicas = cx.replicas;
    run(&[
        "-n",
        ns,
        "create",
        "deployment",
        "web",
        "--image=nginx",
        &format!("--replicas={replicas}"),
    ])?;
    // As users do: a short preStop sleep, so that a pod leaves the
    // Service's endpoints before it stops answering.
    run(&[
        "-n",
        ns,
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/template/spec/containers/0/lifecycle","value":{"preStop":{"sleep":{"seconds":2}}}}]"#,
    ])?;
    run(&[
        "-n",
        ns,
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--type=NodePort",
    ])?;
    // The patch above rolls the first pods over: wait until only the
    // patched template's pods are left, or the checks below would
    // meet pods that are about to go (or miss ones still to come).
    let want = format!("{replicas} {replicas} {replicas}");
    poll(
        &format!("{replicas} ready pods of web, rolled out"),
        180,
        &|| {
            cx.web(
                "deployment",
                "{.metadata.generation} {.status.observedGeneration} \
                 {.status.updatedReplicas} {.status.readyReplicas} {.status.replicas}",
            )
            .filter(|r| {
                let f: Vec<&str> = r.split_whitespace().collect();
                f.len() == 5 && f[0] == f[1] && f[2..].join(" ") == want
            })
        },
    )?;
    let pods: Vec<String> = poll(&format!("web to have {replicas} pods"), 60, &|| {
        kc.output(&["-n", ns, "get", "pods", "-l", "app=web", "-o", "name"])
            .filter(|o| o.lines().count() == replicas)
    })?
    .lines()
    .map(|l| l.trim_start_matches("pod/").to_string())
    .collect();
    println!("deployment web: {replicas}/{replicas} ready");
    poll("the endpoints of web", 60, &|| {
        Some(cx.web_endpoints("{.items[*].endpoints[*].addresses[0]}"))
            .filter(|e| e.split_whitespace().count() == replicas)
    })?;
    cx.pods = pods;
    Ok(())
}

/// On several nodes, web's pods are spread over them.
fn web_spread(cx: &mut Ctx) -> anyhow::Result<()> {
    let ns = cx.ns.as_str();
    let run = |a: &[&str]| cx.run(a);
    let replicas = cx.replicas;
    let on = run(&[
        "-n",
        ns,
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ])?;
    let mut used: Vec<&str> = on.split_whitespace().collect();
    used.sort_unstable();
    used.dedup();
    if used.len() < 2 {
        bail!("smoke: web's {replicas} pods are all on {used:?}, not spread");
    }
    println!("web's pods on nodes {used:?}");
    Ok(())
}

/// From a pod: the kubernetes Service reaches the apiserver, the cluster
/// DNS resolves web, and the ClusterIP is answered by web's pods only.
fn from_a_pod(cx: &mut Ctx) -> anyhow::Result<()> {
    let (kc, ns) = (&cx.kc, cx.ns.as_str());
    let run = |a: &[&str]| cx.run(a);
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://$WEB_SERVICE_HOST/hostname; echo; done; \
         nc -w 3 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT </dev/null && echo apiserver-reachable; \
         nslookup web.$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace).svc.cluster.local >/dev/null \
         && echo dns-ok";
    run(&[
        "-n",
        ns,
        "run",
        "client",
        "--image=busybox:1.28",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        script,
    ])?;
    poll("the client pod to finish", 90, &|| {
        kc.output(&[
            "-n",
            ns,
            "get",
            "pod",
            "client",
            "-o",
            "jsonpath={.status.phase}",
        ])
        .filter(|p| p == "Succeeded" || p == "Failed")
    })?;
    let log = run(&["-n", ns, "logs", "client"])?;
    if !log.contains("apiserver-reachable") {
        bail!(
            "smoke: the pod could not reach the apiserver through the kubernetes Service:\n{log}"
        );
    }
    println!("kubernetes Service from a pod: reachable");
    if !log.contains("dns-ok") {
        bail!(
            "smoke: the pod could not resolve web.{ns}.svc.cluster.local through the cluster DNS:\n{log}"
        );
    }
    println!("cluster DNS from a pod: web.{ns}.svc.cluster.local resolved");
    let answers: Vec<&str> = log
        .lines()
        .filter(|l| !l.is_empty() && *l != "apiserver-reachable" && *l != "dns-ok")
        .collect();
    if answers.len() != 10 || !answers.iter().all(|a| cx.pods.iter().any(|p| p == a)) {
        bail!(
            "smoke: the client pod's requests to the ClusterIP were not all answered by web's pods:\n{log}"
        );
    }
    println!("ClusterIP from a pod: 10/10 answered by {:?}", cx.pods);
    Ok(())
}

/// The ClusterIP from this machine, where it is the cluster's one node.
fn clusterip_from_this_node(cx: &mut Ctx) -> anyhow::Result<()> {
    let ip = cx
        .web("service", "{.spec.clusterIP}")
        .context("smoke: web's ClusterIP")?;
    let answer = http_get(&format!("{}:80", ip.trim()), "/hostname")
        .with_context(|| format!("smoke: GET http://{}/hostname from this node", ip.trim()))?;
    if !cx.pods.iter().any(|p| *p == answer.trim()) {
        bail!("smoke: the ClusterIP from this node answered {answer:?}");
    }
    println!("ClusterIP from this node: answered by {}", answer.trim());
    Ok(())
}

/// web's NodePort on every node, from this machine.
fn nodeport_on_every_node(cx: &mut Ctx) -> anyhow::Result<()> {
    let node_port = cx
        .web("service", "{.spec.ports[0].nodePort}")
        .context("smoke: web's node port")?;
    for (node, node_ip) in &cx.nodes {
        let front = format!("{node_ip}:{}", node_port.trim());
        let answer = http_get(&front, "/hostname").with_context(|| {
            format!("smoke: GET http://{front}/hostname (the NodePort of {node}) from this machine")
        })?;
        if !cx.pods.iter().any(|p| *p == answer.trim()) {
            bail!("smoke: the NodePort {front} answered {answer:?}");
        }
        println!(
            "NodePort {front} ({node}) from this machine: answered by {}",
            answer.trim()
        );
    }
    Ok(())
}

/// A DaemonSet: one ready pod on every node.
fn daemonset_on_every_node(cx: &mut Ctx) -> anyhow::Result<()> {
    let (kc, ns) = (&cx.kc, cx.ns.as_str());
    let run = |a: &[&str]| cx.run(a);
    // A DaemonSet: one pod on every node.
    run(&[
        "-n",
        ns,
        "create",
        "-f",
        &write_temp(
            &format!("ds-{ns}.yaml"),
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: every}\nspec:\n  selector: {matchLabels: {app: every}}\n  template:\n    metadata: {labels: {app: every}}\n    spec:\n      containers: [{name: c, image: busybox:1.28, command: [sleep, '3600']}]\n",
        )?,
    ])?;
    let _ = std::fs::remove_file(std::env::temp_dir().join(format!("ds-{ns}.yaml")));
    poll(
        &format!("the DaemonSet's pod on each of {} nodes", cx.nodes.len()),
        120,
        &|| {
            kc.output(&[
                "-n",
                ns,
                "get",
                "daemonset",
                "every",
                "-o",
                "jsonpath={.status.numberReady}",
            ])
            .filter(|r| r.trim() == cx.nodes.len().to_string())
        },
    )?;
    let on = run(&[
        "-n",
        ns,
        "get",
        "pods",
        "-l",
        "app=every",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ])?;
    let mut on: Vec<&str> = on.split_whitespace().collect();
    on.sort_unstable();
    let mut want: Vec<&str> = cx.nodes.iter().map(|(n, _)| n.as_str()).collect();
    want.sort_unstable();
    if on != want {
        bail!("smoke: the DaemonSet's pods are on {on:?}, not one on each of {want:?}");
    }
    println!(
        "DaemonSet: one ready pod on each of {} nodes",
        cx.nodes.len()
    );
    Ok(())
}

/// `kubectl logs`, `exec` and `port-forward` on one of web's pods.
fn logs_exec_port_forward(cx: &mut Ctx) -> anyhow::Result<()> {
    let (kc, ns) = (&cx.kc, cx.ns.as_str());
    let run = |a: &[&str]| cx.run(a);
    let log = run(&["-n", ns, "logs", &format!("pod/{}", cx.pods[0])])?;
    println!("kubectl logs: {} lines", log.lines().count());
    let host = run(&["-n", ns, "exec", &cx.pods[0], "--", "hostname"])?;
    if host.trim() != cx.pods[0] {
        bail!(
            "smoke: kubectl exec hostname in {} printed {host:?}",
            cx.pods[0]
        );
    }
    println!("kubectl exec: hostname {}", host.trim());
    let answer = port_forward_get(kc.kubeconfig(), ns, &cx.pods[0], 80, "/hostname")?;
    if answer.trim() != cx.pods[0] {
        bail!(
            "smoke: kubectl port-forward to {} answered {answer:?}",
            cx.pods[0]
        );
    }
    println!("kubectl port-forward: answered by {}", answer.trim());
    Ok(())
}

/// A node that stops (its agent frozen with SIGSTOP, so its Lease is no
/// longer renewed while its containers run on): the node goes NotReady, is
/// tainted, and a pod tolerating that for 2 s is made again on another
/// node. Thawed (SIGCONT), the node is Ready again and the evicted pod goes.
/// (Several nodes only: on one there is nowhere to move to.)
fn node_stops(cx: &mut Ctx) -> anyhow::Result<()> {
    let (kc, ns) = (&cx.kc, cx.ns.as_str());
    let get = |args: &[&str]| -> anyhow::Result<String> {
        kc.output(args)
            .with_context(|| format!("smoke: kubectl {}", args.join(" ")))
    };
    let path = write_temp(
        &format!("mover-{ns}.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: mover}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: mover}}\n  template:\n    metadata: {labels: {app: mover}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      tolerations:\n      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}\n      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}\n      containers: [{name: c, image: busybox:1.28, command: [sleep, '3600']}]\n",
    )?;
    get(&["-n", ns, "create", "-f", &path])?;
    let _ = std::fs::remove_file(&path);
    let ready_pods = || -> Vec<(String, String)> {
        kc.output(&[
            "-n",
            ns,
            "get",
            "pods",
            "-l",
            "app=mover",
            "-o",
            "jsonpath={range .items[?(@.status.containerStatuses[0].ready==true)]}{.metadata.name} {.spec.nodeName}{\"\\n\"}{end}",
        ])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (p, n) = l.split_once(' ')?;
            Some((p.to_string(), n.to_string()))
        })
        .collect()
    };
    until("the mover pod to be ready", 90, &|| ready_pods().len() == 1)?;
    let (first, node) = ready_pods().remove(0);
    let agent = format!("{node}-agent");
    let pid = cx.pid_of(&agent).with_context(|| {
        format!("smoke: no running agent of {node} (its pid file under RUDDER_SMOKE_RUN_DIR)")
    })?;
    let ready_of = |n: &str| {
        kc.output(&[
            "get",
            "node",
            n,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .unwrap_or_default()
    };
    // The ready condition of web's endpoints on a node.
    let web_on = |n: &str| -> Vec<String> {
        cx.web_endpoints(
            "{range .items[*].endpoints[*]}{.nodeName} {.conditions.ready}{\"\\n\"}{end}",
        )
        .lines()
        .filter_map(|l| {
            let (on, ready) = l.split_once(' ')?;
            (on == n).then(|| ready.trim().to_string())
        })
        .collect()
    };
    let started = Instant::now();
    // SAFETY: kill(2) on the pid of our own agent, from its pid file.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let result = (|| -> anyhow::Result<()> {
        until(&format!("node {node} to be NotReady"), 120, &|| {
            ready_of(&node).trim() != "True"
        })?;
        println!(
            "node {node} stopped: {} after {} s",
            ready_of(&node).trim(),
            started.elapsed().as_secs()
        );
        until(
            "the mover pod to be made again on another node",
            120,
            &|| ready_pods().iter().any(|(p, n)| *p != first && *n != node),
        )?;
        let moved = ready_pods();
        println!(
            "its pod {first} made again elsewhere: {moved:?} after {} s",
            started.elapsed().as_secs()
        );
        // web's pod there is not evicted yet (300 s), but it is no longer
        // Ready: the Service stops sending to it.
        until(
            &format!("web's endpoint on {node} to be not ready"),
            60,
            &|| web_on(&node).iter().all(|r| r == "false") && !web_on(&node).is_empty(),
        )?;
        println!("web's endpoint on {node}: not ready while the node is lost");
        Ok(())
    })();
    // SAFETY: as above; the agent is thawed whatever happened.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    result?;
    until(&format!("node {node} to be Ready again"), 90, &|| {
        ready_of(&node).trim() == "True"
    })?;
    until("the evicted pod to go", 90, &|| {
        !get(&["-n", ns, "get", "pods", "-o", "name"])
            .unwrap_or_default()
            .contains(&first)
    })?;
    until(
        &format!("web's endpoint on {node} to be ready again"),
        90,
        &|| {
            let on = web_on(&node);
            !on.is_empty() && on.iter().all(|r| r == "true")
        },
    )?;
    println!(
        "node {node} Ready again; web's pod there ready again; the evicted pod {first} is gone"
    );
    Ok(())
}

/// `kubectl port-forward` to `pod`'s `port` on a local port kubectl picks,
/// one GET through it; kubectl is stopped (by pid) afterwards.
fn port_forward_get(
    kubeconfig: &Path,
    ns: &str,
    pod: &str,
    port: u16,
    path: &str,
) -> anyhow::Result<String> {
    use std::io::BufRead as _;
    let mut child = Command::new("kubectl")
        .args([
            "-n",
            ns,
            "port-forward",
            &format!("pod/{pod}"),
            &format!(":{port}"),
        ])
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running kubectl port-forward")?;
    let result = (|| -> anyhow::Result<String> {
        let out = child.stdout.take().context("kubectl's stdout")?;
        // "Forwarding from 127.0.0.1:43567 -> 80". The rest of its output
        // is read to the end: a closed pipe would kill kubectl (SIGPIPE).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                    let _ = tx.send(rest.split_whitespace().next().map(str::to_string));
                }
            }
        });
        let local = rx
            .recv_timeout(Duration::from_secs(30))
            .ok()
            .flatten()
            .context("kubectl port-forward printed no local port within 30 s")?;
        http_get(&format!("127.0.0.1:{local}"), path).with_context(|| {
            format!("GET http://127.0.0.1:{local}{path} (forwarded to {pod}:{port})")
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    result.context("smoke: kubectl port-forward")
}

/// Writes `text` to a file under the temporary directory; its path.
fn write_temp(name: &str, text: &str) -> anyhow::Result<String> {
    let p = std::env::temp_dir().join(name);
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(p.display().to_string())
}

/// A plain HTTP/1.1 GET; the body.
fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}
