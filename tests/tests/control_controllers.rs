//! The scheduler and controllers of `rudder server`, driven through the
//! stock kubectl 1.33, with simulated nodes (Node objects, Lease renewals
//! and pod status posted by the test's stand-in kubelet, `support::sim`).
//! Time-based behaviour (node grace period, toleration seconds, cron
//! schedules) uses the server's test clock offset. Preemption by
//! priority is checked on one full node.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    kube::Kubectl,
    sim::{Cluster, OUTCOMES, READY, node_of, running, wait},
};

fn web(replicas: u32, image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - {{name: c, image: \"{image}\", ports: [{{name: http, containerPort: 8080}}]}}
"
    )
}

#[test]
fn deployments_spread_scale_roll_and_undo() {
    let c = Cluster::start(&["n1", "n2", "n3"]);
    let k = c.kubectl();
    k.apply(&["apply", "-f", "-"], &web(3, "nginx:1.25"));
    let pods = wait("3 running pods", 60, || {
        let p = c.pods("app=web");
        (running(&p) == 3).then_some(p)
    });
    let nodes: std::collections::BTreeSet<String> = pods.values().map(node_of).collect();
    assert_eq!(nodes.len(), 3, "3 replicas on 3 nodes: {nodes:?}");
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);

    k.ok(&["scale", "deployment/web", "--replicas=5"]);
    wait("5 running pods", 60, || {
        (running(&c.pods("app=web")) == 5).then_some(())
    });
    k.ok(&["scale", "deployment/web", "--replicas=1"]);
    wait("1 pod", 60, || (c.pods("app=web").len() == 1).then_some(()));

    // An image change rolls within maxSurge 1 / maxUnavailable 0.
    k.ok(&["scale", "deployment/web", "--replicas=4"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    k.ok(&["set", "image", "deployment/web", "c=nginx:1.16.1"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pods = c.pods("app=web");
        let ready = pods
            .values()
            .filter(|p| {
                p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count();
        assert!(
            pods.len() <= 5,
            "more than replicas + maxSurge pods: {}",
            pods.len()
        );
        assert!(
            ready >= 4 || pods.len() < 4,
            "fewer than replicas - maxUnavailable ready: {ready}"
        );
        let new = pods
            .values()
            .filter(|p| {
                p["spec"]["containers"][0]["image"] == "nginx:1.16.1"
                    && p["status"]["phase"] == "Running"
            })
            .count();
        if new == 4 && pods.len() == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not finish: {pods:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let history = k.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // Undo restores the previous template.
    k.ok(&["rollout", "undo", "deployment/web"]);
    wait("pods back on nginx:1.25", 90, || {
        let pods = c.pods("app=web");
        (pods.len() == 4
            && pods.values().all(|p| {
                p["spec"]["containers"][0]["image"] == "nginx:1.25"
                    && p["status"]["phase"] == "Running"
            }))
        .then_some(())
    });
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let d = c.json(&["get", "deployment", "web"]);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(d["status"]["availableReplicas"], 4);
    let rs = k.ok(&["get", "rs", "-l", "app=web", "--no-headers"]);
    assert_eq!(
        rs.lines().count(),
        2,
        "the undone template reuses its ReplicaSet: {rs}"
    );
    let events = k.ok(&["describe", "deployment", "web"]);
    assert!(events.contains("ScalingReplicaSet"), "{events}");
}

#[test]
fn taints_cordon_and_unschedulable_reasons() {
    let c = Cluster::start(&["n1", "n2", "n3"]);
    let k = c.kubectl();
    k.ok(&["taint", "node", "n1", "dedicated=infra:NoSchedule"]);
    k.ok(&["cordon", "n2"]);
    k.apply(&["apply", "-f", "-"], &web(4, "nginx:1.25"));
    let pods = wait("4 running pods", 60, || {
        let p = c.pods("app=web");
        (running(&p) == 4).then_some(p)
    });
    assert!(
        pods.values().all(|p| node_of(p) == "n3"),
        "only n3 is free: {pods:?}"
    );

    // Tolerating the taint reaches n1; nothing reaches the cordoned n2.
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: Pod
metadata: {name: tolerant}
spec:
  nodeSelector: {kubernetes.io/hostname: n1}
  tolerations: [{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}]
  containers: [{name: c, image: busybox}]
",
    );
    wait("tolerant on n1", 30, || {
        (c.json(&["get", "pod", "tolerant"])["spec"]["nodeName"] == "n1").then_some(())
    });

    // A pod nothing can take says why, per node.
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: Pod
metadata: {name: picky}
spec:
  nodeSelector: {disk: ssd}
  containers: [{name: c, image: busybox}]
",
    );
    let want = "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
                1 node(s) had untolerated taint {dedicated: infra}, 1 node(s) were unschedulable.";
    let describe = wait("a FailedScheduling event", 30, || {
        let d = k.ok(&["describe", "pod", "picky"]);
        d.contains("FailedScheduling").then_some(d)
    });
    assert!(describe.contains(want), "{describe}");
    assert!(k.ok(&["get", "events"]).contains("FailedScheduling"));
    assert_eq!(
        c.json(&["get", "pod", "picky"])["spec"]["nodeName"],
        Value::Null
    );

    // The cluster changes: the pod is retried and placed.
    k.ok(&["label", "node", "n3", "disk=ssd"]);
    wait("picky scheduled on n3", 30, || {
        (c.json(&["get", "pod", "picky"])["spec"]["nodeName"] == "n3").then_some(())
    });
    k.ok(&["uncordon", "n2"]);
    k.ok(&["scale", "deployment/web", "--replicas=8"]);
    let pods = wait("8 running pods", 60, || {
        let p = c.pods("app=web");
        (running(&p) == 8).then_some(p)
    });
    assert!(
        pods.values().any(|p| node_of(p) == "n2"),
        "uncordoned n2 takes pods"
    );
    assert!(
        !pods.values().any(|p| node_of(p) == "n1"),
        "tainted n1 takes none"
    );
}

#[test]
fn a_lost_node_is_tainted_and_its_pods_replaced() {
    let c = Cluster::start(&["n1", "n2", "n3"]);
    let k = c.kubectl();
    k.apply(&["apply", "-f", "-"], &web(3, "nginx:1.25"));
    let pods = wait("3 running pods", 60, || {
        let p = c.pods("app=web");
        (running(&p) == 3).then_some(p)
    });
    let on_n3: Vec<String> = pods
        .iter()
        .filter(|(_, p)| node_of(p) == "n3")
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(on_n3.len(), 1);
    c.sim.kill("n3");
    // Past the 40 s grace period: Unknown, tainted unreachable.
    c.advance(60);
    wait("n3 NotReady", 30, || {
        let n = c.json(&["get", "node", "n3"]);
        let taints = n["spec"]["taints"].to_string();
        (taints.contains("node.kubernetes.io/unreachable") && taints.contains("NoExecute"))
            .then_some(())
    });
    assert!(k.ok(&["get", "node", "n3"]).contains("NotReady"));
    // Within the 300 s default toleration the pod stays.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        c.pods("app=web").contains_key(&on_n3[0]),
        "evicted before its toleration ran out"
    );
    c.advance(300);
    wait("a replacement on a live node", 60, || {
        let p = c.pods("app=web");
        (!p.contains_key(&on_n3[0]) && running(&p) == 3 && p.values().all(|p| node_of(p) != "n3"))
            .then_some(())
    });
    assert!(
        k.ok(&["get", "events", "-A"])
            .contains("TaintManagerEviction")
    );
}

#[test]
fn daemonsets_follow_nodes() {
    let c = Cluster::start(&["n1", "n2"]);
    let k = c.kubectl();
    k.ok(&["cordon", "n2"]);
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: c, image: \"nginx:1.25\"}]}
",
    );
    let on = |n: usize| {
        wait(&format!("{n} daemon pods"), 60, || {
            let p = c.pods("app=agent");
            (running(&p) == n && p.len() == n).then_some(p)
        })
    };
    let pods = on(2);
    let nodes: std::collections::BTreeSet<String> = pods.values().map(node_of).collect();
    assert_eq!(
        nodes.len(),
        2,
        "one per node, the cordoned one too: {nodes:?}"
    );
    c.sim.add("n3");
    let pods = on(3);
    assert!(pods.values().any(|p| node_of(p) == "n3"));
    k.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    k.ok(&["set", "image", "daemonset/agent", "c=nginx:1.16.1"]);
    k.ok(&["rollout", "status", "daemonset/agent", "--timeout=90s"]);
    let pods = on(3);
    assert!(
        pods.values()
            .all(|p| p["spec"]["containers"][0]["image"] == "nginx:1.16.1")
    );
    c.sim.kill("n1");
    k.ok(&["delete", "node", "n1"]);
    let pods = on(2);
    assert!(pods.values().all(|p| node_of(p) != "n1"));
}

#[test]
fn statefulsets_start_and_stop_in_order_with_their_claims() {
    let c = Cluster::start(&["n1", "n2", "n3"]);
    let k = c.kubectl();
    for i in 0..3 {
        k.apply(
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: v1
kind: PersistentVolume
metadata: {{name: pv{i}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: local
  hostPath: {{path: /tmp/rudder-pv{i}}}
"
            ),
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let kc = c.server.kubeconfig();
    // The order pods appear and go, from a watch.
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let o2 = order.clone();
    let watcher = std::thread::spawn(move || {
        rt.block_on(async move {
            use futures_util::StreamExt as _;
            use kube::runtime::watcher;
            let client = support::sim::client(&kc).await;
            let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
                kube::Api::namespaced(client, "default");
            let mut s = watcher(api, watcher::Config::default().labels("app=db")).boxed();
            let mut known = std::collections::BTreeSet::new();
            while let Some(ev) = s.next().await {
                match ev {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                        let n = p.metadata.name.clone().unwrap_or_default();
                        if known.insert(n.clone()) {
                            o2.lock().unwrap().push(format!("+{n}"));
                        }
                    }
                    Ok(watcher::Event::Delete(p)) => {
                        let n = p.metadata.name.clone().unwrap_or_default();
                        known.remove(&n);
                        o2.lock().unwrap().push(format!("-{n}"));
                        if n == "db-1" {
                            return;
                        }
                    }
                    _ => {}
                }
            }
        });
    });
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 3
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: c, image: \"nginx:1.25\", volumeMounts: [{name: data, mountPath: /data}]}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: local
      resources: {requests: {storage: 1Gi}}
",
    );
    wait("3 running members", 90, || {
        (running(&c.pods("app=db")) == 3).then_some(())
    });
    k.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    let pvcs = k.ok(&["get", "pvc", "--no-headers"]);
    for i in 0..3 {
        assert!(pvcs.contains(&format!("data-db-{i}")), "{pvcs}");
    }
    assert_eq!(
        pvcs.lines().filter(|l| l.contains("Bound")).count(),
        3,
        "{pvcs}"
    );
    let db0 = c.json(&["get", "pod", "db-0"]);
    assert_eq!(db0["spec"]["hostname"], "db-0");
    assert_eq!(db0["spec"]["subdomain"], "db");
    k.ok(&["scale", "statefulset/db", "--replicas=1"]);
    watcher.join().unwrap();
    let seen = order.lock().unwrap().clone();
    assert_eq!(
        seen,
        ["+db-0", "+db-1", "+db-2", "-db-2", "-db-1"],
        "ordered start and stop"
    );
    assert_eq!(c.pods("app=db").len(), 1);
    // Claims stay for the members that went.
    assert_eq!(k.ok(&["get", "pvc", "--no-headers"]).lines().count(), 3);
}

#[test]
fn jobs_retry_and_cronjobs_fire_on_schedule() {
    let c = Cluster::start(&["n1"]);
    let k = c.kubectl();
    k.apply(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: batch/v1
kind: Job
metadata: {{name: flaky}}
spec:
  backoffLimit: 3
  template:
    metadata: {{annotations: {{{OUTCOMES}: \"Failed,Succeeded\"}}}}
    spec:
      restartPolicy: Never
      containers: [{{name: c, image: busybox, command: [\"true\"]}}]
"
        ),
    );
    // One failure, a back-off, then success.
    c.advance(0);
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/flaky",
        "--timeout=90s",
    ]);
    let j = c.json(&["get", "job", "flaky"]);
    assert_eq!(j["status"]["succeeded"], 1, "{j}");
    assert_eq!(j["status"]["failed"], 1, "{j}");
    let describe = k.ok(&["describe", "job", "flaky"]);
    assert!(
        describe.contains("SuccessfulCreate") && describe.contains("Completed"),
        "{describe}"
    );

    // A job that always fails stops at its backoff limit.
    k.apply(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: batch/v1
kind: Job
metadata: {{name: doomed}}
spec:
  backoffLimit: 0
  template:
    metadata: {{annotations: {{{OUTCOMES}: Failed}}}}
    spec:
      restartPolicy: Never
      containers: [{{name: c, image: busybox}}]
"
        ),
    );
    k.ok(&[
        "wait",
        "--for=condition=failed",
        "job/doomed",
        "--timeout=60s",
    ]);
    assert!(
        k.ok(&["describe", "job", "doomed"])
            .contains("BackoffLimitExceeded")
    );

    // A CronJob fires when its time comes (the clock is moved, not waited).
    k.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=*/5 * * * *",
        "--",
        "true",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    let jobs = |k: &Kubectl<'_>| {
        k.ok(&["get", "jobs", "--no-headers"])
            .lines()
            .filter(|l| l.starts_with("tick-"))
            .count()
    };
    let now = jiff::Timestamp::now().as_second() + support::sim::offset(&c.clock);
    let to_next = 300 - now % 300;
    if to_next > 5 {
        // Not yet due: nothing runs.
        assert_eq!(jobs(&k), 0, "fired before its schedule");
    }
    c.advance(to_next + 1);
    wait("the first scheduled job", 30, || {
        (jobs(&k) == 1).then_some(())
    });
    c.advance(300);
    wait("the second scheduled job", 30, || {
        (jobs(&k) == 2).then_some(())
    });
    let cj = c.json(&["get", "cronjob", "tick"]);
    assert!(cj["status"]["lastScheduleTime"].is_string(), "{cj}");
    wait("a last successful time", 30, || {
        c.json(&["get", "cronjob", "tick"])["status"]["lastSuccessfulTime"]
            .is_string()
            .then_some(())
    });
}

#[test]
fn endpoint_slices_follow_readiness() {
    let c = Cluster::start(&["n1", "n2"]);
    let k = c.kubectl();
    k.apply(&["apply", "-f", "-"], &web(2, "nginx:1.25"));
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
",
    );
    let slice = |c: &Cluster| -> Vec<(String, bool, bool, bool)> {
        let l = c.json(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ]);
        let mut out = Vec::new();
        for s in l["items"].as_array().unwrap() {
            for e in s["endpoints"].as_array().into_iter().flatten() {
                assert_eq!(
                    s["ports"][0]["port"], 8080,
                    "named targetPort resolved: {s}"
                );
                let cond = &e["conditions"];
                out.push((
                    e["targetRef"]["name"].as_str().unwrap().to_owned(),
                    cond["ready"] == true,
                    cond["serving"] == true,
                    cond["terminating"] == true,
                ));
            }
        }
        out.sort();
        out
    };
    let eps = wait("2 ready endpoints", 60, || {
        let e = slice(&c);
        (e.len() == 2 && e.iter().all(|x| x.1)).then_some(e)
    });
    let ep = c.json(&["get", "endpoints", "web"]);
    assert_eq!(ep["subsets"][0]["addresses"].as_array().unwrap().len(), 2);
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 8080);

    // Readiness lost: not ready, not serving; Endpoints move it aside.
    let first = eps[0].0.clone();
    k.ok(&["annotate", "pod", &first, &format!("{READY}=false")]);
    wait("the pod not ready in its slice", 30, || {
        slice(&c)
            .iter()
            .any(|e| e.0 == first && !e.1 && !e.2)
            .then_some(())
    });
    let ep = c.json(&["get", "endpoints", "web"]);
    assert_eq!(
        ep["subsets"][0]["notReadyAddresses"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Scaled to zero: the slice stays, empty.
    k.ok(&["scale", "deployment/web", "--replicas=0"]);
    wait("no endpoints", 60, || slice(&c).is_empty().then_some(()));

    // A Service without selector keeps its user's Endpoints, mirrored.
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: Service
metadata: {name: external}
spec:
  ports: [{port: 5432}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: external}
subsets:
- addresses: [{ip: 192.0.2.10}]
  ports: [{port: 5432}]
",
    );
    wait("a mirrored slice", 30, || {
        let l = c.json(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=external",
        ]);
        l["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["endpoints"][0]["addresses"][0] == "192.0.2.10")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let ep = c.json(&["get", "endpoints", "external"]);
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "192.0.2.10");
    // Deleting the Service takes the controller's Endpoints and slices.
    k.ok(&["delete", "service", "web"]);
    wait("web endpoints gone", 30, || {
        (!k.ok(&["get", "endpoints"]).contains("web")).then_some(())
    });
}

#[test]
fn namespaces_get_a_default_service_account() {
    let c = Cluster::start(&["n1"]);
    let k = c.kubectl();
    k.ok(&["create", "namespace", "team"]);
    wait("default SA in team", 30, || {
        k.ok(&["get", "serviceaccounts", "-n", "team"])
            .contains("default")
            .then_some(())
    });
    wait("root CA configmap", 30, || {
        k.ok(&["get", "configmap", "-n", "team"])
            .contains("kube-root-ca.crt")
            .then_some(())
    });
    let node = c.json(&["get", "node", "n1"]);
    assert_eq!(node["spec"]["podCIDR"], "10.244.0.0/24");
    let lease = c.json(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "rudder-controller-manager",
    ]);
    assert!(lease["spec"]["holderIdentity"].is_string());
}

/// The HPA through `kubectl autoscale` (autoscaling/v1, stored as v2):
/// CPU usage the simulated kubelets report (via the resource metrics API)
/// scales a Deployment up to the maximum, and after the scale-down
/// stabilisation window, back down; `kubectl get/describe hpa` show the
/// targets, conditions and events; an invalid HPA is refused whole.
#[test]
fn horizontal_pod_autoscaler_follows_cpu_usage() {
    let c = Cluster::start_with(
        &["n1", "n2"],
        &["--horizontal-pod-autoscaler-sync-period", "1"],
    );
    let k = c.kubectl();
    let deploy = web(2, "nginx:1.25").replace(
        "ports: [{name: http, containerPort: 8080}]",
        "ports: [{name: http, containerPort: 8080}], resources: {requests: {cpu: 200m}}",
    );
    k.apply(&["apply", "-f", "-"], &deploy);
    wait("2 running web pods", 60, || {
        (running(&c.pods("app=web")) == 2).then_some(())
    });
    // 180m of 200m: 90 % against a 50 % target.
    c.sim.set_cpu("app", "web", 180);
    k.ok(&[
        "autoscale",
        "deployment",
        "web",
        "--cpu-percent=50",
        "--min=1",
        "--max=5",
    ]);
    let v1: Value = serde_json::from_str(&k.ok(&[
        "get",
        "--raw",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web",
    ]))
    .unwrap();
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50, "{v1}");
    let v2 = c.json(&["get", "hpa.v2.autoscaling", "web"]);
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 50,
        "{v2}"
    );
    wait("the HPA to scale web to its maximum of 5", 90, || {
        let d = c.json(&["get", "deployment", "web"]);
        (d["spec"]["replicas"] == 5).then_some(())
    });
    wait("5 running web pods", 60, || {
        (running(&c.pods("app=web")) == 5).then_some(())
    });
    // NAME REFERENCE TARGETS("cpu: 90%/50%") MINPODS MAXPODS REPLICAS AGE
    let row = wait("the HPA row to show the usage and 5 replicas", 60, || {
        let out = k.ok(&["get", "hpa", "web", "--no-headers"]);
        let cols: Vec<String> = out.split_whitespace().map(str::to_owned).collect();
        (cols.len() == 8 && cols[3] == "90%/50%" && cols[6] == "5").then_some(cols)
    });
    assert_eq!(
        &row[..6],
        &["web", "Deployment/web", "cpu:", "90%/50%", "1", "5"],
        "{row:?}"
    );
    let described = k.ok(&["describe", "hpa", "web"]);
    for want in [
        "SuccessfulRescale",
        "New size: 4; reason: cpu resource utilization (percentage of request) above target",
        "TooManyReplicas",
        "ValidMetricFound",
    ] {
        assert!(described.contains(want), "{want:?} missing:\n{described}");
    }
    // Idle: 20m is 10 %. The 5-minute window keeps 5 replicas at first...
    c.sim.set_cpu("app", "web", 20);
    wait("the HPA to see the low usage", 60, || {
        k.ok(&["get", "hpa", "web", "--no-headers"])
            .contains("cpu: 10%/50%")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        c.json(&["get", "deployment", "web"])["spec"]["replicas"],
        5,
        "no scale-down inside the stabilisation window"
    );
    // ...and after it, ceil(5 × 10/50) = 1. (When a sample misses some
    // pods' metrics, those count as 100 % and the first step down is
    // smaller; the window then holds that step for another 5 minutes.)
    c.advance(310);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next_jump = Instant::now() + Duration::from_secs(5);
    while c.json(&["get", "deployment", "web"])["spec"]["replicas"] != 1 {
        if Instant::now() > next_jump {
            c.advance(310);
            next_jump = Instant::now() + Duration::from_secs(5);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the HPA to scale web down to 1:\n{}\n{}",
            k.ok(&["describe", "hpa", "web"]),
            k.ok(&["get", "pods", "-o", "wide"])
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=HorizontalPodAutoscaler",
    ]);
    assert!(
        events.contains("reason: All metrics below target"),
        "{events}"
    );
    // An invalid HPA is refused with the field's reason, and not stored.
    let bad = "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: bad}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 3
  maxReplicas: 2
";
    let err = k.fails(&["create", "-f", "-"], Some(bad));
    assert!(
        err.contains("spec.maxReplicas")
            && err.contains("must be greater than or equal to `minReplicas`"),
        "{err}"
    );
    assert!(k.fails(&["get", "hpa", "bad"], None).contains("NotFound"));
}

/// ReplicationControllers (the older ReplicaSet) make and keep their pods,
/// `kubectl scale rc` works through their scale subresource, and their
/// pods go with them.
#[test]
fn replication_controllers_keep_their_pods() {
    let c = Cluster::start(&["n1"]);
    let k = c.kubectl();
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: ReplicationController
metadata: {name: old}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: old}}
    spec: {containers: [{name: c, image: nginx}]}
",
    );
    let pods = wait("2 running pods of the rc", 60, || {
        let p = c.pods("app=old");
        (running(&p) == 2).then_some(p)
    });
    let owner = &pods.values().next().unwrap()["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "ReplicationController");
    k.ok(&["scale", "rc", "old", "--replicas=3"]);
    wait("3 running pods", 60, || {
        (running(&c.pods("app=old")) == 3).then_some(())
    });
    wait("the rc's status", 30, || {
        (c.json(&["get", "rc", "old"])["status"]["readyReplicas"] == 3).then_some(())
    });
    k.ok(&["delete", "rc", "old"]);
    wait("the rc's pods to go", 60, || {
        c.pods("app=old").is_empty().then_some(())
    });
}

/// PodDisruptionBudgets: the disruption controller counts healthy pods,
/// an eviction is refused while it would break the budget (429 with the
/// budget's numbers), and `kubectl drain` evicts once the budget allows it.
#[test]
fn drain_honours_pod_disruption_budgets() {
    let c = Cluster::start(&["n1", "n2", "n3"]);
    let k = c.kubectl();
    k.apply(&["apply", "-f", "-"], &web(3, "nginx:1.25"));
    let pods = wait("3 running pods", 60, || {
        let p = c.pods("app=web");
        (running(&p) == 3).then_some(p)
    });
    k.ok(&[
        "create",
        "pdb",
        "web",
        "--selector=app=web",
        "--min-available=3",
    ]);
    wait("the budget's status", 30, || {
        let s = &c.json(&["get", "pdb", "web"])["status"];
        (s["currentHealthy"] == 3 && s["expectedPods"] == 3 && s["disruptionsAllowed"] == 0)
            .then_some(())
    });
    let victim = pods.keys().next().unwrap();
    let eviction = format!(
        r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{victim}"}}}}"#
    );
    let out = k.fails(
        &[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/default/pods/{victim}/eviction"),
            "-f",
            "-",
        ],
        Some(&eviction),
    );
    assert!(
        out.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{out}"
    );
    assert_eq!(running(&c.pods("app=web")), 3, "nothing was evicted");
    k.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":2}}"#,
    ]);
    wait("one disruption allowed", 30, || {
        (c.json(&["get", "pdb", "web"])["status"]["disruptionsAllowed"] == 1).then_some(())
    });
    k.ok(&[
        "drain",
        "n1",
        "--ignore-daemonsets",
        "--grace-period=1",
        "--timeout=60s",
    ]);
    wait("3 running pods off n1", 60, || {
        let p = c.pods("app=web");
        (running(&p) == 3 && p.values().all(|p| node_of(p) != "n1")).then_some(())
    });
}

#[test]
fn higher_priority_pods_preempt_lower_ones() {
    let c = Cluster::start(&["n1"]);
    let k = c.kubectl();
    k.ok(&["create", "priorityclass", "low", "--value=10"]);
    k.ok(&["create", "priorityclass", "high", "--value=1000"]);
    k.ok(&[
        "create",
        "priorityclass",
        "polite",
        "--value=1000",
        "--preemption-policy=Never",
    ]);
    let pod = |name: &str, class: &str, cpu: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"role":"{name}"}}}},
            "spec":{{"priorityClassName":"{class}","containers":[{{"name":"c","image":"nginx:1.25",
            "resources":{{"requests":{{"cpu":"{cpu}"}}}}}}]}}}}"#
        )
    };
    // Three of the node's four cpus taken by low-priority pods.
    for (name, cpu) in [("filler-a", "1500m"), ("filler-b", "1500m")] {
        k.apply(&["apply", "-f", "-"], &pod(name, "low", cpu));
    }
    wait("the fillers running", 60, || {
        (running(&c.pods("role in (filler-a,filler-b)")) == 2).then_some(())
    });
    // A polite high-priority pod waits rather than preempt.
    k.apply(&["apply", "-f", "-"], &pod("polite", "polite", "2"));
    wait("polite unschedulable", 30, || {
        let p = c.json(&["get", "pod", "polite"]);
        p["status"]["conditions"].as_array().and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
                .map(|_| ())
        })
    });
    k.ok(&["delete", "pod", "polite", "--wait=false"]);
    // An urgent one preempts exactly one filler (one is enough) and runs.
    k.apply(&["apply", "-f", "-"], &pod("urgent", "high", "2"));
    let p = wait("urgent running on n1", 60, || {
        let p = c.json(&["get", "pod", "urgent"]);
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert_eq!(node_of(&p), "n1");
    assert_eq!(p["status"]["nominatedNodeName"], "n1", "{p}");
    let left = c.pods("role in (filler-a,filler-b)");
    assert_eq!(left.len(), 1, "one victim: {left:?}");
    let events = k.ok(&["get", "events", "--field-selector", "reason=Preempted"]);
    assert!(events.contains("Preempted by pod"), "{events}");
    // A lower-priority pod never preempts a higher one.
    k.apply(&["apply", "-f", "-"], &pod("late", "low", "2"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        c.json(&["get", "pod", "urgent"])["status"]["phase"],
        "Running"
    );
    assert!(c.json(&["get", "pod", "late"])["spec"]["nodeName"].is_null());
}
