//! Who may do what, with the stock kubectl against `rudder server`: RBAC
//! for users (Roles, bindings, aggregated default roles, `auth can-i`) and
//! the Node authorizer for kubelets, service-account tokens that stop
//! working with their owner, nodes joining with bootstrap tokens, and
//! certificates for people through CertificateSigningRequests.

use std::{
    process::Command,
    time::{Duration, Instant},
};

mod support;

use rudder_test_harness::{TempDir, workspace_bin};
use support::kube::{Kubectl, Server, kubectl_at, kubectl_stdin, newest, oldest, token_kubeconfig};

/// RBAC for people (Roles, bindings, the aggregated default roles,
/// `auth can-i`) and the Node authorizer for kubelets.
#[test]
fn rbac_limits_users_and_the_node_authorizer_limits_nodes() {
    let dir = TempDir::new();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "bob-token,bob,1001\nnode-token,system:node:node-1,1002,\"system:nodes\"\n",
    )
    .unwrap();
    let server = Server::start_in(dir, &["--token-file", tokens.to_str().unwrap()]);
    let admin = Kubectl {
        bin: newest(),
        server: &server,
    };
    let bob_kc = token_kubeconfig(&server, "bob", "bob-token");
    let bob = |args: &[&str]| kubectl_at(&newest(), &bob_kc, args);
    let bob_old = |args: &[&str]| kubectl_at(&oldest(), &bob_kc, args);
    let eventually = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "{what} within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // Nothing but discovery and self-review for a new user.
    let (ok, out) = bob(&["get", "pods"]);
    assert!(!ok && out.contains(r#"pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default""#), "{out}");
    let (ok, out) = bob(&["auth", "can-i", "list", "pods"]);
    assert!(!ok && out.trim() == "no", "{out}");
    assert!(
        bob(&["api-resources"]).0,
        "discovery is open to authenticated users"
    );

    // view in default: read, not write, not secrets, not elsewhere.
    admin.ok(&[
        "create",
        "rolebinding",
        "bob-view",
        "--clusterrole=view",
        "--user=bob",
    ]);
    admin.ok(&["create", "configmap", "cfg", "--from-literal=a=b"]);
    admin.ok(&["create", "namespace", "other"]);
    eventually("the binding to apply", &|| bob(&["get", "configmaps"]).0);
    assert!(bob(&["get", "cm", "cfg", "-o", "yaml"]).1.contains("a: b"));
    assert_eq!(bob_old(&["auth", "can-i", "list", "pods"]).1.trim(), "yes");
    let (ok, out) = bob(&["create", "configmap", "mine"]);
    assert!(!ok && out.to_lowercase().contains("forbidden"), "{out}");
    assert!(!bob(&["get", "secrets"]).0);
    assert!(!bob(&["-n", "other", "get", "configmaps"]).0);
    assert_eq!(
        bob(&["auth", "can-i", "create", "deployments"]).1.trim(),
        "no"
    );

    // edit through a Role of one's own making is refused; admin grants it.
    admin.ok(&[
        "create",
        "role",
        "cm-writer",
        "--verb=create,update,delete",
        "--resource=configmaps",
    ]);
    admin.ok(&[
        "create",
        "rolebinding",
        "bob-writes",
        "--role=cm-writer",
        "--user=bob",
    ]);
    eventually("the role to apply", &|| {
        bob(&["create", "configmap", "mine"]).0
    });
    assert!(bob(&["delete", "configmap", "mine"]).0);
    admin.ok(&["delete", "rolebinding", "bob-writes"]);
    eventually("the removal to apply", &|| {
        !bob(&["create", "configmap", "again"]).0
    });

    // An admin of a namespace binds roles there, but cannot grant more
    // than it holds.
    admin.ok(&[
        "-n",
        "other",
        "create",
        "rolebinding",
        "bob-admin",
        "--clusterrole=admin",
        "--user=bob",
    ]);
    eventually("admin in other", &|| {
        bob(&["-n", "other", "get", "rolebindings"]).0
    });
    let (ok, out) = bob(&[
        "-n",
        "other",
        "create",
        "rolebinding",
        "carol-edit",
        "--clusterrole=edit",
        "--user=carol",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = bob(&[
        "-n",
        "other",
        "create",
        "rolebinding",
        "carol-root",
        "--clusterrole=cluster-admin",
        "--user=carol",
    ]);
    assert!(!ok && out.contains("not currently held"), "{out}");
    let (ok, out) = bob(&[
        "-n",
        "other",
        "create",
        "role",
        "nodes",
        "--verb=get",
        "--resource=nodes",
    ]);
    assert!(!ok && out.contains("not currently held"), "{out}");

    // cluster-admin by a ClusterRoleBinding.
    admin.ok(&[
        "create",
        "clusterrolebinding",
        "bob-root",
        "--clusterrole=cluster-admin",
        "--user=bob",
    ]);
    eventually("cluster-admin to apply", &|| bob(&["get", "nodes"]).0);
    assert_eq!(bob(&["auth", "can-i", "*", "*"]).1.trim(), "yes");

    // A kubelet: its own Node and Lease, its own pods' status.
    let node_kc = token_kubeconfig(&server, "node-1", "node-token");
    let node = |args: &[&str], stdin: Option<&str>| kubectl_stdin(&newest(), &node_kc, args, stdin);
    let node_obj = |n: &str| format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {n}}}\n");
    let (ok, out) = node(&["create", "-f", "-"], Some(&node_obj("node-1")));
    assert!(ok, "{out}");
    let (ok, out) = node(&["create", "-f", "-"], Some(&node_obj("node-2")));
    assert!(!ok && out.to_lowercase().contains("forbidden"), "{out}");
    admin.apply(&["create", "-f", "-"], &node_obj("node-2"));
    assert!(node(&["label", "node", "node-1", "zone=a"], None).0);
    assert!(!node(&["label", "node", "node-2", "zone=a"], None).0);
    let lease = |n: &str| {
        format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {n}, namespace: kube-node-lease}}\nspec: {{holderIdentity: {n}}}\n"
        )
    };
    assert!(node(&["create", "-f", "-"], Some(&lease("node-1"))).0);
    assert!(!node(&["create", "-f", "-"], Some(&lease("node-2"))).0);
    for (pod, n) in [("mine", "node-1"), ("theirs", "node-2")] {
        admin.apply(&["create", "-f", "-"], &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}}}\nspec:\n  nodeName: {n}\n  containers: [{{name: c, image: nginx}}]\n"));
    }
    let status = r#"{"status":{"phase":"Running"}}"#;
    let (ok, out) = node(
        &[
            "patch",
            "pod",
            "mine",
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ],
        None,
    );
    assert!(ok, "{out}");
    assert!(
        !node(
            &[
                "patch",
                "pod",
                "theirs",
                "--subresource=status",
                "--type=merge",
                "-p",
                status
            ],
            None
        )
        .0
    );
    assert!(
        !node(&["label", "pod", "mine", "x=y"], None).0,
        "a pod's spec and metadata are not the kubelet's"
    );
    assert!(
        node(
            &["get", "pods", "--field-selector=spec.nodeName=node-1"],
            None
        )
        .0
    );
    assert!(!node(&["get", "secrets"], None).0);
    // NodeRestriction: a kubelet creates only mirror pods of its static
    // pods, bound to itself.
    let pod = |name: &str, n: &str, mirror: bool| {
        let ann = if mirror {
            "\n  annotations: {kubernetes.io/config.mirror: abc}"
        } else {
            ""
        };
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}{ann}\nspec:\n  nodeName: {n}\n  containers: [{{name: c, image: nginx}}]\n"
        )
    };
    let (ok, out) = node(
        &["create", "-f", "-"],
        Some(&pod("static-node-1", "node-1", true)),
    );
    assert!(ok, "{out}");
    let got = admin.ok(&["get", "pod", "static-node-1", "-o", "json"]);
    assert!(
        !got.contains("kube-api-access"),
        "no API credentials: {got}"
    );
    for (name, n, mirror, why) in [
        ("plain", "node-1", false, "can only create mirror pods"),
        ("elsewhere", "node-2", true, "spec.nodeName set to itself"),
    ] {
        let (ok, out) = node(&["create", "-f", "-"], Some(&pod(name, n, mirror)));
        assert!(!ok && out.contains(why), "{name}: {out}");
    }
    // A mirror pod that names a Secret in its env would let the node read
    // it: refused, and the Secret stays out of reach.
    admin.ok(&[
        "create",
        "secret",
        "generic",
        "admin-creds",
        "--from-literal=k=v",
    ]);
    let env_ref = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: thief-node-1\n  annotations: {kubernetes.io/config.mirror: abc}\nspec:\n  nodeName: node-1\n  containers:\n  - name: c\n    image: nginx\n    env: [{name: S, valueFrom: {secretKeyRef: {name: admin-creds, key: k}}}]\n";
    let (ok, out) = node(&["create", "-f", "-"], Some(env_ref));
    assert!(
        !ok && out.contains("can not create pods that reference secrets"),
        "{out}"
    );
    assert!(!node(&["get", "secret", "admin-creds"], None).0);
    // A mirror pod has no service account: in a namespace where it is the
    // node's only pod, it does not let the node mint `default`'s tokens.
    admin.ok(&["create", "namespace", "lonely"]);
    let (ok, out) = node(
        &["create", "-n", "lonely", "-f", "-"],
        Some(&pod("solo-node-1", "node-1", true)),
    );
    assert!(ok, "{out}");
    let (ok, out) = node(&["create", "token", "default", "-n", "lonely"], None);
    assert!(!ok && out.to_lowercase().contains("forbidden"), "{out}");
    // Port-forward into a hostNetwork pod reaches the node's own ports:
    // it needs nodes/proxy, which pods/portforward alone does not give.
    admin.apply(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: hostnet}\nspec: {nodeName: node-1, hostNetwork: true, containers: [{name: c, image: nginx}]}\n",
    );
    // kubectl forwards only to a running pod; no kubelet runs this one.
    admin.ok(&[
        "patch",
        "pod",
        "hostnet",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ]);
    admin.ok(&[
        "create",
        "role",
        "forwarder",
        "--verb=get,create",
        "--resource=pods,pods/portforward",
    ]);
    admin.ok(&[
        "create",
        "rolebinding",
        "bob-forwards",
        "--role=forwarder",
        "--user=bob",
    ]);
    admin.ok(&["delete", "clusterrolebinding", "bob-root"]);
    eventually("bob may port-forward, no more", &|| {
        let pf = bob(&["auth", "can-i", "create", "pods/portforward"]).1;
        let np = bob(&["auth", "can-i", "create", "nodes/proxy"]).1;
        pf.trim() == "yes" && np.starts_with("no")
    });
    let (ok, out) = bob(&["port-forward", "pod/hostnet", "28080:80"]);
    assert!(!ok && out.contains("uses the host network"), "{out}");
}

/// Service-account tokens: `kubectl create token` (TokenRequest), used as
/// bearer tokens, authorized by RBAC as `system:serviceaccount:<ns>:<name>`,
/// refused once the service account or the bound pod is gone.
#[test]
fn service_account_tokens_authenticate_until_their_owner_goes() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    k.ok(&["create", "namespace", "ci"]);
    k.ok(&["-n", "ci", "create", "serviceaccount", "robot"]);
    k.ok(&[
        "-n",
        "ci",
        "create",
        "rolebinding",
        "robot-view",
        "--clusterrole=view",
        "--serviceaccount=ci:robot",
    ]);
    let token = k.ok(&["-n", "ci", "create", "token", "robot", "--duration=10m"]);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let kc = token_kubeconfig(&server, "robot", token);
    let robot = |args: &[&str]| kubectl_at(&newest(), &kc, args);
    let eventually = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "{what} within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    eventually("the token to list pods", &|| {
        robot(&["-n", "ci", "get", "pods"]).0
    });
    let (ok, out) = robot(&["-n", "ci", "get", "secrets"]);
    assert!(
        !ok && out
            .contains(r#"User "system:serviceaccount:ci:robot" cannot list resource "secrets""#),
        "{out}"
    );
    // A tampered token is not accepted.
    let mut forged = token.to_owned();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let forged_kc = token_kubeconfig(&server, "forged", &forged);
    let (ok, out) = kubectl_at(&newest(), &forged_kc, &["-n", "ci", "get", "pods"]);
    assert!(!ok && out.contains("Unauthorized"), "{out}");
    // Too short a lifetime is refused.
    let out = k.fails(
        &["-n", "ci", "create", "token", "robot", "--duration=1m"],
        None,
    );
    assert!(out.contains("10 minutes"), "{out}");

    // A token bound to a pod ends with the pod.
    k.ok(&["-n", "ci", "run", "p", "--image=nginx"]);
    let bound = k.ok(&[
        "-n",
        "ci",
        "create",
        "token",
        "robot",
        "--bound-object-kind=Pod",
        "--bound-object-name=p",
    ]);
    let bound_kc = token_kubeconfig(&server, "bound", bound.trim());
    assert!(kubectl_at(&newest(), &bound_kc, &["-n", "ci", "get", "pods"]).0);
    k.ok(&["-n", "ci", "delete", "pod", "p"]);
    let (ok, out) = kubectl_at(&newest(), &bound_kc, &["-n", "ci", "get", "pods"]);
    assert!(!ok && out.contains("Unauthorized"), "{out}");

    // Deleting the service account revokes its tokens.
    k.ok(&["-n", "ci", "delete", "serviceaccount", "robot"]);
    let (ok, out) = robot(&["-n", "ci", "get", "pods"]);
    assert!(!ok && out.contains("Unauthorized"), "{out}");
}

/// Joining a node: `rudder token create` makes a bootstrap token,
/// `rudder join` trades it for the node's own credentials, which the Node
/// authorizer then limits to that node.
#[test]
fn nodes_join_with_bootstrap_tokens() {
    let server = Server::start();
    let rudder = |args: &[&str]| {
        let out = Command::new(workspace_bin("rudder"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let kc = server.kubeconfig();
    let (ok, token, err) = rudder(&[
        "token",
        "create",
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--ttl",
        "10m0s",
    ]);
    assert!(ok, "{err}");
    let token = token.trim().to_owned();
    let url = kubectl_at(
        &newest(),
        &kc,
        &[
            "config",
            "view",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ],
    )
    .1;
    let ca = server.dir.path().join("pki/ca.crt");
    let out_kc = server.dir.path().join("node-7.kubeconfig");
    let join = |token: &str, node: &str| {
        rudder(&[
            "join",
            "--server",
            &url,
            "--token",
            token,
            "--ca-file",
            ca.to_str().unwrap(),
            "--node-name",
            node,
            "--kubeconfig-out",
            out_kc.to_str().unwrap(),
        ])
    };
    let (ok, _, err) = join(&token, "node-7");
    assert!(ok, "{err}");
    // The node's credentials: its own Node, nothing else.
    let node = |args: &[&str], stdin: Option<&str>| kubectl_stdin(&newest(), &out_kc, args, stdin);
    let (ok, out) = node(
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Node\nmetadata: {name: node-7}\n"),
    );
    assert!(ok, "{out}");
    let (ok, out) = node(
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Node\nmetadata: {name: node-8}\n"),
    );
    assert!(!ok && out.to_lowercase().contains("forbidden"), "{out}");
    // The node renews its credentials before they end; nobody else can.
    let body = server.dir.path().join("empty.json");
    std::fs::write(&body, "{}").unwrap();
    let (ok, out) = node(
        &[
            "create",
            "--raw",
            "/rudder/v1/renew",
            "-f",
            body.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}");
    let renewed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(renewed["nodeName"], "node-7");
    assert!(
        renewed["kubeconfig"]
            .as_str()
            .unwrap()
            .contains("client-certificate-data")
    );
    let (ok, out) = kubectl_at(
        &newest(),
        &server.kubeconfig(),
        &[
            "create",
            "--raw",
            "/rudder/v1/renew",
            "-f",
            body.to_str().unwrap(),
        ],
    );
    assert!(!ok && out.contains("is not a node"), "{out}");
    // The token itself only joins.
    let token_kc = token_kubeconfig(&server, "bootstrap", &token);
    let (ok, out) = kubectl_at(&newest(), &token_kc, &["get", "pods"]);
    assert!(!ok && out.contains("system:bootstrap:"), "{out}");
    // A wrong secret, a bad name and a deleted token are refused.
    let (id, _) = token.split_once('.').unwrap();
    let (ok, _, err) = join(&format!("{id}.0000000000000000"), "node-9");
    assert!(!ok && err.contains("refused"), "{err}");
    let (ok, _, err) = join(&token, "Node_9");
    assert!(!ok && err.contains("not a valid node name"), "{err}");
    // A name whose Node exists is another node's identity: refused.
    let (ok, _, err) = join(&token, "node-7");
    assert!(!ok && err.contains("exists already"), "{err}");
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    k.ok(&[
        "-n",
        "kube-system",
        "delete",
        "secret",
        &format!("bootstrap-token-{id}"),
    ]);
    let (ok, _, err) = join(&token, "node-9");
    assert!(!ok, "{err}");
}

/// A PEM certificate request for `cn` in `orgs` (base64, as the API
/// carries it) and its private key.
fn certificate_request(cn: &str, orgs: &[&str]) -> (String, String) {
    use base64::Engine as _;
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, cn);
    for o in orgs {
        dn.push(rcgen::DnType::OrganizationName, *o);
    }
    p.distinguished_name = dn;
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = p.serialize_request(&key).unwrap().pem().unwrap();
    (
        base64::engine::general_purpose::STANDARD.encode(pem),
        key.serialize_pem(),
    )
}

fn csr_manifest(name: &str, request: &str, usages: &str) -> String {
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client\n  expirationSeconds: 86400\n  usages: [{usages}]\n  username: someone-else\n"
    )
}

/// CertificateSigningRequests, the standard way to give a person a
/// certificate: the request names its requester whatever the body says;
/// `kubectl certificate approve` (1.27 and 1.33) gets it signed by the
/// cluster CA, and the certificate authenticates as its subject; a request
/// for `system:masters` is refused, approving needs `approve` on the
/// signer, and a request that does not fit its signer is marked Failed.
#[test]
fn certificate_signing_requests_issue_user_certificates() {
    use base64::Engine as _;
    let dir = TempDir::new();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "bob-token,bob,1001\n").unwrap();
    let server = Server::start_in(dir, &["--token-file", tokens.to_str().unwrap()]);
    let kc = server.kubeconfig();
    for (i, bin) in [oldest(), newest()].into_iter().enumerate() {
        let name = format!("amy-{i}");
        let (request, key) = certificate_request("amy", &["dev"]);
        let (ok, out) = kubectl_stdin(
            &bin,
            &kc,
            &["create", "-f", "-"],
            Some(&csr_manifest(&name, &request, "client auth")),
        );
        assert!(ok, "{out}");
        let (ok, out) = kubectl_at(
            &bin,
            &kc,
            &["get", "csr", &name, "-o", "jsonpath={.spec.username}"],
        );
        assert!(ok && out == "kubernetes-admin", "requester: {out}");
        let (ok, out) = kubectl_at(&bin, &kc, &["get", "csr", &name]);
        assert!(
            ok && out.contains("Pending") && out.contains("24h"),
            "{out}"
        );
        let (ok, out) = kubectl_at(&bin, &kc, &["certificate", "approve", &name]);
        assert!(ok, "{out}");
        let end = Instant::now() + Duration::from_secs(15);
        let cert = loop {
            let (_, out) = kubectl_at(
                &bin,
                &kc,
                &["get", "csr", &name, "-o", "jsonpath={.status.certificate}"],
            );
            if !out.is_empty() {
                break base64::engine::general_purpose::STANDARD
                    .decode(out.trim())
                    .unwrap();
            }
            assert!(Instant::now() < end, "no certificate issued");
            std::thread::sleep(Duration::from_millis(200));
        };
        let (ok, out) = kubectl_at(&bin, &kc, &["get", "csr", &name]);
        assert!(ok && out.contains("Approved,Issued"), "{out}");
        // The certificate and key in a kubeconfig of their own.
        let amy = server
            .kubeconfig()
            .with_file_name(format!("amy-{i}.kubeconfig"));
        std::fs::copy(&kc, &amy).unwrap();
        let cert_file = amy.with_extension("crt");
        let key_file = amy.with_extension("key");
        std::fs::write(&cert_file, &cert).unwrap();
        std::fs::write(&key_file, &key).unwrap();
        let user = kubectl_at(
            &bin,
            &amy,
            &["config", "view", "-o", "jsonpath={.users[0].name}"],
        )
        .1;
        let (ok, out) = kubectl_at(
            &bin,
            &amy,
            &[
                "config",
                "set-credentials",
                &user,
                &format!("--client-certificate={}", cert_file.display()),
                &format!("--client-key={}", key_file.display()),
                "--embed-certs",
            ],
        );
        assert!(ok, "{out}");
        let (ok, out) = kubectl_at(&bin, &amy, &["auth", "whoami", "-o", "json"]);
        assert!(ok, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["status"]["userInfo"]["username"], "amy", "{out}");
        assert_eq!(
            v["status"]["userInfo"]["groups"],
            serde_json::json!(["dev", "system:authenticated"])
        );
    }
    let admin = newest();
    // No cluster-admin certificates through the client signer.
    let (request, _) = certificate_request("root", &["system:masters"]);
    let (ok, out) = kubectl_stdin(
        &admin,
        &kc,
        &["create", "-f", "-"],
        Some(&csr_manifest("root", &request, "client auth")),
    );
    assert!(
        !ok && out.contains("system:masters group is not allowed"),
        "{out}"
    );
    // Bad requests are 422 with the field.
    let (ok, out) = kubectl_stdin(
        &admin,
        &kc,
        &["create", "-f", "-"],
        Some(&csr_manifest("junk", "bm90IGEgcmVxdWVzdA==", "client auth")),
    );
    assert!(!ok && out.contains("spec.request"), "{out}");
    // A request that does not fit the signer fails once approved.
    let (request, _) = certificate_request("srv", &[]);
    let (ok, out) = kubectl_stdin(
        &admin,
        &kc,
        &["create", "-f", "-"],
        Some(&csr_manifest("srv", &request, "server auth")),
    );
    assert!(ok, "{out}");
    assert!(kubectl_at(&admin, &kc, &["certificate", "approve", "srv"]).0);
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, out) = kubectl_at(&admin, &kc, &["get", "csr", "srv"]);
        if out.contains("Approved,Failed") {
            break;
        }
        assert!(Instant::now() < end, "not marked Failed: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Bob may update approvals but not approve for this signer.
    let role = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: csr-clerk}\nrules:\n- apiGroups: [certificates.k8s.io]\n  resources: [certificatesigningrequests, certificatesigningrequests/approval]\n  verbs: [get, list, create, update]\n";
    assert!(kubectl_stdin(&admin, &kc, &["apply", "-f", "-"], Some(role)).0);
    assert!(
        kubectl_at(
            &admin,
            &kc,
            &[
                "create",
                "clusterrolebinding",
                "clerk",
                "--clusterrole=csr-clerk",
                "--user=bob"
            ]
        )
        .0
    );
    let bob = token_kubeconfig(&server, "bob", "bob-token");
    let (request, _) = certificate_request("bob", &[]);
    let (ok, out) = kubectl_stdin(
        &admin,
        &bob,
        &["create", "-f", "-"],
        Some(&csr_manifest("bob", &request, "client auth")),
    );
    assert!(ok, "{out}");
    let (ok, out) = kubectl_at(
        &admin,
        &kc,
        &["get", "csr", "bob", "-o", "jsonpath={.spec.username}"],
    );
    assert!(ok && out == "bob", "{out}");
    let (ok, out) = kubectl_at(&admin, &bob, &["certificate", "approve", "bob"]);
    assert!(!ok && out.contains("not permitted to approve"), "{out}");
}
