//! Streams through the apiserver to the kubelet: logs, exec, port-forward.

use super::*;

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

    // Node tools see the containers as the kubelet shows them: links in
    // `containers/` beside the pod logs, named `<pod>_<ns>_<container>-<id>.log`,
    // and the CRI plugin's labels on containerd's containers.
    let links = node.dir.path().join("containers");
    let linked = |prefix: &str| -> Vec<PathBuf> {
        std::fs::read_dir(&links)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| e.path())
            .collect()
    };
    let a = linked("two_default_a-");
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(
        std::fs::read_to_string(&a[0])
            .unwrap()
            .contains(" stdout F from a"),
        "a CRI log through the link"
    );
    assert_eq!(linked("two_default_setup-").len(), 1);
    let labelled = node.containerd.ctr_ok(&[
        "containers",
        "list",
        "labels.\"io.kubernetes.pod.name\"==two,labels.\"io.kubernetes.pod.namespace\"==default,labels.\"io.kubernetes.container.name\"==b",
    ]);
    assert_eq!(labelled.lines().count(), 2, "a header and b: {labelled}");
    k.ok(&["delete", "pod", "two", "--wait=true"]);
    wait("two's links removed", 30, || {
        linked("two_").is_empty().then_some(())
    });
    assert_eq!(linked("counter_default_c-").len(), 1, "others stay");
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
    // kubectl cp both ways (tar through exec, stdin to its end): a file in
    // and out again byte for byte, and a directory in.
    let local = std::env::temp_dir().join(format!("rudder-cp-{}", unique_name()));
    std::fs::create_dir_all(local.join("tree/sub")).unwrap();
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(local.join("blob"), &bytes).unwrap();
    std::fs::write(local.join("tree/sub/leaf"), "leaf\n").unwrap();
    for (i, bin) in [old, newest()].iter().enumerate() {
        let src = local.join("blob");
        let (code, out, err) = run(
            bin,
            &["cp", src.to_str().unwrap(), &format!("box:/tmp/blob-{i}")],
            None,
        );
        assert_eq!(code, Some(0), "cp in: {out} {err}");
        let (code, out, _) = run(
            bin,
            &["exec", "box", "--", "wc", "-c", &format!("/tmp/blob-{i}")],
            None,
        );
        assert_eq!(code, Some(0));
        assert!(out.starts_with("300000"), "{out}");
        let back = local.join(format!("back-{i}"));
        let (code, out, err) = run(
            bin,
            &["cp", &format!("box:/tmp/blob-{i}"), back.to_str().unwrap()],
            None,
        );
        assert_eq!(code, Some(0), "cp out: {out} {err}");
        assert!(std::fs::read(&back).unwrap() == bytes, "the copy differs");
        let tree = local.join("tree");
        let (code, out, err) = run(
            bin,
            &["cp", tree.to_str().unwrap(), &format!("box:/tmp/tree-{i}")],
            None,
        );
        assert_eq!(code, Some(0), "cp dir in: {out} {err}");
        let (code, out, _) = run(
            bin,
            &[
                "exec",
                "box",
                "--",
                "cat",
                &format!("/tmp/tree-{i}/sub/leaf"),
            ],
            None,
        );
        assert_eq!((code, out.as_str()), (Some(0), "leaf\n"));
    }
    let _ = std::fs::remove_dir_all(&local);
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
