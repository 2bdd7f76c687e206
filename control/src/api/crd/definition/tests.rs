//! Tables for the CRD kind's rules: what is refused with which cause, and
//! how names are shared out.

use serde_json::{Value, json};

use super::*;

fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "replicas": {"type": "integer", "default": 1, "minimum": 0},
                        "ports": {"type": "array", "items": {"type": "integer"}}}}}}}}]}
    })
}

fn causes_of(c: &Value) -> Vec<String> {
    let mut c = c.clone();
    apply_defaults(&mut c);
    let mut out = Vec::new();
    validate(&c, &["apps", "networking.k8s.io"], &mut out);
    out.iter().map(ToString::to_string).collect()
}

#[test]
fn a_good_crd_passes_and_gets_its_defaults() {
    let mut c = crd();
    apply_defaults(&mut c);
    assert_eq!(c["spec"]["names"]["singular"], "widget");
    assert_eq!(c["spec"]["names"]["listKind"], "WidgetList");
    assert_eq!(c["spec"]["conversion"]["strategy"], "None");
    assert_eq!(causes_of(&crd()), Vec::<String>::new());
}

#[test]
fn bad_crds_get_apiextensions_causes() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/metadata/name",
            json!("other.example.com"),
            "metadata.name: Invalid value: \"other.example.com\": must be spec.names.plural+\".\"+spec.group",
        ),
        (
            "/spec/group",
            json!("example"),
            "spec.group: Invalid value: \"example\": should be a domain with at least one dot",
        ),
        (
            "/spec/scope",
            json!("Global"),
            "spec.scope: Unsupported value: \"Global\": supported values: \"Cluster\", \"Namespaced\"",
        ),
        (
            "/spec/versions/0/storage",
            json!(false),
            "must have exactly one version marked as storage version",
        ),
        (
            "/spec/versions/0/schema",
            json!(null),
            "spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required",
        ),
        (
            "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/replicas/type",
            json!(null),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[replicas].type: Required value: must not be empty for specified object fields",
        ),
        (
            "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/replicas/default",
            json!("three"),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[replicas].default: Invalid value: \"string\"",
        ),
        (
            "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/replicas/pattern",
            json!("(["),
            "must be a valid regular expression",
        ),
        (
            "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/ports/items",
            json!([{"type": "integer"}]),
            "items must be a schema object and not an array",
        ),
        (
            "/spec/versions/0/schema/openAPIV3Schema/properties/spec/additionalProperties",
            json!({"type": "string"}),
            "additionalProperties and properties are mutual exclusive",
        ),
        (
            "/spec/conversion",
            json!({"strategy": "Webhook"}),
            "spec.conversion.webhookClientConfig: Required value: required when strategy is set to Webhook",
        ),
        (
            "/spec/conversion",
            json!({"strategy": "Webhook", "webhook": {"clientConfig": {"url": "https://h/c"}, "conversionReviewVersions": ["v1", "v1"]}}),
            "spec.conversion.conversionReviewVersions[1]: Invalid value: \"v1\": duplicate version",
        ),
        (
            "/spec/conversion",
            json!({"strategy": "Webhook", "webhook": {"clientConfig": {"url": "http://h/c"}, "conversionReviewVersions": ["v1"]}}),
            "spec.conversion.webhookClientConfig.url: Invalid value: \"http://h/c\": 'https' is the only allowed URL scheme",
        ),
        (
            "/spec/conversion",
            json!({"strategy": "Sometimes"}),
            "spec.conversion.strategy: Unsupported value: \"Sometimes\": supported values: \"None\", \"Webhook\"",
        ),
        (
            "/spec/names/plural",
            json!("Widgets"),
            "spec.names.plural: Invalid value: \"Widgets\": a lowercase RFC 1123 label",
        ),
        (
            "/spec/names/kind",
            json!(""),
            "spec.names.kind: Required value",
        ),
    ];
    for (ptr, v, want) in cases {
        let mut c = crd();
        let (parent, last) = ptr.rsplit_once('/').expect("a pointer");
        c.pointer_mut(parent).unwrap_or_else(|| panic!("{ptr}"))[last] = v;
        let got = causes_of(&c);
        assert!(
            got.iter().any(|g| g.contains(want)),
            "{ptr}: {got:?} lacks {want:?}"
        );
    }
}

#[test]
fn protected_and_builtin_groups_are_refused() {
    let mut c = crd();
    c["metadata"]["name"] = json!("widgets.apps");
    c["spec"]["group"] = json!("apps");
    assert!(
        causes_of(&c)
            .iter()
            .any(|g| g.contains("should be a domain"))
    );
    c["metadata"]["name"] = json!("widgets.networking.k8s.io");
    c["spec"]["group"] = json!("networking.k8s.io");
    assert!(
        causes_of(&c)
            .iter()
            .any(|g| g.contains("served by the apiserver itself"))
    );
    c["metadata"]["name"] = json!("widgets.x.k8s.io");
    c["spec"]["group"] = json!("x.k8s.io");
    assert!(causes_of(&c).iter().any(|g| {
        g.starts_with("metadata.annotations[api-approved.kubernetes.io]: Required value")
    }));
    c["metadata"]["annotations"] = json!({"api-approved.kubernetes.io": "https://github.com/kubernetes/enhancements/pull/1111"});
    assert_eq!(causes_of(&c), Vec::<String>::new());
}

#[test]
fn scope_and_stored_versions_hold_on_update() {
    let old = json!({"spec": {"scope": "Namespaced", "versions": [{"name": "v1"}]},
        "status": {"storedVersions": ["v1"]}});
    let new = json!({"spec": {"scope": "Cluster", "versions": [{"name": "v2"}]}});
    let mut causes = Vec::new();
    validate_update(&old, &new, &mut causes);
    let text: Vec<String> = causes.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|t| t.starts_with("spec.scope: Invalid value: \"Cluster\": field is immutable"))
    );
    assert!(text.iter().any(|t| t.contains("status.storedVersions")));
}

#[test]
fn the_older_crd_keeps_a_name_and_the_newer_is_not_established() {
    let mut a = crd();
    a["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    let mut b = crd();
    b["metadata"]["name"] = json!("gadgets.example.com");
    b["metadata"]["creationTimestamp"] = json!("2026-01-02T00:00:00Z");
    b["spec"]["names"] = json!({"plural": "gadgets", "kind": "Gadget", "shortNames": ["wd"]});
    let mut other_group = b.clone();
    other_group["metadata"]["name"] = json!("gadgets.other.io");
    other_group["spec"]["group"] = json!("other.io");
    let d = plan(
        &[(b, 20), (a, 10), (other_group, 30)],
        "2026-01-03T00:00:00Z",
    );
    assert_eq!(d[0].name, "widgets.example.com");
    assert!(d[0].accepted.is_some());
    let cond = |d: &Decision, ty: &str| {
        d.status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == ty)
            .cloned()
            .unwrap()
    };
    assert_eq!(cond(&d[0], "Established")["status"], "True");
    assert_eq!(cond(&d[0], "NamesAccepted")["reason"], "NoConflicts");
    assert_eq!(d[0].status["storedVersions"], json!(["v1"]));
    assert_eq!(d[0].status["acceptedNames"]["listKind"], "WidgetList");
    assert_eq!(d[1].name, "gadgets.example.com");
    assert!(d[1].accepted.is_none());
    assert_eq!(cond(&d[1], "NamesAccepted")["reason"], "ShortNamesConflict");
    assert_eq!(
        cond(&d[1], "NamesAccepted")["message"],
        "\"wd\" is already in use"
    );
    assert_eq!(cond(&d[1], "Established")["status"], "False");
    // Names are shared out per group.
    assert!(d[2].accepted.is_some());
}

#[test]
fn transition_times_stay_while_a_condition_holds() {
    let mut a = crd();
    let first = plan(&[(a.clone(), 1)], "2026-01-01T00:00:00Z");
    a["status"] = first[0].status.clone();
    a["metadata"]["deletionTimestamp"] = json!("2026-01-02T00:00:00Z");
    let second = plan(&[(a, 1)], "2026-01-02T00:00:00Z");
    let conds = second[0].status["conditions"].as_array().unwrap();
    assert_eq!(conds[0]["lastTransitionTime"], "2026-01-01T00:00:00Z");
    assert_eq!(conds[2]["type"], "Terminating");
    assert_eq!(conds[2]["lastTransitionTime"], "2026-01-02T00:00:00Z");
    assert!(second[0].terminating);
}
