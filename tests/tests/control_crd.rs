//! CustomResourceDefinitions against `rudder server`, with the stock
//! kubectl 1.27 and 1.33 and the official Python client: a CRD's life
//! (served within a second, a schema update, deletion that empties it
//! first and waits for its objects' finalizers), custom objects validated,
//! pruned and defaulted with kube-apiserver's messages, printer columns,
//! the status and scale subresources, selectable fields, several versions
//! with `None` conversion, name conflicts, and CRDs refused with nothing
//! stored.

mod support;

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use support::kube::{Kubectl, Server, newest, oldest};

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names: {plural: crontabs, singular: crontab, kind: CronTab, shortNames: [ct], categories: [all]}
  versions:
  - name: v1
    served: true
    storage: true
    selectableFields:
    - jsonPath: .spec.image
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [cronSpec]
            properties:
              cronSpec: {type: string, pattern: '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'}
              image: {type: string, maxLength: 20}
              replicas: {type: integer, minimum: 1, maximum: 10, default: 1}
              mode: {type: string, enum: [fast, slow]}
          status:
            type: object
            properties:
              replicas: {type: integer}
              selector: {type: string}
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas, labelSelectorPath: .status.selector}
    additionalPrinterColumns:
    - {name: Spec, type: string, jsonPath: .spec.cronSpec}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    support::kube::wait_until(what, 15, String::new, f);
}

fn established(k: &Kubectl<'_>, crd: &str) -> bool {
    let (ok, out) = support::kube::kubectl_at(
        &k.bin,
        &k.server.kubeconfig(),
        &[
            "get",
            "crd",
            crd,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
        ],
    );
    ok && out.trim() == "True"
}

#[test]
fn a_crd_is_served_validated_and_removed_with_both_kubectls() {
    let server = Server::start();
    for (round, bin) in [oldest(), newest()].into_iter().enumerate() {
        let k = Kubectl {
            bin,
            server: &server,
        };
        let ns = format!("crd{round}");
        k.ok(&["create", "namespace", &ns]);
        let applied = Instant::now();
        k.apply(&["apply", "-f", "-"], CRD);
        wait_for("the CRD to be established", || {
            established(&k, "crontabs.stable.example.com")
        });
        let took = applied.elapsed();
        assert!(took < Duration::from_secs(2), "established after {took:?}");
        let resources = k.ok(&["api-resources", "--api-group=stable.example.com"]);
        assert!(
            resources.contains("crontabs")
                && resources.contains("ct")
                && resources.contains("CronTab"),
            "{resources}"
        );
        objects_round(&k, &ns);
        // Delete the CRD while one object holds a finalizer.
        k.apply(
            &["apply", "-n", &ns, "-f", "-"],
            "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: held, finalizers: [example.com/hold]}\nspec: {cronSpec: '* * * * *'}\n",
        );
        k.ok(&[
            "delete",
            "crd",
            "crontabs.stable.example.com",
            "--wait=false",
        ]);
        wait_for("the Terminating condition", || {
            k.ok(&[
                "get",
                "crd",
                "crontabs.stable.example.com",
                "-o",
                "jsonpath={.status.conditions[*].type}",
            ])
            .contains("Terminating")
        });
        let out = k.fails(
            &["create", "-n", &ns, "-f", "-"],
            Some("apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: late}\nspec: {cronSpec: '* * * * *'}\n"),
        );
        assert!(
            out.contains("create not allowed while custom resource definition is terminating"),
            "{out}"
        );
        // The object without a finalizer is gone; the held one waits.
        let left = k.ok(&["get", "ct", "-n", &ns, "-o", "name"]);
        assert_eq!(left.trim(), "crontab.stable.example.com/held", "{left}");
        k.ok(&[
            "patch",
            "ct",
            "held",
            "-n",
            &ns,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ]);
        wait_for("the CRD to go", || {
            !support::kube::kubectl_at(
                &k.bin,
                &k.server.kubeconfig(),
                &["get", "crd", "crontabs.stable.example.com"],
            )
            .0
        });
        let out = k.fails(
            &[
                "get",
                "--raw",
                &format!("/apis/stable.example.com/v1/namespaces/{ns}/crontabs"),
            ],
            None,
        );
        assert!(
            out.contains("NotFound") || out.contains("not found"),
            "{out}"
        );
    }
}

/// Custom objects of the CRD: validation, pruning, defaults, columns,
/// versions, subresources, selectors.
fn objects_round(k: &Kubectl<'_>, ns: &str) {
    let obj = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: a}\nspec: {cronSpec: '* * * * */5', image: img, extra: 1}\n";
    // kubectl validates strictly by default: the unknown field is refused
    // with kube-apiserver's words, and nothing is stored.
    let out = k.fails(&["apply", "-n", ns, "-f", "-"], Some(obj));
    assert!(
        out.contains(r#"CronTab in version "v1" cannot be handled as a CronTab: strict decoding error: unknown field "spec.extra""#),
        "{out}"
    );
    // Without validation the field is pruned and the default filled in.
    k.apply(&["apply", "--validate=false", "-n", ns, "-f", "-"], obj);
    let got: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "ct", "a", "-n", ns, "-o", "json"])).unwrap();
    assert_eq!(
        got["spec"],
        serde_json::json!({"cronSpec": "* * * * */5", "image": "img", "replicas": 1})
    );
    assert_eq!(got["metadata"]["generation"], 1);
    let obj = &obj.replace(", extra: 1", "");
    let table = k.ok(&["get", "ct", "-n", ns]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "SPEC", "REPLICAS", "AGE"], "{table}");
    assert!(table.contains("* * * * */5"), "{table}");
    // A second client-side apply patches (a JSON merge patch: kubectl
    // finds no strategic merge for the kind in /openapi/v3).
    let out = k.apply(
        &["apply", "--validate=false", "-n", ns, "-f", "-"],
        &obj.replace("image: img", "image: img2"),
    );
    assert!(out.contains("configured"), "{out}");
    assert_eq!(
        k.ok(&["get", "ct", "a", "-n", ns, "-o", "jsonpath={.spec.image}"]),
        "img2"
    );
    // kubectl explain reads the kind's schema from /openapi/v3.
    let explained = k.ok(&["explain", "crontab.spec.replicas"]);
    assert!(
        explained.contains("KIND:       CronTab") && explained.contains("<integer>"),
        "{explained}"
    );
    // `get all` includes the kind (categories: [all]).
    assert!(
        k.ok(&["get", "all", "-n", ns])
            .contains("crontab.stable.example.com/a")
    );
    invalid_objects(k, ns);
    // The other version, converted with `None`: only apiVersion differs.
    let beta: serde_json::Value = serde_json::from_str(&k.ok(&[
        "get",
        "crontabs.v1beta1.stable.example.com",
        "a",
        "-n",
        ns,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(beta["apiVersion"], "stable.example.com/v1beta1");
    assert_eq!(
        beta["spec"],
        serde_json::json!({"cronSpec": "* * * * */5", "image": "img2", "replicas": 1})
    );
    subresources(k, ns);
    // A field selector on a selectable field; others are refused.
    k.apply(
        &["apply", "-n", ns, "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: b}\nspec: {cronSpec: '* * * * *', image: other}\n",
    );
    let picked = k.ok(&[
        "get",
        "ct",
        "-n",
        ns,
        "--field-selector",
        "spec.image=other",
        "-o",
        "name",
    ]);
    assert_eq!(picked.trim(), "crontab.stable.example.com/b", "{picked}");
    let out = k.fails(
        &["get", "ct", "-n", ns, "--field-selector", "spec.mode=fast"],
        None,
    );
    assert!(
        out.contains("field label not supported: spec.mode"),
        "{out}"
    );
    // Server-side apply on a custom kind.
    k.apply(
        &["apply", "--server-side", "--field-manager=t", "-n", ns, "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: b}\nspec: {cronSpec: '* * * * *', image: other, mode: slow}\n",
    );
    assert_eq!(
        k.ok(&["get", "ct", "b", "-n", ns, "-o", "jsonpath={.spec.mode}"]),
        "slow"
    );
    k.ok(&["delete", "ct", "b", "-n", ns]);
}

/// The status and scale subresources of object `a`.
fn subresources(k: &Kubectl<'_>, ns: &str) {
    // status is a subresource: the main resource ignores it.
    k.ok(&[
        "patch",
        "ct",
        "a",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":9}}"#,
    ]);
    k.ok(&[
        "patch",
        "ct",
        "a",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":2,"selector":"app=a"}}"#,
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "ct",
            "a",
            "-n",
            ns,
            "-o",
            "jsonpath={.status.replicas}"
        ]),
        "2"
    );
    // scale reads and writes where the CRD says; a spec change bumps the
    // generation.
    k.ok(&["scale", "ct", "a", "-n", ns, "--replicas=3"]);
    assert_eq!(
        k.ok(&[
            "get",
            "ct",
            "a",
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.replicas} {.metadata.generation}"
        ]),
        "3 3"
    );
    let scale: serde_json::Value = serde_json::from_str(&k.ok(&[
        "get",
        "--raw",
        &format!("/apis/stable.example.com/v1/namespaces/{ns}/crontabs/a/scale"),
    ]))
    .unwrap();
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(
        scale["status"],
        serde_json::json!({"replicas": 2, "selector": "app=a"})
    );
}

/// Invalid objects: 422 with one cause per broken rule, nothing stored.
fn invalid_objects(k: &Kubectl<'_>, ns: &str) {
    let out = k.fails(
        &["create", "-n", ns, "-f", "-"],
        Some("apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: bad}\nspec: {cronSpec: '* *', image: 5, replicas: 20, mode: warp}\n"),
    );
    for want in [
        r#"The CronTab "bad" is invalid"#,
        r#"spec.cronSpec: Invalid value: "* *": spec.cronSpec in body should match"#,
        r#"spec.image: Invalid value: "integer": spec.image in body must be of type string: "integer""#,
        r#"spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10"#,
        r#"spec.mode: Unsupported value: "warp": supported values: "fast", "slow""#,
    ] {
        assert!(out.contains(want), "{want:?} not in {out}");
    }
    let out = k.fails(
        &["create", "-n", ns, "-f", "-"],
        Some("apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: bad}\nspec: {image: x}\n"),
    );
    assert!(out.contains("spec.cronSpec: Required value"), "{out}");
    k.fails(&["get", "ct", "bad", "-n", ns], None);
}

#[test]
fn bad_crds_are_refused_and_conflicting_names_not_served() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    let crd = |name: &str, group: &str, plural: &str, kind: &str, schema: &str| {
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: {name}}}\nspec:\n  group: {group}\n  scope: Cluster\n  names: {{plural: {plural}, kind: {kind}, shortNames: [gz]}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {schema}\n"
        )
    };
    for (manifest, want) in [
        (
            crd(
                "gizmos.example.com",
                "example.com",
                "gizmos",
                "Gizmo",
                "{type: object, properties: {spec: {properties: {a: {type: string}}}}}",
            ),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields",
        ),
        (
            crd(
                "gizmos.example.com",
                "example.com",
                "gizmos",
                "Gizmo",
                "{type: object, properties: {num: {type: integer, default: x}}}",
            ),
            "spec.versions[0].schema.openAPIV3Schema.properties[num].default: Invalid value: \"string\"",
        ),
        (
            crd(
                "other.example.com",
                "example.com",
                "gizmos",
                "Gizmo",
                "{type: object}",
            ),
            "metadata.name: Invalid value: \"other.example.com\": must be spec.names.plural+\".\"+spec.group",
        ),
        (
            crd(
                "gizmos.example",
                "example",
                "gizmos",
                "Gizmo",
                "{type: object}",
            ),
            "spec.group: Invalid value: \"example\": should be a domain with at least one dot",
        ),
        (
            crd(
                "gizmos.apps.k8s.io",
                "apps.k8s.io",
                "gizmos",
                "Gizmo",
                "{type: object}",
            ),
            "protected groups must have approval annotation",
        ),
    ] {
        let out = k.fails(&["apply", "-f", "-"], Some(&manifest));
        assert!(out.contains(want), "{want:?} not in {out}");
    }
    let listed = k.ok(&["get", "crd", "-o", "name"]);
    assert!(listed.trim().is_empty(), "nothing stored: {listed}");
    // Two CRDs of a group want the short name `gz`: the older one keeps it.
    k.apply(
        &["apply", "-f", "-"],
        &crd(
            "gizmos.example.com",
            "example.com",
            "gizmos",
            "Gizmo",
            "{type: object}",
        ),
    );
    wait_for("gizmos", || established(&k, "gizmos.example.com"));
    k.apply(
        &["apply", "-f", "-"],
        &crd(
            "gadgets.example.com",
            "example.com",
            "gadgets",
            "Gadget",
            "{type: object}",
        ),
    );
    wait_for("the conflict", || {
        k.ok(&[
            "get",
            "crd",
            "gadgets.example.com",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"NamesAccepted\")].reason}",
        ]) == "ShortNamesConflict"
    });
    assert!(!established(&k, "gadgets.example.com"));
    let out = k.fails(&["get", "--raw", "/apis/example.com/v1/gadgets"], None);
    assert!(
        out.contains("NotFound") || out.contains("not found"),
        "{out}"
    );
    // Free the name and the newer CRD is served.
    k.ok(&["delete", "crd", "gizmos.example.com"]);
    wait_for("gadgets", || established(&k, "gadgets.example.com"));
    k.ok(&["get", "--raw", "/apis/example.com/v1/gadgets"]);
}

#[test]
fn official_python_client_drives_a_custom_kind() {
    let server = Server::start();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(support::tls::python())
        .arg(repo.join("tests/python/crd_flow.py"))
        .env("KUBECONFIG", server.kubeconfig())
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("python crd flow: OK"),
        "{text}\nserver log:\n{}",
        std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default()
    );
}

#[test]
fn objects_owned_by_a_custom_object_live_and_die_with_it() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    k.apply(&["apply", "-f", "-"], CRD);
    wait_for("the CRD", || established(&k, "crontabs.stable.example.com"));
    k.apply(
        &["apply", "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: owner, namespace: default}\nspec: {cronSpec: '* * * * *'}\n",
    );
    let uid = k.ok(&["get", "ct", "owner", "-o", "jsonpath={.metadata.uid}"]);
    let owned = |name: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\n  ownerReferences:\n  - {{apiVersion: stable.example.com/v1, kind: CronTab, name: owner, uid: {uid}}}\n"
        )
    };
    k.apply(&["apply", "-f", "-"], &owned("dependent"));
    // Longer than the collector's resync and repeat intervals: a live
    // custom owner keeps its dependent.
    std::thread::sleep(Duration::from_secs(9));
    k.ok(&["get", "configmap", "dependent"]);
    k.ok(&["delete", "ct", "owner"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while support::kube::kubectl_at(
        &k.bin,
        &k.server.kubeconfig(),
        &["get", "configmap", "dependent"],
    )
    .0
    {
        assert!(
            Instant::now() < deadline,
            "the dependent outlived its custom owner"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

const CEL_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: scalers.cel.example.com}
spec:
  group: cel.example.com
  scope: Namespaced
  names: {plural: scalers, kind: Scaler}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: self.minReplicas <= self.replicas
              message: replicas should be at least minReplicas
            - rule: "!has(self.tier) || self.tier in ['gold', 'silver']"
              messageExpression: "'tier ' + self.tier + ' is not offered'"
            properties:
              replicas: {type: integer}
              minReplicas: {type: integer}
              tier: {type: string}
              region:
                type: string
                x-kubernetes-validations:
                - {rule: self == oldSelf, message: region is immutable}
              memory:
                type: string
                x-kubernetes-validations:
                - {rule: "isQuantity(self) && quantity(self).isLessThan(quantity('1Gi'))", message: memory must be a quantity below 1Gi}
              endpoint:
                type: string
                x-kubernetes-validations:
                - {rule: "isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname().endsWith('.example.com')", message: endpoint must be https on example.com}
              sources:
                type: array
                items: {type: string}
                x-kubernetes-validations:
                - {rule: "self.all(c, isCIDR(c) && !cidr(c).ip().isLoopback()) && self.isSorted()", message: sources must be sorted non-loopback CIDRs}
              weights:
                type: array
                items: {type: integer}
                x-kubernetes-validations:
                - {rule: "self.sum() == 100 && self.min() > 0", messageExpression: "'weights sum to ' + string(self.sum()) + ', not 100'"}
              name:
                type: string
                x-kubernetes-validations:
                - {rule: "self.find('[0-9]+') != '' && self.lowerAscii() == self", message: name needs a digit and no capitals}
"#;

#[test]
fn cel_rules_refuse_what_they_forbid() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    k.apply(&["apply", "-f", "-"], CEL_CRD);
    wait_for("the CRD", || established(&k, "scalers.cel.example.com"));
    let obj = |spec: &str| {
        format!(
            "apiVersion: cel.example.com/v1\nkind: Scaler\nmetadata: {{name: s, namespace: default}}\nspec: {spec}\n"
        )
    };
    let out = k.fails(
        &["create", "-f", "-"],
        Some(&obj("{replicas: 1, minReplicas: 1, minReplicas: 3}")),
    );
    assert!(
        out.contains(r#"spec: Invalid value: "object": replicas should be at least minReplicas"#),
        "{out}"
    );
    let out = k.fails(
        &["create", "-f", "-"],
        Some(&obj("{replicas: 3, minReplicas: 1, tier: bronze}")),
    );
    assert!(out.contains("tier bronze is not offered"), "{out}");
    // Kubernetes' CEL libraries: quantities, URLs, CIDRs and IPs, lists,
    // regex and the extended strings, each refusing what it forbids.
    for (spec, want) in [
        (
            "{replicas: 1, minReplicas: 1, memory: 2Gi}",
            "spec.memory: Invalid value: \"string\": memory must be a quantity below 1Gi",
        ),
        (
            "{replicas: 1, minReplicas: 1, memory: lots}",
            "memory must be a quantity below 1Gi",
        ),
        (
            "{replicas: 1, minReplicas: 1, endpoint: 'http://a.example.com/'}",
            "endpoint must be https on example.com",
        ),
        (
            "{replicas: 1, minReplicas: 1, endpoint: 'https://evil.test/'}",
            "endpoint must be https on example.com",
        ),
        (
            "{replicas: 1, minReplicas: 1, sources: [10.0.0.0/8, 127.0.0.0/8]}",
            "sources must be sorted non-loopback CIDRs",
        ),
        (
            "{replicas: 1, minReplicas: 1, sources: [192.168.0.0/16, 10.0.0.0/8]}",
            "sources must be sorted non-loopback CIDRs",
        ),
        (
            "{replicas: 1, minReplicas: 1, sources: [not-a-cidr]}",
            "sources must be sorted non-loopback CIDRs",
        ),
        (
            "{replicas: 1, minReplicas: 1, weights: [50, 40]}",
            "weights sum to 90, not 100",
        ),
        (
            "{replicas: 1, minReplicas: 1, name: Web-1}",
            "name needs a digit and no capitals",
        ),
    ] {
        let out = k.fails(&["create", "-f", "-"], Some(&obj(spec)));
        assert!(out.contains(want), "{spec}: {out}");
    }
    k.apply(
        &["create", "-f", "-"],
        &obj(
            "{replicas: 3, minReplicas: 1, tier: gold, region: eu, memory: 512Mi, \
             endpoint: 'https://api.example.com:8443/v1?x=1', sources: [10.0.0.0/8, 192.168.0.0/16], \
             weights: [60, 40], name: web-1}",
        ),
    );
    // A transition rule: the value may not change once set.
    let out = k.fails(
        &[
            "patch",
            "scaler",
            "s",
            "--type=merge",
            "-p",
            r#"{"spec":{"region":"us"}}"#,
        ],
        None,
    );
    assert!(
        out.contains(r#"spec.region: Invalid value: "string": region is immutable"#),
        "{out}"
    );
    k.ok(&[
        "patch",
        "scaler",
        "s",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":4}}"#,
    ]);
    // A rule that does not compile keeps the CRD out.
    let bad = CEL_CRD
        .replace("scalers.cel.example.com", "broken.cel.example.com")
        .replace(
            "plural: scalers, kind: Scaler",
            "plural: broken, kind: Broken",
        )
        .replace("self == oldSelf", "self ==");
    let out = k.fails(&["apply", "-f", "-"], Some(&bad));
    assert!(
        out.contains("x-kubernetes-validations[0].rule: Invalid value")
            && out.contains("compilation failed"),
        "{out}"
    );
}

const LISTS_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: routers.lists.example.com}
spec:
  group: lists.example.com
  scope: Namespaced
  names: {plural: routers, kind: Router}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              routes:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name, port]
                items:
                  type: object
                  required: [name, port]
                  properties:
                    name: {type: string}
                    port: {type: integer}
                    weight: {type: integer}
              tags:
                type: array
                x-kubernetes-list-type: set
                items: {type: string}
              hops:
                type: array
                items: {type: string}
              selector:
                type: object
                x-kubernetes-map-type: atomic
                additionalProperties: {type: string}
"#;

#[test]
fn server_side_apply_merges_custom_lists_by_their_schema() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    k.apply(&["apply", "-f", "-"], LISTS_CRD);
    wait_for("the CRD", || established(&k, "routers.lists.example.com"));
    let obj = |spec: &str| {
        format!(
            "apiVersion: lists.example.com/v1\nkind: Router\nmetadata: {{name: r, namespace: default}}\nspec: {spec}\n"
        )
    };
    k.apply(
        &["apply", "--server-side", "--field-manager=alpha", "-f", "-"],
        &obj("{routes: [{name: a, port: 80, weight: 1}], tags: [t1], hops: [h1]}"),
    );
    // Another manager's items of the list-map and the set join alpha's.
    k.apply(
        &["apply", "--server-side", "--field-manager=beta", "-f", "-"],
        &obj("{routes: [{name: a, port: 81}], tags: [t2]}"),
    );
    let spec: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "router", "r", "-o", "jsonpath={.spec}"])).unwrap();
    assert_eq!(
        spec["routes"],
        serde_json::json!([{"name": "a", "port": 80, "weight": 1}, {"name": "a", "port": 81}]),
        "{spec}"
    );
    assert_eq!(spec["tags"], serde_json::json!(["t1", "t2"]), "{spec}");
    // An atomic list belongs to one manager: beta taking it conflicts.
    let out = k.fails(
        &["apply", "--server-side", "--field-manager=beta", "-f", "-"],
        Some(&obj(
            "{routes: [{name: a, port: 81}], tags: [t2], hops: [h2]}",
        )),
    );
    assert!(
        out.contains("conflict with \"alpha\"") && out.contains(".spec.hops"),
        "{out}"
    );
    // So does an atomic map.
    k.apply(
        &["apply", "--server-side", "--field-manager=alpha", "-f", "-"],
        &obj("{routes: [{name: a, port: 80, weight: 1}], tags: [t1], hops: [h1], selector: {app: web}}"),
    );
    let out = k.fails(
        &["apply", "--server-side", "--field-manager=beta", "-f", "-"],
        Some(&obj(
            "{routes: [{name: a, port: 81}], tags: [t2], selector: {tier: front}}",
        )),
    );
    assert!(
        out.contains("conflict with \"alpha\"") && out.contains(".spec.selector"),
        "{out}"
    );
    // A strategic merge patch has no strategies to go by on a custom kind.
    let out = k.fails(
        &["patch", "router", "r", "-p", r#"{"spec":{"tags":["z"]}}"#],
        None,
    );
    assert!(
        out.contains("the body of the request was in an unknown format"),
        "{out}"
    );
}
