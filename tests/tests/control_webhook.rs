//! Admission webhooks against `rudder server` with the stock kubectl: a
//! real HTTPS webhook server (tests/python/webhook_server.py, its
//! certificate made here with openssl) called at a URL and through a
//! Service's endpoints; a hook that refuses (with its code and message), one
//! that mutates (a JSON patch), warnings passed back, namespace selectors,
//! DELETE checks, dry runs, and a hook that times out or answers wrongly
//! under each failure policy; configurations refused with nothing stored.

mod support;

use std::time::Duration;

use support::{
    kube::{Kubectl, Server, newest},
    tls::{certificates, host_address, python_server, service_at},
};

fn hook(name: &str, client: &str, ca: &str, resources: &str, extra: &str) -> String {
    format!(
        "- name: {name}\n  clientConfig: {{{client}, caBundle: {ca}}}\n  rules: [{{operations: [CREATE, UPDATE, DELETE], apiGroups: [''], apiVersions: [v1], resources: [{resources}]}}]\n  sideEffects: None\n  admissionReviewVersions: [v1]\n{extra}"
    )
}

/// A server and the webhook server on 127.0.0.1: the caBundle, a `url:`
/// for a path, and what must live as long as the test.
struct Hooked {
    server: Server,
    ca: String,
    port: u16,
    _hooks: rudder_test_harness::ChildGuard,
}

impl Hooked {
    fn start() -> Self {
        let server = Server::start();
        let dir = server.dir.path();
        let ca = certificates(dir, &["hook.default.svc"]);
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let (hooks, port) = python_server(
            "webhook_server.py",
            &[cert.as_os_str(), key.as_os_str(), "127.0.0.1".as_ref()],
        );
        Self {
            server,
            ca,
            port,
            _hooks: hooks,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("url: 'https://127.0.0.1:{}{path}'", self.port)
    }
}

#[test]
fn webhooks_refuse_mutate_and_warn_at_a_url() {
    let h = Hooked::start();
    let k = Kubectl {
        bin: newest(),
        server: &h.server,
    };
    let ca = h.ca.clone();
    let url = |path: &str| h.url(path);
    k.ok(&["create", "namespace", "hooked"]);
    k.ok(&["label", "namespace", "hooked", "webhooks=on"]);
    let selector = "  namespaceSelector: {matchLabels: {webhooks: 'on'}}\n";
    k.apply(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {{name: mutate}}\nwebhooks:\n{}",
            hook("mutate.test.example.com", &url("/mutate"), &ca, "configmaps", selector)
        ),
    );
    k.apply(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: validate}}\nwebhooks:\n{}",
            hook("validate.test.example.com", &url("/validate"), &ca, "configmaps", selector)
        ),
    );
    // The hooks are followed by a watch: give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    let out = k.ok(&[
        "create",
        "configmap",
        "plain",
        "-n",
        "hooked",
        "--from-literal=a=1",
    ]);
    assert!(out.contains("Warning: checked by test"), "{out}");
    assert_eq!(
        k.ok(&[
            "get",
            "configmap",
            "plain",
            "-n",
            "hooked",
            "-o",
            "jsonpath={.metadata.labels.mutated}"
        ]),
        "yes"
    );
    let out = k.fails(
        &["create", "-n", "hooked", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: refused, labels: {deny: 'true'}}\n",
        ),
    );
    assert!(
        out.contains(
            r#"admission webhook "validate.test.example.com" denied the request: denied by test"#
        ) && out.contains("Forbidden"),
        "{out}"
    );
    k.fails(&["get", "configmap", "refused", "-n", "hooked"], None);
    // Updates and deletes are checked too.
    k.ok(&[
        "label",
        "configmap",
        "plain",
        "-n",
        "hooked",
        "protected=true",
    ]);
    let out = k.fails(&["delete", "configmap", "plain", "-n", "hooked"], None);
    assert!(out.contains("denied the request: protected"), "{out}");
    // Outside the selected namespaces nothing is called.
    let out = k.ok(&["create", "configmap", "free", "-n", "default"]);
    assert!(!out.contains("Warning"), "{out}");
    assert_eq!(
        k.ok(&[
            "get",
            "configmap",
            "free",
            "-o",
            "jsonpath={.metadata.labels}"
        ]),
        ""
    );
    // matchConditions and objectSelector narrow a hook further.
    k.apply(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: narrowed}}\nwebhooks:\n{}",
            hook(
                "narrowed.test.example.com",
                &url("/validate"),
                &ca,
                "pods",
                "  objectSelector: {matchExpressions: [{key: checked, operator: Exists}]}\n  matchConditions: [{name: not-skipped, expression: \"object.metadata.name != 'skip-me'\"}]\n",
            )
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    let pod = |name: &str, labels: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{{labels}}}}}\nspec: {{containers: [{{name: c, image: busybox}}]}}\n"
        )
    };
    let out = k.fails(
        &["create", "-f", "-"],
        Some(&pod("checked", "checked: 'yes', deny: 'true'")),
    );
    assert!(out.contains("denied by test"), "{out}");
    // Not selected by the object selector, or ruled out by a condition.
    k.apply(&["create", "-f", "-"], &pod("unlabelled", "deny: 'true'"));
    k.apply(
        &["create", "-f", "-"],
        &pod("skip-me", "checked: 'yes', deny: 'true'"),
    );
    // A dry run reaches hooks without side effects.
    let out = k.ok(&[
        "create",
        "configmap",
        "dry",
        "-n",
        "hooked",
        "--dry-run=server",
        "-o",
        "jsonpath={.metadata.labels.mutated}",
    ]);
    assert!(out.contains("yes"), "{out}");
}

#[test]
fn webhooks_behind_a_service_and_failure_policies() {
    let h = Hooked::start();
    let k = Kubectl {
        bin: newest(),
        server: &h.server,
    };
    let ca = h.ca.clone();
    let url = |path: &str| h.url(path);
    let dir = h.server.dir.path();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    // Through a Service: its endpoints (which may not be loopback
    // addresses: this host's own address, the server bound to it alone),
    // the certificate checked for hook.default.svc.
    let host = host_address();
    let (_service_hooks, service_port) = python_server(
        "webhook_server.py",
        &[cert.as_os_str(), key.as_os_str(), host.as_ref()],
    );
    k.apply(
        &["apply", "-f", "-"],
        &service_at("hook", &host, service_port),
    );
    let service = "service: {namespace: default, name: hook, path: /validate}";
    let unreachable = "service: {namespace: default, name: nothing-here}";
    let policies = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: policies}}\nwebhooks:\n{}{}{}{}",
        hook("service.test.example.com", service, &ca, "secrets", ""),
        hook(
            "slow-ignored.test.example.com",
            &url("/slow"),
            &ca,
            "secrets",
            "  timeoutSeconds: 1\n  failurePolicy: Ignore\n"
        ),
        hook(
            "baduid-ignored.test.example.com",
            &url("/baduid"),
            &ca,
            "secrets",
            "  failurePolicy: Ignore\n"
        ),
        hook(
            "gone-ignored.test.example.com",
            unreachable,
            &ca,
            "secrets",
            "  failurePolicy: Ignore\n"
        ),
    );
    k.apply(&["apply", "-f", "-"], &policies);
    std::thread::sleep(Duration::from_millis(500));
    let out = k.ok(&["create", "secret", "generic", "s1", "--from-literal=a=1"]);
    assert!(out.contains("Warning: checked by test"), "{out}");
    let out = k.fails(
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Secret\nmetadata: {name: s2, labels: {deny: 'true'}}\n"),
    );
    assert!(
        out.contains(r#"admission webhook "service.test.example.com" denied the request"#),
        "{out}"
    );
    // The same failures under failurePolicy: Fail refuse the request.
    k.apply(
        &["apply", "-f", "-"],
        &policies.replace("failurePolicy: Ignore", "failurePolicy: Fail"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = k.fails(
        &["create", "secret", "generic", "s3", "--from-literal=a=1"],
        None,
    );
    assert!(
        out.contains(r#"failed calling webhook "slow-ignored.test.example.com""#)
            && out.contains("context deadline exceeded"),
        "{out}"
    );
    k.fails(&["get", "secret", "s3"], None);
}

#[test]
fn bad_webhook_configurations_are_refused() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    let out = k.fails(
        &["apply", "-f", "-"],
        Some("apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {name: bad}\nwebhooks:\n- name: bad\n  clientConfig: {url: 'http://127.0.0.1:1/x'}\n  sideEffects: Unknown\n  admissionReviewVersions: [v1]\n  timeoutSeconds: 60\n"),
    );
    for want in [
        r#"webhooks[0].name: Invalid value: "bad": should be a domain with at least three segments separated by dots"#,
        r#"webhooks[0].clientConfig.url: Invalid value: "http://127.0.0.1:1/x": 'https' is the only allowed URL scheme"#,
        r#"webhooks[0].sideEffects: Unsupported value: "Unknown""#,
        "webhooks[0].timeoutSeconds: Invalid value: 60: the timeout value must be between 1 and 30 seconds",
    ] {
        assert!(out.contains(want), "{want:?} not in {out}");
    }
    assert!(
        k.ok(&["get", "validatingwebhookconfigurations", "-o", "name"])
            .trim()
            .is_empty()
    );
}

const POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: demo-policy.example.com}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}
  variables:
  - {name: replicas, expression: object.spec.replicas}
  validations:
  - {expression: "variables.replicas <= 5", message: replicas must be no greater than 5}
  - expression: "object.metadata.name.startsWith('app-')"
    messageExpression: "'name ' + object.metadata.name + ' must start with app-'"
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: demo-binding-test.example.com}
spec:
  policyName: demo-policy.example.com
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {matchLabels: {environment: test}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: demo-binding-warn.example.com}
spec:
  policyName: demo-policy.example.com
  validationActions: [Warn]
  matchResources:
    namespaceSelector: {matchLabels: {environment: staging}}
"#;

#[test]
fn validating_admission_policies_deny_and_warn_through_their_bindings() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    for (ns, env) in [("test", "test"), ("staging", "staging"), ("free", "none")] {
        k.ok(&["create", "namespace", ns]);
        k.ok(&["label", "namespace", ns, &format!("environment={env}")]);
    }
    k.apply(&["apply", "-f", "-"], POLICY);
    std::thread::sleep(Duration::from_millis(500));
    let out = k.fails(
        &[
            "create",
            "deployment",
            "app-big",
            "-n",
            "test",
            "--image=nginx",
            "--replicas=6",
        ],
        None,
    );
    assert!(
        out.contains("ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-test.example.com' denied request: replicas must be no greater than 5"),
        "{out}"
    );
    let out = k.fails(
        &["create", "-n", "test", "-f", "-"],
        Some("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1, selector: {matchLabels: {app: web}}, template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c, image: nginx}]}}}\n"),
    );
    assert!(
        out.contains("Error from server (Forbidden)")
            && out.contains("name web must start with app-"),
        "{out}"
    );
    k.ok(&[
        "create",
        "deployment",
        "app-ok",
        "-n",
        "test",
        "--image=nginx",
        "--replicas=2",
    ]);
    // An update is checked too (not the scale subresource, which the
    // policy's rules do not name, as upstream).
    let out = k.fails(
        &[
            "patch",
            "deployment",
            "app-ok",
            "-n",
            "test",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":9}}"#,
        ],
        None,
    );
    assert!(out.contains("replicas must be no greater than 5"), "{out}");
    // A Warn binding lets it through with a warning; unbound namespaces are free.
    let out = k.ok(&[
        "create",
        "deployment",
        "app-big",
        "-n",
        "staging",
        "--image=nginx",
        "--replicas=6",
    ]);
    assert!(
        out.contains("Warning: Validation failed for ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-warn.example.com': replicas must be no greater than 5"),
        "{out}"
    );
    k.ok(&[
        "create",
        "deployment",
        "anything",
        "-n",
        "free",
        "--image=nginx",
        "--replicas=9",
    ]);
    // Policies that do not compile, or name half a parameter kind, are
    // refused.
    let out = k.fails(
        &["apply", "-f", "-"],
        Some("apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {name: broken.example.com}\nspec:\n  paramKind: {apiVersion: v1}\n  matchConstraints: {resourceRules: [{apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [pods]}]}\n  validations: [{expression: 'object.x +'}]\n"),
    );
    assert!(
        out.contains(
            "spec.validations[0].expression: Invalid value: \"object.x +\": compilation failed"
        ) && out.contains("spec.paramKind.kind: Required value"),
        "{out}"
    );
    let out = k.fails(
        &["apply", "-f", "-"],
        Some("apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {name: broken.example.com}\nspec:\n  policyName: limits.example.com\n  validationActions: [Deny]\n  paramRef: {name: a, selector: {}}\n"),
    );
    assert!(
        out.contains("spec.paramRef.name: Forbidden: name and selector are mutually exclusive")
            && out.contains("spec.paramRef.parameterNotFoundAction: Required value"),
        "{out}"
    );
    parameters(&k);
}

/// A policy with a `paramKind` (ConfigMaps holding the limit), bound by
/// name (parameters in another namespace; none found denies) and by
/// selector (parameters in the request's namespace; none found allows;
/// each found one is checked).
const PARAM_POLICY: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: limits.example.com}
spec:
  failurePolicy: Fail
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules: [{apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}]
  validations:
  - expression: object.spec.replicas <= int(params.data.maxReplicas)
    messageExpression: "'replicas must be no greater than ' + params.data.maxReplicas"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: limits-by-name.example.com}
spec:
  policyName: limits.example.com
  validationActions: [Deny]
  paramRef: {name: replica-limit, namespace: limits, parameterNotFoundAction: Deny}
  matchResources: {namespaceSelector: {matchLabels: {tier: limited}}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: limits-by-selector.example.com}
spec:
  policyName: limits.example.com
  validationActions: [Deny]
  paramRef: {selector: {matchLabels: {limit: "true"}}, parameterNotFoundAction: Allow}
  matchResources: {namespaceSelector: {matchLabels: {tier: selected}}}
"#;

fn parameters(k: &Kubectl<'_>) {
    for (ns, tier) in [
        ("limits", "none"),
        ("limited", "limited"),
        ("selected", "selected"),
    ] {
        k.ok(&["create", "namespace", ns]);
        k.ok(&["label", "namespace", ns, &format!("tier={tier}")]);
    }
    k.apply(&["apply", "-f", "-"], PARAM_POLICY);
    std::thread::sleep(Duration::from_millis(500));
    let deploy = |ns: &str, name: &str, replicas: u32| {
        support::kube::kubectl_stdin(
            &k.bin,
            &k.server.kubeconfig(),
            &["create", "-n", ns, "-f", "-"],
            Some(&format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec: {{replicas: {replicas}, selector: {{matchLabels: {{app: {name}}}}}, template: {{metadata: {{labels: {{app: {name}}}}}, spec: {{containers: [{{name: c, image: nginx}}]}}}}}}\n"
            )),
        )
    };
    // By name, nothing found: `Deny` refuses, as a misconfigured binding.
    let (ok, out) = deploy("limited", "a", 1);
    assert!(
        !ok && out.contains("Error from server (Forbidden)")
            && out.contains("ValidatingAdmissionPolicy 'limits.example.com' with binding 'limits-by-name.example.com' denied request: failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"),
        "{out}"
    );
    k.ok(&[
        "create",
        "configmap",
        "replica-limit",
        "-n",
        "limits",
        "--from-literal=maxReplicas=3",
    ]);
    let (ok, out) = deploy("limited", "b", 4);
    assert!(
        !ok && out.contains("denied request: replicas must be no greater than 3"),
        "{out}"
    );
    assert!(deploy("limited", "c", 2).0);
    // By selector, nothing found: `Allow` lets it through.
    assert!(deploy("selected", "d", 9).0);
    for (name, max) in [("loose", "10"), ("tight", "4")] {
        k.ok(&[
            "create",
            "configmap",
            name,
            "-n",
            "selected",
            &format!("--from-literal=maxReplicas={max}"),
        ]);
        k.ok(&["label", "configmap", name, "-n", "selected", "limit=true"]);
    }
    let (ok, out) = deploy("selected", "e", 6);
    assert!(
        !ok && out.contains("replicas must be no greater than 4"),
        "{out}"
    );
    assert!(deploy("selected", "f", 3).0);
}

/// A CRD whose two versions convert through the test webhook's `/convert`:
/// v1 (stored) has `spec.size`, a string; v2 has `spec.replicas`.
fn converted_crd(name: &str, conversion: &str) -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {name}.conv.example.com}}
spec:
  group: conv.example.com
  scope: Namespaced
  names: {{plural: {name}, kind: Widget}}
  conversion: {conversion}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, properties: {{size: {{type: string}}, refuse: {{type: string}}}}}}
  - name: v2
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, properties: {{replicas: {{type: integer}}, refuse: {{type: string}}}}}}
"#
    )
}

#[test]
fn conversion_webhooks_convert_reads_writes_lists_and_watches() {
    let h = Hooked::start();
    let k = Kubectl {
        bin: newest(),
        server: &h.server,
    };
    let conversion = format!(
        "{{strategy: Webhook, webhook: {{clientConfig: {{{}, caBundle: {}}}, conversionReviewVersions: [v1]}}}}",
        h.url("/convert"),
        h.ca
    );
    k.apply(
        &["apply", "-f", "-"],
        &converted_crd("widgets", &conversion),
    );
    support::kube::wait_until("the CRD", 15, String::new, || {
        k.ok(&[
            "get",
            "crd",
            "widgets.conv.example.com",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
        ]) == "True"
    });
    // Written at v2, stored at v1 (through the webhook), answered at v2.
    let out = k.apply(
        &["create", "-o", "jsonpath={.apiVersion} {.spec.replicas} {.metadata.name}", "-f", "-"],
        "apiVersion: conv.example.com/v2\nkind: Widget\nmetadata: {name: w, namespace: default}\nspec: {replicas: 3}\n",
    );
    assert_eq!(out, "conv.example.com/v2 3 w");
    let get = |version: &str, name: &str, path: &str| {
        k.ok(&[
            "get",
            &format!("widgets.{version}.conv.example.com"),
            name,
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    assert_eq!(get("v1", "w", "{.spec.size}"), "3");
    // The stored object is the webhook's v1 answer (its annotation kept,
    // its attempt to rename the object not).
    assert_eq!(
        get("v1", "w", "{.metadata.annotations.converted-to}"),
        "conv.example.com/v1"
    );
    assert_eq!(get("v2", "w", "{.spec.replicas}"), "3");
    assert_eq!(get("v2", "w", "{.metadata.name}"), "w");
    // Written at the storage version: no call; a list at v2 converts all.
    k.apply(
        &["create", "-f", "-"],
        "apiVersion: conv.example.com/v1\nkind: Widget\nmetadata: {name: x, namespace: default}\nspec: {size: '5'}\n",
    );
    assert_eq!(
        k.ok(&[
            "get",
            "widgets.v2.conv.example.com",
            "-o",
            "jsonpath={.items[*].spec.replicas}"
        ]),
        "3 5"
    );
    // An update at v2 goes through the webhook both ways.
    k.ok(&[
        "patch",
        "widgets.v2.conv.example.com",
        "x",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":7}}"#,
    ]);
    assert_eq!(get("v1", "x", "{.spec.size}"), "7");
    // A watch at v2 sends converted objects.
    let watched = k.ok(&[
        "get",
        "--raw",
        "/apis/conv.example.com/v2/namespaces/default/widgets?watch=1&timeoutSeconds=1",
    ]);
    assert!(
        watched.contains(r#""replicas":7"#)
            && watched.contains(r#""apiVersion":"conv.example.com/v2""#),
        "{watched}"
    );
    assert!(!watched.contains(r#""size""#), "{watched}");
    // Admission hooks registered for v1 only: with `matchPolicy:
    // Equivalent` (the default) a v2 request is sent to them at v1 (and a
    // mutation comes back to v2); with `Exact` it is not sent.
    let rules = "rules: [{operations: [CREATE], apiGroups: [conv.example.com], apiVersions: [v1], resources: [widgets]}]";
    let client = |path: &str| format!("clientConfig: {{{}, caBundle: {}}}", h.url(path), h.ca);
    k.apply(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: widgets-v1}}\nwebhooks:\n- {{name: eq.test.example.com, {}, {rules}, sideEffects: None, admissionReviewVersions: [v1]}}\n- {{name: exact.test.example.com, matchPolicy: Exact, {}, {rules}, sideEffects: None, admissionReviewVersions: [v1]}}\n---\napiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {{name: widgets-v1}}\nwebhooks:\n- {{name: mutate.test.example.com, {}, {rules}, sideEffects: None, admissionReviewVersions: [v1]}}\n",
            client("/validate"),
            client("/validate-exact"),
            client("/mutate")
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = k.apply(
        &["create", "-f", "-"],
        "apiVersion: conv.example.com/v2\nkind: Widget\nmetadata: {name: hooked, namespace: default}\nspec: {replicas: 2}\n",
    );
    assert_eq!(out.matches("checked by test").count(), 1, "{out}");
    assert!(
        out.contains("saw conv.example.com/v1 as v1 for a v2 request"),
        "{out}"
    );
    assert_eq!(get("v2", "hooked", "{.metadata.labels.mutated}"), "yes");
    assert_eq!(get("v2", "hooked", "{.spec.replicas}"), "2");
    let out = k.apply(
        &["create", "-f", "-"],
        "apiVersion: conv.example.com/v1\nkind: Widget\nmetadata: {name: direct, namespace: default}\nspec: {size: '1'}\n",
    );
    assert!(
        out.contains("checked by test")
            && out.contains("checked exactly by test")
            && !out.contains("saw "),
        "{out}"
    );
    k.ok(&[
        "delete",
        "validatingwebhookconfiguration,mutatingwebhookconfiguration",
        "widgets-v1",
    ]);
    // An admission policy written for v1 sees a v2 write at v1.
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {name: unlucky.example.com}\nspec:\n  matchConstraints: {resourceRules: [{apiGroups: [conv.example.com], apiVersions: [v1], operations: [CREATE], resources: [widgets]}]}\n  validations: [{expression: \"object.apiVersion == 'conv.example.com/v1' && object.spec.size != '13'\", message: size 13 is unlucky}]\n---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {name: unlucky.example.com}\nspec: {policyName: unlucky.example.com, validationActions: [Deny]}\n",
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = k.fails(
        &["create", "-f", "-"],
        Some("apiVersion: conv.example.com/v2\nkind: Widget\nmetadata: {name: thirteen, namespace: default}\nspec: {replicas: 13}\n"),
    );
    assert!(out.contains("denied request: size 13 is unlucky"), "{out}");
    k.apply(
        &["create", "-f", "-"],
        "apiVersion: conv.example.com/v2\nkind: Widget\nmetadata: {name: twelve, namespace: default}\nspec: {replicas: 12}\n",
    );
    k.ok(&[
        "delete",
        "validatingadmissionpolicybinding,validatingadmissionpolicy",
        "unlucky.example.com",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    // A webhook that refuses fails the request with its message, and
    // nothing is stored.
    let out = k.fails(
        &["create", "-f", "-"],
        Some("apiVersion: conv.example.com/v2\nkind: Widget\nmetadata: {name: r, namespace: default}\nspec: {refuse: 'yes'}\n"),
    );
    assert!(
        out.contains("conversion webhook for conv.example.com/v1, Kind=Widget failed: conversion webhook returned failure: refused by test"),
        "{out}"
    );
    let (found, _) = support::kube::kubectl_at(
        &k.bin,
        &h.server.kubeconfig(),
        &["get", "widgets.v1.conv.example.com", "r"],
    );
    assert!(!found);
    // Conversion settings are validated as upstream validates them.
    let out = k.fails(
        &["apply", "-f", "-"],
        Some(&converted_crd(
            "gadgets",
            "{strategy: Webhook, webhook: {conversionReviewVersions: [v9]}}",
        )),
    );
    assert!(
        out.contains("spec.conversion.webhookClientConfig: Required value: required when strategy is set to Webhook")
            && out.contains("spec.conversion.conversionReviewVersions: Invalid value")
            && out.contains("must include at least one of v1, v1beta1"),
        "{out}"
    );
    let out = k.fails(
        &["apply", "-f", "-"],
        Some(&converted_crd(
            "gizmos",
            &format!("{{strategy: None, webhook: {{clientConfig: {{{}}}, conversionReviewVersions: [v1]}}}}", h.url("/convert")),
        )),
    );
    assert!(
        out.contains("spec.conversion.webhookClientConfig: Forbidden: should not be set when strategy is not set to Webhook"),
        "{out}"
    );
}
