//! The stock kubectl (the oldest and the newest this host ships) against
//! `rudder server`: one server per test, on loopback ports, with its own
//! data, PKI and kubeconfig.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

mod support;

use rudder_test_harness::{ChildGuard, TempDir};
use support::kube::{Kubectl, Server, kubectl_at, newest, oldest, token_kubeconfig};

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: REPLICAS
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: c, image: \"nginx:1.25\", ports: [{containerPort: 80}], env: [{name: A, value: \"VALUE\"}]}
";

#[test]
fn oldest_kubectl_drives_the_workload_flow() {
    workload_flow(oldest());
}

#[test]
fn newest_kubectl_drives_the_workload_flow() {
    workload_flow(newest());
}

/// The flow users learn kubectl with, on both ends of the supported range.
fn workload_flow(bin: PathBuf) {
    let server = Server::start();
    let k = Kubectl {
        bin,
        server: &server,
    };

    // The default objects, with Kubernetes' columns.
    let ns = k.ok(&["get", "namespaces"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(n), "{ns}");
    }
    assert!(ns.starts_with("NAME"), "{ns}");
    let svc = k.ok(&["get", "svc", "kubernetes", "-o", "wide"]);
    assert!(
        svc.contains("10.96.0.1") && svc.contains("443/TCP"),
        "{svc}"
    );

    // Imperative commands.
    k.ok(&["create", "namespace", "team-a"]);
    k.ok(&[
        "-n",
        "team-a",
        "create",
        "deployment",
        "nginx",
        "--image=nginx",
        "--replicas=2",
    ]);
    k.ok(&[
        "-n",
        "team-a",
        "expose",
        "deployment",
        "nginx",
        "--port=80",
        "--type=NodePort",
    ]);
    let svc = k.ok(&[
        "-n",
        "team-a",
        "get",
        "svc",
        "nginx",
        "-o",
        "jsonpath={.spec.type} {.spec.clusterIP} {.spec.ports[0].nodePort}",
    ]);
    let parts: Vec<&str> = svc.split_whitespace().collect();
    assert_eq!(parts[0], "NodePort");
    assert!(
        parts[1].starts_with("10.") && parts[1] != "10.96.0.1",
        "{svc}"
    );
    let np: u16 = parts[2].parse().unwrap();
    assert!((30000..=32767).contains(&np), "{svc}");
    k.ok(&[
        "-n",
        "team-a",
        "scale",
        "deployment",
        "nginx",
        "--replicas=3",
    ]);
    assert_eq!(
        k.ok(&[
            "-n",
            "team-a",
            "get",
            "deploy",
            "nginx",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "3"
    );
    k.ok(&["-n", "team-a", "label", "deploy", "nginx", "tier=web"]);
    k.ok(&["-n", "team-a", "annotate", "deploy", "nginx", "note=hello"]);
    assert!(
        k.ok(&["-n", "team-a", "get", "deploy", "-l", "tier=web"])
            .contains("nginx")
    );
    assert!(
        k.ok(&["-n", "team-a", "get", "deploy", "-l", "tier!=web"])
            .contains("No resources found")
    );
    assert!(k.ok(&["get", "deploy", "-A"]).contains("team-a"));
    k.ok(&["create", "configmap", "cm1", "--from-literal=a=b"]);
    k.ok(&["create", "secret", "generic", "s1", "--from-literal=p=q"]);
    k.ok(&["create", "job", "j1", "--image=busybox", "--", "echo", "hi"]);
    let all = k.ok(&[
        "get",
        "cm,secret,job",
        "--field-selector",
        "metadata.name!=kube-root-ca.crt",
    ]);
    assert!(
        all.contains("cm1") && all.contains("s1") && all.contains("j1"),
        "{all}"
    );
    let yaml = k.ok(&["get", "job", "j1", "-o", "yaml"]);
    assert!(
        yaml.contains("backoffLimit: 6") && yaml.contains("restartPolicy: Never"),
        "{yaml}"
    );

    // Declarative: client-side apply twice (a three-way strategic merge),
    // then server-side, then patches of each kind.
    let m = |r: &str, v: &str| WEB.replace("REPLICAS", r).replace("VALUE", v);
    assert!(
        k.apply(&["apply", "-f", "-"], &m("2", "1"))
            .contains("created")
    );
    assert!(
        k.apply(&["apply", "-f", "-"], &m("4", "2"))
            .contains("configured")
    );
    assert_eq!(
        k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].env[0].value} {.metadata.generation}"]),
        "4 2 2"
    );
    // Switching to server-side apply with a changed field conflicts with
    // client-side apply's manager, as in Kubernetes; forcing takes it.
    let out = k.fails(&["apply", "--server-side", "-f", "-"], Some(&m("3", "2")));
    assert!(
        out.contains(r#"conflict with "kubectl-client-side-apply""#),
        "{out}"
    );
    assert!(
        k.apply(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            &m("3", "2")
        )
        .contains("serverside-applied")
    );
    assert_eq!(
        k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    k.ok(&["patch", "deploy", "web", "-p", r#"{"spec":{"replicas":1}}"#]);
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":5}]"#,
    ]);
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"x":"y"}}}"#,
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.labels.x}"
        ]),
        "5 y"
    );
    assert!(k.ok(&["describe", "deploy", "web"]).contains("Replicas:"));

    // Bad input: the right Status, nothing stored.
    let out = k.fails(
        &["create", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#),
    );
    assert!(
        out.contains("is invalid") && out.contains("metadata.name"),
        "{out}"
    );
    let out = k.fails(
        &["create", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"bogus":1}"#),
    );
    assert!(out.contains(r#"unknown field "bogus""#), "{out}");
    k.fails(
        &["create", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x""#),
    );
    assert!(k.fails(&["get", "cm", "x"], None).contains("NotFound"));
    let out = k.fails(&["create", "configmap", "cm1"], None);
    assert!(out.contains("already exists"), "{out}");
    let out = k.fails(&["delete", "namespace", "default"], None);
    assert!(out.contains("may not be deleted"), "{out}");

    // Discovery and access.
    let res = k.ok(&["api-resources"]);
    for line in [
        "deployments",
        "deploy",
        "apps/v1",
        "endpointslices",
        "leases",
    ] {
        assert!(res.contains(line), "{res}");
    }
    assert_eq!(k.ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");

    // Pods: -o wide adds IP and NODE; -o json is the object.
    k.ok(&["run", "solo", "--image=nginx", "--labels=app=solo"]);
    let wide = k.ok(&["get", "pods", "-l", "app=solo", "-o", "wide"]);
    let header: Vec<&str> = wide
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        &header[..7],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"],
        "{wide}"
    );
    let pod: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "pod", "solo", "-o", "json"])).unwrap();
    assert_eq!(
        (pod["kind"].as_str(), pod["status"]["phase"].as_str()),
        (Some("Pod"), Some("Pending"))
    );

    // Server-side apply owns fields: a scale takes `replicas`, a re-apply
    // of another value conflicts, `--force-conflicts` takes it back.
    let ssa = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: owned}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: owned}}\n  template:\n    metadata: {labels: {app: owned}}\n    spec: {containers: [{name: c, image: nginx}]}\n";
    k.apply(&["apply", "--server-side", "-f", "-"], ssa);
    k.ok(&["scale", "deploy", "owned", "--replicas=5"]);
    let out = k.fails(&["apply", "--server-side", "-f", "-"], Some(ssa));
    assert!(
        out.contains("Apply failed with 1 conflict") && out.contains(".spec.replicas"),
        "{out}"
    );
    k.apply(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        ssa,
    );
    assert_eq!(
        k.ok(&["get", "deploy", "owned", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    // A field the manager stops applying is removed.
    k.apply(
        &["apply", "--server-side", "-f", "-"],
        &ssa.replace(
            "metadata: {name: owned}",
            "metadata: {name: owned, labels: {tier: web}}",
        ),
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "owned",
            "-o",
            "jsonpath={.metadata.labels.tier}"
        ]),
        "web"
    );
    k.apply(&["apply", "--server-side", "-f", "-"], ssa);
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "owned",
            "-o",
            "jsonpath={.metadata.labels.tier}"
        ]),
        ""
    );

    // `get -w` prints a change made while it watches.
    let mut watch = Command::new(&k.bin)
        .args(["get", "cm", "-w", "--request-timeout=20s"])
        .env("KUBECONFIG", server.kubeconfig())
        .env("HOME", server.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    k.ok(&["create", "configmap", "seen-by-watch"]);
    std::thread::sleep(Duration::from_secs(2));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("seen-by-watch"), "{text}");

    // `--cascade=orphan` keeps a dependent, without its owner reference.
    let uid = k.ok(&["get", "cm", "cm1", "-o", "jsonpath={.metadata.uid}"]);
    k.apply(&["create", "-f", "-"], &format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dependent\n  ownerReferences: [{{apiVersion: v1, kind: ConfigMap, name: cm1, uid: {uid}}}]\n"));
    k.ok(&["delete", "cm", "cm1", "--cascade=orphan"]);
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "dependent",
            "-o",
            "jsonpath={.metadata.ownerReferences}"
        ]),
        ""
    );

    // Delete waits for the object to go (list + watch by name).
    k.ok(&["delete", "deploy", "web", "owned"]);
    assert!(k.ok(&["get", "deploy"]).contains("No resources found"));
}

#[test]
fn newest_kubectl_reads_patches_and_watches() {
    let server = Server::start();
    let old = Kubectl {
        bin: oldest(),
        server: &server,
    };
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    k.ok(&["create", "configmap", "watched", "--from-literal=a=b"]);
    let out = k.ok(&["get", "cm", "watched", "-o", "wide"]);
    assert!(out.contains("DATA") && out.contains("watched"), "{out}");
    k.ok(&["label", "cm", "watched", "app=x"]);
    k.ok(&["patch", "cm", "watched", "-p", r#"{"data":{"c":"d"}}"#]);
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "-l",
            "app=x",
            "-o",
            "jsonpath={.items[0].data.c}"
        ]),
        "d"
    );

    // `get -w` prints the change made while it watches.
    let mut watch = Command::new(newest())
        .args(["get", "cm", "-w", "--request-timeout=20s"])
        .env("KUBECONFIG", server.kubeconfig())
        .env("HOME", server.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    old.ok(&["create", "configmap", "late", "--from-literal=x=y"]);
    std::thread::sleep(Duration::from_secs(2));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("watched") && text.contains("late"), "{text}");
    k.ok(&["delete", "cm", "watched", "late"]);
    assert!(
        k.ok(&["get", "cm", "-l", "app=x"])
            .contains("No resources found")
    );
}

/// kubectl 1.32+ sends its generated objects (`create deployment`,
/// `expose`, `auth can-i`, …) as Kubernetes protobuf.
#[test]
fn newest_kubectl_creates_with_protobuf_bodies() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    k.ok(&["create", "namespace", "pb"]);
    let n = ["-n", "pb"];
    let run = |args: &[&str]| k.ok(&[&n[..], args].concat());
    run(&["create", "configmap", "c1", "--from-literal=a=b"]);
    run(&[
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=user=admin",
    ]);
    run(&[
        "create",
        "deployment",
        "d1",
        "--image=nginx:1.25",
        "--replicas=2",
        "--port=80",
    ]);
    run(&["create", "job", "j1", "--image=busybox", "--", "sleep", "1"]);
    run(&[
        "expose",
        "deployment",
        "d1",
        "--port=80",
        "--target-port=8080",
        "--type=NodePort",
    ]);
    run(&["create", "serviceaccount", "robot"]);
    run(&[
        "create",
        "role",
        "reader",
        "--verb=get,list",
        "--resource=pods",
    ]);
    run(&[
        "create",
        "rolebinding",
        "robot-reads",
        "--role=reader",
        "--serviceaccount=pb:robot",
    ]);
    assert_eq!(
        run(&["auth", "can-i", "create", "deployments"]).trim(),
        "yes"
    );

    let get = |kind: &str, name: &str, path: &str| {
        run(&["get", kind, name, "-o", &format!("jsonpath={path}")])
    };
    assert_eq!(get("cm", "c1", "{.data.a}"), "b");
    assert_eq!(get("secret", "s1", "{.data.user}"), "YWRtaW4=");
    // Go writes `strategy: {}`; the defaults fill it field by field.
    assert_eq!(
        get(
            "deploy",
            "d1",
            "{.spec.replicas} {.spec.strategy.type} {.spec.strategy.rollingUpdate.maxSurge}"
        ),
        "2 RollingUpdate 25%"
    );
    assert_eq!(
        get(
            "deploy",
            "d1",
            "{.spec.template.spec.containers[0].ports[0].containerPort}"
        ),
        "80"
    );
    assert_eq!(
        get(
            "job",
            "j1",
            "{.spec.template.spec.containers[0].command} {.spec.backoffLimit}"
        ),
        "[\"sleep\",\"1\"] 6"
    );
    let ports = get(
        "svc",
        "d1",
        "{.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.ports[0].nodePort}",
    );
    let f: Vec<&str> = ports.split(' ').collect();
    assert_eq!(&f[..2], &["80", "8080"], "{ports}");
    let node_port: u16 = f[2].parse().expect(&ports);
    assert!((30000..=32767).contains(&node_port), "{ports}");
    assert_eq!(
        get(
            "rolebinding",
            "robot-reads",
            "{.subjects[0].kind}/{.subjects[0].name}"
        ),
        "ServiceAccount/robot"
    );
}

/// `delete --cascade=orphan|foreground|background` and namespace deletion:
/// the garbage collector and namespace finalizer of `rudder server`.
#[test]
fn newest_kubectl_cascades_deletes_and_empties_namespaces() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    // An owner and two dependents (one blocks the owner's deletion).
    let family = |k: &Kubectl<'_>| -> String {
        k.apply(
            &["apply", "-f", "-"],
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owner}\ndata: {a: b}\n",
        );
        let uid = k.ok(&["get", "cm", "owner", "-o", "jsonpath={.metadata.uid}"]);
        for (name, block) in [("dep-a", true), ("dep-b", false)] {
            k.apply(
                &["apply", "-f", "-"],
                &format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: owner, uid: {uid}, blockOwnerDeletion: {block}}}\n"
                ),
            );
        }
        uid
    };
    // (Every namespace also holds the cluster's root CA.)
    let names = |k: &Kubectl<'_>| {
        k.ok(&["get", "cm", "-o", "jsonpath={.items[*].metadata.name}"])
            .split(' ')
            .filter(|n| *n != "kube-root-ca.crt")
            .collect::<Vec<_>>()
            .join(" ")
    };
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "{what} within 30 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    // Orphan: the dependents stay, without the reference.
    family(&k);
    k.ok(&["delete", "cm", "owner", "--cascade=orphan"]);
    assert_eq!(names(&k), "dep-a dep-b");
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "dep-a",
            "-o",
            "jsonpath={.metadata.ownerReferences}"
        ]),
        ""
    );
    k.ok(&["delete", "cm", "dep-a", "dep-b"]);

    // Foreground: kubectl waits for the owner, which goes after its dependents.
    family(&k);
    k.ok(&["delete", "cm", "owner", "--cascade=foreground"]);
    wait_for("foreground deletion of the dependents", &|| {
        names(&k).is_empty()
    });

    // Background (the default): the owner goes at once, the dependents after.
    family(&k);
    k.ok(&["delete", "cm", "owner"]);
    wait_for("background deletion of the dependents", &|| {
        names(&k).is_empty()
    });

    // A dependent whose owner was deleted and re-created (new uid) is
    // collected: the reference is by uid.
    let old_uid = family(&k);
    k.ok(&["delete", "cm", "owner", "--cascade=orphan"]);
    k.ok(&["patch", "cm", "dep-b", "--type=merge", "-p",
        &format!(r#"{{"metadata":{{"ownerReferences":[{{"apiVersion":"v1","kind":"ConfigMap","name":"owner","uid":"{old_uid}"}}]}}}}"#)]);
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owner}\n",
    );
    wait_for("collection of the dependent of a re-created owner", &|| {
        names(&k) == "dep-a owner"
    });

    // A namespace is emptied, then removed; kubectl waits for it.
    k.ok(&["create", "namespace", "team"]);
    k.ok(&[
        "-n",
        "team",
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=b",
    ]);
    k.ok(&[
        "-n",
        "team",
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=a=b",
    ]);
    k.ok(&["-n", "team", "create", "deployment", "web", "--image=nginx"]);
    k.ok(&["-n", "team", "run", "p", "--image=nginx"]);
    k.ok(&["delete", "namespace", "team", "--timeout=60s"]);
    let (found, out) = kubectl_at(
        &newest(),
        &server.kubeconfig(),
        &["get", "namespace", "team"],
    );
    assert!(!found && out.contains("NotFound"), "{out}");
    k.ok(&["create", "namespace", "team"]);
    assert!(
        k.ok(&["-n", "team", "get", "all,secret"])
            .contains("No resources found")
    );
    let cms = k.ok(&[
        "-n",
        "team",
        "get",
        "cm",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert!(
        cms.split(' ')
            .all(|n| n.is_empty() || n == "kube-root-ca.crt"),
        "{cms}"
    );
    // The protected namespaces refuse.
    let out = k.fails(&["delete", "namespace", "kube-system"], None);
    assert!(out.contains("Forbidden"), "{out}");
}

fn free_port() -> u16 {
    rudder_test_harness::unused_port()
}

/// `rudder server --etcd-servers`: the same API on an external etcd
/// serving TLS with client certificates (as kubeadm's etcd does, through
/// `--etcd-cafile`, `--etcd-certfile` and `--etcd-keyfile`), whose
/// revisions are the resourceVersions, kept across a server restart.
#[test]
fn server_on_external_etcd_serves_kubectl_and_survives_a_restart() {
    let etcd_dir = TempDir::new();
    let pki = etcd_dir.path();
    rudder_test_harness::pki::write_tls_pki(pki);
    let file = |name: &str| pki.join(name).to_string_lossy().into_owned();
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("https://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let _etcd = ChildGuard(
        Command::new("etcd")
            .args(["--name", "e2e", "--data-dir"])
            .arg(etcd_dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("e2e={peer_url}")])
            .args(["--cert-file", &file("server.crt")])
            .args(["--key-file", &file("server.key")])
            .args(["--trusted-ca-file", &file("ca.crt"), "--client-cert-auth"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd"),
    );
    let etcd_flags = [
        "--etcd-servers",
        &client_url,
        "--etcd-cafile",
        &file("ca.crt"),
        "--etcd-certfile",
        &file("client.crt"),
        "--etcd-keyfile",
        &file("client.key"),
    ];
    let server = Server::start_in(TempDir::new(), &etcd_flags);
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    k.ok(&["create", "configmap", "kept", "--from-literal=a=b"]);
    k.ok(&["create", "deployment", "web", "--image=nginx"]);
    let rv: i64 = k
        .ok(&[
            "get",
            "cm",
            "kept",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .parse()
        .unwrap();
    // The resourceVersion is etcd's revision of the key.
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--cacert", &file("ca.crt"), "--cert", &file("client.crt")])
        .args(["--key", &file("client.key")])
        .args([
            "--endpoints",
            &client_url,
            "get",
            "/registry/core/configmaps/default/kept",
            "-w",
            "json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kvs"][0]["mod_revision"].as_i64(), Some(rv), "{v}");
    // Optimistic concurrency through etcd's transactions.
    let stale = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: kept, resourceVersion: \"{}\"}}\ndata: {{a: c}}\n",
        rv - 1
    );
    let out = k.fails(&["replace", "-f", "-"], Some(&stale));
    assert!(
        out.contains("Conflict") || out.contains("modified"),
        "{out}"
    );

    // Another server (its own PKI) on the same etcd: the data is there.
    drop(server);
    let server = Server::start_in(TempDir::new(), &etcd_flags);
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    assert_eq!(
        k.ok(&["get", "cm", "kept", "-o", "jsonpath={.data.a}"]),
        "b"
    );
    assert!(k.ok(&["get", "deploy"]).contains("web"));
    k.ok(&["delete", "cm", "kept"]);
    assert!(!kubectl_at(&newest(), &server.kubeconfig(), &["get", "cm", "kept"]).0);
}

/// `pods/binding` (what a scheduler posts), `pods/eviction`, and `kubectl
/// drain`.
#[test]
fn pods_are_bound_once_evicted_and_drained() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    k.apply(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\n",
    );
    // A scheduler of its own name: Rudder's leaves the pod to the test.
    k.ok(&[
        "run",
        "p",
        "--image=nginx",
        "--overrides",
        r#"{"spec":{"schedulerName":"test-scheduler"}}"#,
    ]);
    let binding = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"kind":"Node","name":"node-1"}}"#;
    let path = "/api/v1/namespaces/default/pods/p/binding";
    let out = k.apply(&["create", "--raw", path, "-f", "-"], binding);
    assert!(out.contains("Success"), "{out}");
    assert_eq!(
        k.ok(&[
            "get",
            "pod",
            "p",
            "-o",
            "jsonpath={.spec.nodeName} {.status.conditions[?(@.type==\"PodScheduled\")].status}"
        ]),
        "node-1 True"
    );
    // A second binding conflicts.
    let out = k.fails(&["create", "--raw", path, "-f", "-"], Some(binding));
    assert!(out.contains("already assigned"), "{out}");
    // An Eviction deletes the pod (no PodDisruptionBudget covers it).
    let eviction = r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"p"},"deleteOptions":{"gracePeriodSeconds":0}}"#;
    let out = k.apply(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/p/eviction",
            "-f",
            "-",
        ],
        eviction,
    );
    assert!(out.contains("Success"), "{out}");
    assert!(!kubectl_at(&newest(), &server.kubeconfig(), &["get", "pod", "p"]).0);
    // Drain cordons the node and evicts what runs there.
    k.ok(&[
        "run",
        "q",
        "--image=nginx",
        "--overrides",
        r#"{"spec":{"nodeName":"node-1"}}"#,
    ]);
    k.ok(&[
        "drain",
        "node-1",
        "--force",
        "--grace-period=0",
        "--timeout=30s",
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "node",
            "node-1",
            "-o",
            "jsonpath={.spec.unschedulable}"
        ]),
        "true"
    );
    assert!(!kubectl_at(&newest(), &server.kubeconfig(), &["get", "pod", "q"]).0);
}

/// The shipped DaemonSet and RBAC (configs/deploy) are accepted by an
/// apiserver as they are, and grant the agent what it needs and no more.
#[test]
fn shipped_deployment_manifests_are_accepted() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/deploy");
    let rbac = dir.join("rbac.yaml");
    let ds = dir.join("daemonset.yaml");
    let (rbac, ds) = (rbac.to_str().unwrap(), ds.to_str().unwrap());
    let out = k.ok(&["apply", "--dry-run=server", "-f", rbac, "-f", ds]);
    assert!(
        out.contains("daemonset.apps/rudder-agent created (server dry run)"),
        "{out}"
    );
    k.ok(&["apply", "-f", rbac, "-f", ds]);
    let got = k.ok(&[
        "-n",
        "kube-system",
        "get",
        "daemonset",
        "rudder-agent",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].command}",
    ]);
    assert!(got.contains("--no-kubelet"), "{got}");
    // As the agent's service account (a token for it; RBAC is cached, so
    // the answers may take a moment to follow the new binding).
    let token = k.ok(&[
        "-n",
        "kube-system",
        "create",
        "token",
        "rudder-agent",
        "--duration=10m",
    ]);
    let kc = token_kubeconfig(&server, "rudder-agent", token.trim());
    for (verb, resource, allowed) in [
        ("watch", "endpointslices.discovery.k8s.io", "yes"),
        ("list", "services", "yes"),
        ("patch", "nodes", "yes"),
        ("delete", "nodes", "no"),
        ("get", "secrets", "no"),
        ("create", "pods", "no"),
    ] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, out) = kubectl_at(&newest(), &kc, &["auth", "can-i", verb, resource]);
            let got = out.lines().next().unwrap_or_default().trim().to_string();
            if got == allowed {
                break;
            }
            assert!(Instant::now() < deadline, "{verb} {resource}: {out}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Ingress and IngressClass (with the default-class admission),
/// NetworkPolicy and PodDisruptionBudget are served, created by kubectl's
/// generators and listed with kubectl's columns, on 1.27 and 1.33.
#[test]
fn ingresses_network_policies_and_disruption_budgets_are_served() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx, annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}}\nspec: {controller: k8s.io/ingress-nginx}\n",
    );
    k.ok(&[
        "create",
        "ingress",
        "web",
        "--rule=foo.com/bar=svc1:8080,tls=my-cert",
    ]);
    let class = k.ok(&[
        "get",
        "ingress",
        "web",
        "-o",
        "jsonpath={.spec.ingressClassName}",
    ]);
    assert_eq!(class, "nginx", "the default class was set");
    for bin in [newest(), oldest()] {
        let (ok, out) = kubectl_at(&bin, &server.kubeconfig(), &["get", "ing"]);
        assert!(
            ok && out.contains("CLASS") && out.contains("foo.com") && out.contains("80, 443"),
            "{out}"
        );
    }
    k.ok(&[
        "create",
        "pdb",
        "web",
        "--selector=app=web",
        "--min-available=1",
    ]);
    let out = k.ok(&["get", "pdb", "web"]);
    assert!(
        out.contains("MIN AVAILABLE") && out.contains(" 1 "),
        "{out}"
    );
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\nspec: {podSelector: {matchLabels: {app: web}}, policyTypes: [Ingress]}\n",
    );
    let out = k.ok(&["get", "netpol"]);
    assert!(
        out.contains("POD-SELECTOR") && out.contains("app=web"),
        "{out}"
    );
    let out = k.ok(&["api-resources", "--api-group=networking.k8s.io"]);
    assert!(
        out.contains("ingresses") && out.contains("networkpolicies"),
        "{out}"
    );
}
