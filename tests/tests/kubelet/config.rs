//! What the kubelet puts into containers: environment from every source,
//! configMap, secret, downward API, projected and claim volumes, and their
//! updates.

use super::*;

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
