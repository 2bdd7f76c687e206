//! How objects leave and enter the store: decoded with their
//! resourceVersion and converted to the version a request is served at,
//! or converted to the storage version and encoded without the fields the
//! store keeps itself (`resourceVersion`, `selfLink`). Custom kinds go
//! through their CRD's conversion ([`crate::api::crd::conversion`]), which
//! may call a webhook, hence the async pair; the synchronous `decode_as`
//! and `encode_as` are for built-in kinds.

use serde::{Serialize, Serializer, ser::SerializeMap as _};
use serde_json::{Map, Value, json};

use crate::{
    api::{ApiState, resources::Resource, status::ApiError},
    store::KeyValue,
};

/// The stored object as served: with its resourceVersion.
pub fn decode_stored(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is unreadable: {e}", kv.key)))?;
    v["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(v)
}

/// A stored object as served at `r`'s version.
pub fn decode_as(r: &Resource, kv: &KeyValue) -> Result<Value, ApiError> {
    Ok(crate::api::convert::to_served(r, decode_stored(kv)?))
}

/// An object of `r`'s version, as the store keeps it (copied only where
/// it converts).
pub(crate) fn encode_as(r: &Resource, v: &Value) -> Vec<u8> {
    if crate::api::convert::stored_as_is(r, v) {
        encode(v)
    } else {
        encode(&crate::api::convert::to_storage(r, v.clone()))
    }
}

/// The object a write just stored, as served: for a built-in kind stored
/// as it is served, `obj` itself with the revision the store gave it and
/// without what [`encode`] leaves out, which is what decoding the stored
/// bytes would give (object keys are sorted, so their order is the same);
/// otherwise decoded from `kv` as a read would.
pub async fn served_after_write(
    st: &ApiState,
    r: &Resource,
    obj: Value,
    kv: &KeyValue,
) -> Result<Value, ApiError> {
    if !crate::api::convert::stored_as_is(r, &obj) {
        return decode_served(st, r, kv).await;
    }
    Ok(as_decoded(obj, kv.mod_revision))
}

/// `obj` as [`decode_stored`] gives it back once stored at `revision`.
fn as_decoded(mut obj: Value, revision: crate::store::Revision) -> Value {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("selfLink");
    }
    obj["metadata"]["resourceVersion"] = json!(revision.to_string());
    obj
}

/// Stored objects as served at `r`'s version: one call of the CRD's
/// conversion webhook for all of them where it has one
/// ([`crate::api::crd::conversion`]), else [`decode_as`].
pub async fn decode_served_all(
    st: &ApiState,
    r: &Resource,
    kvs: &[KeyValue],
) -> Result<Vec<Value>, ApiError> {
    if !r.custom {
        return kvs.iter().map(|kv| decode_as(r, kv)).collect();
    }
    let objects = kvs.iter().map(decode_stored).collect::<Result<_, _>>()?;
    // Boxed: a webhook behind a Service is found by listing EndpointSlices,
    // which comes back here (for a built-in kind, so never further).
    Box::pin(crate::api::crd::conversion::convert(
        st,
        r,
        objects,
        &r.api_version(),
    ))
    .await
}

/// A stored object as served at `r`'s version (see [`decode_served_all`]).
pub async fn decode_served(st: &ApiState, r: &Resource, kv: &KeyValue) -> Result<Value, ApiError> {
    decode_served_all(st, r, std::slice::from_ref(kv))
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("conversion returned no object"))
}

/// An object of `r`'s version as the store keeps it: through the CRD's
/// conversion webhook where it has one, else [`encode_as`].
pub(crate) async fn encode_stored(
    st: &ApiState,
    r: &Resource,
    v: &Value,
) -> Result<Vec<u8>, ApiError> {
    if !r.custom {
        return Ok(encode_as(r, v));
    }
    let storage = crate::api::resources::storage_version(r).unwrap_or(r);
    let mut out =
        crate::api::crd::conversion::convert(st, r, vec![v.clone()], &storage.api_version())
            .await?;
    let obj = out
        .pop()
        .ok_or_else(|| ApiError::internal("conversion returned no object"))?;
    Ok(encode(&obj))
}

/// `v` as stored: without the metadata the store keeps itself, written
/// through a view rather than a copy.
pub(super) fn encode(v: &Value) -> Vec<u8> {
    serde_json::to_vec(&Stored(v)).expect("serialisable")
}

/// Metadata fields the store keeps itself rather than in the value.
const NOT_STORED: [&str; 2] = ["resourceVersion", "selfLink"];

/// An object serialised without [`NOT_STORED`] in its metadata.
struct Stored<'a>(&'a Value);

impl Serialize for Stored<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Value::Object(top) = self.0 else {
            return self.0.serialize(s);
        };
        let mut m = s.serialize_map(Some(top.len()))?;
        for (k, v) in top {
            match v {
                Value::Object(meta) if k == "metadata" => {
                    m.serialize_entry(k, &StoredMeta(meta))?;
                }
                _ => m.serialize_entry(k, v)?,
            }
        }
        m.end()
    }
}

struct StoredMeta<'a>(&'a Map<String, Value>);

impl Serialize for StoredMeta<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let kept = || {
            self.0
                .iter()
                .filter(|(k, _)| !NOT_STORED.contains(&k.as_str()))
        };
        let mut m = s.serialize_map(Some(kept().count()))?;
        for (k, v) in kept() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_leaves_out_what_the_store_keeps() {
        let v = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "a", "resourceVersion": "7", "selfLink": "/x", "uid": "u"},
            "data": {"resourceVersion": "kept: not metadata"},
        });
        let stored: Value = serde_json::from_slice(&encode(&v)).unwrap();
        assert_eq!(
            stored,
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "a", "uid": "u"},
                "data": {"resourceVersion": "kept: not metadata"},
            })
        );
        // What a write serves without decoding is what decoding gives.
        let kv = KeyValue {
            key: "/registry/configmaps/default/a".into(),
            value: encode(&v).into(),
            create_revision: 9,
            mod_revision: 9,
            version: 1,
        };
        assert_eq!(as_decoded(v.clone(), 9), decode_stored(&kv).unwrap());
        // Not an object, or metadata not an object: written as it is.
        assert_eq!(encode(&json!([1])), b"[1]");
        assert_eq!(encode(&json!({"metadata": 3})), br#"{"metadata":3}"#);
    }
}
