//! How objects leave and enter the store: decoded with their
//! resourceVersion and converted to the version a request is served at,
//! or converted to the storage version and encoded without the fields the
//! store keeps itself (`resourceVersion`, `selfLink`). Custom kinds go
//! through their CRD's conversion ([`crate::api::crd::conversion`]), which
//! may call a webhook, hence the async pair; the synchronous `decode_as`
//! and `encode_as` are for built-in kinds.

use serde_json::{Value, json};

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

/// An object of `r`'s version, as the store keeps it.
pub(crate) fn encode_as(r: &Resource, v: &Value) -> Vec<u8> {
    encode(&crate::api::convert::to_storage(r, v.clone()))
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

pub(super) fn encode(v: &Value) -> Vec<u8> {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    serde_json::to_vec(&v).expect("serialisable")
}
