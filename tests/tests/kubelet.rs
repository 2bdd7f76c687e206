//! The kubelet (`rudder agent kubelet`) against real containerd + runc,
//! images from the local registry under the names manifests use, the
//! reference `bridge` + `host-local` CNI plugins, and `rudder server`
//! (scheduler included) driven with the stock kubectl 1.33.
//!
//! The kubelet runs inside a network namespace of the test's own (so the
//! pod bridge and veths never touch the host's network); a loopback relay
//! lets it reach the test's apiserver and the registry.

mod support;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use rudder_test_harness::{ChildGuard, NetNs, unique_name};
use serde_json::Value;
use support::{
    kube::{Kubectl, newest},
    node::{Node, condition, phase, status_of, tail, wait},
};

#[test]
fn myapp_pod_runs_its_init_containers_in_order_then_the_app() {
    let node = Node::start();
    let k = node.kubectl();
    // The classic pattern: two init containers that loop until a condition
    // holds (here: the first loops a few rounds, the second until the
    // first's file appears in the shared emptyDir), then the app.
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: myapp-pod
  labels: {app.kubernetes.io/name: MyApp}
spec:
  volumes: [{name: work, emptyDir: {}}]
  initContainers:
  - name: init-myservice
    image: busybox:1.28
    command: ['sh', '-c', 'i=0; until [ $i -ge 3 ]; do echo waiting for myservice; i=$((i+1)); sleep 1; done; echo one > /work/init1']
    volumeMounts: [{name: work, mountPath: /work}]
  - name: init-mydb
    image: busybox:1.28
    command: ['sh', '-c', 'until [ -f /work/init1 ]; do echo waiting for mydb; sleep 0.2; done; echo two > /work/init2']
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: myapp-container
    image: busybox:1.28
    command: ['sh', '-c', 'echo The app is running! $(cat /work/init1) $(cat /work/init2) $GREETING; hostname; sleep 3600']
    env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}, {name: GREETING, value: "hello $(POD_NAME)"}]
    volumeMounts: [{name: work, mountPath: /work}]
"#,
    );
    // While the first init container runs: Pending, Init:0/2.
    let p = node.wait_pod("myapp-pod", "the first init container running", 60, |p| {
        status_of(p, "initContainerStatuses", "init-myservice")["state"]["running"].is_object()
    });
    assert_eq!(phase(&p), "Pending");
    assert_eq!(condition(&p, "Initialized"), "False");
    assert_eq!(
        status_of(&p, "containerStatuses", "myapp-container")["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    assert!(status_of(&p, "initContainerStatuses", "init-mydb")["state"]["waiting"].is_object());
    let listed = k.ok(&["get", "pod", "myapp-pod", "--no-headers"]);
    assert!(listed.contains("Init:0/2"), "{listed}");

    let p = node.wait_pod("myapp-pod", "Running and Ready", 60, |p| {
        phase(p) == "Running" && condition(p, "Ready") == "True"
    });
    for init in ["init-myservice", "init-mydb"] {
        let s = status_of(&p, "initContainerStatuses", init);
        assert_eq!(s["state"]["terminated"]["exitCode"], 0, "{init}: {s}");
        assert_eq!(s["state"]["terminated"]["reason"], "Completed");
    }
    // Each ran in order: the second finished after the first.
    let fin = |n| {
        status_of(&p, "initContainerStatuses", n)["state"]["terminated"]["finishedAt"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(fin("init-myservice") <= fin("init-mydb"));
    assert_eq!(condition(&p, "Initialized"), "True");
    assert_eq!(condition(&p, "ContainersReady"), "True");
    let ip = p["status"]["podIP"].as_str().unwrap();
    assert!(ip.starts_with("10.88.0."), "pod IP {ip} from host-local");
    assert_eq!(
        p["spec"]["nodeName"],
        node.name.as_str(),
        "placed by the scheduler"
    );

    // The app's output reached its CRI log file: both init files (the
    // shared emptyDir), env expansion, and the pod's own hostname.
    let log = wait("the app's log line", 20, || {
        let l = node.container_log(&p, "myapp-container", 0);
        l.contains("sh\n")
            .then_some(())
            .or_else(|| (l.lines().count() >= 2).then_some(()))?;
        Some(l)
    });
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines[0].ends_with(" stdout F The app is running! one two hello myapp-pod"),
        "CRI format: {log}"
    );
    assert!(lines[1].ends_with(" stdout F myapp-pod"), "{log}");
    let init_log = node.container_log(&p, "init-myservice", 0);
    assert_eq!(
        init_log.matches("waiting for myservice").count(),
        3,
        "{init_log}"
    );

    // Events from the kubelet.
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=myapp-pod",
    ]);
    for reason in ["Pulled", "Created", "Started"] {
        assert!(events.contains(reason), "{reason} missing from:\n{events}");
    }

    // Deleting the pod stops it and leaves nothing behind.
    k.ok(&[
        "delete",
        "pod",
        "myapp-pod",
        "--grace-period=1",
        "--wait=true",
        "--timeout=60s",
    ]);
    wait("the pod's containers removed", 30, || {
        node.containers_of().is_empty().then_some(())
    });
    assert!(
        std::fs::read_dir(node.dir.join("run/pods"))
            .map(Iterator::count)
            .unwrap_or(0)
            == 0,
        "sandbox namespaces left"
    );
    let ipam: Vec<_> = std::fs::read_dir(node.dir.join("ipam/kubelet-test"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        ipam.iter()
            .all(|f| f == "lock" || f.starts_with("last_reserved_ip")),
        "address allocations left: {ipam:?}"
    );
}

#[test]
fn restart_policies_exit_codes_and_crash_loop_back_off() {
    let node = Node::start();
    let k = node.kubectl();
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers:
  - {name: c, image: busybox:1.28, command: ['sh', '-c', 'echo boom; exit 3']}
---
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: busybox:1.28, command: ['sh', '-c', 'echo done']}
---
apiVersion: v1
kind: Pod
metadata: {name: fails}
spec:
  restartPolicy: OnFailure
  containers:
  - {name: c, image: busybox:1.28, command: ['false']}
"#,
    );
    let p = node.wait_pod("once", "Succeeded", 60, |p| phase(p) == "Succeeded");
    assert_eq!(
        status_of(&p, "containerStatuses", "c")["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(status_of(&p, "containerStatuses", "c")["restartCount"], 0);

    // Always: after the first exit, CrashLoopBackOff for 10 s, then a
    // restart; after the second exit 20 s.
    let p = node.wait_pod(
        "crasher",
        "CrashLoopBackOff after the first exit",
        60,
        |p| {
            let s = status_of(p, "containerStatuses", "c");
            s["restartCount"] == 0 && s["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        },
    );
    let first_backoff = Instant::now();
    let s = status_of(&p, "containerStatuses", "c");
    assert_eq!(s["lastState"]["terminated"]["exitCode"], 3, "{s}");
    assert_eq!(s["lastState"]["terminated"]["reason"], "Error");
    let msg = s["state"]["waiting"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("back-off 10s restarting failed container=c pod=crasher_default"),
        "{msg}"
    );
    let p = node.wait_pod("crasher", "the second back-off", 60, |p| {
        let s = status_of(p, "containerStatuses", "c");
        s["restartCount"] == 1 && s["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let waited = first_backoff.elapsed();
    assert!(
        waited >= Duration::from_secs(8),
        "restarted before the 10 s back-off: {waited:?}"
    );
    let s = status_of(&p, "containerStatuses", "c");
    assert!(
        s["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .starts_with("back-off 20s "),
        "{s}"
    );
    assert_eq!(s["lastState"]["terminated"]["exitCode"], 3);
    let crash_log = node.container_log(&p, "c", 1);
    assert!(
        crash_log.ends_with(" stdout F boom\n"),
        "the restarted instance's own log: {crash_log:?}"
    );
    let listed = k.ok(&["get", "pod", "crasher", "--no-headers"]);
    assert!(
        listed.contains("CrashLoopBackOff")
            || listed.contains("Error")
            || listed.contains("Running"),
        "{listed}"
    );

    // OnFailure: a failing container keeps restarting; the pod stays Running.
    let p = node.wait_pod("fails", "a restart", 60, |p| {
        status_of(p, "containerStatuses", "c")["restartCount"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    assert_eq!(phase(&p), "Running");
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=crasher",
    ]);
    assert!(events.contains("Started"), "{events}");
}

#[test]
fn bad_input_gives_the_kubernetes_reasons_and_the_node_stays_healthy() {
    let node = Node::start();
    let k = node.kubectl();
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: no-image}
spec:
  containers: [{name: c, image: "does-not-exist:1.0"}]
---
apiVersion: v1
kind: Pod
metadata: {name: no-command}
spec:
  restartPolicy: Never
  containers: [{name: c, image: busybox:1.28, command: ['/no/such/binary']}]
---
apiVersion: v1
kind: Pod
metadata: {name: no-configmap}
spec:
  volumes: [{name: cfg, configMap: {name: missing-config}}]
  containers: [{name: c, image: busybox:1.28, command: ['sleep', '3600'], volumeMounts: [{name: cfg, mountPath: /cfg}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: bad-cap}
spec:
  containers: [{name: c, image: busybox:1.28, command: ['sleep', '3600'], securityContext: {capabilities: {add: [NOT_A_CAPABILITY]}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: good}
spec:
  containers: [{name: c, image: busybox:1.28, command: ['sleep', '3600']}]
"#,
    );
    let waiting = |p: &Value| {
        status_of(p, "containerStatuses", "c")["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let p = node.wait_pod("no-image", "ErrImagePull / ImagePullBackOff", 60, |p| {
        matches!(waiting(p).as_str(), "ErrImagePull" | "ImagePullBackOff")
    });
    let msg = status_of(&p, "containerStatuses", "c")["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("does-not-exist"), "{msg}");
    node.wait_pod("no-image", "ImagePullBackOff", 30, |p| {
        waiting(p) == "ImagePullBackOff"
    });

    let p = node.wait_pod("no-command", "a failed start", 60, |p| {
        status_of(p, "containerStatuses", "c")["state"]["terminated"].is_object()
    });
    let t = &status_of(&p, "containerStatuses", "c")["state"]["terminated"];
    assert_eq!(t["exitCode"], 128, "{t}");
    assert_eq!(t["reason"], "StartError");
    assert!(
        t["message"]
            .as_str()
            .unwrap_or_default()
            .contains("/no/such/binary"),
        "{t}"
    );
    assert_eq!(phase(&p), "Failed");

    let p = node.wait_pod("no-configmap", "stuck creating", 60, |p| {
        waiting(p) == "ContainerCreating"
            && status_of(p, "containerStatuses", "c")["state"]["waiting"]["message"].is_string()
    });
    let msg = status_of(&p, "containerStatuses", "c")["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        msg,
        "MountVolume.SetUp failed for volume \"cfg\" : configmap \"missing-config\" not found"
    );
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=no-configmap",
    ]);
    assert!(events.contains("FailedMount"), "{events}");

    let p = node.wait_pod("bad-cap", "CreateContainerConfigError", 60, |p| {
        waiting(p) == "CreateContainerConfigError"
    });
    assert!(
        status_of(&p, "containerStatuses", "c")["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .contains("NOT_A_CAPABILITY")
    );

    // Pods bound straight to the node (no scheduler) that it cannot run
    // are rejected at admission: Failed with the kubelet's reason, an
    // event, nothing started; deleting them completes.
    k.apply(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: too-big}}
spec:
  nodeName: {node}
  containers: [{{name: c, image: busybox:1.28, command: ['sleep', '3600'], resources: {{requests: {{cpu: "1000"}}}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: wrong-label}}
spec:
  nodeName: {node}
  nodeSelector: {{disk: none}}
  containers: [{{name: c, image: busybox:1.28, command: ['sleep', '3600']}}]
"#,
            node = node.name
        ),
    );
    for (pod, reason, message) in [
        (
            "too-big",
            "OutOfcpu",
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 1000000, used: 0, capacity: ",
        ),
        (
            "wrong-label",
            "NodeAffinity",
            "Pod was rejected: Predicate NodeAffinity failed",
        ),
    ] {
        let p = node.wait_pod(pod, "rejected at admission", 60, |p| phase(p) == "Failed");
        assert_eq!(p["status"]["reason"], reason, "{}", p["status"]);
        let msg = p["status"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with(message), "{msg}");
        assert!(
            p["status"]["containerStatuses"].is_null(),
            "{}",
            p["status"]
        );
        let events = k.ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod}"),
        ]);
        assert!(events.contains(reason), "{events}");
    }
    k.ok(&["delete", "pod", "too-big", "wrong-label", "--timeout=60s"]);

    // Once the ConfigMap exists, the pod starts.
    k.ok(&[
        "create",
        "configmap",
        "missing-config",
        "--from-literal=k=v",
    ]);
    node.wait_pod("no-configmap", "Running", 60, |p| phase(p) == "Running");
    node.wait_pod("good", "Running", 60, |p| phase(p) == "Running");
    let nodes = k.ok(&["get", "node", &node.name, "--no-headers"]);
    assert!(nodes.contains(" Ready "), "{nodes}");
    // The node's conditions say how the host is.
    let n: Value = serde_json::from_str(&k.ok(&["get", "node", &node.name, "-o", "json"])).unwrap();
    let conds: BTreeMap<String, (String, String)> = n["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_owned(),
                (
                    c["status"].as_str().unwrap().to_owned(),
                    c["reason"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    for (ty, want) in [
        ("Ready", ("True", "KubeletReady")),
        ("MemoryPressure", ("False", "KubeletHasSufficientMemory")),
        ("DiskPressure", ("False", "KubeletHasNoDiskPressure")),
        ("PIDPressure", ("False", "KubeletHasSufficientPID")),
        ("NetworkUnavailable", ("False", "CNIConfigured")),
    ] {
        assert_eq!(
            conds.get(ty).map(|(s, r)| (s.as_str(), r.as_str())),
            Some(want),
            "{ty}: {conds:?}"
        );
    }
}

#[test]
fn an_agent_restart_leaves_running_containers_alone_and_applies_deletions_made_meanwhile() {
    let mut node = Node::start();
    let k = node.kubectl();
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: keeper}
spec:
  containers: [{name: c, image: busybox:1.28, command: ['sh', '-c', 'echo started; sleep 3600']}]
---
apiVersion: v1
kind: Pod
metadata: {name: victim}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox:1.28, command: ['sleep', '3600']}]
"#,
    );
    let before = node.wait_pod("keeper", "Running", 60, |p| condition(p, "Ready") == "True");
    node.wait_pod("victim", "Running", 60, |p| condition(p, "Ready") == "True");
    let id = status_of(&before, "containerStatuses", "c")["containerID"].clone();
    let victim_uid = node.pod("victim")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .replace('-', "");

    // The agent dies (SIGKILL); the victim is deleted while it is away.
    drop(k);
    node.kubelet.take();
    let k = node.kubectl();
    k.ok(&["delete", "pod", "victim", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(1));
    drop(k);
    node.start_kubelet();

    wait("the deleted pod removed by the returning agent", 60, || {
        let (ok, _) = support::kube::kubectl_at(
            &newest(),
            &node.server.kubeconfig(),
            &["get", "pod", "victim"],
        );
        (!ok).then_some(())
    });
    wait("the deleted pod's containers removed", 30, || {
        (!node
            .containers_of()
            .iter()
            .any(|c| c.starts_with(&victim_uid)))
        .then_some(())
    });
    // The running pod was adopted, not restarted.
    std::thread::sleep(Duration::from_secs(3));
    let after = node.pod("keeper");
    let s = status_of(&after, "containerStatuses", "c");
    assert_eq!(
        s["containerID"], id,
        "same container after the restart: {s}"
    );
    assert_eq!(s["restartCount"], 0);
    assert!(s["state"]["running"].is_object(), "{s}");
    assert_eq!(phase(&after), "Running");
    assert_eq!(
        node.container_log(&after, "c", 0)
            .matches("started")
            .count(),
        1
    );
}

fn events_of(k: &Kubectl<'_>, pod: &str) -> String {
    k.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
    ])
}

#[test]
fn probes_restart_on_liveness_failure_and_flip_readiness() {
    let node = Node::start();
    let k = node.kubectl();
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: liveness-exec}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: busybox:1.28
    command: ['sh', '-c', 'touch /tmp/healthy; sleep 3; rm -f /tmp/healthy; sleep 600']
    livenessProbe: {exec: {command: [cat, /tmp/healthy]}, initialDelaySeconds: 1, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: readiness}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: busybox:1.28
    command: ['sh', '-c', 'sleep 2; touch /tmp/ready; sleep 5; rm /tmp/ready; sleep 600']
    readinessProbe: {exec: {command: [cat, /tmp/ready]}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: web
    image: nginx:1.25
    ports: [{name: http, containerPort: 80}]
    readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 1}
    livenessProbe: {tcpSocket: {port: 80}, periodSeconds: 1}
"#,
    );
    // Readiness: not ready before the file exists, ready while it does,
    // not ready after; never restarted.
    let p = node.wait_pod("readiness", "running", 60, |p| {
        status_of(p, "containerStatuses", "c")["state"]["running"].is_object()
    });
    assert_eq!(
        condition(&p, "Ready"),
        "False",
        "ready before the probe succeeded"
    );
    node.wait_pod("readiness", "Ready", 30, |p| {
        condition(p, "Ready") == "True"
    });
    let p = node.wait_pod("readiness", "not Ready again", 30, |p| {
        condition(p, "Ready") == "False"
    });
    assert_eq!(status_of(&p, "containerStatuses", "c")["restartCount"], 0);
    assert!(status_of(&p, "containerStatuses", "c")["state"]["running"].is_object());
    assert!(events_of(&k, "readiness").contains("Readiness probe failed"));

    // Liveness: restarted, then restarted again after the back-off.
    let p = node.wait_pod("liveness-exec", "a restart", 90, |p| {
        status_of(p, "containerStatuses", "c")["restartCount"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    assert!(status_of(&p, "containerStatuses", "c")["lastState"]["terminated"].is_object());
    let ev = events_of(&k, "liveness-exec");
    assert!(ev.contains("Liveness probe failed"), "{ev}");
    assert!(
        ev.contains("failed liveness probe, will be restarted"),
        "{ev}"
    );
    node.wait_pod("liveness-exec", "a second restart", 90, |p| {
        status_of(p, "containerStatuses", "c")["restartCount"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    });

    // httpGet on a named port and tcpSocket: ready, never restarted.
    let p = node.wait_pod("web", "Ready", 60, |p| condition(p, "Ready") == "True");
    std::thread::sleep(Duration::from_secs(3));
    let p2 = node.pod("web");
    assert_eq!(
        status_of(&p2, "containerStatuses", "web")["restartCount"],
        0,
        "{}",
        p["status"]
    );
    assert_eq!(condition(&p2, "Ready"), "True");
}

#[test]
fn lifecycle_hooks_run_and_pre_stop_completes_before_the_signal() {
    let node = Node::start();
    let k = node.kubectl();
    let dir = node.dir.join("hooks");
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: hooks}}
spec:
  terminationGracePeriodSeconds: 10
  volumes: [{{name: h, hostPath: {{path: {}, type: DirectoryOrCreate}}}}]
  containers:
  - name: c
    image: busybox:1.28
    command: ['sh', '-c', 'trap "echo term >> /h/log; exit 0" TERM; echo main >> /h/log; while true; do sleep 0.2; done']
    volumeMounts: [{{name: h, mountPath: /h}}]
    lifecycle:
      postStart: {{exec: {{command: ['sh', '-c', 'echo poststart >> /h/log']}}}}
      preStop: {{exec: {{command: ['sh', '-c', 'echo prestop-begin >> /h/log; sleep 1; echo prestop-end >> /h/log']}}}}
"#,
        dir.display()
    );
    k.apply(&["apply", "-f", "-"], &manifest);
    node.wait_pod("hooks", "Running", 60, |p| condition(p, "Ready") == "True");
    let log = wait("both start lines", 20, || {
        let l = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        (l.contains("main") && l.contains("poststart")).then_some(l)
    });
    assert!(!log.contains("prestop"), "{log}");
    let started = Instant::now();
    k.ok(&["delete", "pod", "hooks", "--wait=true", "--timeout=60s"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the TERM handler ended it, no SIGKILL wait"
    );
    let log = std::fs::read_to_string(dir.join("log")).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    let at = |w: &str| {
        lines
            .iter()
            .position(|l| *l == w)
            .unwrap_or_else(|| panic!("{w} missing: {log}"))
    };
    assert!(at("prestop-begin") < at("prestop-end"), "{log}");
    assert!(
        at("prestop-end") < at("term"),
        "preStop completes before the signal: {log}"
    );
}

#[test]
fn env_from_every_source_and_an_oom_kill() {
    let node = Node::start();
    let k = node.kubectl();
    k.ok(&["create", "configmap", "cfg", "--from-literal=MODE=fast"]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=PASSWORD=hunter2",
    ]);
    k.ok(&[
        "create",
        "service",
        "clusterip",
        "foo-svc",
        "--tcp=8765:8765",
    ]);
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: env-pod, labels: {app: env}}
spec:
  containers:
  - name: c
    image: busybox:1.28
    command: ['sh', '-c', 'env | sort; sleep 600']
    resources: {limits: {memory: 64Mi, cpu: 500m}}
    envFrom: [{configMapRef: {name: cfg}, prefix: CFG_}, {secretRef: {name: sec}}]
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    - {name: MEM_MB, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: MODE, valueFrom: {configMapKeyRef: {name: cfg, key: MODE}}}
    - {name: PW, valueFrom: {secretKeyRef: {name: sec, key: PASSWORD}}}
    - {name: MSG, value: "hello $(POD_NAME)"}
---
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:1.28
    command: ['tail', '/dev/zero']
    resources: {limits: {memory: 32Mi}}
"#,
    );
    let p = node.wait_pod("env-pod", "Running", 60, |p| phase(p) == "Running");
    let start = Instant::now();
    let log = loop {
        let l = node.container_log(&p, "c", 0);
        if l.contains("PW=") {
            break l;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the environment is not in the log within 20 s: {l:?}\npod: {}\nkubelet log:\n{}",
            node.pod("env-pod")["status"],
            tail(&node.log_of(), 30)
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let has = |kv: &str| log.lines().any(|l| l.ends_with(&format!(" stdout F {kv}")));
    for kv in [
        "CFG_MODE=fast",
        "PASSWORD=hunter2",
        "POD_NAME=env-pod",
        "APP=env",
        "MEM_MB=64",
        "MODE=fast",
        "PW=hunter2",
        "MSG=hello env-pod",
    ] {
        assert!(has(kv), "{kv} missing:\n{log}");
    }
    let ip = p["status"]["podIP"].as_str().unwrap();
    assert!(has(&format!("POD_IP={ip}")), "{log}");
    let svc_ip = k.ok(&[
        "get",
        "service",
        "foo-svc",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert!(has(&format!("FOO_SVC_SERVICE_HOST={svc_ip}")), "{log}");
    assert!(has("FOO_SVC_SERVICE_PORT=8765"), "{log}");
    assert!(
        has(&format!("FOO_SVC_PORT_8765_TCP=tcp://{svc_ip}:8765")),
        "{log}"
    );

    let p = node.wait_pod("hog", "OOM-killed", 90, |p| {
        status_of(p, "containerStatuses", "c")["state"]["terminated"].is_object()
    });
    let t = &status_of(&p, "containerStatuses", "c")["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{t}");
    assert_eq!(t["exitCode"], 137, "{t}");
    assert_eq!(phase(&p), "Failed");
    let nodes = k.ok(&["get", "node", &node.name, "--no-headers"]);
    assert!(nodes.contains(" Ready "), "{nodes}");
}

#[test]
fn kubectl_logs_through_the_apiserver() {
    let node = Node::start();
    let k = node.kubectl();
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: counter}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox:1.28, command: ['sh', '-c', 'i=0; while true; do echo line $i; i=$((i+1)); sleep 0.3; done']}
---
apiVersion: v1
kind: Pod
metadata: {name: two}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - {name: setup, image: busybox:1.28, command: ['echo', 'from init']}
  containers:
  - {name: a, image: busybox:1.28, command: ['sh', '-c', 'echo from a; sleep 600']}
  - {name: b, image: busybox:1.28, command: ['sh', '-c', 'echo from b; sleep 600']}
---
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers:
  - {name: c, image: busybox:1.28, command: ['sh', '-c', 'echo run $RANDOM$RANDOM; exit 1']}
"#,
    );
    node.wait_pod("counter", "Running", 60, |p| phase(p) == "Running");
    let out = wait("a few lines", 20, || {
        let o = k.ok(&["logs", "counter"]);
        (o.lines().count() >= 3).then_some(o)
    });
    assert!(out.starts_with("line 0\nline 1\nline 2\n"), "{out}");
    assert_eq!(k.ok(&["logs", "counter", "--tail=1"]).lines().count(), 1);
    let stamped = k.ok(&["logs", "counter", "--timestamps", "--tail=2"]);
    for l in stamped.lines() {
        let (ts, msg) = l.split_once(' ').unwrap();
        assert!(
            ts.parse::<jiff::Timestamp>().is_ok() && msg.starts_with("line "),
            "{l}"
        );
    }
    // -f streams lines as they are written.
    let mut follow = Command::new(newest())
        .args([
            "--kubeconfig",
            node.server.kubeconfig().to_str().unwrap(),
            "logs",
            "-f",
            "counter",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read as _;
        let mut buf = vec![0u8; 1 << 16];
        let mut got = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(4) {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    });
    std::thread::sleep(Duration::from_secs(4));
    let before = k.ok(&["logs", "counter"]).lines().count();
    let _ = follow.kill();
    let _ = follow.wait();
    let streamed = reader.join().unwrap();
    let n = streamed.lines().count();
    assert!(
        n >= 8 && n + 3 >= before,
        "followed {n} lines of {before}:\n{streamed}"
    );
    assert!(
        streamed.lines().all(|l| l.starts_with("line ")),
        "{streamed}"
    );

    node.wait_pod("two", "Running", 60, |p| phase(p) == "Running");
    // kubectl picks the first container itself; the API asks for one.
    let out = wait("a's log", 20, || {
        Some(k.ok(&["logs", "two"])).filter(|o| o.contains("from a"))
    });
    assert!(out.contains("Defaulted container \"a\""), "{out}");
    let err = k.fails(
        &["get", "--raw", "/api/v1/namespaces/default/pods/two/log"],
        None,
    );
    assert!(
        err.contains("a container name must be specified for pod two, choose one of: [a b setup]"),
        "{err}"
    );
    assert_eq!(
        wait("b's log", 20, || Some(k.ok(&["logs", "two", "-c", "b"]))
            .filter(|o| !o.is_empty())),
        "from b\n"
    );
    assert_eq!(k.ok(&["logs", "two", "-c", "setup"]), "from init\n");
    let err = k.fails(&["logs", "two", "-c", "nope"], None);
    assert!(
        err.contains("container nope is not valid for pod two"),
        "{err}"
    );

    node.wait_pod("crash", "a restart", 60, |p| {
        let s = status_of(p, "containerStatuses", "c");
        s["restartCount"].as_u64().unwrap_or(0) >= 1 && s["state"]["waiting"].is_object()
    });
    let previous = k.ok(&["logs", "crash", "--previous"]);
    let current = k.ok(&["logs", "crash"]);
    assert!(
        previous.starts_with("run ") && current.starts_with("run "),
        "{previous} / {current}"
    );
    assert_ne!(
        previous, current,
        "--previous is the earlier instance's log"
    );
}

#[test]
fn config_map_and_secret_volumes_follow_updates() {
    let node = Node::start();
    let k = node.kubectl();
    k.ok(&[
        "create",
        "configmap",
        "site",
        "--from-literal=greeting=hello",
    ]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=token=abc",
    ]);
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: cfg, configMap: {name: site, items: [{key: greeting, path: greeting.txt, mode: 0400}]}}
  - {name: sec, secret: {secretName: creds, defaultMode: 0440}}
  containers:
  - name: c
    image: busybox:1.28
    command: ['sh', '-c', 'while true; do echo "G=$(cat /cfg/greeting.txt) T=$(cat /sec/token)"; sleep 0.5; done']
    volumeMounts: [{name: cfg, mountPath: /cfg}, {name: sec, mountPath: /sec, readOnly: true}]
"#,
    );
    let p = node.wait_pod("reader", "Running", 60, |p| phase(p) == "Running");
    let saw = |want: &str, secs: u64| {
        let start = Instant::now();
        loop {
            let l = node.container_log(&p, "c", 0);
            if l.contains(want) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "{want} not in the log within {secs} s:\n{}",
                tail(&l, 5)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    saw("G=hello T=abc", 20);
    // Modes as asked, on the files behind the atomic writer's symlinks.
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let vols = node.dir.join("root/pods").join(uid).join("volumes");
    let mode = |p: PathBuf| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(vols.join("cfg/greeting.txt")), 0o400);
    assert_eq!(mode(vols.join("sec/token")), 0o440);
    assert!(
        std::fs::read_link(vols.join("cfg/..data")).is_ok(),
        "..data is a symlink"
    );

    k.ok(&[
        "patch",
        "configmap",
        "site",
        "-p",
        r#"{"data":{"greeting":"bonjour"}}"#,
    ]);
    k.ok(&[
        "patch",
        "secret",
        "creds",
        "-p",
        r#"{"data":{"token":"eHl6"}}"#,
    ]);
    saw("G=bonjour T=xyz", 40);
    let log = node.container_log(&p, "c", 0);
    assert!(
        !log.contains("No such file"),
        "a reader never saw a missing file mid-update:\n{log}"
    );
    assert_eq!(
        status_of(&node.pod("reader"), "containerStatuses", "c")["restartCount"],
        0
    );
}

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
    assert!(value("rudder_proxy_sync_seconds_count") >= 1.0, "{metrics}");
    assert!(
        value(r#"rudder_proxy_packets_total{action="new_flow"}"#) >= 40.0,
        "{metrics}"
    );
    assert!(http_get_in(&node.ns, *port, "/healthz").contains("200 OK"));

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
    let metrics = http_get_in(&node.ns, *port, "/metrics");
    assert!(
        metrics.contains(r#"rudder_proxy_packets_total{action="reject_tcp"}"#),
        "{metrics}"
    );
}

#[test]
fn kubectl_exec_runs_commands_in_containers() {
    let node = Node::start();
    let k = node.kubectl();
    k.ok(&[
        "run",
        "box",
        "--image=busybox:1.28",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "echo ready > /tmp/state; sleep 3600",
    ]);
    node.wait_pod("box", "Running", 90, |p| phase(p) == "Running");
    let kubeconfig = node.server.kubeconfig();
    let run = |bin: &std::path::Path,
               args: &[&str],
               stdin: Option<&str>|
     -> (Option<i32>, String, String) {
        use std::io::Write as _;
        let mut child = Command::new(bin)
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", kubeconfig.parent().unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let kubectl = |args: &[&str], stdin: Option<&str>| run(&newest(), args, stdin);
    // kubectl 1.27 speaks SPDY/3.1 (one stream per channel): the same
    // separation of streams, exit codes, stdin and a terminal.
    let old = support::kube::oldest();
    let (code, out, err) = run(
        &old,
        &[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "cat /tmp/state; echo to-stderr >&2; exit 4",
        ],
        None,
    );
    assert_eq!(code, Some(4), "stdout {out:?} stderr {err:?}");
    assert_eq!(out, "ready\n");
    assert!(err.contains("to-stderr"), "{err}");
    let (code, out, err) = run(
        &old,
        &["exec", "-i", "box", "--", "sh", "-c", "wc -c"],
        Some(&"x".repeat(100_000)),
    );
    assert_eq!((code, out.trim()), (Some(0), "100000"), "{err}");
    let (code, _, err) = run(&old, &["exec", "box", "--", "/no/such/binary"], None);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("no such file") || err.contains("not found"),
        "{err}"
    );
    let out = Command::new("script")
        .args(["-qec"])
        .arg(format!("{} exec -it box -- tty", old.display()))
        .arg("/dev/null")
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", kubeconfig.parent().unwrap())
        .env("COLUMNS", "100")
        .env("LINES", "30")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "a tty over SPDY: {text:?}");
    // Output streams apart, in the container's file system, exit code kept.
    let (code, out, err) = kubectl(
        &[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "cat /tmp/state; echo to-stderr >&2; exit 3",
        ],
        None,
    );
    assert_eq!(code, Some(3), "stdout {out:?} stderr {err:?}");
    assert_eq!(out, "ready\n");
    assert!(err.contains("to-stderr"), "{err}");
    // Standard input, until its end.
    let (code, out, err) = kubectl(
        &["exec", "-i", "box", "--", "sh", "-c", "wc -l; echo bye"],
        Some("a\nb\nc\n"),
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["3", "bye"]);
    // -c names the container; a wrong one is refused.
    let (code, out, _) = kubectl(&["exec", "box", "-c", "box", "--", "hostname"], None);
    assert_eq!((code, out.trim()), (Some(0), "box"));
    let (code, _, err) = kubectl(&["exec", "box", "-c", "nope", "--", "true"], None);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("container nope is not valid for pod box"),
        "{err}"
    );
    // A command that does not exist fails with the runtime's reason.
    let (code, _, err) = kubectl(&["exec", "box", "--", "/no/such/binary"], None);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("no such file") || err.contains("not found"),
        "{err}"
    );
    // A terminal (-it), from a pseudo-terminal `script` gives kubectl.
    let out = Command::new("script")
        .args(["-qec"])
        .arg(format!("{} exec -it box -- tty", newest().display()))
        .arg("/dev/null")
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", kubeconfig.parent().unwrap())
        .env("COLUMNS", "100")
        .env("LINES", "30")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "a tty in the container: {text}");
    // The exec'd processes are gone afterwards (only the main one is left).
    let (code, out, _) = kubectl(&["exec", "box", "--", "ps", "-o", "pid,args"], None);
    assert_eq!(code, Some(0));
    let procs: Vec<&str> = out.lines().skip(1).collect();
    assert!(
        procs
            .iter()
            .all(|p| !p.contains("wc -l") && !p.contains("/tmp/state;")),
        "leftover processes:\n{out}"
    );
    assert!(procs.iter().any(|p| p.contains("sleep 3600")), "{out}");
}

/// A `kubectl port-forward` running in the background: the local ports it
/// listens on, and what it printed.
struct PortForward {
    /// Killed (by pid) and reaped when dropped.
    _child: ChildGuard,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl PortForward {
    fn start(kubectl: &std::path::Path, kubeconfig: &std::path::Path, args: &[String]) -> Self {
        use std::io::{BufRead as _, Read as _};
        let mut child = Command::new(kubectl)
            .arg("port-forward")
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", kubeconfig.parent().unwrap())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = std::sync::Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            _child: ChildGuard(child),
            lines,
            stderr,
        }
    }

    /// Waits until kubectl says it forwards every one of `ports`.
    fn wait_listening(&self, ports: &[u16]) {
        let mut seen = vec![];
        let deadline = Instant::now() + Duration::from_secs(60);
        while ports.iter().any(|p| {
            !seen
                .iter()
                .any(|l: &String| l.contains(&format!("127.0.0.1:{p} ")))
        }) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => seen.push(l),
                Err(_) => panic!(
                    "kubectl port-forward did not listen on {ports:?}: {seen:?}\nstderr: {}",
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// An HTTP/1.0 GET to 127.0.0.1:`port`: the status line and the body.
fn http10_get(port: u16, path: &str) -> std::io::Result<(String, Vec<u8>)> {
    use std::io::{Read as _, Write as _};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(c, "GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n")?;
    let mut all = vec![];
    c.read_to_end(&mut all)?;
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP answer: {all:?}")))?;
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, all[split + 4..].to_vec()))
}

fn sha256_of(dir: &std::path::Path, bytes: &[u8]) -> String {
    let f = dir.join(format!("blob-{}", unique_name()));
    std::fs::write(&f, bytes).unwrap();
    let out = Command::new("sha256sum").arg(&f).output().unwrap();
    let _ = std::fs::remove_file(&f);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn kubectl_port_forward_reaches_a_port_only_the_pod_can_see() {
    let node = Node::start();
    let k = node.kubectl();
    // httpd bound to the pod's own loopback: reachable only from inside
    // its network namespace, which is where the kubelet dials.
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: pf}
spec:
  containers:
  - name: web
    image: busybox:1.28
    command: ['sh', '-c', 'mkdir -p /www && echo hello-from-the-pod > /www/index.html && dd if=/dev/urandom of=/www/big bs=1024 count=3072 2>/dev/null && sha256sum /www/big > /www/big.sum && exec httpd -f -p 127.0.0.1:8080 -h /www']
"#,
    );
    node.wait_pod("pf", "Running", 90, |p| phase(p) == "Running");
    let kubeconfig = node.server.kubeconfig();
    let (web, closed) = (
        rudder_test_harness::unused_port(),
        rudder_test_harness::unused_port(),
    );
    // kubectl 1.33: SPDY tunnelled in a WebSocket.
    let pf = PortForward::start(
        &newest(),
        &kubeconfig,
        &["pf".into(), format!("{web}:8080"), format!("{closed}:9")],
    );
    pf.wait_listening(&[web, closed]);
    let (status, body) = wait("the pod's httpd through the forward", 60, || {
        http10_get(web, "/index.html")
            .ok()
            .filter(|(s, _)| s.contains("200"))
    });
    assert!(status.contains("200"), "{status}");
    assert_eq!(String::from_utf8_lossy(&body), "hello-from-the-pod\n");
    // Several connections, one after the other and at once, each its own
    // stream pair; 3 MiB each way through the session intact.
    for _ in 0..3 {
        let (_, body) = http10_get(web, "/index.html").unwrap();
        assert_eq!(body, b"hello-from-the-pod\n");
    }
    let (_, sum) = http10_get(web, "/big.sum").unwrap();
    let want = String::from_utf8_lossy(&sum)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let fetches: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || http10_get(web, "/big").unwrap()))
        .collect();
    for f in fetches {
        let (status, body) = f.join().unwrap();
        assert!(status.contains("200"), "{status}");
        assert_eq!(body.len(), 3 * 1024 * 1024);
        assert_eq!(sha256_of(node.dir.path(), &body), want);
    }
    // kubectl 1.27: the plain SPDY/3.1 upgrade.
    let old = rudder_test_harness::unused_port();
    let pf_old = PortForward::start(
        &support::kube::oldest(),
        &kubeconfig,
        &["pod/pf".into(), format!("{old}:8080")],
    );
    pf_old.wait_listening(&[old]);
    let (_, body) = http10_get(old, "/index.html").unwrap();
    assert_eq!(body, b"hello-from-the-pod\n");
    drop(pf_old);
    // A port nothing listens on: the connection ends without data and
    // kubectl reports the kubelet's reason.
    let got = http10_get(closed, "/");
    assert!(got.is_err(), "{got:?}");
    let err = wait("kubectl to report the failed dial", 30, || {
        let e = pf.stderr();
        e.contains("error forwarding port 9").then_some(e)
    });
    assert!(err.contains("pf"), "{err}");
    assert!(
        err.contains("connection refused") || err.contains("Connection refused"),
        "{err}"
    );
    drop(pf);
    // An unknown pod is refused before anything listens.
    let (code, _, err) = {
        let out = Command::new(newest())
            .args([
                "port-forward",
                "nope",
                &format!("{}:80", rudder_test_harness::unused_port()),
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", kubeconfig.parent().unwrap())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_ne!(code, Some(0));
    assert!(err.contains("pods \"nope\" not found"), "{err}");
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

/// Mount points (from our mountinfo) whose path contains `needle`.
fn mounts_with(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[test]
fn downward_api_projected_memory_and_claim_volumes() {
    let node = Node::start();
    let k = node.kubectl();
    let data = node.dir.join("pv-data");
    std::fs::create_dir_all(&data).unwrap();
    k.ok(&["create", "configmap", "app-cfg", "--from-literal=mode=fast"]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "app-sec",
        "--from-literal=pw=s3cret",
    ]);
    k.apply(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1
kind: PersistentVolume
metadata: {{name: pv-{name}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath: {{path: {path}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: claim}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  resources: {{requests: {{storage: 1Gi}}}}
",
            name = node.name,
            path = data.display()
        ),
    );
    wait("the claim to be bound", 60, || {
        (k.ok(&["get", "pvc", "claim", "-o", "jsonpath={.status.phase}"]) == "Bound").then_some(())
    });
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: vols
  labels: {app: demo, tier: web}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - {path: mem, resourceFieldRef: {containerName: c, resource: limits.memory, divisor: 1Mi}}
  - name: all-in-one
    projected:
      sources:
      - configMap: {name: app-cfg}
      - secret: {name: app-sec}
      - downwardAPI: {items: [{path: ns, fieldRef: {fieldPath: metadata.namespace}}]}
  - {name: scratch, emptyDir: {medium: Memory, sizeLimit: 16Mi}}
  - {name: data, persistentVolumeClaim: {claimName: claim}}
  - {name: data-ro, persistentVolumeClaim: {claimName: claim, readOnly: true}}
  containers:
  - name: c
    image: busybox:1.28
    resources: {limits: {memory: 64Mi, cpu: 200m}}
    command: ['sh', '-c', 'S=/var/run/secrets/kubernetes.io/serviceaccount; echo "L=$(tr "\n" "," < /info/labels) N=$(cat /info/name) M=$(cat /info/mem) P=$(cat /p/mode)/$(cat /p/pw)/$(cat /p/ns) SA=$(cat $S/namespace) CA=$(grep -c BEGIN $S/ca.crt)"; grep " /scratch " /proc/mounts; echo written > /data/hello; (echo x > /ro/x) 2>/dev/null && echo RO=writable || echo RO=refused; sleep 3600']
    volumeMounts:
    - {name: info, mountPath: /info}
    - {name: all-in-one, mountPath: /p}
    - {name: scratch, mountPath: /scratch}
    - {name: data, mountPath: /data}
    - {name: data-ro, mountPath: /ro}
"#,
    );
    let p = node.wait_pod("vols", "Running", 90, |p| phase(p) == "Running");
    let log = wait("the pod's report", 30, || {
        let l = node.container_log(&p, "c", 0);
        l.contains("RO=").then_some(l)
    });
    assert!(log.contains("RO=refused"), "a readOnly claim: {log}");
    assert!(
        log.contains(
            r#"L=app="demo",tier="web" N=vols M=64 P=fast/s3cret/default SA=default CA=1"#
        ),
        "{log}"
    );
    assert!(
        log.contains("tmpfs /scratch tmpfs") && log.contains("size=16384k"),
        "a 16 MiB tmpfs: {log}"
    );
    wait("the claim's file on the host", 30, || {
        std::fs::read_to_string(data.join("hello"))
            .ok()
            .filter(|s| s == "written\n")
    });
    // The admission plugin's API-access volume, with a token that the
    // apiserver takes as the pod's service account.
    let uid = p["metadata"]["uid"].as_str().unwrap().to_owned();
    let vols = node.dir.join("root/pods").join(&uid).join("volumes");
    let access = std::fs::read_dir(&vols)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("kube-api-access-"))
        })
        .expect("a kube-api-access volume");
    let token = std::fs::read_to_string(access.join("token")).unwrap();
    let kc = std::fs::read_to_string(node.server.kubeconfig()).unwrap();
    let server_line = kc
        .lines()
        .find(|l| l.trim().starts_with("server:"))
        .unwrap();
    let ca_line = kc
        .lines()
        .find(|l| l.trim().starts_with("certificate-authority-data:"))
        .unwrap();
    let sa_kc = node.dir.join("sa.kubeconfig");
    std::fs::write(
        &sa_kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    {}\n    {}\nusers:\n- name: u\n  user:\n    token: {}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
            server_line.trim(),
            ca_line.trim(),
            token.trim()
        ),
    )
    .unwrap();
    let (ok, out) = support::kube::kubectl_at(&newest(), &sa_kc, &["get", "nodes"]);
    assert!(
        !ok && out.contains("system:serviceaccount:default:default"),
        "authenticated as the service account (and not allowed to list nodes): {out}"
    );
    // Secrets, projected volumes and Memory emptyDirs are tmpfs mounts on
    // the node, and they go with the pod.
    for v in ["all-in-one", "scratch"] {
        let want = vols.join(v).display().to_string();
        assert!(mounts_with(&want).contains(&want), "{want} is mounted");
    }
    k.ok(&["delete", "pod", "vols", "--wait=true"]);
    wait("the pod's mounts to go", 30, || {
        mounts_with(&uid).is_empty().then_some(())
    });
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
