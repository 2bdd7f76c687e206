//! kubectl verbs that reach a kubelet, on 1.27 and 1.33, against `rudder
//! server` and a real node (containerd + runc, see `support::node`):
//! `kubectl cp` both ways (tar over exec, a directory tree and a binary file
//! intact), and the proxy subresources (`pods/proxy`, `services/proxy`,
//! `nodes/proxy`) carried through the kubelet; `kubectl debug` and
//! attach; pods that share their process namespace.

mod support;

use support::{
    kube::{kubectl_at, newest, oldest},
    node::{Node, phase, status_of},
};

fn sha256_file(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn kubectl_cp_copies_both_ways() {
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
        "mkdir -p /data/sub && echo inside > /data/sub/file && sleep 3600",
    ]);
    node.wait_pod("box", "Running", 90, |p| phase(p) == "Running");
    let kc = node.server.kubeconfig();
    let local = node.dir.join("cp");
    std::fs::create_dir_all(local.join("tree/deeper")).unwrap();
    std::fs::write(local.join("tree/deeper/note.txt"), "hello from the host\n").unwrap();
    let blob: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(local.join("blob.bin"), &blob).unwrap();
    for (i, bin) in [oldest(), newest()].into_iter().enumerate() {
        // Host → pod: a file and a tree.
        let dst = format!("/tmp/in{i}");
        let (ok, out) = kubectl_at(
            &bin,
            &kc,
            &[
                "cp",
                local.join("blob.bin").to_str().unwrap(),
                &format!("box:{dst}.bin"),
            ],
        );
        assert!(ok, "{}: {out}", bin.display());
        let (ok, out) = kubectl_at(
            &bin,
            &kc,
            &[
                "cp",
                local.join("tree").to_str().unwrap(),
                &format!("box:{dst}"),
            ],
        );
        assert!(ok, "{}: {out}", bin.display());
        let (ok, out) = kubectl_at(
            &bin,
            &kc,
            &[
                "exec",
                "box",
                "--",
                "sh",
                "-c",
                &format!("sha256sum {dst}.bin; cat {dst}/deeper/note.txt"),
            ],
        );
        assert!(ok, "{out}");
        assert!(out.contains(&sha256_file(&local.join("blob.bin"))), "{out}");
        assert!(out.contains("hello from the host"), "{out}");
        // Pod → host: the tree made in the pod, and the blob back.
        let back = local.join(format!("back{i}"));
        let (ok, out) = kubectl_at(&bin, &kc, &["cp", "box:/data", back.to_str().unwrap()]);
        assert!(ok, "{}: {out}", bin.display());
        assert_eq!(
            std::fs::read_to_string(back.join("sub/file")).unwrap(),
            "inside\n"
        );
        let (ok, out) = kubectl_at(
            &bin,
            &kc,
            &[
                "cp",
                &format!("box:{dst}.bin"),
                local.join(format!("blob{i}.bin")).to_str().unwrap(),
            ],
        );
        assert!(ok, "{out}");
        assert_eq!(
            std::fs::read(local.join(format!("blob{i}.bin"))).unwrap(),
            blob
        );
    }
    // A missing path in the pod: nothing written here (whether kubectl
    // exits non-zero races with the end of the empty archive tar sends, as
    // against any kubelet).
    let _ = kubectl_at(
        &newest(),
        &kc,
        &[
            "cp",
            "box:/no/such/path",
            local.join("none").to_str().unwrap(),
        ],
    );
    assert!(!local.join("none").exists());
}

#[test]
fn pods_services_and_nodes_are_reached_through_the_proxy_subresource() {
    let node = Node::start();
    let k = node.kubectl();
    k.apply(
        &["apply", "-f", "-"],
        r##"
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
  - name: web
    image: busybox:1.28
    command: ['sh', '-c', 'mkdir -p /www/cgi-bin && echo hello-through-the-proxy > /www/index.html && printf "#!/bin/sh\necho Content-Type: text/plain\necho\necho query=\$QUERY_STRING method=\$REQUEST_METHOD auth=\$HTTP_AUTHORIZATION\n" > /www/cgi-bin/env && chmod +x /www/cgi-bin/env && exec httpd -f -p 8080 -h /www']
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"##,
    );
    node.wait_pod("web", "Running", 90, |p| phase(p) == "Running");
    let kc = node.server.kubeconfig();
    for bin in [oldest(), newest()] {
        let get = |path: &str| kubectl_at(&bin, &kc, &["get", "--raw", path]);
        let (ok, out) = get("/api/v1/namespaces/default/pods/web:8080/proxy/index.html");
        assert!(ok && out.trim() == "hello-through-the-proxy", "{out}");
        // The query reaches the pod; the method is kept.
        let (ok, out) =
            get("/api/v1/namespaces/default/pods/http:web:8080/proxy/cgi-bin/env?a=1&b=two");
        assert!(
            ok && out.trim() == "query=a=1&b=two method=GET auth=",
            "{out}"
        );
        // A Service by port name and by number, once its endpoint is ready.
        for name in ["web:http", "web:80"] {
            let path = format!("/api/v1/namespaces/default/services/{name}/proxy/index.html");
            let out = support::node::wait(&format!("services/{name}/proxy"), 30, || {
                let (ok, out) = get(&path);
                ok.then_some(out)
            });
            assert_eq!(out.trim(), "hello-through-the-proxy");
        }
        let (ok, out) = get(&format!("/api/v1/nodes/{}/proxy/healthz", node.name));
        assert!(ok && out.trim() == "ok", "{out}");
        // Nothing listens there: the kubelet says so, nothing hangs.
        let (ok, out) = get("/api/v1/namespaces/default/pods/web:9/proxy/");
        assert!(
            !ok && out.contains("error trying to reach pod default/web on port 9"),
            "{out}"
        );
        let (ok, out) = get("/api/v1/namespaces/default/pods/https:web:8080/proxy/");
        assert!(!ok && out.contains("http only"), "{out}");
    }
    // The proxy subresource needs its own grant.
    k.ok(&["create", "role", "reader", "--verb=get", "--resource=pods"]);
    k.ok(&[
        "create",
        "rolebinding",
        "reader",
        "--role=reader",
        "--user=bob",
    ]);
    let path = "/api/v1/namespaces/default/pods/web:8080/proxy/index.html";
    let (ok, out) = kubectl_at(&newest(), &kc, &["--as=bob", "get", "--raw", path]);
    assert!(
        !ok && out.contains("forbidden") && out.contains("pods/proxy"),
        "{out}"
    );
    k.ok(&[
        "create",
        "role",
        "proxier",
        "--verb=get",
        "--resource=pods/proxy",
    ]);
    k.ok(&[
        "create",
        "rolebinding",
        "proxier",
        "--role=proxier",
        "--user=bob",
    ]);
    let (ok, out) = kubectl_at(&newest(), &kc, &["--as=bob", "get", "--raw", path]);
    assert!(ok && out.contains("hello-through-the-proxy"), "{out}");
    // A hostNetwork pod's ports are the node's: pods/proxy is not enough.
    // (This rig's containerd is outside the node's network namespace, so
    // its host-network containers are too: only the refusal is checked.)
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hostweb}
spec:
  hostNetwork: true
  containers:
  - name: web
    image: busybox:1.28
    command: ['sleep', '3600']
"#,
    );
    node.wait_pod("hostweb", "Running", 90, |p| phase(p) == "Running");
    let path = "/api/v1/namespaces/default/pods/hostweb:18080/proxy/index.html";
    let (ok, out) = kubectl_at(&newest(), &kc, &["--as=bob", "get", "--raw", path]);
    assert!(
        !ok && out.contains("uses the host network") && out.contains("nodes/proxy"),
        "{out}"
    );
}

/// `kubectl args…` fed `input` (stdin then closed), killed once its
/// output holds `until` or after `secs`: what it printed.
fn kubectl_until(
    bin: &std::path::Path,
    kc: &std::path::Path,
    args: &[&str],
    input: &str,
    until: &str,
    secs: u64,
) -> String {
    use std::io::{Read as _, Write as _};
    let mut child = std::process::Command::new(bin)
        .args(args)
        .env("KUBECONFIG", kc)
        .env("HOME", kc.parent().unwrap())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|mut r| {
        let out = std::sync::Arc::clone(&out);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    })
    .collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline && !out.lock().unwrap().contains(until) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    for r in readers {
        let _ = r.join();
    }
    out.lock().unwrap().clone()
}

/// `kubectl run -i` and `kubectl attach` on 1.27 (SPDY) and 1.33
/// (WebSocket, v5): the container's own stdin and output. `stdinOnce`
/// closes stdin after the first session (the shell's `read` loop ends and
/// the pod succeeds); without it stdin stays open from one attach to the
/// next; output written while no one is attached is in the log, not lost.
#[test]
fn kubectl_run_i_and_attach_join_the_containers_stdio() {
    let mut node = Node::start();
    let kc = node.server.kubeconfig();
    // A terminal: `kubectl run -it` under a pseudo-terminal of script(1).
    for (i, bin) in [oldest(), newest()].into_iter().enumerate() {
        let pod = format!("tty{i}");
        let cmd = format!(
            "KUBECONFIG={} HOME={} {} run {pod} -it --image=busybox:1.28 --restart=Never -- sh",
            kc.display(),
            kc.parent().unwrap().display(),
            bin.display()
        );
        let mut child = std::process::Command::new("script")
            .args(["-qefc", &cmd, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().unwrap();
            support::node::wait("kubectl run to create the pod", 30, || {
                kubectl_at(&newest(), &kc, &["get", "pod", &pod])
                    .0
                    .then_some(())
            });
            node.wait_pod(&pod, "Running", 90, |p| phase(p) == "Running");
            std::thread::sleep(std::time::Duration::from_secs(2));
            stdin.write_all(b"echo tty-$((20+22)) $(tty)\n").unwrap();
            std::thread::sleep(std::time::Duration::from_secs(1));
            stdin.write_all(b"exit\n").unwrap();
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("tty-42 /dev/pts/0"),
            "{}: {text}",
            bin.display()
        );
        node.wait_pod(&pod, "Succeeded", 60, |p| phase(p) == "Succeeded");
    }
    for (i, bin) in [oldest(), newest()].into_iter().enumerate() {
        let pod = format!("talk{i}");
        let (ok, out) = support::kube::kubectl_stdin(
            &bin,
            &kc,
            &[
                "run",
                &pod,
                "-i",
                "--image=busybox:1.28",
                "--restart=Never",
                "--",
                "sh",
                "-c",
                "while read line; do echo \"got $line\"; done; echo stdin-closed",
            ],
            Some("hello\nworld\n"),
        );
        assert!(ok, "{}: {out}", bin.display());
        assert!(
            out.contains("got hello") && out.contains("got world") && out.contains("stdin-closed"),
            "{}: {out}\ncontainer log: {:?}\nkubelet log (tail):\n{}",
            bin.display(),
            support::kube::kubectl_stdin(&bin, &kc, &["logs", &pod], None).1,
            support::node::tail(&node.log_of(), 60)
        );
        node.wait_pod(&pod, "Succeeded", 60, |p| phase(p) == "Succeeded");
    }
    // A long-lived reader whose stdin is not once-only.
    node.kubectl().apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: echo}
spec:
  containers:
  - name: c
    image: busybox:1.28
    stdin: true
    command: [sh, -c, 'echo ready; while read line; do echo "echo:$line"; done']
"#,
    );
    node.wait_pod("echo", "Running", 90, |p| phase(p) == "Running");
    for (i, bin) in [oldest(), newest()].into_iter().enumerate() {
        let word = format!("word{i}");
        let out = kubectl_until(
            &bin,
            &kc,
            &["attach", "-i", "echo"],
            &format!("{word}\n"),
            &format!("echo:{word}"),
            30,
        );
        assert!(
            out.contains(&format!("echo:{word}")),
            "{}: {out}",
            bin.display()
        );
    }
    // The agent restarts: the container's stdio is not the kubelet's, so
    // stdin is still open and the container can still be attached to.
    node.kubelet = None;
    node.start_kubelet();
    // Until the new kubelet serves its API, the apiserver's calls to it fail
    // (503), as kubectl's would against any restarting kubelet.
    support::node::wait("the restarted kubelet to serve logs", 60, || {
        kubectl_at(&newest(), &kc, &["logs", "echo"])
            .0
            .then_some(())
    });
    let out = kubectl_until(
        &newest(),
        &kc,
        &["attach", "-i", "echo"],
        "after\n",
        "echo:after",
        60,
    );
    assert!(out.contains("echo:after"), "{out}");
    // All sessions went to the same process, whose stdin is still open;
    // the log has everything, including what came before any attach.
    assert_eq!(phase(&node.pod("echo")), "Running");
    let logs = node.kubectl().ok(&["logs", "echo"]);
    assert_eq!(
        logs.lines().collect::<Vec<_>>(),
        ["ready", "echo:word0", "echo:word1", "echo:after"]
    );
    // Output only: attach without -i to a container that has no stdin.
    node.kubectl().ok(&[
        "run",
        "ticker",
        "--image=busybox:1.28",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 600 ]; do echo tick $i; i=$((i+1)); sleep 0.1; done",
    ]);
    node.wait_pod("ticker", "Running", 90, |p| phase(p) == "Running");
    let out = kubectl_until(&newest(), &kc, &["attach", "ticker"], "", "tick", 30);
    assert!(out.contains("tick "), "{out}");
    // Not upgraded: a clear 400, as for exec.
    let (ok, out) = kubectl_at(
        &newest(),
        &kc,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/ticker/attach?stdout=1",
        ],
    );
    assert!(!ok && out.contains("attach needs an upgrade"), "{out}");
}

/// `kubectl debug` with 1.27 and 1.33: an ephemeral container added
/// through `pods/ephemeralcontainers`, run in the pod beside its target
/// (sharing its process namespace with `--target`), attached with `-i`,
/// shown in `ephemeralContainerStatuses`, never restarted. The API keeps
/// ephemeral containers to that subresource: none on create, none
/// changed or removed, a plain update cannot add one.
#[test]
fn kubectl_debug_runs_an_ephemeral_container_beside_its_target() {
    let node = Node::start();
    let k = node.kubectl();
    let kc = node.server.kubeconfig();
    k.ok(&[
        "run",
        "target",
        "--image=busybox:1.28",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "exec sleep 3600",
    ]);
    node.wait_pod("target", "Running", 90, |p| phase(p) == "Running");
    for (i, bin) in [oldest(), newest()].into_iter().enumerate() {
        // Non-interactive: the container runs, its output is in its log.
        let name = format!("dbg{i}");
        let (ok, out) = kubectl_at(
            &bin,
            &kc,
            &[
                "debug",
                "target",
                "--image=busybox:1.28",
                "--target=target",
                &format!("--container={name}"),
                "--",
                "sh",
                "-c",
                "ps -o pid,args; echo done",
            ],
        );
        assert!(ok, "{}: {out}", bin.display());
        let p = node.wait_pod("target", "the debug container to finish", 90, |p| {
            p["status"]["ephemeralContainerStatuses"]
                .as_array()
                .and_then(|a| a.iter().find(|s| s["name"] == name.as_str()))
                .is_some_and(|s| s["state"]["terminated"]["exitCode"] == 0)
        });
        let log = k.ok(&["logs", "target", "-c", &name]);
        // The target's process, seen from the debug container's shell.
        assert!(log.contains("sleep 3600") && log.contains("done"), "{log}");
        assert_eq!(phase(&p), "Running");
        // Interactive: kubectl waits for it to run and attaches.
        let name = format!("idbg{i}");
        let (ok, out) = support::kube::kubectl_stdin(
            &bin,
            &kc,
            &[
                "debug",
                "-i",
                "target",
                "--image=busybox:1.28",
                "--target=target",
                &format!("--container={name}"),
                "--",
                "sh",
                "-c",
                "read x; echo got-$x",
            ],
            Some("typed\n"),
        );
        // What was typed reached the container through the attach (its
        // log says so) and what it answered came back, on both kubectls:
        // under load the container can answer and exit while the end of
        // input is still on its way to it (with 1.27's SPDY, a session
        // once ended there without the answer).
        let (_, log) = kubectl_at(&bin, &kc, &["logs", "target", "-c", &name]);
        let shown = out.contains("got-typed");
        if !(ok && log.trim() == "got-typed" && shown) {
            let status = node.pod("target")["status"]["ephemeralContainerStatuses"].clone();
            panic!(
                "{}: {out}\nits log: {log}\nstatuses: {status}\nkubelet log (tail):\n{}",
                bin.display(),
                node.log_of()
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    // Never restarted: the first debug container ran once.
    let p = node.pod("target");
    let statuses = p["status"]["ephemeralContainerStatuses"]
        .as_array()
        .unwrap();
    assert_eq!(statuses.len(), 4, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| s["restartCount"] == 0 && s["ready"] == false)
    );
    assert_eq!(phase(&p), "Running");
    // The subresource serves the pod; existing ephemeral containers are
    // fixed; none on create; a plain update keeps them as they are.
    let got = k.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/target/ephemeralcontainers",
    ]);
    assert!(
        got.contains("\"kind\":\"Pod\"") && got.contains("dbg0"),
        "{got}"
    );
    let out = k.fails(
        &[
            "patch", "pod", "target", "--subresource=ephemeralcontainers", "--type=json",
            "-p", r#"[{"op": "replace", "path": "/spec/ephemeralContainers/0/image", "value": "busybox:latest"}]"#,
        ],
        None,
    );
    assert!(
        out.contains("existing ephemeral containers \"dbg0\" may not be changed"),
        "{out}"
    );
    let out = k.fails(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: {name: sneaky}\nspec:\n  containers: [{name: c, image: 'busybox:1.28'}]\n  ephemeralContainers: [{name: e, image: 'busybox:1.28'}]\n"),
    );
    assert!(
        out.contains("spec.ephemeralContainers: Forbidden: cannot be set on create"),
        "{out}"
    );
    k.ok(&[
        "patch", "pod", "target", "--type=json", "-p",
        r#"[{"op": "add", "path": "/spec/ephemeralContainers/-", "value": {"name": "late", "image": "busybox:1.28"}}]"#,
    ]);
    let names: Vec<String> = node.pod("target")["spec"]["ephemeralContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["dbg0", "idbg0", "dbg1", "idbg1"]);
}

/// The workload verbs with 1.27 and 1.33 on a real node: `rollout
/// history`, `wait`, `top` (the kubelet's resource metrics through
/// `metrics.k8s.io`), and `drain` honouring a PodDisruptionBudget (one
/// eviction allowed, the next refused with 429 until the drain gives up,
/// then `uncordon`).
#[test]
fn rollout_wait_top_and_drain_with_a_budget_on_both_kubectls() {
    let node = Node::start();
    let k = node.kubectl();
    let kc = node.server.kubeconfig();
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: 'busybox:1.28', command: [sleep, '3600']}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: web}}
"#,
    );
    let ready = || {
        support::node::wait("2 web pods ready and the budget allowing 1", 120, || {
            let d: serde_json::Value =
                serde_json::from_str(&k.ok(&["get", "deployment", "web", "-o", "json"])).unwrap();
            let pdb: serde_json::Value =
                serde_json::from_str(&k.ok(&["get", "pdb", "web", "-o", "json"])).unwrap();
            (d["status"]["readyReplicas"] == 2 && pdb["status"]["disruptionsAllowed"] == 1)
                .then_some(())
        });
    };
    ready();
    for bin in [oldest(), newest()] {
        let at = |args: &[&str]| {
            let (ok, out) = kubectl_at(&bin, &kc, args);
            assert!(ok, "{} {args:?}: {out}", bin.display());
            out
        };
        let history = at(&["rollout", "history", "deployment/web"]);
        assert!(
            history.contains("REVISION") && history.contains('1'),
            "{history}"
        );
        at(&[
            "wait",
            "--for=condition=available",
            "deployment/web",
            "--timeout=60s",
        ]);
        support::node::wait("kubectl top to show the web pods", 120, || {
            let (ok, out) = kubectl_at(&bin, &kc, &["top", "pods", "--no-headers"]);
            (ok && out.lines().filter(|l| l.starts_with("web-")).count() == 2).then_some(())
        });
        let top = at(&["top", "nodes", "--no-headers"]);
        assert!(top.starts_with(&node.name), "{top}");
        // One pod may go; the other would break the budget: the drain
        // keeps asking until its timeout, and says why.
        let (ok, out) = kubectl_at(
            &bin,
            &kc,
            &["drain", &node.name, "--ignore-daemonsets", "--timeout=8s"],
        );
        assert!(!ok, "{}: {out}", bin.display());
        assert!(
            out.contains("evicting pod default/web-")
                && out.contains("Cannot evict pod as it would violate the pod's disruption budget"),
            "{}: {out}",
            bin.display()
        );
        at(&["uncordon", &node.name]);
        ready();
    }
}

/// `kubectl debug node/…` with 1.27 and 1.33: the debugger pod kubectl
/// makes (hostNetwork, hostPID, hostIPC, the node's `/` at `/host`) sees
/// the node's processes, IPC namespace and files; a plain pod sees its
/// own process as PID 1.
#[test]
fn kubectl_debug_node_sees_the_nodes_processes_and_files() {
    let node = Node::start();
    let k = node.kubectl();
    let kc = node.server.kubeconfig();
    let host_ipc = std::fs::read_link("/proc/self/ns/ipc").unwrap();
    let host_ipc = host_ipc.to_string_lossy().into_owned();
    let host_name = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    for bin in [oldest(), newest()] {
        let (ok, out) = kubectl_at(
            &bin,
            &kc,
            &[
                "debug",
                &format!("node/{}", node.name),
                "--image=busybox:1.28",
                "--",
                "sh",
                "-c",
                "echo pid1=$(cat /proc/1/comm); echo ipc=$(readlink /proc/self/ns/ipc); echo host=$(cat /host/etc/hostname)",
            ],
        );
        assert!(ok, "{}: {out}", bin.display());
        let pod = support::node::wait("the node debugger pod", 30, || {
            let names = k.ok(&["get", "pods", "-o", "name"]);
            names
                .lines()
                .filter_map(|l| l.strip_prefix("pod/"))
                .find(|n| n.starts_with("node-debugger-") && !seen.contains(*n))
                .map(str::to_owned)
        });
        seen.insert(pod.clone());
        node.wait_pod(&pod, "Succeeded", 90, |p| phase(p) == "Succeeded");
        let log = k.ok(&["logs", &pod]);
        assert!(!log.contains("pid1=sh") && log.contains("pid1="), "{log}");
        assert!(log.contains(&format!("ipc={host_ipc}")), "{log}");
        assert!(log.contains(&format!("host={}", host_name.trim())), "{log}");
    }
    // Without hostPID a container's first process is its own.
    k.ok(&[
        "run",
        "own",
        "--image=busybox:1.28",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "cat /proc/1/comm",
    ]);
    node.wait_pod("own", "Succeeded", 90, |p| phase(p) == "Succeeded");
    assert_eq!(k.ok(&["logs", "own"]).trim(), "cat");
}

/// `shareProcessNamespace: true`: the containers see (and may signal)
/// each other's processes, under a PID 1 of the pod's own that reaps
/// what they leave; `kubectl debug` without a target joins that
/// namespace. The holder goes with the pod.
#[test]
fn containers_of_a_pod_that_shares_its_process_namespace_see_each_other() {
    let node = Node::start();
    let k = node.kubectl();
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: shared}\nspec:\n  shareProcessNamespace: true\n  containers:\n  - {name: app, image: 'busybox:1.28', command: [sh, -c, 'exec sleep 3601']}\n  - {name: side, image: 'busybox:1.28', command: [sh, -c, 'exec sleep 3602']}\n",
    );
    let p = node.wait_pod("shared", "Running", 90, |p| phase(p) == "Running");
    let uid = p["metadata"]["uid"].as_str().unwrap().to_owned();
    let ps = k.ok(&["exec", "shared", "-c", "side", "--", "ps", "-o", "pid,args"]);
    assert!(
        ps.contains("sleep 3601") && ps.contains("sleep 3602"),
        "{ps}"
    );
    // PID 1 is the holder, not either container's process.
    let first = ps
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .unwrap_or_default();
    assert!(first.contains("--rudder-pod-pause"), "{ps}");
    // One container ends another's process; the kubelet restarts it.
    let pid = ps
        .lines()
        .find(|l| l.contains("sleep 3601"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    k.ok(&["exec", "shared", "-c", "side", "--", "kill", &pid]);
    node.wait_pod("shared", "app restarted", 60, |p| {
        status_of(p, "containerStatuses", "app")["restartCount"] == 1 && phase(p) == "Running"
    });
    // A debug container with no target joins the pod's namespace too.
    let (ok, out) = kubectl_at(
        &newest(),
        &node.server.kubeconfig(),
        &[
            "debug",
            "shared",
            "--image=busybox:1.28",
            "--container=dbg",
            "--",
            "sh",
            "-c",
            "ps -o args",
        ],
    );
    assert!(ok, "{out}");
    node.wait_pod("shared", "the debug container to finish", 60, |p| {
        status_of(p, "ephemeralContainerStatuses", "dbg")["state"]["terminated"]["exitCode"] == 0
    });
    let log = k.ok(&["logs", "shared", "-c", "dbg"]);
    assert!(log.contains("sleep 3602"), "{log}");
    // The holder's PID, as the node sees it; it goes with the pod.
    let holder: i32 = std::fs::read_to_string(
        node.dir
            .path()
            .join("run/pods")
            .join(&uid)
            .join("pause.pid"),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let cmdline = |pid: i32| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline(holder)).contains("--rudder-pod-pause"),
        "{holder}"
    );
    k.ok(&["delete", "pod", "shared", "--wait=true"]);
    support::node::wait("the holder to go", 30, || {
        (!String::from_utf8_lossy(&cmdline(holder)).contains("--rudder-pod-pause")).then_some(())
    });
}
