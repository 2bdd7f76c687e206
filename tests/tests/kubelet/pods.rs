//! Pod lifecycle on a real node: init containers, restart policies and
//! back-off, the reasons bad input gets, agent restarts, probes and hooks.

use super::*;

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
    // Repeated failures bump one Event's count (client-go's correlator)
    // rather than writing an Event each.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let out = k.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=readiness",
            "-o",
            "json",
        ]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let unhealthy: Vec<&Value> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            // The failures that carry cat's words; a probe whose output
            // the shim had not copied yet when it exited reads "command …
            // exited with 1" instead (a known race, in the closing note),
            // which is another message and so another Event.
            .filter(|e| {
                e["reason"] == "Unhealthy"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("can't open '/tmp/ready'"))
            })
            .collect();
        assert_eq!(unhealthy.len(), 1, "{unhealthy:?}");
        if unhealthy[0]["count"].as_i64().unwrap_or(0) >= 3 {
            break;
        }
        assert!(Instant::now() < end, "not bumped: {unhealthy:?}");
        std::thread::sleep(Duration::from_millis(500));
    }

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

/// What the agent's DaemonSet needs of a kubelet: a privileged container
/// in the host's network (and so UTS) namespace starts (runc refused one
/// with a hostname of its own, or capabilities beyond the node's bounding
/// set), keeps the host's name, and writes sysctls (nothing masked or
/// read-only under /proc). The sysctl is written with the value it has.
#[test]
fn a_privileged_host_network_pod_runs_with_the_hosts_name_and_writable_sysctls() {
    let node = Node::start();
    let k = node.kubectl();
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: agent-like}
spec:
  hostNetwork: true
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:1.28
    securityContext: {privileged: true}
    command:
    - sh
    - -c
    - |
      echo "name=$(hostname) env=$HOSTNAME"
      f=/proc/sys/net/ipv4/conf/lo/forwarding
      cat $f > $f && echo sysctl-writable
      grep -q kcore /proc/mounts || echo nothing-masked
"#,
    );
    let p = node.wait_pod("agent-like", "Succeeded", 90, |p| {
        phase(p) == "Succeeded" || phase(p) == "Failed"
    });
    let log = node.container_log(&p, "c", 0);
    assert_eq!(
        phase(&p),
        "Succeeded",
        "{log}\n{}",
        tail(&node.log_of(), 30)
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        log.contains(&format!("name={} env={}", host.trim(), host.trim())),
        "{log}"
    );
    assert!(log.contains("sysctl-writable"), "{log}");
    assert!(log.contains("nothing-masked"), "{log}");
}
