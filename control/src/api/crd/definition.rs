//! The rules of the CustomResourceDefinition kind itself: defaults,
//! validation (names, versions, structural schemas, as
//! apiextensions-apiserver's `ValidateCustomResourceDefinition` words
//! them), and the pure decision of which names each CRD is served under
//! and what its `status` says, with its conversion (`None`, or a
//! `Webhook` validated as apiextensions-apiserver validates it; the calls
//! are in [`super::conversion`]).

use std::collections::{BTreeMap, BTreeSet};

use rudder_k8s::{
    field::Path,
    names::{DNS_LABEL_MSG, DNS_SUBDOMAIN_MSG, is_dns_label, is_dns_subdomain},
};
use serde_json::{Value, json};

use super::Names;
use crate::api::status::Cause;

/// The finalizer that deletes a CRD's objects before the CRD goes.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The annotation `*.k8s.io` and `*.kubernetes.io` groups need.
const APPROVAL: &str = "api-approved.kubernetes.io";

/// `SetDefaults_CustomResourceDefinition`: singular and list kind names,
/// the conversion strategy.
pub fn apply_defaults(crd: &mut Value) {
    let Some(spec) = crd.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if names
            .get("singular")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            names.insert("singular".into(), json!(kind.to_lowercase()));
        }
        if !kind.is_empty()
            && names
                .get("listKind")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            names.insert("listKind".into(), json!(format!("{kind}List")));
        }
    }
    if spec.get("conversion").is_none_or(Value::is_null) {
        spec["conversion"] = json!({"strategy": "None"});
    }
    if let Some(svc) = spec
        .pointer_mut("/conversion/webhook/clientConfig/service")
        .and_then(Value::as_object_mut)
    {
        svc.entry("port").or_insert_with(|| json!(443));
    }
}

/// The `ConversionReview` versions the apiserver speaks, in its order of
/// preference.
pub const CONVERSION_REVIEW_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// `validateCustomResourceConversion`, its paths as upstream's (the
/// internal type's: `webhookClientConfig`, `conversionReviewVersions`).
fn validate_conversion(conversion: &Value, causes: &mut Vec<Cause>) {
    let p = Path::new("spec.conversion");
    let webhook = conversion.get("webhook").filter(|w| !w.is_null());
    let client = webhook
        .and_then(|w| w.get("clientConfig"))
        .filter(|c| !c.is_null());
    let versions = webhook.and_then(|w| w["conversionReviewVersions"].as_array());
    match conversion["strategy"].as_str() {
        None | Some("None") => {
            if client.is_some() {
                causes.push(Cause::forbidden(
                    p.child("webhookClientConfig").to_string(),
                    "should not be set when strategy is not set to Webhook",
                ));
            }
            if versions.is_some_and(|v| !v.is_empty()) {
                causes.push(Cause::forbidden(
                    p.child("conversionReviewVersions").to_string(),
                    "should not be set when strategy is not set to Webhook",
                ));
            }
        }
        Some("Webhook") => {
            match client {
                None => causes.push(Cause::required_because(
                    p.child("webhookClientConfig").as_str(),
                    "required when strategy is set to Webhook",
                )),
                Some(c) => crate::api::webhook::config::validate_client(
                    c,
                    &p.child("webhookClientConfig"),
                    causes,
                ),
            }
            validate_review_versions(versions.map(Vec::as_slice).unwrap_or_default(), causes);
        }
        Some(s) => causes.push(Cause::not_supported(
            p.child("strategy").as_str(),
            &json!(s),
            &["None", "Webhook"],
        )),
    }
}

/// `validateConversionReviewVersions`.
fn validate_review_versions(versions: &[Value], causes: &mut Vec<Cause>) {
    let p = Path::new("spec.conversion.conversionReviewVersions");
    let wanted = || {
        format!(
            "must include at least one of {}",
            CONVERSION_REVIEW_VERSIONS.join(", ")
        )
    };
    if versions.is_empty() {
        causes.push(Cause::required_because(p.as_str(), &wanted()));
        return;
    }
    let mut seen = BTreeSet::new();
    for (i, v) in versions.iter().enumerate() {
        let s = v.as_str().unwrap_or("");
        if !seen.insert(s) {
            causes.push(Cause::invalid(p.index(i), v, "duplicate version"));
        } else if !is_dns1035(s) {
            causes.push(Cause::invalid(p.index(i), v, DNS1035_MSG));
        }
    }
    if !versions
        .iter()
        .any(|v| CONVERSION_REVIEW_VERSIONS.contains(&v.as_str().unwrap_or("")))
    {
        causes.push(Cause::invalid(p.as_str(), &json!(versions), wanted()));
    }
}

/// What a name that is not a DNS-1035 label is told.
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// `DNS-1035`: a label starting with a letter (version names).
fn is_dns1035(s: &str) -> bool {
    is_dns_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Validates a CRD on create and update; `builtin_groups` are the groups
/// the apiserver serves itself (a CRD may not take one).
pub fn validate(crd: &Value, builtin_groups: &[&str], causes: &mut Vec<Cause>) {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let names = Names::from_json(&spec["names"]);
    let name = crd["metadata"]["name"].as_str().unwrap_or("");
    if !names.plural.is_empty() && !group.is_empty() && name != format!("{}.{group}", names.plural)
    {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        causes.push(Cause::required("spec.group"));
    } else if !group.contains('.') {
        causes.push(Cause::invalid(
            "spec.group",
            &json!(group),
            "should be a domain with at least one dot",
        ));
    } else if !is_dns_subdomain(group) {
        causes.push(Cause::invalid(
            "spec.group",
            &json!(group),
            DNS_SUBDOMAIN_MSG,
        ));
    } else if builtin_groups.contains(&group) {
        causes.push(Cause::forbidden(
            "spec.group",
            format!("{group} is served by the apiserver itself"),
        ));
    } else if is_protected(group)
        && crd
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(APPROVAL))
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        causes.push(Cause::required_because(
            format!("metadata.annotations[{APPROVAL}]"),
            &format!("protected groups must have approval annotation {APPROVAL:?}, see https://github.com/kubernetes/enhancements/pull/1111"),
        ));
    }
    validate_names(&names, &spec["names"], causes);
    match spec["scope"].as_str() {
        Some("Cluster" | "Namespaced") => {}
        None | Some("") => causes.push(Cause::required("spec.scope")),
        Some(s) => causes.push(Cause::not_supported(
            "spec.scope",
            &json!(s),
            &["Cluster", "Namespaced"],
        )),
    }
    validate_conversion(&spec["conversion"], causes);
    validate_versions(spec, causes);
}

fn is_protected(group: &str) -> bool {
    ["k8s.io", "kubernetes.io"]
        .iter()
        .any(|p| group == *p || group.ends_with(&format!(".{p}")))
}

fn validate_names(names: &Names, raw: &Value, causes: &mut Vec<Cause>) {
    if names.plural.is_empty() {
        causes.push(Cause::required("spec.names.plural"));
    } else if !is_dns_label(&names.plural) {
        causes.push(Cause::invalid(
            "spec.names.plural",
            &json!(names.plural),
            DNS_LABEL_MSG,
        ));
    }
    if !is_dns_label(&names.singular) && !names.singular.is_empty() {
        causes.push(Cause::invalid(
            "spec.names.singular",
            &json!(names.singular),
            DNS_LABEL_MSG,
        ));
    }
    for (field, v) in [("kind", &names.kind), ("listKind", &names.list_kind)] {
        if v.is_empty() {
            causes.push(Cause::required(format!("spec.names.{field}")));
        } else if !is_dns_label(&v.to_lowercase()) {
            causes.push(Cause::invalid(
                format!("spec.names.{field}"),
                &json!(v),
                "may have mixed case, but should otherwise match: [a-z0-9]([-a-z0-9]*[a-z0-9])?",
            ));
        }
    }
    if !names.kind.is_empty() && names.kind == names.list_kind {
        causes.push(Cause::invalid(
            "spec.names.listKind",
            &json!(names.list_kind),
            "kind and listKind may not be the same",
        ));
    }
    let _ = raw;
    for (i, s) in names.short_names.iter().enumerate() {
        if !is_dns_label(s) {
            causes.push(Cause::invalid(
                Path::new("spec.names.shortNames").index(i),
                &json!(s),
                DNS_LABEL_MSG,
            ));
        }
    }
    for (i, s) in names.categories.iter().enumerate() {
        if !is_dns_label(s) {
            causes.push(Cause::invalid(
                Path::new("spec.names.categories").index(i),
                &json!(s),
                DNS_LABEL_MSG,
            ));
        }
    }
}

fn validate_versions(spec: &Value, causes: &mut Vec<Cause>) {
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::invalid(
            "spec.versions",
            &Value::Null,
            "must have exactly one version marked as storage version",
        ));
        causes.push(Cause::required("spec.versions"));
        return;
    }
    let storage = versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count();
    if storage != 1 {
        causes.push(Cause::invalid(
            "spec.versions",
            &json!(versions),
            "must have exactly one version marked as storage version",
        ));
    }
    if !versions.iter().any(|v| v["served"].as_bool() == Some(true)) {
        causes.push(Cause::invalid(
            "spec.versions",
            &json!(versions),
            "must have at least one version marked as served",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, v) in versions.iter().enumerate() {
        let p = Path::new("spec.versions").index(i);
        let name = v["name"].as_str().unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(p.child("name")));
        } else if !is_dns1035(name) {
            causes.push(Cause::invalid(p.child("name"), &json!(name), DNS1035_MSG));
        } else if !seen.insert(name) {
            causes.push(Cause::duplicate(p.child("name"), &json!(name)));
        }
        match v.pointer("/schema/openAPIV3Schema") {
            None | Some(Value::Null) => causes.push(Cause::required_because(
                p.child("schema").child("openAPIV3Schema"),
                "schemas are required",
            )),
            Some(s) => {
                let sp = p.child("schema").child("openAPIV3Schema");
                structural(s, &sp, Level::Root, 0, causes);
                if causes.is_empty() {
                    check_defaults(s, &sp, causes);
                }
            }
        }
        if let Some(scale) = v.pointer("/subresources/scale").filter(|s| !s.is_null()) {
            let sp = p.child("subresources").child("scale");
            for (field, prefixes, required) in [
                ("specReplicasPath", &[".spec."][..], true),
                ("statusReplicasPath", &[".status."][..], true),
                ("labelSelectorPath", &[".spec.", ".status."][..], false),
            ] {
                match scale[field].as_str() {
                    None | Some("") if required => causes.push(Cause::required(sp.child(field))),
                    None | Some("") => {}
                    Some(path)
                        if !prefixes.iter().any(|p| path.starts_with(p)) || path.contains('[') =>
                    {
                        causes.push(Cause::invalid(
                            sp.child(field),
                            &json!(path),
                            format!(
                                "should be a json path under {}",
                                prefixes
                                    .iter()
                                    .map(|p| p.trim_end_matches('.'))
                                    .collect::<Vec<_>>()
                                    .join(" or ")
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        for (j, c) in v["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cp = p.child("additionalPrinterColumns").index(j);
            if c["name"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(cp.child("name")));
            }
            match c["type"].as_str() {
                Some("integer" | "number" | "string" | "boolean" | "date") => {}
                None | Some("") => causes.push(Cause::required(cp.child("type"))),
                Some(t) => causes.push(Cause::not_supported(
                    cp.child("type"),
                    &json!(t),
                    &["integer", "number", "string", "boolean", "date"],
                )),
            }
            if c["jsonPath"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(cp.child("jsonPath")));
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    /// Under `properties`, `items` or `additionalProperties`.
    Field,
    /// Inside `allOf`, `anyOf`, `oneOf` or `not`.
    Junctor,
}

const TYPES: &[&str] = &["object", "array", "string", "integer", "number", "boolean"];
const UNSUPPORTED: &[&str] = &[
    "$ref",
    "$schema",
    "id",
    "definitions",
    "dependencies",
    "additionalItems",
    "patternProperties",
];

/// The rules on a node's `type`: known, present outside junctors (unless
/// the node is open), absent inside them, `object` at the root.
fn node_type(
    m: &serde_json::Map<String, Value>,
    ty: &str,
    p: &Path,
    level: Level,
    causes: &mut Vec<Cause>,
) {
    let flag = |k: &str| m.get(k).and_then(Value::as_bool).unwrap_or(false);
    if !ty.is_empty() && !TYPES.contains(&ty) {
        causes.push(Cause::not_supported(p.child("type"), &json!(ty), TYPES));
    }
    match level {
        Level::Junctor => {
            for k in [
                "type",
                "default",
                "nullable",
                "additionalProperties",
                "x-kubernetes-preserve-unknown-fields",
                "x-kubernetes-embedded-resource",
                "x-kubernetes-int-or-string",
            ] {
                if m.contains_key(k) {
                    causes.push(Cause::forbidden(
                        p.child(k),
                        "must be empty to be structural",
                    ));
                }
            }
        }
        Level::Root | Level::Field => {
            let exempt =
                flag("x-kubernetes-int-or-string") || flag("x-kubernetes-preserve-unknown-fields");
            if ty.is_empty() && !exempt {
                let why = if level == Level::Root {
                    "must not be empty at the root"
                } else {
                    "must not be empty for specified object fields"
                };
                causes.push(Cause::required_because(p.child("type"), why));
            }
            if level == Level::Root && !ty.is_empty() && ty != "object" {
                causes.push(Cause::invalid(
                    p.child("type"),
                    &json!(ty),
                    "must be object at the root",
                ));
            }
        }
    }
}

/// The structural-schema rules, with apiextensions' messages.
fn structural(s: &Value, p: &Path, level: Level, depth: usize, causes: &mut Vec<Cause>) {
    if depth > 64 {
        causes.push(Cause::forbidden(p.as_str(), "the schema nests too deeply"));
        return;
    }
    let Some(m) = s.as_object() else {
        causes.push(Cause::invalid(p.as_str(), s, "must be an object"));
        return;
    };
    for k in UNSUPPORTED {
        if m.contains_key(*k) {
            causes.push(Cause::forbidden(
                p.child(k),
                format!("{k} is not supported"),
            ));
        }
    }
    let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
    node_type(m, ty, p, level, causes);
    if m.contains_key("properties") && m.contains_key("additionalProperties") {
        causes.push(Cause::forbidden(
            p.child("additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if let Some(pat) = m.get("pattern").and_then(Value::as_str)
        && let Err(e) = regex::Regex::new(pat)
    {
        causes.push(Cause::invalid(
            p.child("pattern"),
            &json!(pat),
            format!("must be a valid regular expression, but isn't: {e}"),
        ));
    }
    if let Some(rules) = m.get("x-kubernetes-validations").and_then(Value::as_array)
        && let Err((i, field, e)) = super::cel::compile(rules)
    {
        let at = p.child("x-kubernetes-validations").index(i).child(&field);
        let shown = rules[i].get(field.as_str()).cloned().unwrap_or(Value::Null);
        causes.push(Cause::invalid(at, &shown, e));
    }
    if let Some(lt) = m.get("x-kubernetes-list-type").and_then(Value::as_str) {
        if !matches!(lt, "atomic" | "set" | "map") {
            causes.push(Cause::not_supported(
                p.child("x-kubernetes-list-type"),
                &json!(lt),
                &["atomic", "set", "map"],
            ));
        }
        if lt == "map"
            && m.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
        {
            causes.push(Cause::required_because(
                p.child("x-kubernetes-list-map-keys"),
                "must not be empty if x-kubernetes-list-type is map",
            ));
        }
    }
    if level == Level::Root
        && let Some(meta) = m.get("properties").and_then(|p| p.get("metadata"))
        && meta
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|props| props.keys().any(|k| k != "name" && k != "generateName"))
    {
        causes.push(Cause::forbidden(
            p.child("properties").key("metadata"),
            "must not specify anything other than name and generateName, but metadata is implicitly specified",
        ));
    }
    let child_level = if level == Level::Junctor {
        Level::Junctor
    } else {
        Level::Field
    };
    for (k, sub) in m
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if level == Level::Root && k == "metadata" {
            continue;
        }
        structural(
            sub,
            &p.child("properties").key(k),
            child_level,
            depth + 1,
            causes,
        );
    }
    match m.get("items") {
        Some(Value::Array(_)) => causes.push(Cause::forbidden(
            p.child("items"),
            "items must be a schema object and not an array",
        )),
        Some(sub) => structural(sub, &p.child("items"), child_level, depth + 1, causes),
        None if ty == "array" && level != Level::Junctor => causes.push(Cause::required_because(
            p.child("items"),
            "must be specified",
        )),
        None => {}
    }
    if let Some(sub @ Value::Object(_)) = m.get("additionalProperties") {
        structural(
            sub,
            &p.child("additionalProperties"),
            child_level,
            depth + 1,
            causes,
        );
    }
    for j in ["allOf", "anyOf", "oneOf"] {
        for (i, sub) in m
            .get(j)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            structural(sub, &p.child(j).index(i), Level::Junctor, depth + 1, causes);
        }
    }
    if let Some(sub) = m.get("not") {
        structural(sub, &p.child("not"), Level::Junctor, depth + 1, causes);
    }
}

/// Every `default` must itself validate against its schema.
fn check_defaults(s: &Value, p: &Path, causes: &mut Vec<Cause>) {
    let Some(m) = s.as_object() else { return };
    if let Some(d) = m.get("default") {
        match super::schema::Schema::compile(s) {
            Ok(compiled) => {
                let mut errs = Vec::new();
                compiled.validate(d, &p.child("default"), &mut errs);
                causes.extend(errs);
            }
            Err(e) => causes.push(Cause::invalid(p.as_str(), &Value::from(""), e)),
        }
    }
    for (k, sub) in m
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        check_defaults(sub, &p.child("properties").key(k), causes);
    }
    if let Some(sub) = m.get("items") {
        check_defaults(sub, &p.child("items"), causes);
    }
    if let Some(sub @ Value::Object(_)) = m.get("additionalProperties") {
        check_defaults(sub, &p.child("additionalProperties"), causes);
    }
}

/// Checks on an update beyond those of a create.
pub fn validate_update(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    let (o, n) = (&old["spec"]["scope"], &new["spec"]["scope"]);
    if o != n {
        causes.push(Cause::invalid("spec.scope", n, "field is immutable"));
    }
    // A version objects are stored in may not go while objects may still
    // be stored in it (status.storedVersions).
    let names: BTreeSet<&str> = new["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for sv in old
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !names.contains(sv) {
            causes.push(Cause::invalid(
                "status.storedVersions",
                &json!(sv),
                "must appear in spec.versions",
            ));
        }
    }
}

/// A new CRD's status, as kube-apiserver's strategy makes it: no names
/// accepted yet, the storage version recorded (clients decode
/// `acceptedNames` and `storedVersions` as required fields).
pub fn initial_status(crd: &mut Value) {
    let storage: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .take(1)
        .collect();
    crd["status"] = json!({"acceptedNames": {"plural": "", "kind": ""}, "storedVersions": storage});
}

/// What the controller decided for one CRD.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub name: String,
    /// The names served under; none while they conflict.
    pub accepted: Option<Names>,
    pub terminating: bool,
    /// The whole `status` the CRD should have.
    pub status: Value,
}

/// Decides names and status for every CRD, given with the store revision
/// that created it: within a group the older CRD keeps a name, and a CRD
/// whose names conflict is not established.
pub fn plan(crds: &[(Value, i64)], now: &str) -> Vec<Decision> {
    let mut order: Vec<&(Value, i64)> = crds.iter().collect();
    order.sort_by_key(|(_, created)| *created);
    let mut taken: BTreeMap<String, BTreeMap<String, &'static str>> = BTreeMap::new();
    let mut out = Vec::new();
    for (crd, _) in order {
        let group = crd["spec"]["group"].as_str().unwrap_or("").to_owned();
        let names = Names::from_json(&crd["spec"]["names"]);
        let used = taken.entry(group).or_default();
        let conflict = conflict(&names, used);
        if conflict.is_none() {
            for (n, what) in name_list(&names) {
                used.insert(n, what);
            }
        }
        let terminating = crd.pointer("/metadata/deletionTimestamp").is_some();
        let status = status_of(crd, conflict.as_ref(), &names, terminating, now);
        out.push(Decision {
            name: crd["metadata"]["name"].as_str().unwrap_or("").to_owned(),
            accepted: conflict.is_none().then_some(names),
            terminating,
            status,
        });
    }
    out
}

fn name_list(n: &Names) -> Vec<(String, &'static str)> {
    let mut v = vec![
        (n.plural.clone(), "PluralConflict"),
        (n.singular.clone(), "SingularConflict"),
        (n.kind.clone(), "KindConflict"),
        (n.list_kind.clone(), "ListKindConflict"),
    ];
    v.extend(
        n.short_names
            .iter()
            .map(|s| (s.clone(), "ShortNamesConflict")),
    );
    v
}

/// The first name of `n` another CRD of the group holds: (reason, message).
fn conflict(n: &Names, used: &BTreeMap<String, &'static str>) -> Option<(String, String)> {
    name_list(n)
        .into_iter()
        .find(|(name, _)| used.contains_key(name))
        .map(|(name, reason)| (reason.to_owned(), format!("{name:?} is already in use")))
}

fn condition(old: &Value, ty: &str, status: bool, reason: &str, message: &str, now: &str) -> Value {
    let s = if status { "True" } else { "False" };
    let prev = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == ty);
    let since = prev
        .filter(|c| c["status"] == s)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or(now);
    json!({"type": ty, "status": s, "lastTransitionTime": since, "reason": reason, "message": message})
}

fn status_of(
    crd: &Value,
    conflict: Option<&(String, String)>,
    names: &Names,
    terminating: bool,
    now: &str,
) -> Value {
    let mut conditions = vec![match conflict {
        None => condition(
            crd,
            "NamesAccepted",
            true,
            "NoConflicts",
            "no conflicts found",
            now,
        ),
        Some((reason, msg)) => condition(crd, "NamesAccepted", false, reason, msg, now),
    }];
    conditions.push(match conflict {
        None => condition(
            crd,
            "Established",
            true,
            "InitialNamesAccepted",
            "the initial names have been accepted",
            now,
        ),
        Some(_) => condition(
            crd,
            "Established",
            false,
            "NotAccepted",
            "not all names are accepted",
            now,
        ),
    });
    if terminating {
        conditions.push(condition(
            crd,
            "Terminating",
            true,
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
            now,
        ));
    }
    let accepted = match conflict {
        None => names.to_json(),
        Some(_) => crd
            .pointer("/status/acceptedNames")
            .cloned()
            .unwrap_or_else(|| json!({"plural": "", "kind": ""})),
    };
    let mut stored: Vec<String> = crd
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if let Some(sv) = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["storage"].as_bool() == Some(true))
        .and_then(|v| v["name"].as_str())
        && !stored.iter().any(|s| s == sv)
    {
        stored.push(sv.to_owned());
    }
    json!({"conditions": conditions, "acceptedNames": accepted, "storedVersions": stored})
}

#[cfg(test)]
mod tests;
