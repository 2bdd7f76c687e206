//! Validation, pruning and defaulting tables, with the messages
//! kube-apiserver gives for each keyword.

use serde_json::{Value, json};

use super::*;

fn schema() -> Schema {
    Schema::compile(&json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "minLength": 1, "maxLength": 20, "pattern": "^[a-z:0-9.]+$"},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1, "format": "int32"},
            "ratio": {"type": "number", "exclusiveMinimum": true, "minimum": 0, "multipleOf": 0.5},
            "size": {"type": "string", "enum": ["small", "large"]},
            "tags": {"type": "array", "maxItems": 3, "minItems": 1, "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer", "default": 80}}}},
            "port": {"x-kubernetes-int-or-string": true},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 2},
            "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "template": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true},
            "when": {"type": "string", "format": "date-time"},
            "note": {"type": "string", "nullable": true},
            "either": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                "oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
            "notEmpty": {"type": "string", "not": {"enum": [""]}}}},
        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}))
    .expect("compiles")
}

fn errors(spec: &Value) -> Vec<String> {
    let s = schema();
    let mut obj = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec.clone()});
    s.prune_root(&mut obj);
    s.apply_defaults(&mut obj);
    s.validate_root(&obj)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_valid_object_has_no_errors() {
    assert_eq!(
        errors(
            &json!({"image": "nginx:1.27", "replicas": 3, "ratio": 1.5, "size": "small",
            "tags": ["a", "b"], "ports": [{"name": "http"}, {"name": "https", "port": 443}],
            "port": "http", "labels": {"a": "b"}, "raw": {"anything": [1, {"x": null}]},
            "template": {"apiVersion": "v1", "kind": "Pod", "spec": {}},
            "when": "2026-01-01T00:00:00Z", "note": null, "either": {"a": "x"}, "notEmpty": "x"})
        ),
        Vec::<String>::new()
    );
}

#[test]
fn each_keyword_refuses_with_kube_apiservers_message() {
    for (spec, want) in [
        (json!({}), "spec.image: Required value"),
        (
            json!({"image": 5}),
            "spec.image: Invalid value: \"integer\": spec.image in body must be of type string: \"integer\"",
        ),
        (
            json!({"image": ""}),
            "spec.image: Invalid value: \"\": spec.image in body should be at least 1 chars long",
        ),
        (
            json!({"image": "a".repeat(21)}),
            "spec.image: Too long: may not be more than 20 bytes",
        ),
        (
            json!({"image": "NGINX"}),
            "spec.image: Invalid value: \"NGINX\": spec.image in body should match '^[a-z:0-9.]+$'",
        ),
        (
            json!({"image": "x", "replicas": 0}),
            "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1",
        ),
        (
            json!({"image": "x", "replicas": 11}),
            "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
        ),
        (
            json!({"image": "x", "replicas": 1.5}),
            "spec.replicas: Invalid value: \"number\": spec.replicas in body must be of type integer: \"number\"",
        ),
        (
            json!({"image": "x", "replicas": 3_000_000_000_i64}),
            "spec.replicas in body should be less than or equal to 10",
        ),
        (
            json!({"image": "x", "ratio": 0}),
            "spec.ratio: Invalid value: 0: spec.ratio in body should be greater than 0",
        ),
        (
            json!({"image": "x", "ratio": 0.7}),
            "spec.ratio in body should be a multiple of 0.5",
        ),
        (
            json!({"image": "x", "size": "huge"}),
            "spec.size: Unsupported value: \"huge\": supported values: \"small\", \"large\"",
        ),
        (
            json!({"image": "x", "tags": ["a", "b", "c", "d"]}),
            "spec.tags: Too many: 4: must have at most 3 items",
        ),
        (
            json!({"image": "x", "tags": []}),
            "spec.tags: Invalid value: 0: spec.tags in body should have at least 1 items",
        ),
        (
            json!({"image": "x", "tags": ["a", "a"]}),
            "spec.tags[1]: Duplicate value: \"a\"",
        ),
        (
            json!({"image": "x", "ports": [{"name": "a"}, {"name": "a", "port": 1}]}),
            "spec.ports[1]: Duplicate value: {\"name\":\"a\"}",
        ),
        (
            json!({"image": "x", "port": true}),
            "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
        ),
        (
            json!({"image": "x", "labels": {"a": 1}}),
            "spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\"",
        ),
        (
            json!({"image": "x", "labels": {"a": "1", "b": "2", "c": "3"}}),
            "spec.labels: Too many: 3: must have at most 2 items",
        ),
        (
            json!({"image": "x", "template": {"spec": {}}}),
            "spec.template.apiVersion: Required value: must not be empty",
        ),
        (
            json!({"image": "x", "when": "tomorrow"}),
            "spec.when: Invalid value: \"tomorrow\": spec.when in body must be of type date-time: \"tomorrow\"",
        ),
        (
            json!({"image": "x", "size": null}),
            "spec.size: Invalid value: \"null\": spec.size in body must be of type string: \"null\"",
        ),
        (
            json!({"image": "x", "either": {"a": "1", "b": "2"}}),
            "spec.either in body must validate one and only one schema (oneOf)",
        ),
        (
            json!({"image": "x", "notEmpty": ""}),
            "spec.notEmpty in body must not validate the schema (not)",
        ),
    ] {
        let got = errors(&spec);
        assert!(
            got.iter().any(|g| g.contains(want)),
            "{spec}: {got:?} lacks {want:?}"
        );
    }
}

#[test]
fn unknown_fields_are_pruned_except_where_preserved() {
    let s = schema();
    let mut obj = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "labels": {"x": "y"}},
        "spec": {"image": "x", "extra": 1, "raw": {"kept": true},
                 "ports": [{"name": "a", "junk": 2}],
                 "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "whatever": 1}},
        "status": {"ready": true, "phase": "Running"},
        "top": 3});
    let mut unknown = s.prune_root(&mut obj);
    unknown.sort();
    assert_eq!(
        unknown,
        vec!["spec.extra", "spec.ports[0].junk", "status.phase", "top"]
    );
    assert_eq!(obj["spec"]["raw"], json!({"kept": true}));
    assert_eq!(obj["spec"]["template"]["whatever"], 1);
    assert_eq!(obj["metadata"]["labels"]["x"], "y");
    assert!(obj.get("top").is_none());
}

#[test]
fn defaults_fill_absent_fields_and_nulls_that_may_not_be_null() {
    let s = schema();
    let mut obj =
        json!({"spec": {"image": "x", "ports": [{"name": "a"}, {"name": "b", "port": 8080}]}});
    s.apply_defaults(&mut obj);
    assert_eq!(obj["spec"]["replicas"], 1);
    assert_eq!(obj["spec"]["ports"][0]["port"], 80);
    assert_eq!(obj["spec"]["ports"][1]["port"], 8080);
    let mut nulled = json!({"spec": {"image": "x", "replicas": null}});
    s.apply_defaults(&mut nulled);
    assert_eq!(nulled["spec"]["replicas"], 1);
}

#[test]
fn hostile_schemas_fail_to_compile_rather_than_crash() {
    let mut deep = json!({"type": "string"});
    for _ in 0..100 {
        deep = json!({"type": "object", "properties": {"a": deep}});
    }
    assert!(
        Schema::compile(&deep)
            .unwrap_err()
            .contains("nests more than")
    );
    assert!(Schema::compile(&json!({"type": "string", "pattern": "(["})).is_err());
}

#[test]
fn formats_are_checked_as_kube_openapi_checks_them() {
    for (f, good, bad) in [
        ("int-or-string", "x", None),
        ("date", "2026-02-28", Some("2026-02-30")),
        ("date-time", "2026-02-28T10:00:00+01:00", Some("2026-02-28")),
        ("uuid", "3f1c2a7e-0c1b-4e5f-9a2b-1c2d3e4f5a6b", Some("nope")),
        ("ipv4", "10.0.0.1", Some("10.0.0.256")),
        ("ipv6", "fd00::1", Some("10.0.0.1")),
        ("cidr", "10.0.0.0/8", Some("10.0.0.0/33")),
        ("mac", "aa:bb:cc:dd:ee:ff", Some("aa:bb")),
        ("hostname", "a.example.com", Some("-a.example.com")),
        ("duration", "1h30m", Some("forever")),
        ("byte", "aGVsbG8=", Some("!!")),
    ] {
        assert!(format_ok(f, good), "{f} {good}");
        if let Some(b) = bad {
            assert!(!format_ok(f, b), "{f} {b}");
        }
    }
}
