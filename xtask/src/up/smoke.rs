//! `cargo xtask smoke`: a running local cluster checked the way a user
//! first tries one (workloads across nodes, Services from pods and from the
//! machine, DNS, a DaemonSet, a lost node, logs/exec/port-forward, a
//! rolling update under load, Jobs and CronJobs, `kubectl top`); where the
//! agent is a DaemonSet, its own rolling update under load and, with
//! `--remove-agent`, its removal (`up/daemonset.rs`).

use std::io::Write as _;

use super::*;

/// Asks `f` every 500 ms until it gives a value; fails after `secs`.
fn poll<T>(what: &str, secs: u64, f: &dyn Fn() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("smoke: {what} not within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Asks `f` every 500 ms until it holds; fails after `secs`.
fn until(what: &str, secs: u64, f: &dyn Fn() -> bool) -> anyhow::Result<()> {
    poll(what, secs, &|| f().then_some(()))
}

/// `cargo xtask smoke`: the first things a user does on the cluster `up`
/// started, checked: a Deployment behind a ClusterIP, reached from a pod
/// and from this node, `kubectl logs`, `exec` and `port-forward`, and a
/// namespace deleted with what it holds. Leaves nothing behind.
pub(crate) fn smoke(root: &Path, data_dir: PathBuf, remove_agent: bool) -> anyhow::Result<()> {
    let l = Layout::new(data_dir, 0);
    let kc = Kubectl(l.data.join("admin-local.kubeconfig"));
    if !kc.0.exists() {
        bail!(
            "no cluster: run `cargo xtask up` first ({} is missing)",
            kc.0.display()
        );
    }
    let ns = format!(
        "smoke-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &kc.0)
            .stdin(Stdio::null())
            .output()
            .context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    util::step(&format!("smoke test in namespace {ns}"));
    // (name, InternalIP) of every node.
    let nodes: Vec<(String, String)> = run(&[
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
    if nodes.is_empty() {
        bail!("smoke: the cluster has no nodes");
    }
    let multi = nodes.len() > 1;
    let replicas = nodes.len().max(2);
    run(&["create", "namespace", &ns])?;
    let result = (|| -> anyhow::Result<()> {
        run(&[
            "-n",
            &ns,
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
            &ns,
            "patch",
            "deployment",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/spec/template/spec/containers/0/lifecycle","value":{"preStop":{"sleep":{"seconds":2}}}}]"#,
        ])?;
        run(&[
            "-n",
            &ns,
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
                kc.output(&[
                    "-n",
                    &ns,
                    "get",
                    "deployment",
                    "web",
                    "-o",
                    "jsonpath={.metadata.generation} {.status.observedGeneration} \
                 {.status.updatedReplicas} {.status.readyReplicas} {.status.replicas}",
                ])
                .filter(|r| {
                    let f: Vec<&str> = r.split_whitespace().collect();
                    f.len() == 5 && f[0] == f[1] && f[2..].join(" ") == want
                })
            },
        )?;
        let pods: Vec<String> = poll(&format!("web to have {replicas} pods"), 60, &|| {
            kc.output(&["-n", &ns, "get", "pods", "-l", "app=web", "-o", "name"])
                .filter(|o| o.lines().count() == replicas)
        })?
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_string())
        .collect();
        println!("deployment web: {replicas}/{replicas} ready");
        poll("the endpoints of web", 60, &|| {
            kc.output(&[
                "-n",
                &ns,
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                "jsonpath={.items[*].endpoints[*].addresses[0]}",
            ])
            .filter(|e| e.split_whitespace().count() == replicas)
        })?;
        if multi {
            let on = run(&[
                "-n",
                &ns,
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
        }
        let script = "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://$WEB_SERVICE_HOST/hostname; echo; done; \
             nc -w 3 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT </dev/null && echo apiserver-reachable; \
             nslookup web.$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace).svc.cluster.local >/dev/null \
             && echo dns-ok";
        run(&[
            "-n",
            &ns,
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
                &ns,
                "get",
                "pod",
                "client",
                "-o",
                "jsonpath={.status.phase}",
            ])
            .filter(|p| p == "Succeeded" || p == "Failed")
        })?;
        let log = run(&["-n", &ns, "logs", "client"])?;
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
        if answers.len() != 10 || !answers.iter().all(|a| pods.iter().any(|p| p == a)) {
            bail!(
                "smoke: the client pod's requests to the ClusterIP were not all answered by web's pods:\n{log}"
            );
        }
        println!("ClusterIP from a pod: 10/10 answered by {pods:?}");
        let ip = run(&[
            "-n",
            &ns,
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])?;
        if multi {
            println!("ClusterIP from this machine: not a node of this cluster, not tried");
        } else {
            let answer =
                http_get(&format!("{}:80", ip.trim()), "/hostname").with_context(|| {
                    format!("smoke: GET http://{}/hostname from this node", ip.trim())
                })?;
            if !pods.iter().any(|p| *p == answer.trim()) {
                bail!("smoke: the ClusterIP from this node answered {answer:?}");
            }
            println!("ClusterIP from this node: answered by {}", answer.trim());
        }
        let node_port = run(&[
            "-n",
            &ns,
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])?;
        for (node, node_ip) in &nodes {
            let front = format!("{node_ip}:{}", node_port.trim());
            let answer = http_get(&front, "/hostname").with_context(|| {
                format!(
                    "smoke: GET http://{front}/hostname (the NodePort of {node}) from this machine"
                )
            })?;
            if !pods.iter().any(|p| *p == answer.trim()) {
                bail!("smoke: the NodePort {front} answered {answer:?}");
            }
            println!(
                "NodePort {front} ({node}) from this machine: answered by {}",
                answer.trim()
            );
        }
        // A DaemonSet: one pod on every node.
        run(&[
            "-n",
            &ns,
            "create",
            "-f",
            &write_temp(
                &format!("ds-{ns}.yaml"),
                "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: every}\nspec:\n  selector: {matchLabels: {app: every}}\n  template:\n    metadata: {labels: {app: every}}\n    spec:\n      containers: [{name: c, image: busybox:1.28, command: [sleep, '3600']}]\n",
            )?,
        ])?;
        let _ = std::fs::remove_file(std::env::temp_dir().join(format!("ds-{ns}.yaml")));
        poll(
            &format!("the DaemonSet's pod on each of {} nodes", nodes.len()),
            120,
            &|| {
                kc.output(&[
                    "-n",
                    &ns,
                    "get",
                    "daemonset",
                    "every",
                    "-o",
                    "jsonpath={.status.numberReady}",
                ])
                .filter(|r| r.trim() == nodes.len().to_string())
            },
        )?;
        let on = run(&[
            "-n",
            &ns,
            "get",
            "pods",
            "-l",
            "app=every",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ])?;
        let mut on: Vec<&str> = on.split_whitespace().collect();
        on.sort_unstable();
        let mut want: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
        want.sort_unstable();
        if on != want {
            bail!("smoke: the DaemonSet's pods are on {on:?}, not one on each of {want:?}");
        }
        println!("DaemonSet: one ready pod on each of {} nodes", nodes.len());
        if multi {
            node_stops(&l, &kc, &ns)?;
        }
        let log = run(&["-n", &ns, "logs", &format!("pod/{}", pods[0])])?;
        println!("kubectl logs: {} lines", log.lines().count());
        let host = run(&["-n", &ns, "exec", &pods[0], "--", "hostname"])?;
        if host.trim() != pods[0] {
            bail!(
                "smoke: kubectl exec hostname in {} printed {host:?}",
                pods[0]
            );
        }
        println!("kubectl exec: hostname {}", host.trim());
        let answer = port_forward_get(&kc.0, &ns, &pods[0], 80, "/hostname")?;
        if answer.trim() != pods[0] {
            bail!(
                "smoke: kubectl port-forward to {} answered {answer:?}",
                pods[0]
            );
        }
        println!("kubectl port-forward: answered by {}", answer.trim());
        // Last: the rollout replaces web's pods.
        workload_flows(&kc, &ns, &run)?;
        Ok(())
    })();
    run(&["delete", "namespace", &ns, "--wait=true", "--timeout=120s"])?;
    result?;
    println!("smoke test passed; namespace {ns} deleted");
    if l.daemonset {
        let nodes = nodes_of(&l);
        daemonset::rolling_update(&kc, &nodes)?;
        if remove_agent {
            let rudder = util::target_dir(root).join("release/rudder");
            daemonset::remove_agent(&rudder, &kc, &nodes)?;
        }
    } else if remove_agent {
        bail!("--remove-agent: this cluster's agent is not a DaemonSet (`up --agent-daemonset`)");
    }
    Ok(())
}

/// The flows of the Kubernetes material users learn from, on `web`: a
/// rolling update and a rollback under a client's requests, a Service with ClientIP session affinity, an init
/// container waiting on `nslookup` of a Service made later, a Job, a
/// CronJob and `kubectl top`.
fn workload_flows(
    kc: &Kubectl,
    ns: &str,
    run: &dyn Fn(&[&str]) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    let phase = |pod: &str| {
        kc.output(&[
            "-n",
            ns,
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.phase}",
        ])
        .unwrap_or_default()
    };
    let finished = |pod: &str| matches!(phase(pod).as_str(), "Succeeded" | "Failed");

    // Rolling update and rollback, while a client in a pod requests the
    // Service every 50 ms (3 s timeout each): no request may fail.
    let loader = "while [ ! -e /tmp/stop ]; do \
         if timeout 3 wget -qO- http://$WEB_SERVICE_HOST/hostname >/tmp/o 2>/dev/null; \
         then echo \"ok $(cat /tmp/o)\"; else echo \"fail $?\"; fi; sleep 0.05; done; echo done";
    run(&[
        "-n",
        ns,
        "run",
        "loader",
        "--image=busybox:1.28",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        loader,
    ])?;
    let answered = || {
        kc.output(&["-n", ns, "logs", "loader"])
            .is_some_and(|l| l.lines().any(|l| l.starts_with("ok ")))
    };
    until("the load client's first answer", 90, &answered)?;
    let revision = || {
        kc.output(&[
            "-n",
            ns,
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .unwrap_or_default()
    };
    run(&[
        "-n",
        ns,
        "set",
        "image",
        "deployment/web",
        "nginx=nginx:1.25",
    ])?;
    run(&[
        "-n",
        ns,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=180s",
    ])?;
    let updated = revision();
    run(&["-n", ns, "rollout", "undo", "deployment/web"])?;
    run(&[
        "-n",
        ns,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=180s",
    ])?;
    let back = revision();
    if updated != "nginx:1.25" || back != "nginx" {
        bail!("smoke: rolled to {updated:?} and back to {back:?}");
    }
    // The last old pod has just gone: a few seconds more, for what breaks
    // only after a pod's network is torn down.
    std::thread::sleep(Duration::from_secs(5));
    run(&["-n", ns, "exec", "loader", "--", "touch", "/tmp/stop"])?;
    until("the load client to finish", 30, &|| finished("loader"))?;
    let log = run(&["-n", ns, "logs", "loader"])?;
    let ok = log.lines().filter(|l| l.starts_with("ok ")).count();
    let failed: Vec<&str> = log.lines().filter(|l| l.starts_with("fail")).collect();
    if !failed.is_empty() || !log.lines().any(|l| l == "done") {
        bail!(
            "smoke: during the rollout and rollback, {} of {} requests failed:\n{log}",
            failed.len(),
            ok + failed.len()
        );
    }
    let servers: std::collections::BTreeSet<&str> =
        log.lines().filter_map(|l| l.strip_prefix("ok ")).collect();
    println!(
        "rolling update to nginx:1.25 and rollback to nginx: {ok}/{ok} requests answered \
         throughout, by {} pods",
        servers.len()
    );

    // Session affinity: one client, one backend.
    run(&[
        "-n",
        ns,
        "expose",
        "deployment",
        "web",
        "--name=sticky",
        "--port=80",
        "--session-affinity=ClientIP",
    ])?;
    run(&[
        "-n",
        ns,
        "run",
        "sticky-client",
        "--image=busybox:1.28",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://$STICKY_SERVICE_HOST/hostname; echo; done",
    ])?;
    until("the sticky client to finish", 90, &|| {
        finished("sticky-client")
    })?;
    let log = run(&["-n", ns, "logs", "sticky-client"])?;
    let mut answers: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    let n = answers.len();
    answers.dedup();
    if n != 10 || answers.len() != 1 {
        bail!("smoke: the ClientIP-affine Service answered {n} requests from {answers:?}");
    }
    println!("sessionAffinity ClientIP: 10/10 answered by {}", answers[0]);

    // An init container waiting on nslookup of a Service not made yet.
    let path = write_temp(
        &format!("waiter-{ns}.yaml"),
        // As the Kubernetes documentation's init-container example writes
        // it: the full name, the namespace read from the service-account
        // volume. (A short name fails with the test image's busybox, 1.35,
        // whose nslookup exits 1 if any search domain answers NXDOMAIN,
        // and whose shell runs that applet whatever else is on PATH.)
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: waiter}}\nspec:\n  restartPolicy: Never\n  initContainers:\n  - {{name: wait, image: busybox:1.28, command: ['sh', '-c', 'until nslookup late.$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace).svc.cluster.local; do sleep 2; done']}}\n  containers:\n  - {{name: main, image: busybox:1.28, command: ['sh', '-c', 'nslookup late.{ns}.svc.cluster.local']}}\n"
        ),
    )?;
    run(&["-n", ns, "create", "-f", &path])?;
    let _ = std::fs::remove_file(&path);
    std::thread::sleep(Duration::from_secs(5));
    let waiting = run(&["-n", ns, "get", "pod", "waiter", "--no-headers"])?;
    if !waiting.contains("Init:0/1") {
        bail!("smoke: the waiter pod is not waiting in its init container: {waiting}");
    }
    run(&[
        "-n",
        ns,
        "expose",
        "deployment",
        "web",
        "--name=late",
        "--port=80",
    ])?;
    until("the waiter pod to finish", 90, &|| finished("waiter"))?;
    if phase("waiter") != "Succeeded" {
        bail!(
            "smoke: the waiter pod failed: {}",
            run(&["-n", ns, "logs", "waiter", "--all-containers"])?
        );
    }
    println!(
        "init container waiting on `nslookup late.<namespace>.svc.cluster.local`: went on once the Service existed"
    );

    // A Job and a CronJob.
    run(&[
        "-n",
        ns,
        "create",
        "job",
        "hello",
        "--image=busybox:1.28",
        "--",
        "sh",
        "-c",
        "echo hello from a job",
    ])?;
    until("the Job to complete", 90, &|| {
        kc.output(&[
            "-n",
            ns,
            "get",
            "job",
            "hello",
            "-o",
            "jsonpath={.status.succeeded}",
        ])
        .is_some_and(|s| s.trim() == "1")
    })?;
    let log = run(&["-n", ns, "logs", "job/hello"])?;
    if !log.contains("hello from a job") {
        bail!("smoke: the Job's log: {log:?}");
    }
    println!("Job: completed, logged {:?}", log.trim());
    run(&[
        "-n",
        ns,
        "create",
        "cronjob",
        "tick",
        "--image=busybox:1.28",
        "--schedule=* * * * *",
        "--",
        "sh",
        "-c",
        "echo tick",
    ])?;
    until("a Job of the CronJob to complete", 150, &|| {
        kc.output(&[
            "-n",
            ns,
            "get",
            "jobs",
            "-o",
            "jsonpath={range .items[?(@.metadata.ownerReferences[0].name==\"tick\")]}{.status.succeeded}{end}",
        ])
        .is_some_and(|s| s.contains('1'))
    })?;
    println!("CronJob: fired on schedule, its Job completed");

    // kubectl top, from the kubelets' resource metrics.
    until("kubectl top pods to show web", 120, &|| {
        kc.output(&["-n", ns, "top", "pods", "--no-headers"])
            .is_some_and(|t| t.lines().any(|l| l.starts_with("web-")))
    })?;
    let top = run(&["top", "nodes", "--no-headers"])?;
    println!(
        "kubectl top: {} node(s) and the pods shown",
        top.lines().count()
    );
    Ok(())
}

/// A node that stops (its agent frozen with SIGSTOP, so its Lease is no
/// longer renewed while its containers run on): the node goes NotReady, is
/// tainted, and a pod tolerating that for 2 s is made again on another
/// node. Thawed (SIGCONT), the node is Ready again and the evicted pod goes.
fn node_stops(l: &Layout, kc: &Kubectl, ns: &str) -> anyhow::Result<()> {
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
    let pid = pid_of(l, &agent).with_context(|| format!("smoke: no running agent of {node}"))?;
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
        kc.output(&[
            "-n",
            ns,
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={range .items[*].endpoints[*]}{.nodeName} {.conditions.ready}{\"\\n\"}{end}",
        ])
        .unwrap_or_default()
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
