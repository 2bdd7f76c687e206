//! kubectl verbs beyond the workload flow, on 1.27 and 1.33, against
//! `rudder server`: `auth whoami` (SelfSubjectReview, v1 and the v1beta1
//! kubectl 1.27 asks for), and the default RBAC objects reconciled at every
//! start as kube-apiserver does (missing rules come back, added ones stay,
//! `autoupdate: "false"` is respected) with the controllers' Lease released
//! by a stopping server, the service-account issuer discovery documents,
//! and impersonation; `kubectl explain` and client-side apply on the
//! served OpenAPI schemas.

use std::path::Path;

mod support;

use rudder_test_harness::TempDir;
use support::kube::{
    Server, kubectl_at, kubectl_stdin, newest, oldest, token_kubeconfig, wait_until,
};

#[test]
fn auth_whoami_on_both_kubectls() {
    let dir = TempDir::new();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "amy-token,amy,1001,\"team-a,team-b\"\n").unwrap();
    let server = Server::start_in(dir, &["--token-file", tokens.to_str().unwrap()]);
    let amy = token_kubeconfig(&server, "amy", "amy-token");
    for bin in [oldest(), newest()] {
        let (ok, out) = kubectl_at(&bin, &server.kubeconfig(), &["auth", "whoami"]);
        assert!(ok, "{}: {out}", bin.display());
        assert!(
            out.contains("kubernetes-admin") && out.contains("system:masters"),
            "{out}"
        );
        // A user with no bindings of their own may still ask who they are
        // (system:basic-user).
        let (ok, out) = kubectl_at(&bin, &amy, &["auth", "whoami", "-o", "json"]);
        assert!(ok, "{}: {out}", bin.display());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["status"]["userInfo"]["username"], "amy", "{out}");
        assert_eq!(
            v["status"]["userInfo"]["groups"],
            serde_json::json!(["team-a", "team-b", "system:authenticated"]),
            "{out}"
        );
    }
    // Only create is served.
    let (ok, out) = kubectl_at(
        &newest(),
        &server.kubeconfig(),
        &[
            "get",
            "--raw",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        ],
    );
    assert!(
        !ok && (out.contains("MethodNotAllowed") || out.contains("405")),
        "{out}"
    );
}

fn rules_of(kubeconfig: &Path, role: &str) -> serde_json::Value {
    let (ok, out) = kubectl_at(
        &newest(),
        kubeconfig,
        &["get", "clusterrole", role, "-o", "json"],
    );
    assert!(ok, "{out}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["rules"].clone()
}

fn replace_rules(kubeconfig: &Path, role: &str, f: impl Fn(&mut serde_json::Value)) {
    let (ok, out) = kubectl_at(
        &newest(),
        kubeconfig,
        &["get", "clusterrole", role, "-o", "json"],
    );
    assert!(ok, "{out}");
    let mut v: serde_json::Value = serde_json::from_str(&out).unwrap();
    f(&mut v);
    let (ok, out) = kubectl_stdin(
        &newest(),
        kubeconfig,
        &["replace", "-f", "-"],
        Some(&v.to_string()),
    );
    assert!(ok, "{out}");
}

#[test]
fn default_rbac_objects_are_reconciled_at_every_start() {
    let server = Server::start();
    let admin = server.kubeconfig();
    let whoami = serde_json::json!({"apiGroups": ["authentication.k8s.io"],
        "resources": ["selfsubjectreviews"], "verbs": ["create"]});
    let mine = serde_json::json!({"apiGroups": ["example.com"], "resources": ["widgets"],
        "verbs": ["get"]});
    let full = rules_of(&admin, "system:basic-user");
    assert!(full.as_array().unwrap().contains(&whoami), "{full}");
    // An older cluster's role: a default rule missing, one of the
    // operator's added.
    replace_rules(&admin, "system:basic-user", |v| {
        let rules = v["rules"].as_array_mut().unwrap();
        rules.retain(|r| *r != whoami);
        rules.push(mine.clone());
    });
    // A role its owner froze.
    replace_rules(&admin, "system:discovery", |v| {
        v["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] =
            serde_json::json!("false");
        v["rules"] = serde_json::json!([mine]);
    });
    // The same data, a new process (the admin kubeconfig written anew for
    // its new port).
    let dir = server.stop();
    std::fs::remove_file(dir.path().join("admin.kubeconfig")).unwrap();
    let server = Server::start_in(dir, &[]);
    let admin = server.kubeconfig();
    // The old process released the controllers' Lease on its way out, so
    // the new one leads at once, not after the lease's 15 s.
    let start = std::time::Instant::now();
    loop {
        let (_, out) = kubectl_at(
            &newest(),
            &admin,
            &[
                "-n",
                "kube-system",
                "get",
                "lease",
                "rudder-controller-manager",
                "-o",
                "jsonpath={.spec.holderIdentity}/{.spec.leaseTransitions}",
            ],
        );
        if out.trim().ends_with("/1") {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(8),
            "the lease was not taken over at once: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let rules = rules_of(&admin, "system:basic-user");
    let rules = rules.as_array().unwrap();
    assert!(
        rules.contains(&whoami) && rules.contains(&mine),
        "{rules:?}"
    );
    assert_eq!(rules.len(), full.as_array().unwrap().len() + 1, "{rules:?}");
    assert_eq!(
        rules_of(&admin, "system:discovery"),
        serde_json::json!([mine])
    );
    // Only that role was written: every other stored default is already
    // its own fixed point.
    let log = std::fs::read_to_string(server.dir.path().join("server.log")).unwrap();
    assert_eq!(
        log.matches("reconciled a default RBAC object").count(),
        1,
        "{log}"
    );
}

#[test]
fn service_account_issuer_discovery_for_token_holders() {
    let server = Server::start();
    let admin = server.kubeconfig();
    // The service-account controller makes `default` shortly after start,
    // as kube-controller-manager does: a user waits for it too.
    wait_until("the default service account", 30, String::new, || {
        kubectl_at(&newest(), &admin, &["get", "serviceaccount", "default"]).0
    });
    let (ok, token) = kubectl_at(&newest(), &admin, &["create", "token", "default"]);
    assert!(ok, "{token}");
    let sa = token_kubeconfig(&server, "robot", token.trim());
    let (ok, out) = kubectl_at(
        &newest(),
        &sa,
        &["get", "--raw", "/.well-known/openid-configuration"],
    );
    assert!(ok, "{out}");
    let conf: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        conf["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    assert_eq!(
        conf["jwks_uri"],
        "https://kubernetes.default.svc.cluster.local/openid/v1/jwks"
    );
    let (ok, out) = kubectl_at(&newest(), &sa, &["get", "--raw", "/openid/v1/jwks"]);
    assert!(ok, "{out}");
    let jwks: serde_json::Value = serde_json::from_str(&out).unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["alg"], "ES256");
    // The key is the one the token names.
    use base64::Engine as _;
    let header = token.trim().split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], key["kid"]);
    // A user who is not a service account has no grant for it.
    let (ok, out) = kubectl_at(
        &oldest(),
        &admin,
        &["auth", "can-i", "get", "/openid/v1/jwks", "--as=someone"],
    );
    assert!(!ok && out.trim() == "no", "{out}");
}

#[test]
fn kubectl_as_impersonates_only_with_the_impersonate_verb() {
    let dir = TempDir::new();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "amy-token,amy,1001\nboss-token,boss,1002\n").unwrap();
    let server = Server::start_in(dir, &["--token-file", tokens.to_str().unwrap()]);
    let admin = server.kubeconfig();
    let amy = token_kubeconfig(&server, "amy", "amy-token");
    let boss = token_kubeconfig(&server, "boss", "boss-token");
    let run = |kc: &Path, args: &[&str]| kubectl_at(&newest(), kc, args);
    for bin in [oldest(), newest()] {
        // The admin asks as amy: amy's answers, not the admin's.
        let (ok, out) = kubectl_at(
            &bin,
            &admin,
            &["auth", "can-i", "list", "secrets", "--as=amy"],
        );
        assert!(!ok && out.trim() == "no", "{out}");
        let (ok, out) = kubectl_at(&bin, &admin, &["get", "pods", "--as=amy"]);
        assert!(
            !ok && out.contains(r#"User "amy" cannot list resource "pods""#),
            "{out}"
        );
        let (ok, out) = kubectl_at(
            &bin,
            &admin,
            &[
                "auth",
                "can-i",
                "list",
                "secrets",
                "--as=x",
                "--as-group=system:masters",
            ],
        );
        assert!(ok && out.trim() == "yes", "{out}");
    }
    // amy may not impersonate anyone.
    let (ok, out) = run(&amy, &["get", "pods", "--as=boss"]);
    assert!(
        !ok && out.contains(r#"users "boss" is forbidden: User "amy" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{out}"
    );
    let (ok, out) = run(
        &amy,
        &["get", "pods", "--as=amy", "--as-group=system:masters"],
    );
    assert!(!ok && out.contains("cannot impersonate"), "{out}");
    // The Status names what was refused, as NewForbidden does.
    let refused = |headers: &[&str]| {
        let mut extra = vec!["-H", "Authorization: Bearer amy-token"];
        for h in headers {
            extra.extend(["-H", h]);
        }
        let (code, body) = server.curl(
            false,
            "GET",
            "/api/v1/pods",
            "application/json",
            None,
            &extra,
        );
        assert_eq!(code, 403, "{body}");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["reason"], "Forbidden");
        status["details"].clone()
    };
    assert_eq!(
        refused(&["Impersonate-User: boss"]),
        serde_json::json!({"name": "boss", "kind": "users"})
    );
    assert_eq!(
        refused(&["Impersonate-User: system:serviceaccount:ns1:sa1"]),
        serde_json::json!({"name": "sa1", "kind": "serviceaccounts"})
    );
    // boss may impersonate amy, and only amy.
    for args in [
        &[
            "create",
            "clusterrole",
            "imp-amy",
            "--verb=impersonate",
            "--resource=users",
            "--resource-name=amy",
        ][..],
        &[
            "create",
            "clusterrolebinding",
            "boss-imp-amy",
            "--clusterrole=imp-amy",
            "--user=boss",
        ],
    ] {
        let (ok, out) = run(&admin, args);
        assert!(ok, "{out}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (ok, out) = run(
            &boss,
            &[
                "auth",
                "whoami",
                "--as=amy",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
        );
        if ok {
            assert_eq!(out.trim(), "amy");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the grant to apply: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (ok, out) = run(&boss, &["get", "pods", "--as=admin"]);
    assert!(
        !ok && out.contains(r#"users "admin" is forbidden"#),
        "{out}"
    );
}

const WEB_FULL: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: a
        image: nginx
        env: [{name: A, value: "1"}, {name: B, value: "2"}]
        ports: [{containerPort: 80}, {containerPort: 81}]
      - name: b
        image: busybox
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}, {name: alt, port: 81}]
"#;

const WEB_LESS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: a
        image: nginx
        env: [{name: A, value: "1"}]
        ports: [{containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
"#;

/// `kubectl explain` and client-side `kubectl apply` read Kubernetes' own
/// schemas from /openapi/v3: explain prints the fields' documentation on
/// both kubectls, and an apply that drops list entries (an env var, a
/// port, a container, a Service port) removes exactly those, its patches
/// built from the served merge keys (kubectl says when it has to fall
/// back to its compiled-in types; it must not).
#[test]
fn explain_and_client_side_apply_use_the_served_schemas() {
    let server = Server::start();
    let kc = server.kubeconfig();
    for bin in [oldest(), newest()] {
        let (ok, out) = kubectl_at(&bin, &kc, &["explain", "pods.spec.containers.ports"]);
        assert!(ok, "{}: {out}", bin.display());
        assert!(
            out.contains("containerPort") && out.contains("List of ports to expose"),
            "{}: {out}",
            bin.display()
        );
        let (ok, out) = kubectl_at(&bin, &kc, &["explain", "deployment.spec.strategy"]);
        assert!(
            ok && out.contains("rollingUpdate"),
            "{}: {out}",
            bin.display()
        );
    }
    let (ok, out) = kubectl_at(&newest(), &kc, &["explain", "no-such-kind"]);
    assert!(!ok, "{out}");

    for bin in [oldest(), newest()] {
        let (ok, out) = kubectl_stdin(&bin, &kc, &["apply", "-f", "-"], Some(WEB_FULL));
        assert!(ok, "{out}");
        let (ok, out) = kubectl_stdin(&bin, &kc, &["apply", "-v=6", "-f", "-"], Some(WEB_LESS));
        assert!(ok, "{out}");
        assert!(
            !out.contains("does not support strategic merge patch"),
            "{}: kubectl fell back: {out}",
            bin.display()
        );
        let get = |what: &str, path: &str| {
            let (ok, out) = kubectl_at(
                &bin,
                &kc,
                &["get", what, "web", "-o", &format!("jsonpath={path}")],
            );
            assert!(ok, "{out}");
            serde_json::from_str::<serde_json::Value>(&out).unwrap()
        };
        let containers = get("deployment", "{.spec.template.spec.containers}");
        assert_eq!(containers.as_array().unwrap().len(), 1, "{containers}");
        assert_eq!(
            containers[0]["env"],
            serde_json::json!([{"name": "A", "value": "1"}])
        );
        assert_eq!(
            containers[0]["ports"],
            serde_json::json!([{"containerPort": 80, "protocol": "TCP"}])
        );
        let ports = get("service", "{.spec.ports}");
        assert_eq!(ports.as_array().unwrap().len(), 1, "{ports}");
        assert_eq!(ports[0]["name"], "http");
        let (ok, out) = kubectl_at(&bin, &kc, &["delete", "deployment/web", "service/web"]);
        assert!(ok, "{out}");
    }
}

/// Every served group-version has its APIService (`kubectl get
/// apiservices`), local and Available, as kube-aggregator lists the
/// built-in ones; tools that check the metrics API's before use find it.
#[test]
fn api_services_list_every_served_group_version() {
    let server = Server::start();
    let kc = server.kubeconfig();
    for bin in [oldest(), newest()] {
        let (ok, out) = kubectl_at(&bin, &kc, &["get", "apiservices"]);
        assert!(ok, "{out}");
        let header = out.lines().next().unwrap_or_default();
        assert!(
            header.contains("NAME") && header.contains("SERVICE") && header.contains("AVAILABLE"),
            "{out}"
        );
        for name in [
            "v1.",
            "v1.apps",
            "v1.certificates.k8s.io",
            "v1beta1.metrics.k8s.io",
        ] {
            let line = out
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("{name} missing: {out}"));
            assert!(line.contains("Local") && line.contains("True"), "{line}");
        }
    }
    let (ok, out) = kubectl_at(
        &newest(),
        &kc,
        &[
            "get",
            "apiservice",
            "v1beta1.metrics.k8s.io",
            "-o",
            "jsonpath={.spec.group} {.status.conditions[0].reason}",
        ],
    );
    assert!(ok && out == "metrics.k8s.io Local", "{out}");
}

/// `kubectl diff` (a server-side dry run: exit 1 with the change, 0 with
/// none, nothing stored), `rollout pause|resume|restart`, and `apply
/// --prune` removing what the manifest no longer has, on both kubectls.
#[test]
fn diff_rollout_and_prune() {
    let server = Server::start();
    let kc = server.kubeconfig();
    for (i, bin) in [oldest(), newest()].into_iter().enumerate() {
        let labelled = |m: &str| {
            m.replace(
                "metadata: {name: web}",
                "metadata: {name: web, labels: {set: s}}",
            )
        };
        let (ok, out) = kubectl_stdin(&bin, &kc, &["apply", "-f", "-"], Some(&labelled(WEB_FULL)));
        assert!(ok, "{out}");
        let (ok, out) = kubectl_stdin(&bin, &kc, &["diff", "-f", "-"], Some(&labelled(WEB_LESS)));
        assert!(
            !ok && out.contains("-        - name: B") && out.contains("-  - name: alt"),
            "{out}"
        );
        let (ok, out) = kubectl_stdin(&bin, &kc, &["diff", "-f", "-"], Some(&labelled(WEB_FULL)));
        assert!(ok && out.trim().is_empty(), "no change expected: {out}");
        let (ok, out) = kubectl_at(
            &bin,
            &kc,
            &[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.spec.template.spec.containers[*].name}",
            ],
        );
        assert!(ok && out == "a b", "diff changed the object: {out}");
        assert!(kubectl_at(&bin, &kc, &["rollout", "pause", "deployment/web"]).0);
        let (_, out) = kubectl_at(
            &bin,
            &kc,
            &["get", "deployment", "web", "-o", "jsonpath={.spec.paused}"],
        );
        assert_eq!(out, "true");
        assert!(kubectl_at(&bin, &kc, &["rollout", "resume", "deployment/web"]).0);
        let (_, out) = kubectl_at(
            &bin,
            &kc,
            &["get", "deployment", "web", "-o", "jsonpath={.spec.paused}"],
        );
        assert!(out.is_empty() || out == "false", "{out}");
        assert!(kubectl_at(&bin, &kc, &["rollout", "restart", "deployment/web"]).0);
        let (_, out) = kubectl_at(
            &bin,
            &kc,
            &[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.spec.template.metadata.annotations}",
            ],
        );
        assert!(out.contains("kubectl.kubernetes.io/restartedAt"), "{out}");
        // Only a ConfigMap is left in the set: the rest is pruned.
        let keep = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: keep-{i}, labels: {{set: s}}}}\ndata: {{a: \"1\"}}\n"
        );
        let (ok, out) = kubectl_stdin(
            &bin,
            &kc,
            &["apply", "--prune", "-l", "set=s", "-f", "-"],
            Some(&keep),
        );
        assert!(ok, "{out}");
        assert!(
            out.contains("deployment.apps/web pruned") && out.contains("service/web pruned"),
            "{out}"
        );
        let (ok, out) = kubectl_at(
            &bin,
            &kc,
            &["get", "deployment,service", "-l", "set=s", "-o", "name"],
        );
        assert!(ok && out.trim().is_empty(), "{out}");
    }
}
