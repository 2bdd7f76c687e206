//! The policy kinds a cluster admin reaches for, with stock kubectl 1.27
//! and 1.33 against `rudder server`: PriorityClasses and the Priority
//! plugin, LimitRanges (defaults written into pods, min/max/ratio refused
//! with kube-apiserver's words), ResourceQuotas (status counted at once,
//! creates refused past `hard`, concurrent creates never overshooting,
//! usage given back when objects go), `events.k8s.io/v1` over the core
//! Events, and `kubectl get` of the cluster-scoped kinds served beside
//! them (RuntimeClass, StorageClass).

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::kube::{Kubectl, Server, kubectl_at, newest, oldest};

fn json(k: &Kubectl<'_>, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&k.ok(&a)).expect("kubectl prints JSON")
}

#[test]
fn priority_classes_are_admitted_as_kube_apiserver_does() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    // The system classes exist from the start.
    let out = k.ok(&["get", "priorityclass", "--no-headers"]);
    assert!(
        out.contains("system-node-critical") && out.contains("2000001000"),
        "{out}"
    );
    k.ok(&[
        "create",
        "priorityclass",
        "high",
        "--value=1000",
        "--global-default=true",
    ]);
    let e = k.fails(
        &[
            "create",
            "priorityclass",
            "other",
            "--value=5",
            "--global-default=true",
        ],
        None,
    );
    assert!(
        e.contains(r#"priorityclasses.scheduling.k8s.io "other" is forbidden: PriorityClass high is marked as default. Only one default can exist"#),
        "{e}"
    );
    let e = k.fails(
        &["create", "priorityclass", "system-mine", "--value=5"],
        None,
    );
    assert!(e.contains("reserved for system use only"), "{e}");
    let e = k.fails(
        &["create", "priorityclass", "huge", "--value=1000000001"],
        None,
    );
    assert!(
        e.contains("maximum allowed value of a user defined priority is 1000000000"),
        "{e}"
    );
    // The value never changes.
    let e = k.fails(
        &["patch", "priorityclass", "high", "-p", r#"{"value":7}"#],
        None,
    );
    assert!(e.contains("field is immutable"), "{e}");
    // Pods take the global default, or their class, or are refused.
    k.ok(&["run", "plain", "--image=busybox"]);
    let p = json(&k, &["get", "pod", "plain"]);
    assert_eq!(p["spec"]["priorityClassName"], "high");
    assert_eq!(p["spec"]["priority"], 1000);
    assert_eq!(p["spec"]["preemptionPolicy"], "PreemptLowerPriority");
    k.ok(&[
        "run",
        "crit",
        "--image=busybox",
        "--overrides",
        r#"{"spec":{"priorityClassName":"system-node-critical"}}"#,
    ]);
    assert_eq!(
        json(&k, &["get", "pod", "crit"])["spec"]["priority"],
        2_000_001_000
    );
    let e = k.fails(
        &[
            "run",
            "lost",
            "--image=busybox",
            "--overrides",
            r#"{"spec":{"priorityClassName":"nope"}}"#,
        ],
        None,
    );
    assert!(
        e.contains(r#"pods "lost" is forbidden: no PriorityClass with name nope was found"#),
        "{e}"
    );
    let e = k.fails(
        &[
            "run",
            "liar",
            "--image=busybox",
            "--overrides",
            r#"{"spec":{"priority":5}}"#,
        ],
        None,
    );
    assert!(
        e.contains("the integer value of priority (5) must not be provided in pod spec"),
        "{e}"
    );
    // A full replace that leaves the computed fields out keeps them.
    let mut p = json(&k, &["get", "pod", "plain"]);
    p["spec"].as_object_mut().unwrap().remove("priority");
    k.apply(&["replace", "-f", "-"], &p.to_string());
    assert_eq!(json(&k, &["get", "pod", "plain"])["spec"]["priority"], 1000);
    for bin in [oldest(), newest()] {
        let (ok, out) = kubectl_at(&bin, &server.kubeconfig(), &["get", "pc", "high"]);
        assert!(
            ok && out.contains("VALUE") && out.contains("1000") && out.contains("true"),
            "{out}"
        );
    }
}

const LIMITS: &str = r#"
apiVersion: v1
kind: LimitRange
metadata: {name: lr, namespace: lim}
spec:
  limits:
  - type: Container
    max: {cpu: "1", memory: 512Mi}
    min: {cpu: 50m}
    defaultRequest: {cpu: 100m}
    maxLimitRequestRatio: {cpu: "10"}
  - type: Pod
    max: {cpu: "2"}
  - type: PersistentVolumeClaim
    max: {storage: 1Gi}
"#;

#[test]
fn limit_ranges_default_and_refuse_pods() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    k.ok(&["create", "namespace", "lim"]);
    k.apply(&["apply", "-f", "-"], LIMITS);
    // Defaulted as SetDefaults_LimitRangeItem does: default from max,
    // defaultRequest from default.
    let lr = json(&k, &["get", "limitrange", "-n", "lim", "lr"]);
    let c = &lr["spec"]["limits"][0];
    assert_eq!(
        c["default"],
        serde_json::json!({"cpu": "1", "memory": "512Mi"})
    );
    assert_eq!(
        c["defaultRequest"],
        serde_json::json!({"cpu": "100m", "memory": "512Mi"})
    );
    let d = k.ok(&["describe", "limitrange", "-n", "lim", "lr"]);
    assert!(
        d.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["Container", "cpu", "50m", "1", "100m", "1", "10"]),
        "{d}"
    );
    // A pod without resources gets the defaults, and says so.
    k.ok(&["run", "p1", "-n", "lim", "--image=busybox"]);
    let p = json(&k, &["get", "pod", "-n", "lim", "p1"]);
    let r = &p["spec"]["containers"][0]["resources"];
    assert_eq!(r["requests"]["cpu"], "100m");
    assert_eq!(r["limits"]["memory"], "512Mi");
    assert_eq!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container p1; cpu, memory limit for container p1"
    );
    // Limits without requests: requests default to the limits first.
    k.ok(&["run", "p2", "-n", "lim", "--image=busybox", "--overrides",
        r#"{"spec":{"containers":[{"name":"p2","image":"busybox","resources":{"limits":{"cpu":"200m"}}}]}}"#]);
    let p = json(&k, &["get", "pod", "-n", "lim", "p2"]);
    assert_eq!(
        p["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "200m"
    );
    // Every broken constraint at once, in upstream's words.
    let e = k.fails(&["run", "big", "-n", "lim", "--image=busybox", "--overrides",
        r#"{"spec":{"containers":[{"name":"big","image":"busybox","resources":{"limits":{"cpu":"3","memory":"1Gi"},"requests":{"cpu":"10m"}}}]}}"#], None);
    for want in [
        r#"pods "big" is forbidden: ["#,
        "minimum cpu usage per Container is 50m, but request is 10m",
        "maximum cpu usage per Container is 1, but limit is 3",
        "maximum memory usage per Container is 512Mi, but limit is 1Gi",
        "cpu max limit to request ratio per Container is 10, but provided ratio is 300.000000",
        "maximum cpu usage per Pod is 2, but limit is 3",
    ] {
        assert!(e.contains(want), "{want}: {e}");
    }
    // Two containers each within the Container max still break the Pod max.
    let e = k.fails(&["run", "pair", "-n", "lim", "--image=busybox", "--overrides",
        r#"{"spec":{"containers":[{"name":"a","image":"busybox","resources":{"limits":{"cpu":"1"}}},{"name":"b","image":"busybox","resources":{"limits":{"cpu":"1500m"}}}]}}"#], None);
    assert!(
        e.contains("maximum cpu usage per Container is 1, but limit is 1500m"),
        "{e}"
    );
    assert!(
        e.contains("maximum cpu usage per Pod is 2, but limit is 2500m"),
        "{e}"
    );
    // Claims are held to the PersistentVolumeClaim item.
    let e = k.fails(&["apply", "-f", "-"], Some(r#"{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"c","namespace":"lim"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"5Gi"},"limits":{"storage":"5Gi"}}}}"#));
    assert!(
        e.contains("maximum storage usage per PersistentVolumeClaim is 1Gi, but limit is 5Gi"),
        "{e}"
    );
    // A LimitRange that contradicts itself is invalid.
    let e = k.fails(&["apply", "-f", "-"], Some(r#"{"apiVersion":"v1","kind":"LimitRange","metadata":{"name":"bad","namespace":"lim"},"spec":{"limits":[{"type":"Container","max":{"cpu":"1"},"min":{"cpu":"2"}},{"type":"Pod","default":{"cpu":"1"}}]}}"#));
    assert!(
        e.contains(
            "spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1"
        ),
        "{e}"
    );
    assert!(
        e.contains("spec.limits[1].default: Forbidden: may not be specified when `type` is 'Pod'"),
        "{e}"
    );
    // Other namespaces are untouched.
    k.ok(&["run", "free", "--image=busybox"]);
    let p = json(&k, &["get", "pod", "free"]);
    assert_eq!(
        p["spec"]["containers"][0]["resources"],
        serde_json::json!({})
    );
}

fn used(k: &Kubectl<'_>, ns: &str, name: &str) -> Value {
    json(k, &["get", "quota", "-n", ns, name])["status"]["used"].clone()
}

#[test]
fn resource_quotas_count_refuse_and_give_back() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    k.ok(&["create", "namespace", "q"]);
    k.ok(&[
        "create",
        "quota",
        "q1",
        "-n",
        "q",
        "--hard=pods=2,requests.cpu=1,configmaps=4,count/deployments.apps=1,services.nodeports=1",
    ]);
    // Counted at once: the namespace's kube-root-ca.crt is a ConfigMap.
    let u = used(&k, "q", "q1");
    assert_eq!(u["configmaps"], "1", "{u}");
    assert_eq!(u["pods"], "0", "{u}");
    let e = k.fails(&["run", "a", "-n", "q", "--image=busybox"], None);
    assert!(
        e.contains(r#"pods "a" is forbidden: failed quota: q1: must specify requests.cpu"#),
        "{e}"
    );
    let cpu = |name: &str, c: &str| {
        format!(
            r#"{{"spec":{{"containers":[{{"name":"{name}","image":"busybox","resources":{{"requests":{{"cpu":"{c}"}}}}}}]}}}}"#
        )
    };
    k.ok(&[
        "run",
        "a",
        "-n",
        "q",
        "--image=busybox",
        "--overrides",
        &cpu("a", "600m"),
    ]);
    let e = k.fails(
        &[
            "run",
            "b",
            "-n",
            "q",
            "--image=busybox",
            "--overrides",
            &cpu("b", "600m"),
        ],
        None,
    );
    assert!(e.contains("exceeded quota: q1, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"), "{e}");
    k.ok(&["create", "deployment", "d1", "-n", "q", "--image=busybox"]);
    // Its ReplicaSet's pods state no cpu: refused, and said on the
    // ReplicaSet as kube-controller-manager says it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ev = k.ok(&[
            "get",
            "events",
            "-n",
            "q",
            "--field-selector",
            "reason=FailedCreate",
        ]);
        if ev.contains("Error creating: pods")
            && ev.contains("failed quota: q1: must specify requests.cpu")
        {
            assert!(ev.contains("replicaset/d1-"), "{ev}");
            break;
        }
        assert!(Instant::now() < deadline, "no FailedCreate event: {ev}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Refused creates back off (1 s doubling), as a rate-limited work queue
    // does, rather than ask again every round.
    std::thread::sleep(Duration::from_secs(6));
    let ev: Value = serde_json::from_str(&k.ok(&[
        "get",
        "events",
        "-n",
        "q",
        "--field-selector",
        "reason=FailedCreate",
        "-o",
        "json",
    ]))
    .unwrap();
    let count: i64 = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["count"].as_i64().unwrap_or(1))
        .sum();
    assert!(
        (1..=5).contains(&count),
        "{count} refused creates in about 7 s: {ev}"
    );
    let e = k.fails(
        &["create", "deployment", "d2", "-n", "q", "--image=busybox"],
        None,
    );
    assert!(e.contains("exceeded quota: q1, requested: count/deployments.apps=1, used: count/deployments.apps=1, limited: count/deployments.apps=1"), "{e}");
    let e = k.fails(
        &[
            "create",
            "service",
            "nodeport",
            "np",
            "-n",
            "q",
            "--tcp=80:80,81:81",
        ],
        None,
    );
    assert!(e.contains("services.nodeports=2"), "{e}");
    // Updates are charged by what they grow: the first ClusterIP Service
    // turned NodePort takes the one node port, the second is refused.
    for svc in ["s1", "s2"] {
        k.ok(&[
            "create",
            "service",
            "clusterip",
            svc,
            "-n",
            "q",
            "--tcp=80:80",
        ]);
    }
    let to_node_port = r#"{"spec":{"type":"NodePort"}}"#;
    k.ok(&["patch", "service", "s1", "-n", "q", "-p", to_node_port]);
    let e = k.fails(
        &["patch", "service", "s2", "-n", "q", "-p", to_node_port],
        None,
    );
    assert!(
        e.contains(r#"services "s2" is forbidden: exceeded quota: q1, requested: services.nodeports=1, used: services.nodeports=1, limited: services.nodeports=1"#),
        "{e}"
    );
    // Unchanged usage is not charged again.
    k.ok(&["label", "service", "s1", "-n", "q", "touched=yes"]);
    // Eight writers race for the last three ConfigMaps: exactly three win,
    // and the quota says four.
    let wins: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let kc = server.kubeconfig();
                s.spawn(move || {
                    kubectl_at(
                        &newest(),
                        &kc,
                        &["create", "configmap", &format!("c{i}"), "-n", "q"],
                    )
                    .0
                })
            })
            .collect();
        hs.into_iter().map(|h| usize::from(h.join().unwrap())).sum()
    });
    assert_eq!(wins, 3);
    assert_eq!(used(&k, "q", "q1")["configmaps"], "4");
    // What goes is given back by the status loop.
    k.ok(&[
        "delete",
        "pod",
        "a",
        "-n",
        "q",
        "--grace-period=0",
        "--force",
    ]);
    k.ok(&[
        "delete",
        "configmap",
        "-n",
        "q",
        "--field-selector",
        "metadata.name!=kube-root-ca.crt",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let u = used(&k, "q", "q1");
        if u["pods"] == "0" && u["requests.cpu"] == "0" && u["configmaps"] == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "usage not given back: {u}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The recount still charges the NodePort Service s1 (a quota naming
    // node ports counts Services though a ClusterIP one uses none).
    assert_eq!(used(&k, "q", "q1")["services.nodeports"], "1");
    k.ok(&[
        "run",
        "b",
        "-n",
        "q",
        "--image=busybox",
        "--overrides",
        &cpu("b", "600m"),
    ]);
    // Both kubectls list it with its usage.
    for bin in [oldest(), newest()] {
        let (ok, out) = kubectl_at(&bin, &server.kubeconfig(), &["get", "quota", "-n", "q"]);
        assert!(
            ok && out.contains("requests.cpu: 600m/1") && out.contains("pods: 1/2"),
            "{out}"
        );
        let (ok, out) = kubectl_at(
            &bin,
            &server.kubeconfig(),
            &["describe", "quota", "-n", "q", "q1"],
        );
        assert!(ok && out.contains("count/deployments.apps"), "{out}");
    }
    let e = k.fails(
        &["create", "quota", "bad", "-n", "q", "--hard=pods=-1"],
        None,
    );
    assert!(
        e.contains("spec.hard[pods]: Invalid value")
            && e.contains("must be greater than or equal to 0"),
        "{e}"
    );
}

#[test]
fn events_are_served_as_events_k8s_io_and_cluster_kinds_are_listed() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    k.apply(&["apply", "-f", "-"], r#"{"apiVersion":"v1","kind":"Event","metadata":{"name":"e1","namespace":"default"},
        "involvedObject":{"kind":"Pod","name":"x","namespace":"default"},"reason":"Tested","message":"hello","type":"Normal",
        "source":{"component":"tester"},"count":2,"firstTimestamp":"2026-01-01T00:00:00Z","lastTimestamp":"2026-01-01T00:00:01Z"}"#);
    let e = json(&k, &["get", "events.v1.events.k8s.io", "e1"]);
    assert_eq!(e["apiVersion"], "events.k8s.io/v1");
    assert_eq!(e["regarding"]["name"], "x");
    assert_eq!(e["note"], "hello");
    assert_eq!(e["deprecatedCount"], 2);
    assert_eq!(e["deprecatedSource"]["component"], "tester");
    // Written as events.k8s.io, read as core.
    k.apply(&["apply", "-f", "-"], r#"{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"e2","namespace":"default"},
        "eventTime":"2026-01-01T00:00:02.000000Z","reportingController":"me","reportingInstance":"me-1","action":"Act",
        "reason":"Tested","note":"new style","type":"Warning","regarding":{"kind":"Pod","name":"y","namespace":"default"}}"#);
    let core = json(&k, &["get", "events", "e2"]);
    assert_eq!(core["message"], "new style");
    assert_eq!(core["involvedObject"]["name"], "y");
    for bin in [oldest(), newest()] {
        let (ok, out) = kubectl_at(&bin, &server.kubeconfig(), &["events"]);
        assert!(
            ok && out.contains("hello") && out.contains("new style"),
            "{out}"
        );
    }
    k.apply(&["apply", "-f", "-"], r#"{"apiVersion":"node.k8s.io/v1","kind":"RuntimeClass","metadata":{"name":"runc"},"handler":"runc"}"#);
    k.apply(&["apply", "-f", "-"], r#"{"apiVersion":"storage.k8s.io/v1","kind":"StorageClass","metadata":{"name":"local"},"provisioner":"kubernetes.io/no-provisioner","volumeBindingMode":"WaitForFirstConsumer"}"#);
    for bin in [oldest(), newest()] {
        let (ok, out) = kubectl_at(&bin, &server.kubeconfig(), &["get", "runtimeclass,sc"]);
        assert!(
            ok && out.contains("runc")
                && out.contains("kubernetes.io/no-provisioner")
                && out.contains("WaitForFirstConsumer"),
            "{out}"
        );
    }
    let sc = json(&k, &["get", "sc", "local"]);
    assert_eq!(sc["reclaimPolicy"], "Delete", "{sc}");
}
