//! An operator written with kopf (tests/python/kopf_operator.py, the
//! Python operator framework from PyPI) running as a pod on a Rudder node
//! (`rudder server`, a private containerd and `rudder agent kubelet`, see
//! `support::node`): a Deployment of the `rudder/kopf` image (the host's
//! Python with kopf and the `kubernetes` client, `cargo xtask images`), its
//! script from a ConfigMap, its webhook certificate from a Secret, its
//! credentials the pod's service account token. It watches a custom kind,
//! creates a Deployment and a Service owned by each object (whose pods
//! then run on the node), writes status, follows updates, holds deletions
//! with its finalizer, and serves the admission webhooks whose
//! configurations it manages itself (one refuses, one mutates).
//!
//! The operator pod is on the node's network (`hostNetwork`: here the
//! network of containerd, which this fixture runs on the host), where the
//! apiserver's loopback port is and where the apiserver calls its webhook;
//! the test node's other pods cannot reach the host's loopback.

mod support;

use support::{
    kube::{Kubectl, kubectl_at},
    node::Node,
    tls::certificates,
};

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: crontabs.stable.example.com}
spec:
  group: stable.example.com
  scope: Namespaced
  names: {plural: crontabs, singular: crontab, kind: CronTab, shortNames: [ct]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              image: {type: string}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// The operator's log, for a failure's context.
fn operator_log(k: &Kubectl<'_>) -> String {
    kubectl_at(
        &k.bin,
        &k.server.kubeconfig(),
        &["logs", "deployment/kopf-operator", "--tail", "200"],
    )
    .1
}

fn wait_for(k: &Kubectl<'_>, what: &str, secs: u64, f: impl FnMut() -> bool) {
    let context = || {
        let server =
            std::fs::read_to_string(k.server.dir.path().join("server.log")).unwrap_or_default();
        let auth: Vec<&str> = server
            .lines()
            .filter(|l| l.contains("token") || l.contains("401") || l.contains("uthenticat"))
            .collect();
        format!(
            "; operator log:\n{}\nserver log (authentication):\n{}",
            operator_log(k),
            auth[auth.len().saturating_sub(20)..].join("\n")
        )
    };
    support::kube::wait_until(what, secs, context, f);
}

/// kopf met nothing it had to work around: its only error is the refusal
/// it was asked to make.
fn no_complaints(k: &Kubectl<'_>) {
    let text = operator_log(k);
    let unexpected: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("[ERROR") || l.contains("Traceback") || l.contains("[WARNING"))
        .filter(|l| !l.contains("Webhook 'check_fn' failed permanently"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "kopf complained:\n{}",
        unexpected.join("\n")
    );
}

/// The operator as a user deploys one: RBAC for its service account, its
/// script and certificate, a Deployment.
fn operator_manifests(api_port: &str, hook_port: u16, script: &str, d: &std::path::Path) -> String {
    let b64 = |f: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(d.join(f)).unwrap())
    };
    let script: String = script.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: kopf-operator}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}
subjects: [{{kind: ServiceAccount, name: kopf-operator, namespace: default}}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: kopf-operator, namespace: default}}
---
apiVersion: v1
kind: Secret
metadata: {{name: kopf-webhook-tls, namespace: default}}
type: kubernetes.io/tls
data: {{tls.crt: {crt}, tls.key: {key}, ca.crt: {ca}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: kopf-operator, namespace: default}}
data:
  operator.py: |
{script}---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: kopf-operator, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: kopf-operator}}}}
  template:
    metadata: {{labels: {{app: kopf-operator}}}}
    spec:
      serviceAccountName: kopf-operator
      hostNetwork: true
      containers:
      - name: operator
        image: rudder/kopf:latest
        args: [-m, kopf, run, --standalone, --namespace, default, --verbose, /operator/operator.py]
        env:
        - {{name: KUBERNETES_SERVICE_HOST, value: 127.0.0.1}}
        - {{name: KUBERNETES_SERVICE_PORT, value: "{api_port}"}}
        - {{name: HOOK_PORT, value: "{hook_port}"}}
        - {{name: HOOK_CERT, value: /tls/tls.crt}}
        - {{name: HOOK_KEY, value: /tls/tls.key}}
        - {{name: HOOK_CA, value: /tls/ca.crt}}
        volumeMounts:
        - {{name: script, mountPath: /operator}}
        - {{name: tls, mountPath: /tls}}
      volumes:
      - {{name: script, configMap: {{name: kopf-operator}}}}
      - {{name: tls, secret: {{secretName: kopf-webhook-tls}}}}
"#,
        crt = b64("tls.crt"),
        key = b64("tls.key"),
        ca = b64("ca.crt"),
    )
}

#[test]
fn a_kopf_operator_pod_reconciles_custom_objects_into_running_pods() {
    let node = Node::start();
    let k = node.kubectl();
    let d = node.dir.path();
    certificates(d, &[]);
    k.apply(&["apply", "-f", "-"], CRD);
    let api_port = node
        .server
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let hook_port = rudder_test_harness::unused_port();
    let script = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/kopf_operator.py"),
    )
    .unwrap();
    k.apply(
        &["apply", "-f", "-"],
        &operator_manifests(&api_port, hook_port, &script, d),
    );
    let get = |args: &[&str]| kubectl_at(&k.bin, &k.server.kubeconfig(), args);
    wait_for(&k, "kopf's webhook configurations", 120, || {
        get(&[
            "get",
            "validatingwebhookconfiguration",
            "kopf-hooks.example.com",
        ])
        .0 && get(&[
            "get",
            "mutatingwebhookconfiguration",
            "kopf-hooks.example.com",
        ])
        .0
    });
    // kopf may still be starting its webhook server: retry briefly.
    let obj = |name: &str, image: &str| {
        format!(
            "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {{name: {name}, namespace: default}}\nspec: {{image: {image}}}\n"
        )
    };
    wait_for(&k, "the first create", 30, || {
        support::kube::kubectl_stdin(
            &k.bin,
            &k.server.kubeconfig(),
            &["apply", "-f", "-"],
            Some(&obj("web", "nginx:1.25")),
        )
        .0
    });
    // The mutating hook labelled it; the operator made its children.
    let label = k.ok(&[
        "get",
        "ct",
        "web",
        "-o",
        "jsonpath={.metadata.labels.mutated-by}",
    ]);
    assert_eq!(
        label,
        "kopf",
        "operator log:\n{}\npods:\n{}\nprevious:\n{}",
        operator_log(&k),
        k.ok(&["get", "pods", "-o", "wide"]),
        kubectl_at(
            &k.bin,
            &k.server.kubeconfig(),
            &["logs", "deployment/kopf-operator", "--previous"]
        )
        .1
    );
    wait_for(&k, "the deployment", 30, || {
        get(&["get", "deployment", "web-app"]).0
    });
    wait_for(&k, "the service", 30, || {
        get(&["get", "service", "web-svc"]).0
    });
    // The Deployment's pod runs on the node.
    wait_for(&k, "the operated pod to run", 60, || {
        get(&[
            "get",
            "pods",
            "-l",
            "app=web-app",
            "-o",
            "jsonpath={.items[*].status.phase}",
        ])
        .1 == "Running"
    });
    let owner = k.ok(&[
        "get",
        "deployment",
        "web-app",
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
    ]);
    assert_eq!(owner, "CronTab/web");
    wait_for(&k, "the status", 30, || {
        get(&[
            "get",
            "ct",
            "web",
            "-o",
            "jsonpath={.status.create_fn.deployment}",
        ])
        .1 == "web-app"
    });
    // The validating hook refuses.
    let out = k.fails(&["apply", "-f", "-"], Some(&obj("bad", "forbidden")));
    assert!(
        out.contains("the image 'forbidden' is not allowed"),
        "{out}"
    );
    k.fails(&["get", "ct", "bad"], None);
    // Updates reach the Deployment.
    k.ok(&[
        "patch",
        "ct",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"image":"nginx:1.27"}}"#,
    ]);
    wait_for(&k, "the new image", 30, || {
        get(&[
            "get",
            "deployment",
            "web-app",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .1 == "nginx:1.27"
    });
    // Deletion: the operator's finalizer runs its handler, then the object
    // goes and the garbage collector takes its children.
    k.ok(&["delete", "ct", "web", "--wait=false"]);
    wait_for(&k, "the delete handler", 30, || {
        get(&["get", "configmap", "web-deleted"]).0
    });
    wait_for(&k, "the object to go", 30, || !get(&["get", "ct", "web"]).0);
    wait_for(&k, "the children to go", 40, || {
        !get(&["get", "deployment", "web-app"]).0 && !get(&["get", "service", "web-svc"]).0
    });
    no_complaints(&k);
}
