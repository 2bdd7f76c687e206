//! The OpenAPI v3 schemas of custom kinds, as kube-apiserver publishes
//! them under `/openapi/v3/apis/<group>/<version>`: each kind's structural
//! schema with `apiVersion`, `kind` and `metadata` (an `ObjectMeta`
//! reference) added, its list kind, and the
//! `x-kubernetes-group-version-kind` that `kubectl explain` finds them by.
//! Schema names reverse the group as upstream's builder does
//! (`com.example.stable.v1.CronTab`).

use serde_json::{Map, Value, json};

/// `stable.example.com`, `v1`, `CronTab` → `com.example.stable.v1.CronTab`.
pub fn schema_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// The custom kinds' schemas of one group-version, with the metadata
/// schemas they reference; empty when it serves none.
pub fn components(group: &str, version: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for v in super::served().iter() {
        let r = v.resource;
        if r.group != group || r.version != version {
            continue;
        }
        let Some(crd) = v.source.as_ref() else {
            continue;
        };
        let mut schema = crd.clone();
        if !schema.is_object() {
            schema = json!({"type": "object"});
        }
        let props = schema
            .as_object_mut()
            .expect("an object")
            .entry("properties")
            .or_insert_with(|| json!({}));
        if let Some(p) = props.as_object_mut() {
            p.insert("apiVersion".into(), json!({"type": "string",
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}));
            p.insert("kind".into(), json!({"type": "string",
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}));
            p.insert("metadata".into(), json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}],
                "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}));
        }
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": group, "version": version, "kind": r.kind}]);
        let name = schema_name(group, version, r.kind);
        out.insert(
            schema_name(group, version, &v.list_kind),
            json!({"type": "object", "required": ["items"],
                "description": format!("{} is a list of {}", v.list_kind, r.kind),
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}},
                    "metadata": {"allOf": [{"$ref": format!("#/components/schemas/{LIST_META}")}]}},
                "x-kubernetes-group-version-kind": [{"group": group, "version": version, "kind": v.list_kind}]}),
        );
        out.insert(name, schema);
    }
    if !out.is_empty() {
        out.extend(crate::api::openapi::with_references(vec![
            OBJECT_META.into(),
            LIST_META.into(),
            "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(),
        ]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reverse_the_group() {
        assert_eq!(
            schema_name("stable.example.com", "v1", "CronTab"),
            "com.example.stable.v1.CronTab"
        );
    }
}
