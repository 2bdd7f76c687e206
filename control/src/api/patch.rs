//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and
//! Kubernetes strategic merge patch (lists of objects merged by their merge
//! key, `$patch` directives), as kubectl and the Python client send them.

use serde_json::{Map, Value};

use super::{
    lists::{ListMerge, Shape, item_key},
    status::ApiError,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let ct = ct.split(';').next().unwrap_or("").trim();
        match ct {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// The most operations a JSON patch may have (kube-apiserver's limit).
pub const MAX_JSON_PATCH_OPS: usize = 10_000;
/// The most bytes a JSON patch's `copy` operations may copy in all (its
/// `AccumulatedCopySizeLimit`): a kilobyte of copies that each double the
/// object would otherwise grow it past any memory.
pub const MAX_COPIED: usize = super::object::MAX_BODY;

pub fn apply(current: &Value, patch_type: PatchType, body: &[u8]) -> Result<Value, ApiError> {
    let doc = match patch_type {
        PatchType::Json => json_patch(current, body)?,
        PatchType::Merge => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
            let mut doc = current.clone();
            json_patch::merge(&mut doc, &p);
            doc
        }
        PatchType::Strategic => {
            let p: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("invalid strategic merge patch: {e}"))
            })?;
            if !p.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be an object",
                ));
            }
            let custom = super::lists::custom_version(current);
            strategic_merge(current, &p, "", Shape::root(custom.as_ref()))
        }
        PatchType::Apply => {
            return Err(ApiError::bad_request(
                "apply patches go through server-side apply",
            ));
        }
    };
    // The result is decoded as the object's type next: anything but an
    // object with object metadata cannot be one.
    if !doc.is_object() || doc.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(ApiError::bad_request(
            "the patched object cannot be decoded: it is not an object with object metadata",
        ));
    }
    Ok(doc)
}

/// A JSON patch (RFC 6902), at most [`MAX_JSON_PATCH_OPS`] operations,
/// applied one by one with the bytes its `copy` operations copy counted
/// against [`MAX_COPIED`].
fn json_patch(current: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let ops: Vec<Value> = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    if ops.len() > MAX_JSON_PATCH_OPS {
        return Err(ApiError::too_large_message(format!(
            "The allowed number of operations in a JSON patch is {MAX_JSON_PATCH_OPS}, got {}",
            ops.len()
        )));
    }
    let mut doc = current.clone();
    let mut copied = 0usize;
    for op in ops {
        if op.get("op").and_then(Value::as_str) == Some("copy")
            && let Some(from) = op.get("from").and_then(Value::as_str)
        {
            copied += doc
                .pointer(from)
                .map_or(0, |v| size_within(v, MAX_COPIED + 1));
            if copied > MAX_COPIED {
                return Err(ApiError::new_unprocessable(format!(
                    "the server rejected our request due to an error in our request: the copy operations copy more than {MAX_COPIED} bytes"
                )));
            }
        }
        let one: json_patch::Patch = serde_json::from_value(Value::Array(vec![op]))
            .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
        json_patch::patch(&mut doc, &one).map_err(|e| {
            ApiError::new_unprocessable(format!(
                "the server rejected our request due to an error in our request: {e}"
            ))
        })?;
    }
    Ok(doc)
}

/// About how many bytes `v` takes as JSON, counting no further than
/// `limit`.
fn size_within(v: &Value, limit: usize) -> usize {
    fn walk(v: &Value, left: &mut usize) {
        if *left == 0 {
            return;
        }
        let own = match v {
            Value::String(s) => s.len() + 2,
            Value::Array(a) => {
                for x in a {
                    walk(x, left);
                }
                2
            }
            Value::Object(m) => {
                for (k, x) in m {
                    *left = left.saturating_sub(k.len() + 3);
                    walk(x, left);
                }
                2
            }
            _ => 8,
        };
        *left = left.saturating_sub(own);
    }
    let mut left = limit;
    walk(v, &mut left);
    limit - left
}

/// The merge key of a list field, by its name and contents, as the
/// Kubernetes types declare (`patchMergeKey`).
pub(crate) fn merge_key(field: &str, items: &[&Value]) -> Option<&'static str> {
    let has = |k: &str| items.iter().any(|i| i.get(k).is_some());
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "webhooks" => Some("name"),
        "ports" if has("containerPort") => Some("containerPort"),
        "ports" => Some("port"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "conditions" | "addresses" => Some("type"),
        "ownerReferences" => Some("uid"),
        "taints" => Some("key"),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

/// Lists of scalars merged as sets (`patchStrategy: merge`).
pub(crate) fn merges_primitives(field: &str) -> bool {
    field == "finalizers"
}

fn strategic_merge(current: &Value, patch: &Value, field: &str, shape: Shape<'_>) -> Value {
    match (current, patch) {
        (Value::Object(cur), Value::Object(p)) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut m = p.clone();
                m.remove("$patch");
                return Value::Object(strip_directives(m));
            }
            if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                return Value::Null;
            }
            if shape.atomic_object() {
                return Value::Object(strip_directives(p.clone()));
            }
            let mut out = cur.clone();
            for (k, v) in p {
                if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
                    continue;
                }
                if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
                    if let (Some(Value::Array(have)), Value::Array(del)) = (out.get_mut(list), v) {
                        have.retain(|x| !del.contains(x));
                    }
                    continue;
                }
                if v.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match out.get(k) {
                    Some(c) => strategic_merge(c, v, k, shape.child(k)),
                    None => strategic_merge(&Value::Null, v, k, shape.child(k)),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(cur), Value::Array(p)) => {
            let items: Vec<&Value> = cur.iter().chain(p.iter()).collect();
            let item_shape = shape.items();
            match shape.list(field, &items) {
                ListMerge::Keys(keys)
                    if !keys.is_empty() && items.iter().all(|i| i.is_object()) =>
                {
                    let mut out: Vec<Value> = cur.clone();
                    for pi in p {
                        let k = item_key(pi, &keys);
                        let pos = out
                            .iter()
                            .position(|c| k.is_some() && item_key(c, &keys) == k);
                        let delete = pi.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (pos, delete) {
                            (Some(i), true) => {
                                out.remove(i);
                            }
                            (None, true) => {}
                            (Some(i), false) => {
                                out[i] = strategic_merge(&out[i], pi, "", item_shape);
                            }
                            (None, false) => {
                                out.push(strategic_merge(&Value::Null, pi, "", item_shape));
                            }
                        }
                    }
                    Value::Array(out)
                }
                ListMerge::Set => {
                    let mut out = cur.clone();
                    for x in p {
                        if !out.contains(x) {
                            out.push(x.clone());
                        }
                    }
                    Value::Array(out)
                }
                _ => Value::Array(
                    p.iter()
                        .map(|x| strategic_merge(&Value::Null, x, "", item_shape))
                        .collect(),
                ),
            }
        }
        (_, Value::Object(p)) => {
            if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                return Value::Null;
            }
            Value::Object(strip_directives(p.clone()))
        }
        (_, p) => p.clone(),
    }
}

fn strip_directives(m: Map<String, Value>) -> Map<String, Value> {
    m.into_iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
        .map(|(k, v)| {
            let v = match v {
                Value::Object(o) => Value::Object(strip_directives(o)),
                other => other,
            };
            (k, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn strategic_merges_containers_by_name() {
        let cur = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}]}, "metadata": {"finalizers": ["f1"]}});
        let p = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
                           {"name": "b", "$patch": "delete"}]},
            "metadata": {"finalizers": ["f2"], "labels": {"x": "y"}}});
        let out = strategic_merge(&cur, &p, "", Shape::Builtin);
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "a", "image": "a:2",
                "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}]},
                "metadata": {"finalizers": ["f1", "f2"], "labels": {"x": "y"}}})
        );
    }

    #[test]
    fn strategic_null_deletes_and_plain_lists_replace() {
        let cur =
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"args": ["x", "y"]}});
        let p = json!({"metadata": {"labels": {"a": null}}, "spec": {"args": ["z"]}});
        assert_eq!(
            strategic_merge(&cur, &p, "", Shape::Builtin),
            json!({"metadata": {"labels": {"b": "2"}}, "spec": {"args": ["z"]}})
        );
    }

    #[test]
    fn service_ports_merge_by_port() {
        let cur = json!({"ports": [{"port": 80, "name": "http"}]});
        let p = json!({"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]});
        assert_eq!(
            strategic_merge(&cur, &p, "", Shape::Builtin),
            json!({"ports": [{"port": 80, "name": "http", "targetPort": 8080}, {"port": 443}]})
        );
    }
}
