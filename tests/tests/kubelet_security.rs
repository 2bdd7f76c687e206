//! Hostile pods against the kubelet on real containerd + runc: each attack
//! of Kubernetes' own CVE history (and the paths found in Rudder's code)
//! tried for real, asserting that the node's files are untouched, the pod
//! is refused or contained, and the kubelet keeps serving the pods around
//! it.

mod support;

use std::os::unix::fs::PermissionsExt as _;

use support::node::{Node, answers, status_of, wait};

/// What a container shows of its own mounts at `path`: the mount options.
fn mount_options(node: &Node, pod: &str, container: &str, path: &str) -> String {
    let out = node.kubectl().ok(&[
        "exec",
        pod,
        "-c",
        container,
        "--",
        "cat",
        "/proc/self/mountinfo",
    ]);
    out.lines()
        .find(|l| l.split(' ').nth(4) == Some(path))
        .unwrap_or_else(|| panic!("no mount at {path} in {pod}/{container}:\n{out}"))
        .to_owned()
}

fn mode_of(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A volume named with `..` (CVE-2017-1002102's family): the apiserver
/// refuses it with 422, and a static pod from a file, which no apiserver
/// checked, is refused by the kubelet before its directory is touched.
#[test]
fn volume_names_and_paths_never_leave_the_pod_directory() {
    let node = Node::start();
    let k = node.kubectl();
    // `<root>/pods/<uid>/volumes/../../../../victim` is `<node dir>/victim`.
    let victim = node.dir.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(victim.join("keep"), b"node data").unwrap();
    let hostile = |name: &str, medium: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.28\n    command: [sleep, '3600']\n    volumeMounts: [{{name: '../../../../victim', mountPath: /v}}]\n  volumes:\n  - name: '../../../../victim'\n    emptyDir: {{medium: '{medium}'}}\n"
        )
    };
    let out = k.fails(&["apply", "-f", "-"], Some(&hostile("api", "")));
    assert!(
        out.contains("spec.volumes[0].name: Invalid value: \"../../../../victim\""),
        "{out}"
    );
    // The same through a static pod file, with a tmpfs that would cover
    // the victim, and a good static pod beside it that must still run.
    let manifests = node.dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("evil.yaml"), hostile("evil", "Memory")).unwrap();
    std::fs::write(
        manifests.join("good.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: good, namespace: default}\nspec:\n  containers:\n  - {name: c, image: 'busybox:1.28', command: [sleep, '3600']}\n",
    )
    .unwrap();
    let good = format!("good-{}", node.name);
    wait("the good static pod, Running", 90, || {
        let (ok, out) = support::kube::kubectl_at(
            &support::kube::newest(),
            &node.server.kubeconfig(),
            &["get", "pod", &good, "-o", "jsonpath={.status.phase}"],
        );
        (ok && out == "Running").then_some(())
    });
    wait("the kubelet to refuse the static pod", 30, || {
        node.log_of()
            .contains("Error validating pod default/evil")
            .then_some(())
    });
    let (found, _) = support::kube::kubectl_at(
        &support::kube::newest(),
        &node.server.kubeconfig(),
        &["get", "pod", &format!("evil-{}", node.name)],
    );
    assert!(!found, "the refused static pod has no mirror");
    assert_eq!(mode_of(&victim), 0o700, "the victim's mode is untouched");
    assert_eq!(
        std::fs::read(victim.join("keep")).unwrap(),
        b"node data",
        "nothing was mounted over or written into the victim"
    );
    // Only the good pod's container exists.
    assert_eq!(node.containers_of().len(), 1, "{:?}", node.containers_of());
}

/// CVE-2017-1002101: an init container plants `escape -> /` in an
/// emptyDir and the app container mounts it as a `subPath`. The kubelet
/// resolves subPaths inside their volume and refuses this one; a subPath
/// that stays inside (a configMap key through `..data`, a directory the
/// init container made) works.
#[test]
fn a_sub_path_symlink_cannot_mount_the_node() {
    let node = Node::start();
    let k = node.kubectl();
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: conf}
data: {app.conf: "listen 80\n"}
---
apiVersion: v1
kind: Pod
metadata: {name: escape}
spec:
  initContainers:
  - name: plant
    image: busybox:1.28
    command: [sh, -c, "ln -s / /shared/escape && mkdir -p /shared/ok/dir && echo inside > /shared/ok/dir/f"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  containers:
  - name: app
    image: busybox:1.28
    command: [sleep, "3600"]
    volumeMounts: [{name: shared, mountPath: /host, subPath: escape}]
  volumes:
  - {name: shared, emptyDir: {}}
---
apiVersion: v1
kind: Pod
metadata: {name: inside}
spec:
  initContainers:
  - name: plant
    image: busybox:1.28
    command: [sh, -c, "mkdir -p /shared/ok/dir && echo inside > /shared/ok/dir/f && ln -s ok/dir /shared/link"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  containers:
  - name: app
    image: busybox:1.28
    command: [sleep, "3600"]
    volumeMounts:
    - {name: shared, mountPath: /data, subPath: link}
    - {name: conf, mountPath: /etc/app.conf, subPath: app.conf}
  volumes:
  - {name: shared, emptyDir: {}}
  - {name: conf, configMap: {name: conf}}
"#,
    );
    let p = node.wait_pod("escape", "the subPath refused", 90, |p| {
        status_of(p, "containerStatuses", "app")["state"]["waiting"]["reason"]
            == "CreateContainerConfigError"
    });
    let msg = status_of(&p, "containerStatuses", "app")["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        msg.contains("subPath \"escape\"") && msg.contains("not within the volume"),
        "{msg}"
    );
    node.wait_pod("inside", "Running", 90, |p| {
        p["status"]["phase"] == "Running"
    });
    assert_eq!(
        k.ok(&[
            "exec",
            "inside",
            "-c",
            "app",
            "--",
            "cat",
            "/data/f",
            "/etc/app.conf"
        ]),
        "inside\nlisten 80\n"
    );
    // The escape pod's app never started, so nothing of the node's root
    // was ever mounted: the pod is still not running.
    assert_ne!(node.pod("escape")["status"]["phase"], "Running");
}

/// CVE-2017-1002102 and setuid files: configMap, secret, downwardAPI and
/// projected volumes are read-only (so `..data` cannot be pointed at the
/// node), every kubelet-made volume is `nosuid,nodev`, and the pod's
/// directory keeps local users out of its secrets.
#[test]
fn kubelet_volumes_are_read_only_nosuid_and_private() {
    let node = Node::start();
    let k = node.kubectl();
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: conf}
data: {key: value}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Pod
metadata: {name: vols}
spec:
  containers:
  - name: c
    image: busybox:1.28
    command: [sleep, "3600"]
    volumeMounts:
    - {name: conf, mountPath: /conf}
    - {name: creds, mountPath: /creds}
    - {name: scratch, mountPath: /scratch}
    - {name: mem, mountPath: /mem}
  volumes:
  - {name: conf, configMap: {name: conf}}
  - {name: creds, secret: {secretName: creds}}
  - {name: scratch, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory}}
---
apiVersion: v1
kind: Pod
metadata: {name: term}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:1.28
    command: [sh, -c, "head -c 1000000 /dev/zero | tr '\\0' x > /dev/termination-log; echo THE-END >> /dev/termination-log; exit 1"]
"#,
    );
    let p = node.wait_pod("vols", "Running", 90, |p| p["status"]["phase"] == "Running");
    for (path, ro) in [
        ("/conf", true),
        ("/creds", true),
        ("/scratch", false),
        ("/mem", false),
    ] {
        let line = mount_options(&node, "vols", "c", path);
        let opts: Vec<&str> = line.split(' ').nth(5).unwrap().split(',').collect();
        assert_eq!(opts.contains(&"ro"), ro, "{path}: {line}");
        assert!(
            opts.contains(&"nosuid") && opts.contains(&"nodev"),
            "{path}: {line}"
        );
    }
    // Pointing `..data` at the node, or planting a loop, is refused.
    for cmd in [
        "ln -s / /conf/evil",
        "mv /conf/..data /conf/old",
        "ln -s . /creds/loop",
        "rm /conf/key",
    ] {
        let (ok, out) = support::kube::kubectl_at(
            &support::kube::newest(),
            &node.server.kubeconfig(),
            &["exec", "vols", "--", "sh", "-c", cmd],
        );
        assert!(!ok && out.contains("Read-only file system"), "{cmd}: {out}");
    }
    assert_eq!(
        k.ok(&["exec", "vols", "--", "cat", "/creds/password"]),
        "hunter2"
    );
    // On the node: the pod directory is root's alone; the secret tmpfs is
    // not world-writable.
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let pods = node.dir.join("root/pods");
    assert_eq!(mode_of(&pods), 0o750);
    assert_eq!(mode_of(&pods.join(uid)), 0o750);
    assert_eq!(mode_of(&pods.join(uid).join("volumes/creds")), 0o755);
    // A termination message is at most the last 4 KiB of what was written.
    let p = node.wait_pod("term", "Failed", 90, |p| p["status"]["phase"] == "Failed");
    let msg = status_of(&p, "containerStatuses", "c")["state"]["terminated"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(msg.len(), 4096);
    assert!(msg.ends_with("xxTHE-END\n"), "{}", &msg[msg.len() - 20..]);
}

/// The proxy's metric `name`.
fn metric(node: &Node, name: &str) -> f64 {
    use std::io::{Read as _, Write as _};
    let (_, port) = node.proxy.as_ref().expect("a node with the proxy");
    let text = node.ns.run(|| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", *port)).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
}

/// One bad object cannot take the node's Services down: a LoadBalancer IP
/// set to another Service's ClusterIP neither takes nor (once deleted)
/// removes that front end, and a Service with more endpoints than one
/// service port may have (66,000, in 66 EndpointSlices) is refused alone,
/// with an event and a metric, while the agent keeps running and every
/// other Service keeps answering.
#[test]
fn one_bad_service_cannot_take_the_others_down() {
    let mut node = Node::start_with_proxy();
    let k = node.kubectl();
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
---
apiVersion: v1
kind: Service
metadata: {name: victim}
spec: {clusterIP: 10.96.0.100, selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: imposter, labels: {app: imposter}}
spec: {containers: [{name: web, image: nginx}]}
---
apiVersion: v1
kind: Service
metadata: {name: evil}
spec: {type: LoadBalancer, selector: {app: imposter}, ports: [{port: 80}]}
"#,
    );
    node.wait_pod("imposter", "Running", 90, |p| {
        p["status"]["phase"] == "Running"
    });
    let web = wait("web's pod", 90, || {
        let out = k.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[?(@.status.phase==\"Running\")].metadata.name}",
        ]);
        (!out.is_empty()).then_some(out)
    });
    // The attacker's load balancer "IP" is the victim's ClusterIP.
    k.ok(&[
        "patch",
        "service",
        "evil",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"loadBalancer":{"ingress":[{"ip":"10.96.0.100"}]}}}"#,
    ]);
    wait("the conflict to be seen", 30, || {
        (metric(&node, "rudder_proxy_frontend_conflicts") >= 1.0).then_some(())
    });
    let got = answers(&node, "c1", "http://10.96.0.100/hostname", 10);
    assert_eq!(got, vec![web.clone(); 10], "the victim's backend answers");
    k.ok(&["delete", "service", "evil"]);
    wait("the conflict to end", 30, || {
        (metric(&node, "rudder_proxy_frontend_conflicts") == 0.0).then_some(())
    });
    let got = answers(&node, "c2", "http://10.96.0.100/hostname", 5);
    assert_eq!(
        got,
        vec![web.clone(); 5],
        "the front end outlives the attacker"
    );

    // 66 slices of 1,000 endpoints for one selector-less Service.
    let mut docs = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: huge}\nspec: {ports: [{port: 80}]}\n",
    );
    for s in 0..66 {
        docs.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: huge-{s}, labels: {{kubernetes.io/service-name: huge}}}}\naddressType: IPv4\nports: [{{name: '', port: 80, protocol: TCP}}]\nendpoints:\n"
        ));
        for e in 0..1000 {
            let n = s * 1000 + e;
            docs.push_str(&format!(
                "- addresses: [10.{}.{}.{}]\n",
                200 + n / 65536,
                (n / 256) % 256,
                n % 256
            ));
        }
    }
    k.apply(&["apply", "--server-side", "-f", "-"], &docs);
    wait("the oversized Service to be refused", 60, || {
        (metric(&node, "rudder_proxy_frontends_refused") >= 1.0).then_some(())
    });
    let events = wait("the refusal event", 30, || {
        let out = k.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=huge",
        ]);
        out.contains("FrontendNotProgrammed").then_some(out)
    });
    assert!(events.contains("more than the 65536"), "{events}");
    let got = answers(&node, "c3", "http://10.96.0.100/hostname", 5);
    assert_eq!(got, vec![web; 5], "the other Services keep answering");
    assert!(
        node.kubelet
            .as_mut()
            .unwrap()
            .0
            .try_wait()
            .unwrap()
            .is_none(),
        "the agent is still running"
    );
}

/// A client certificate signed by the test server's cluster CA for `user`.
fn client_cert(node: &Node, user: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let pki = node.server.dir.path().join("pki");
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(pki.join("ca.crt")).unwrap(),
        ca_key,
    )
    .unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, user);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    let (c, k) = (
        node.dir.join(format!("{user}.crt")),
        node.dir.join(format!("{user}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// `curl` to the kubelet API as `user`, verifying the kubelet's serving
/// certificate against the cluster CA: (HTTP status, body).
fn kubelet_get(node: &Node, user: &str, path: &str) -> (String, String) {
    let (cert, key) = client_cert(node, user);
    let ca = node.server.dir.path().join("pki/ca.crt");
    let out = std::process::Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "--cacert"])
        .arg(&ca)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg(format!("https://127.0.0.1:{}{path}", node.kubelet_port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.to_owned(), body.to_owned())
}

/// The kubelet API asks the apiserver who may use it (a valid client
/// certificate is not enough), its serving certificate is the cluster CA's
/// (curl verifies it), and the apiserver sends nothing to a "kubelet" whose
/// certificate is not a node's: a fake kubelet never sees a request.
#[test]
fn the_kubelet_and_the_apiserver_check_each_other() {
    let node = Node::start();
    let k = node.kubectl();
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: c, image: 'busybox:1.28', command: [sh, -c, 'echo hello; sleep 3600']}\n",
    );
    node.wait_pod("p", "Running", 90, |p| p["status"]["phase"] == "Running");
    let logs = "/containerLogs/default/p/c";
    let (code, body) = kubelet_get(&node, "mallory", logs);
    assert_eq!(code, "403", "{body}");
    assert_eq!(
        body,
        "Forbidden (user=mallory, verb=get, resource=nodes, subresource=proxy)"
    );
    k.ok(&[
        "create",
        "clusterrole",
        "kubelet-logs",
        "--verb=get",
        "--resource=nodes/proxy",
    ]);
    k.ok(&[
        "create",
        "clusterrolebinding",
        "trent-logs",
        "--clusterrole=kubelet-logs",
        "--user=trent",
    ]);
    let (code, body) = kubelet_get(&node, "trent", logs);
    assert_eq!((code.as_str(), body.as_str()), ("200", "hello\n"));
    // Reading is not exec: `create` on nodes/proxy is not granted.
    let (code, _) = kubelet_get(&node, "trent", "/metrics/resource");
    assert_eq!(code, "403");

    // Connections that never finish a TLS handshake (what any pod can
    // open) neither block others nor stay: closed after 10 s.
    let stalled: Vec<std::net::TcpStream> = (0..200)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", node.kubelet_port)).unwrap())
        .collect();
    let (code, _) = kubelet_get(&node, "trent", logs);
    assert_eq!(code, "200", "served beside 200 stalled connections");
    std::thread::sleep(std::time::Duration::from_secs(12));
    for mut s in stalled {
        use std::io::Read as _;
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 1];
        // The loopback relay in front of the kubelet passes the close on;
        // a read that times out would mean the connection is still held.
        let closed = match s.read(&mut buf) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        };
        assert!(closed, "a stalled connection is still open after 12 s");
    }

    // A fake kubelet: a Node whose address answers with a certificate not
    // issued to a node, and a pod bound to it.
    let fake = FakeKubelet::start();
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata: {name: fake-node}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: lured}\nspec:\n  nodeName: fake-node\n  containers: [{name: c, image: busybox}]\n",
    );
    k.ok(&[
        "patch", "node", "fake-node", "--subresource=status", "--type=merge", "-p",
        &format!(
            r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{}}}}}}}}}"#,
            fake.port
        ),
    ]);
    let out = k.fails(&["logs", "lured"], None);
    assert!(
        out.contains("not issued to a node") || out.contains("certificate"),
        "{out}"
    );
    let out = k.fails(&["exec", "lured", "--", "true"], None);
    assert!(!out.is_empty());
    assert!(
        fake.handshakes() >= 2,
        "the apiserver did dial the fake kubelet"
    );
    assert_eq!(fake.requests(), 0, "no request reached the fake kubelet");
}

/// A TLS server with a certificate of its own CA, counting handshakes and
/// the requests that got through one.
struct FakeKubelet {
    port: u16,
    seen: std::sync::Arc<(
        std::sync::atomic::AtomicUsize,
        std::sync::atomic::AtomicUsize,
    )>,
}

impl FakeKubelet {
    fn start() -> Self {
        use std::{io::Read as _, sync::atomic::Ordering};
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = rustls::pki_types::CertificateDer::from(certified.cert.der().to_vec());
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let cfg = std::sync::Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(Default::default());
        let counts = std::sync::Arc::clone(&seen);
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let counts: &(
                    std::sync::atomic::AtomicUsize,
                    std::sync::atomic::AtomicUsize,
                ) = &counts;
                counts.0.fetch_add(1, Ordering::SeqCst);
                let mut tcp = tcp;
                let _ = tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
                let mut buf = [0u8; 64];
                if matches!(tls.read(&mut buf), Ok(n) if n > 0) {
                    counts.1.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Self { port, seen }
    }

    fn handshakes(&self) -> usize {
        self.seen.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.seen.1.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The seccomp mode of a container's main process, from what it printed
/// at start (`grep Seccomp: /proc/self/status`): 0 none, 2 a filter.
fn seccomp_mode(node: &Node, pod: &str) -> String {
    wait("the container's report of its seccomp mode", 30, || {
        let out = node.kubectl().ok(&["logs", pod]);
        out.lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .map(|m| m.trim().to_owned())
    })
}

/// `sh -c cmd` in `pod` through `kubectl exec`: (succeeded, output).
fn exec_sh(node: &Node, pod: &str, cmd: &str) -> (bool, String) {
    support::kube::kubectl_at(
        &support::kube::newest(),
        &node.server.kubeconfig(),
        &["exec", pod, "--", "sh", "-c", cmd],
    )
}

/// Seccomp as the kubelet and containerd's CRI apply it. `RuntimeDefault`
/// confines the container and what is exec'd in it (no user namespace);
/// a `Localhost` profile from `<root-dir>/seccomp` applies its own rules;
/// `Unconfined` and privileged containers run without a filter; a missing
/// profile is `CreateContainerError` with the reason; with
/// `--seccomp-default` a pod that names no profile gets `RuntimeDefault`.
#[test]
fn seccomp_profiles_confine_the_containers_that_ask() {
    let mut node = Node::start();
    let profiles = node.dir.join("root/seccomp/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("deny-mkdir.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
    )
    .unwrap();
    let pod = |name: &str, pod_sc: &str, sc: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  securityContext: {pod_sc}\n  containers:\n  - name: c\n    image: busybox:1.28\n    command: [sh, -c, 'grep Seccomp: /proc/self/status; sleep 3600']\n    securityContext: {sc}\n---\n"
        )
    };
    let manifest = [
        pod("runtime", "{seccompProfile: {type: RuntimeDefault}}", "{}"),
        pod(
            "unconfined",
            "{seccompProfile: {type: RuntimeDefault}}",
            "{seccompProfile: {type: Unconfined}}",
        ),
        pod(
            "local",
            "{}",
            "{seccompProfile: {type: Localhost, localhostProfile: profiles/deny-mkdir.json}}",
        ),
        pod(
            "missing",
            "{}",
            "{seccompProfile: {type: Localhost, localhostProfile: profiles/nope.json}}",
        ),
        pod(
            "privileged",
            "{seccompProfile: {type: RuntimeDefault}}",
            "{privileged: true}",
        ),
        pod("bare", "{}", "{}"),
    ]
    .concat();
    node.kubectl().apply(&["apply", "-f", "-"], &manifest);
    for name in ["runtime", "unconfined", "local", "privileged", "bare"] {
        node.wait_pod(name, "Running", 90, |p| p["status"]["phase"] == "Running");
    }
    assert_eq!(seccomp_mode(&node, "runtime"), "2");
    assert_eq!(seccomp_mode(&node, "local"), "2");
    assert_eq!(seccomp_mode(&node, "unconfined"), "0");
    assert_eq!(seccomp_mode(&node, "privileged"), "0");
    // Without --seccomp-default, as upstream's kubelet: unconfined.
    assert_eq!(seccomp_mode(&node, "bare"), "0");

    // RuntimeDefault: ordinary work runs; a user namespace (unshare is
    // allowed only with CAP_SYS_ADMIN) does not, in an exec'd shell too.
    let (ok, out) = exec_sh(&node, "runtime", "echo fine > /tmp/f && cat /tmp/f");
    assert!(ok && out.trim() == "fine", "{out}");
    let (ok, out) = exec_sh(&node, "runtime", "unshare -U true");
    assert!(!ok && out.contains("Operation not permitted"), "{out}");
    let (ok, out) = exec_sh(&node, "runtime", "grep Seccomp: /proc/self/status");
    assert!(ok && out.split_whitespace().last() == Some("2"), "{out}");
    // The Localhost profile's own rule: mkdir refused, the rest allowed.
    let (ok, out) = exec_sh(&node, "local", "mkdir /tmp/d");
    assert!(!ok && out.contains("Operation not permitted"), "{out}");
    let (ok, out) = exec_sh(&node, "local", "touch /tmp/f && ls /tmp/f");
    assert!(ok, "{out}");
    let (ok, out) = exec_sh(&node, "unconfined", "mkdir /tmp/d && echo made");
    assert!(ok && out.contains("made"), "{out}");

    let p = node.wait_pod("missing", "CreateContainerError", 60, |p| {
        status_of(p, "containerStatuses", "c")["state"]["waiting"]["reason"]
            == "CreateContainerError"
    });
    let msg = status_of(&p, "containerStatuses", "c")["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        msg.contains("cannot load seccomp profile") && msg.contains("profiles/nope.json"),
        "{msg}"
    );

    // --seccomp-default: a pod that names no profile is confined.
    node.kubelet = None;
    node.extra_kubelet_args.push("--seccomp-default".into());
    node.start_kubelet();
    node.kubectl()
        .apply(&["apply", "-f", "-"], &pod("bare2", "{}", "{}"));
    node.wait_pod("bare2", "Running", 90, |p| {
        p["status"]["phase"] == "Running"
    });
    assert_eq!(seccomp_mode(&node, "bare2"), "2");
    // The pods of before keep running under what they started with.
    assert_eq!(seccomp_mode(&node, "bare"), "0");
}

/// The SELinux relabel of a volume (`--selinux`, before each container
/// starts) walks a directory a container writes into: what a hostile
/// container leaves there (links to the node's files and directories, a
/// FIFO, a deep tree) is labelled itself, and nothing outside is touched.
/// Run with the real `security.selinux` attribute, which root can write
/// on this kernel without SELinux loaded.
#[test]
fn selinux_relabel_never_follows_what_a_pod_planted_in_its_volume() {
    use std::os::unix::fs::symlink;

    use rudder_kubelet::selinux::{RELABEL_LIMIT, relabel};

    let get = |p: &std::path::Path| -> Option<Vec<u8>> {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let mut buf = vec![0u8; 256];
        // SAFETY: NUL-terminated path and name, a buffer of its length.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                c"security.selinux".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        (n >= 0).then(|| buf[..n as usize].to_vec())
    };
    let t = rudder_test_harness::TempDir::new();
    let node_file = t.path().join("node-secret");
    let node_dir = t.path().join("node-dir");
    std::fs::write(&node_file, b"root's").unwrap();
    std::fs::create_dir(&node_dir).unwrap();
    std::fs::write(node_dir.join("inside"), b"x").unwrap();
    let vol = t.path().join("volume");
    std::fs::create_dir_all(vol.join("a/b/c")).unwrap();
    std::fs::write(vol.join("a/b/c/data"), b"pod data").unwrap();
    symlink(&node_file, vol.join("to-file")).unwrap();
    symlink(&node_dir, vol.join("a/to-dir")).unwrap();
    symlink("../../..", vol.join("a/b/up")).unwrap();
    let fifo = std::ffi::CString::new(vol.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let label = "system_u:object_r:container_file_t:s0:c7,c8";
    let r = relabel(&vol, label, RELABEL_LIMIT).unwrap();
    assert!(r.complete);
    assert_eq!(r.entries, 9, "{r:?}");
    for inside in [
        "",
        "a",
        "a/b",
        "a/b/c",
        "a/b/c/data",
        "to-file",
        "a/to-dir",
        "a/b/up",
        "fifo",
    ] {
        assert_eq!(
            get(&vol.join(inside)).as_deref(),
            Some(label.as_bytes()),
            "{inside}"
        );
    }
    for outside in [
        &node_file,
        &node_dir,
        &node_dir.join("inside"),
        &t.path().to_path_buf(),
    ] {
        assert_eq!(get(outside), None, "{} was labelled", outside.display());
    }
    // A volume that is itself a link is refused, not followed.
    symlink(&node_dir, t.path().join("link-volume")).unwrap();
    assert!(relabel(&t.path().join("link-volume"), label, RELABEL_LIMIT).is_err());
    assert_eq!(get(&node_dir), None);
    // The bound: a tree larger than the limit is labelled in part.
    let r = relabel(&vol, label, 4).unwrap();
    assert!(!r.complete && r.entries == 4, "{r:?}");
    // A single file (the pod's /etc/hosts) is labelled too.
    let hosts = t.path().join("etc-hosts");
    std::fs::write(&hosts, b"127.0.0.1 localhost\n").unwrap();
    relabel(&hosts, label, RELABEL_LIMIT).unwrap();
    assert_eq!(get(&hosts).as_deref(), Some(label.as_bytes()));
}
