//! Hostile input against a real `rudder server`, as an attacker would send
//! it with curl and kubectl: each request must be refused with the status
//! kube-apiserver gives (or the connection closed by a timeout), never
//! panic a handler, and the server must answer normally afterwards.

mod support;

use std::{
    io::{Read as _, Write as _},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::kube::{Kubectl, Server, newest};

fn kubectl(s: &Server) -> Kubectl<'_> {
    Kubectl {
        bin: newest(),
        server: s,
    }
}

/// The server still serves: a read and a write.
#[track_caller]
fn still_up(s: &Server) {
    let (code, body) = s.curl(true, "GET", "/readyz", "text/plain", None, &[]);
    assert_eq!((code, body.as_str()), (200, "ok"));
    let name = format!("alive-{}", rand_suffix());
    kubectl(s).ok(&["create", "configmap", &name]);
}

fn rand_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

fn status(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a Status ({e}): {body}"))
}

#[test]
fn malformed_patches_deletes_and_updates_get_4xx_not_a_panic() {
    let s = Server::start();
    let k = kubectl(&s);
    k.ok(&["create", "configmap", "target", "--from-literal=a=b"]);
    k.ok(&["create", "namespace", "victim"]);
    let cm = "/api/v1/namespaces/default/configmaps/target";
    let cases: [(&str, &str, &str, &[u8], u16); 5] = [
        ("PATCH", cm, "application/merge-patch+json", b"\"x\"", 400),
        (
            "PATCH",
            cm,
            "application/json-patch+json",
            br#"[{"op":"replace","path":"","value":"x"}]"#,
            400,
        ),
        (
            "PATCH",
            cm,
            "application/strategic-merge-patch+json",
            b"[1]",
            400,
        ),
        (
            "PATCH",
            cm,
            "application/merge-patch+json",
            br#"{"metadata":"x"}"#,
            400,
        ),
        (
            "PUT",
            "/api/v1/namespaces/victim",
            "application/json",
            br#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"victim"},"spec":"x"}"#,
            400,
        ),
    ];
    for (method, path, ct, body, want) in cases {
        let (code, out) = s.curl(true, method, path, ct, Some(body), &[]);
        assert_eq!(
            code,
            want,
            "{method} {path} {}: {out}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(status(&out)["kind"], "Status", "{out}");
        still_up(&s);
    }
    // A grace period that does not fit a timestamp: accepted, saturated,
    // and the pod can still be deleted.
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: nowhere, containers: [{name: c, image: busybox}]}\n",
    );
    let (code, out) = s.curl(
        true,
        "DELETE",
        "/api/v1/namespaces/default/pods/p?gracePeriodSeconds=9223372036854775807",
        "application/json",
        None,
        &[],
    );
    assert_eq!(code, 200, "{out}");
    still_up(&s);
    k.ok(&["delete", "pod", "p", "--grace-period=0", "--force"]);
    k.ok(&["delete", "namespace", "victim", "--wait=false"]);
}

#[test]
fn patches_and_objects_are_bounded() {
    let s = Server::start();
    let k = kubectl(&s);
    k.ok(&[
        "create",
        "configmap",
        "bomb",
        "--from-literal=a=0123456789abcdef",
    ]);
    let cm = "/api/v1/namespaces/default/configmaps/bomb";
    // More than 10,000 operations: 413, as kube-apiserver.
    let ops: Vec<Value> = (0..10_001)
        .map(|_| json!({"op": "test", "path": "/data/a", "value": "0123456789abcdef"}))
        .collect();
    let (code, out) = s.curl(
        true,
        "PATCH",
        cm,
        "application/json-patch+json",
        Some(&serde_json::to_vec(&ops).unwrap()),
        &[],
    );
    assert_eq!(code, 413, "{out}");
    assert!(
        status(&out)["message"].as_str().unwrap().contains("10000"),
        "{out}"
    );
    // A kilobyte of `copy` operations that doubles the object each time.
    let mut ops = vec![json!({"op": "add", "path": "/data/b", "value": "x".repeat(512)})];
    for i in 0..40 {
        ops.push(
            json!({"op": "copy", "from": "/data", "path": format!("/metadata/annotations/x{i}")}),
        );
    }
    let started = Instant::now();
    let (code, out) = s.curl(
        true,
        "PATCH",
        cm,
        "application/json-patch+json",
        Some(&serde_json::to_vec(&ops).unwrap()),
        &[],
    );
    assert!(code == 413 || code == 422, "{code}: {out}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let got: Value =
        serde_json::from_str(&k.ok(&["get", "configmap", "bomb", "-o", "json"])).unwrap();
    assert!(
        got["data"].get("b").is_none(),
        "nothing of the refused patch was stored"
    );
    // A ConfigMap over 1 MiB of data: 422 Too long, as kube-apiserver.
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
                     "data": {"a": "x".repeat(1_100_000)}});
    let (code, out) = s.curl(
        true,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        Some(&serde_json::to_vec(&big).unwrap()),
        &[],
    );
    assert_eq!(code, 422, "{out}");
    assert!(out.contains("must have at most 1048576 bytes"), "{out}");
    // Any object over the store's 1.5 MiB (an env value has no limit of
    // its own): 413.
    let huge = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "huge"},
                      "spec": {"containers": [{"name": "c", "image": "busybox",
                               "env": [{"name": "A", "value": "x".repeat(1_600_000)}]}]}});
    let (code, out) = s.curl(
        true,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        Some(&serde_json::to_vec(&huge).unwrap()),
        &[],
    );
    assert_eq!(code, 413, "{out}");
    assert!(out.contains("the limit is 1572864"), "{out}");
    still_up(&s);
}

#[test]
fn services_endpoints_and_pods_are_validated_as_kube_apiserver_does() {
    let s = Server::start();
    let k = kubectl(&s);
    let refused = |manifest: &str, want: &str| {
        let out = k.fails(&["apply", "-f", "-"], Some(manifest));
        assert!(out.contains(want), "want {want:?} in:\n{out}");
    };
    let svc = |ips: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec: {{ports: [{{port: 10250}}], externalIPs: [{ips}]}}\n"
        )
    };
    for (ip, why) in [
        ("0.0.0.0", "may not be unspecified"),
        ("127.0.0.1", "may not be in the loopback range"),
        ("169.254.169.254", "may not be in the link-local range"),
        ("224.0.0.1", "may not be in the link-local multicast range"),
        ("10.96.0.1", "may not be in the service CIDR"),
        ("not-an-ip", "must be a valid IP address"),
    ] {
        refused(&svc(ip), why);
    }
    k.apply(&["apply", "-f", "-"], &svc("192.0.2.10"));
    // An EndpointSlice of more than 1,000 endpoints.
    let eps: Vec<Value> = (0..1001)
        .map(|i| json!({"addresses": [format!("10.1.{}.{}", i / 256, i % 256)]}))
        .collect();
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "many", "labels": {"kubernetes.io/service-name": "s"}},
        "addressType": "IPv4", "endpoints": eps});
    refused(&slice.to_string(), "must have at most 1000 items");
    // Pods: volume names, item paths, subPath, modes (the kubelet checks
    // again, see kubelet_security).
    refused(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: busybox, volumeMounts: [{name: v, mountPath: /v, subPath: ../../etc}]}]\n  volumes: [{name: v, configMap: {name: x, defaultMode: 2541, items: [{key: k, path: ../../etc/passwd}]}}]\n",
        "spec.volumes[0].configMap.defaultMode: Invalid value: 2541",
    );
    refused(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  terminationGracePeriodSeconds: -5\n  containers: [{name: c, image: busybox}]\n",
        "spec.terminationGracePeriodSeconds: Invalid value: -5",
    );
    still_up(&s);
}

#[test]
fn connections_are_bounded() {
    let s = Server::start_in(
        rudder_test_harness::TempDir::new(),
        &[
            "--max-requests-inflight",
            "4",
            "--max-mutating-requests-inflight",
            "1",
        ],
    );
    // Anonymous: 401 before the body is read (a 64 MiB body is not needed).
    let big = vec![b'x'; 64 << 20];
    let started = Instant::now();
    let (code, _) = s.curl(
        false,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        Some(&big),
        // Over HTTP/2 the early answer comes with a stream reset that curl
        // reports as an error.
        &["--http1.1"],
    );
    assert_eq!(code, 401);
    assert!(started.elapsed() < Duration::from_secs(5));

    let port: u16 = s.url().rsplit(':').next().unwrap().parse().unwrap();
    let connect = || {
        let (c, k) = s.admin_credentials();
        tls_connect(port, &c, &k)
    };
    // A mutating request whose body never finishes holds the one slot…
    let mut slow = connect();
    write!(
        slow,
        "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    )
    .unwrap();
    slow.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // …so the next one is told to come back, with Retry-After.
    let (code, out) = s.curl(
        true,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        Some(br#"{"metadata":{"name":"second"}}"#),
        // HTTP/1.1: over HTTP/2 an answer sent before the body was read
        // ends the stream with a reset that curl reports instead.
        &["-i", "--http1.1"],
    );
    assert_eq!(code, 429, "{out}");
    assert!(out.to_lowercase().contains("retry-after: 1"), "{out}");
    assert!(out.contains("TooManyRequests"), "{out}");
    // Reads still go through.
    let (code, _) = s.curl(
        true,
        "GET",
        "/api/v1/namespaces",
        "application/json",
        None,
        &[],
    );
    assert_eq!(code, 200);
    drop(slow);

    // Half a request header: the server closes the connection after its
    // header timeout (kube-apiserver's is 32 s).
    let mut half = connect();
    write!(half, "GET /api HTTP/1.1\r\nHost:").unwrap();
    half.flush().unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let closed = loop {
        match half.read(&mut buf) {
            Ok(0) | Err(_) => break started.elapsed(),
            Ok(_) => {}
        }
    };
    assert!(closed < Duration::from_secs(40), "open for {closed:?}");
    still_up(&s);
}

/// A TLS connection to the apiserver with a client certificate, with a
/// 60 s read timeout.
fn tls_connect(
    port: u16,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls::pki_types::pem::PemObject as _;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(NoVerify(provider)))
        .with_client_auth_cert(certs, key)
        .unwrap();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(cfg),
        rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// The test trusts the server it started.
#[derive(Debug)]
struct NoVerify(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The store's peer port, from the server's log.
fn peer_port(s: &Server) -> u16 {
    let log = std::fs::read_to_string(s.dir.path().join("server.log")).unwrap();
    log.lines()
        .find_map(|l| l.split("peer=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| {
            p.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no peer address in the log:\n{log}"))
}

/// The store's peer port takes only store members: not plain HTTP, not a
/// client without a certificate, not the cluster admin's certificate of the
/// same CA. A ClusterRoleBinding written there would make anyone
/// cluster-admin.
#[test]
fn the_store_peer_port_takes_only_members() {
    let s = Server::start();
    let port = peer_port(&s);
    let write = br#"{"Create":{"key":"/registry/clusterrolebindings/evil","value":"{}"}}"#;
    let curl = |url: String, creds: bool| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "-k", "--max-time", "5", "-X", "POST", "-d"])
            .arg(String::from_utf8_lossy(write).into_owned())
            .args([
                "-H",
                "Content-Type: application/json",
                "-w",
                "\n%{http_code}",
            ]);
        if creds {
            let (c, k) = s.admin_credentials();
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
        let out = cmd.arg(url).output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    for (url, creds) in [
        (format!("http://127.0.0.1:{port}/raft/write"), false),
        (format!("https://127.0.0.1:{port}/raft/write"), false),
        (format!("https://127.0.0.1:{port}/raft/status"), true),
        (format!("https://127.0.0.1:{port}/raft/write"), true),
    ] {
        let out = curl(url.clone(), creds);
        assert!(
            !out.trim_end().ends_with("200") && !out.contains("\"Ok\""),
            "{url} (admin certificate: {creds}) was served:\n{out}"
        );
    }
    let k = kubectl(&s);
    let (ok, _) = support::kube::kubectl_at(
        &newest(),
        &s.kubeconfig(),
        &["get", "clusterrolebinding", "evil"],
    );
    assert!(!ok, "nothing was written through the peer port");
    k.ok(&["get", "namespaces"]);
    still_up(&s);
}

/// Pod Security admission: a privileged pod in a namespace that enforces
/// `restricted` is refused with kube-apiserver's message, a pod that meets
/// the standard is created, `warn` comes back as kubectl warnings, `audit`
/// goes to the server's log, an exempt user passes and a `-version` label
/// pins the controls of its release.
#[test]
fn pod_security_admission_enforces_and_warns() {
    let s = Server::start_in(
        rudder_test_harness::TempDir::new(),
        &[
            "--pod-security-audit",
            "baseline",
            "--pod-security-exempt-usernames",
            "ci-bot",
        ],
    );
    let k = kubectl(&s);
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: locked\n  labels: {pod-security.kubernetes.io/enforce: restricted, pod-security.kubernetes.io/warn: restricted}\n",
    );
    let root = "apiVersion: v1\nkind: Pod\nmetadata: {name: root, namespace: locked}\nspec:\n  hostPID: true\n  containers: [{name: c, image: busybox, securityContext: {privileged: true}}]\n";
    let out = k.fails(&["apply", "-f", "-"], Some(root));
    assert!(
        out.contains("pods \"root\" is forbidden: violates PodSecurity \"restricted:latest\": host namespaces (hostPID=true must not be set), privileged (container \"c\" must not set securityContext.privileged=true)"),
        "{out}"
    );
    let ok = "apiVersion: v1\nkind: Pod\nmetadata: {name: fine, namespace: locked}\nspec:\n  securityContext: {runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}\n  containers: [{name: c, image: busybox, securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}}]\n";
    k.apply(&["apply", "-f", "-"], ok);
    // A Deployment is never refused, only warned about.
    let out = k.apply(
        &[
            "create",
            "deployment",
            "web",
            "-n",
            "locked",
            "--image=nginx",
        ],
        "",
    );
    assert!(
        out.contains("Warning: would violate PodSecurity \"restricted:latest\""),
        "{out}"
    );
    // An exempt user (here impersonated by the admin) is not checked.
    k.apply(
        &[
            "apply",
            "--as",
            "ci-bot",
            "--as-group",
            "system:masters",
            "-f",
            "-",
        ],
        &root.replace("name: root", "name: exempt"),
    );
    // Unlabelled namespaces follow the server's defaults: enforce
    // privileged, audit baseline (logged, since there is no audit log).
    k.apply(
        &["apply", "-f", "-"],
        &root.replace("namespace: locked", "namespace: default"),
    );
    let log = std::fs::read_to_string(s.dir.path().join("server.log")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("rudder::audit")
            && l.contains("pod-security.kubernetes.io/audit-violations: would violate PodSecurity \"baseline:latest\": host namespaces")),
        "{log}"
    );
    // A version pin: tcp_keepalive_time is a safe sysctl from 1.29 on.
    for (ns, version) in [("old", "v1.28"), ("new", "v1.29")] {
        k.apply(
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{pod-security.kubernetes.io/enforce: baseline, pod-security.kubernetes.io/enforce-version: {version}}}\n"),
        );
    }
    let sysctl = "apiVersion: v1\nkind: Pod\nmetadata: {name: tuned, namespace: NS}\nspec:\n  securityContext: {sysctls: [{name: net.ipv4.tcp_keepalive_time, value: '60'}]}\n  containers: [{name: c, image: busybox}]\n";
    let out = k.fails(&["apply", "-f", "-"], Some(&sysctl.replace("NS", "old")));
    assert!(
        out.contains("violates PodSecurity \"baseline:v1.28\": forbidden sysctls (net.ipv4.tcp_keepalive_time)"),
        "{out}"
    );
    k.apply(&["apply", "-f", "-"], &sysctl.replace("NS", "new"));
}

/// Query booleans as Go's `strconv.ParseBool` reads them (the Python
/// client sends `watch=True`), and `Status` bodies in kube-apiserver's
/// field order.
#[test]
fn booleans_and_status_bodies_as_kube_apiserver_has_them() {
    let s = Server::start();
    kubectl(&s).ok(&["create", "configmap", "seen"]);
    for v in ["True", "t", "1", "TRUE"] {
        let (code, out) = s.curl(
            true,
            "GET",
            &format!("/api/v1/namespaces/default/configmaps?watch={v}&timeoutSeconds=1"),
            "application/json",
            None,
            &[],
        );
        assert_eq!(code, 200, "{out}");
        assert!(
            out.starts_with(r#"{"type":"ADDED","object":"#),
            "watch={v}: {out}"
        );
    }
    let (code, out) = s.curl(
        true,
        "GET",
        "/api/v1/namespaces/default/configmaps/absent",
        "application/json",
        None,
        &[],
    );
    assert_eq!(code, 404);
    assert!(
        out.starts_with(r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps \"absent\" not found","reason":"NotFound","details":"#),
        "{out}"
    );
    assert!(out.ends_with(r#""code":404}"#), "{out}");
}

/// The resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024
}

/// Memory stays small at rest and bounded under churn: 1,000 ConfigMaps
/// held in under 100 MiB, then 6 rounds of 40 ConfigMaps of 700 KB made
/// and deleted (170 MB written, more than the history's 64 MiB bound)
/// never take the server past 400 MiB (the history, the retry window's
/// 32 MiB, the live objects, the page cache and the request buffers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_small_at_rest_and_bounded_under_churn() {
    use futures_util::StreamExt as _;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, PostParams};

    let s = Server::start();
    let cms: Api<ConfigMap> =
        Api::namespaced(support::sim::client(&s.kubeconfig()).await, "default");
    let make = |name: String, bytes: usize| ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name),
            ..Default::default()
        },
        data: Some([("v".to_owned(), "x".repeat(bytes))].into()),
        ..Default::default()
    };
    let create_all = |names: Vec<String>, bytes: usize| {
        let cms = cms.clone();
        async move {
            futures_util::stream::iter(names)
                .for_each_concurrent(16, |n| {
                    let (cms, cm) = (cms.clone(), make(n, bytes));
                    async move {
                        cms.create(&PostParams::default(), &cm).await.unwrap();
                    }
                })
                .await;
        }
    };
    create_all((0..1000).map(|i| format!("small-{i}")).collect(), 300).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_rest = rss_mib(s.pid());
    println!("rudder server with 1,000 ConfigMaps: {at_rest} MiB");
    assert!(at_rest < 100, "{at_rest} MiB at rest with 1,000 objects");
    let mut peak = at_rest;
    for round in 0..6 {
        let names: Vec<String> = (0..40).map(|i| format!("big-{round}-{i}")).collect();
        create_all(names.clone(), 700_000).await;
        peak = peak.max(rss_mib(s.pid()));
        futures_util::stream::iter(names)
            .for_each_concurrent(16, |n| {
                let cms = cms.clone();
                async move {
                    cms.delete(&n, &DeleteParams::default()).await.unwrap();
                }
            })
            .await;
        peak = peak.max(rss_mib(s.pid()));
    }
    println!("rudder server's peak under churn: {peak} MiB");
    assert!(peak < 400, "{peak} MiB under churn");
    still_up(&s);
}
