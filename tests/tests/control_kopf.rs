//! An operator written with kopf (tests/python/kopf_operator.py, the
//! Python operator framework from PyPI) against `rudder server`: it watches
//! a custom kind, creates a Deployment and a Service owned by each object,
//! writes status, follows updates, holds deletions with its finalizer, and
//! serves the admission webhooks whose configurations it manages itself
//! (one refuses, one mutates). The operator runs as a process on this
//! machine rather than in a pod (see the README).

mod support;

use std::process::{Command, Stdio};

use rudder_test_harness::ChildGuard;
use support::{
    kube::{Kubectl, Server, kubectl_at, newest},
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

fn wait_for(what: &str, secs: u64, log: &std::path::Path, f: impl FnMut() -> bool) {
    let context = || {
        format!(
            "; operator log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    };
    support::kube::wait_until(what, secs, context, f);
}

/// kopf met nothing it had to work around: its only error is the refusal
/// it was asked to make.
fn no_complaints(log: &std::path::Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn a_kopf_operator_reconciles_custom_objects_and_serves_its_webhooks() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    let d = server.dir.path();
    certificates(d, &[]);
    k.apply(&["apply", "-f", "-"], CRD);
    let log = d.join("kopf.log");
    let python = support::tls::python();
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/kopf_operator.py");
    let _operator = ChildGuard(
        Command::new(python)
            .args([
                "-m",
                "kopf",
                "run",
                "--standalone",
                "--namespace",
                "default",
                "--verbose",
            ])
            .arg(script)
            .env("KUBECONFIG", server.kubeconfig())
            .env("HOOK_PORT", free_port().to_string())
            .env("HOOK_CERT", d.join("tls.crt"))
            .env("HOOK_KEY", d.join("tls.key"))
            .env("HOOK_CA", d.join("ca.crt"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the kopf operator"),
    );
    let get = |args: &[&str]| kubectl_at(&k.bin, &server.kubeconfig(), args);
    wait_for("kopf's webhook configurations", 60, &log, || {
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
    wait_for("the first create", 30, &log, || {
        support::kube::kubectl_stdin(
            &k.bin,
            &server.kubeconfig(),
            &["apply", "-f", "-"],
            Some(&obj("web", "nginx:1.25")),
        )
        .0
    });
    // The mutating hook labelled it; the operator made its children.
    assert_eq!(
        k.ok(&[
            "get",
            "ct",
            "web",
            "-o",
            "jsonpath={.metadata.labels.mutated-by}"
        ]),
        "kopf"
    );
    wait_for("the deployment", 30, &log, || {
        get(&["get", "deployment", "web-app"]).0
    });
    wait_for("the service", 30, &log, || {
        get(&["get", "service", "web-svc"]).0
    });
    let owner = k.ok(&[
        "get",
        "deployment",
        "web-app",
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
    ]);
    assert_eq!(owner, "CronTab/web");
    wait_for("the status", 30, &log, || {
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
    wait_for("the new image", 30, &log, || {
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
    wait_for("the delete handler", 30, &log, || {
        get(&["get", "configmap", "web-deleted"]).0
    });
    wait_for("the object to go", 30, &log, || {
        !get(&["get", "ct", "web"]).0
    });
    wait_for("the children to go", 40, &log, || {
        !get(&["get", "deployment", "web-app"]).0 && !get(&["get", "service", "web-svc"]).0
    });
    no_complaints(&log);
}
