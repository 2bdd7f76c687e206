//! The REST verbs on stored objects: create, get, list, update, patch, and
//! the status and scale subresources here (what each subresource update
//! changes in `subresource.rs`); `watch` (`watch.rs`), deletes
//! (`delete.rs`) and the pod's `binding` and `eviction` (`pod.rs`) beside.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use serde_json::{Value, json};

use super::{
    ApiState,
    object::{self, apply_defaults, typed_check, validate},
    patch::PatchType,
    registry::{FieldValidation, WriteOptions},
    resources::Resource,
    selectors::{FieldSelector, LabelSelector},
    status::ApiError,
    table::{self, Include},
    webhook,
};
use crate::store::{EventKind, KeyValue, ListRequest, StoreError, WatchItem};
pub(crate) use subresource::{merge_update, scale_of};

mod codec;
mod delete;
mod pod;
mod subresource;
mod watch;

pub use codec::{decode_as, decode_served, decode_served_all, decode_stored, served_after_write};
pub(crate) use codec::{encode_as, encode_stored};
pub use delete::{delete, delete_collection, delete_one};
pub use pod::{bind, evict};
pub use watch::watch;

pub type Query = std::collections::HashMap<String, String>;

/// A request aimed at an object or a collection of one resource type.
#[derive(Clone, Debug)]
pub struct Target {
    pub resource: &'static Resource,
    /// Empty for cluster-scoped resources and all-namespace collections.
    pub namespace: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    pub fn key(&self, name: &str) -> String {
        key(self.resource, &self.namespace, name)
    }

    fn prefix(&self) -> String {
        let r = self.resource;
        if r.namespaced && !self.namespace.is_empty() {
            format!(
                "/registry/{}/{}/{}/",
                r.storage_group(),
                r.plural,
                self.namespace
            )
        } else {
            format!("/registry/{}/{}/", r.storage_group(), r.plural)
        }
    }
}

pub fn key(r: &Resource, ns: &str, name: &str) -> String {
    if r.namespaced {
        format!("/registry/{}/{}/{ns}/{name}", r.storage_group(), r.plural)
    } else {
        format!("/registry/{}/{}/{name}", r.storage_group(), r.plural)
    }
}

pub use rudder_k8s::time::now_rfc3339;

/// A timestamp of the `time` crate's (the PKI's certificates use it) as
/// Kubernetes writes times (`rudder_k8s::time`).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    use rudder_k8s::time::Timestamp;
    let t = Timestamp::from_nanosecond(t.unix_timestamp_nanos()).unwrap_or(Timestamp::UNIX_EPOCH);
    rudder_k8s::time::rfc3339(t)
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).expect("serialisable"),
    )
        .into_response()
}

/// The request's Content-Type, or `default` when it has none.
pub fn content_type<'a>(headers: &'a HeaderMap, default: &'a str) -> &'a str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or(default)
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn include_object(q: &Query) -> Include {
    match q.get("includeObject").map(String::as_str) {
        Some("None") => Include::None,
        Some("Object") => Include::Object,
        _ => Include::Metadata,
    }
}

/// The answer to a write: the object (as a Table when the client asks
/// for one) with its warnings as `Warning` headers.
pub(crate) fn respond_object(
    t: &Target,
    headers: &HeaderMap,
    q: &Query,
    code: StatusCode,
    obj: &Value,
    warnings: &[String],
) -> Response {
    let body = if wants_table(headers) {
        table::table(
            t.resource,
            std::slice::from_ref(obj),
            json!({"resourceVersion": obj.pointer("/metadata/resourceVersion")}),
            include_object(q),
            true,
        )
    } else {
        obj.clone()
    };
    let mut resp = json_response(code, &body);
    for w in warnings {
        if let Ok(h) = format!("299 - {w:?}").parse() {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}

/// The field manager of a write: `fieldManager`, else the client's
/// User-Agent up to its first `/` (as kube-apiserver derives it).
pub fn manager_name(q: &Query, headers: &HeaderMap) -> String {
    if let Some(m) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|m| !m.is_empty())
        .map_or_else(|| "unknown".to_owned(), str::to_owned)
}

/// Type check, unknown fields (per `fieldValidation`), defaults and
/// validation. Returns the warnings to send.
fn admit(
    r: &Resource,
    obj: &mut Value,
    validation: FieldValidation,
    name: &str,
    old: Option<&Value>,
) -> Result<Vec<String>, ApiError> {
    let custom = crate::api::crd::of(r);
    let schema = custom.as_ref().and_then(|v| v.schema.as_ref());
    let mut unknown = typed_check(r, obj)?;
    if let Some(s) = schema {
        unknown.extend(s.prune_root(obj));
    }
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        match validation {
            FieldValidation::Strict => {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field {f:?}"))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "{kind} in version {:?} cannot be handled as a {kind}: strict decoding error: {}",
                    r.version,
                    list.join(", "),
                    kind = r.kind,
                )));
            }
            FieldValidation::Ignore => {}
            FieldValidation::Warn => {
                warnings.extend(unknown.iter().map(|f| format!("unknown field {f:?}")));
            }
        }
        // Unknown fields are never stored.
        for f in &unknown {
            remove_path(obj, f);
        }
    }
    apply_defaults(r, obj);
    let mut causes = validate(r, obj).err().unwrap_or_default();
    if let Some(s) = schema {
        s.apply_defaults(obj);
        causes.extend(s.validate_root(obj));
        // CEL rules see only values of the right shape.
        if causes.is_empty() {
            causes.extend(s.validate_rules_root(obj, old));
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(r, name, causes));
    }
    if let Some(d) = custom.as_ref().and_then(|v| v.deprecation.clone()) {
        warnings.push(d);
    }
    Ok(warnings)
}

fn remove_path(obj: &mut Value, path: &str) {
    // Paths are dotted with [i] indices, as unknown_fields writes them.
    let mut cur = obj;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (field, indices) = match part.find('[') {
            Some(p) => (&part[..p], &part[p..]),
            None => (*part, ""),
        };
        let last = i == parts.len() - 1 && indices.is_empty();
        if last {
            if let Some(m) = cur.as_object_mut() {
                m.remove(field);
            }
            return;
        }
        let Some(next) = cur.get_mut(field) else {
            return;
        };
        cur = next;
        for idx in indices.split('[').filter(|s| !s.is_empty()) {
            let Ok(n) = idx.trim_end_matches(']').parse::<usize>() else {
                return;
            };
            let Some(next) = cur.get_mut(n) else { return };
            cur = next;
        }
    }
}

fn generate_suffix() -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHA[rand::random_range(0..ALPHA.len())] as char)
        .collect()
}

/// The namespace object, if `name` of `r` may be created in it (refused
/// as NamespaceLifecycle refuses it while the namespace is terminating).
async fn check_namespace(
    st: &ApiState,
    r: &Resource,
    name: &str,
    ns: &str,
) -> Result<Value, ApiError> {
    let ns_r = super::resources::by_kind("", "Namespace").expect("namespaces");
    let (kv, _) = st
        .store
        .get(&key(ns_r, "", ns))
        .await
        .map_err(|e| ApiError::from_store(e, ns_r, ns))?;
    let Some(kv) = kv else {
        return Err(ApiError::namespace_not_found(ns));
    };
    let obj = decode_stored(&kv)?;
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::forbidden_on(
            r,
            name,
            format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        ));
    }
    Ok(obj)
}

/// A new object's server-side fields: refused when it may not be created
/// so (a terminating CRD's kind, a Pod with ephemeral containers), its
/// namespace checked against the request's, its name (generated from
/// `generateName`), uid, creation time, generation and first managed
/// fields set, what only the server sets dropped. Returns its name.
fn prepare_new(t: &Target, obj: &mut Value, manager: &str) -> Result<String, ApiError> {
    let r = t.resource;
    if r.custom {
        if crate::api::crd::of(r).is_some_and(|v| v.terminating) {
            return Err(ApiError::method_not_allowed(
                "create not allowed while custom resource definition is terminating",
            ));
        }
        // A status subresource's status is not set by a create.
        if r.has_status()
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
    }
    if r.builtin_kind() == "Pod"
        && obj
            .pointer("/spec/ephemeralContainers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        return Err(ApiError::invalid(
            r,
            &name,
            vec![super::status::Cause::forbidden(
                "spec.ephemeralContainers",
                "cannot be set on create",
            )],
        ));
    }
    let meta = obj["metadata"].as_object_mut().expect("checked");
    if r.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != t.namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), json!(t.namespace));
            }
        }
    } else {
        meta.remove("namespace");
    }
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if name.is_empty()
        && let Some(g) = meta.get("generateName").and_then(Value::as_str)
        && !g.is_empty()
    {
        name = format!("{g}{}", generate_suffix());
        meta.insert("name".into(), json!(name));
    }
    // Server-owned metadata.
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(k);
    }
    if r.tracks_generation() || matches!(r.builtin_kind(), "Pod" | "Service") {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    if obj.pointer("/metadata/managedFields").is_none() {
        let empty = json!({"apiVersion": obj["apiVersion"].clone(), "metadata": {}});
        super::fields::track_update(&empty, obj, manager, "", &now_rfc3339());
    }
    Ok(name)
}

/// A create from a REST call: the body decoded, then [`create_object`].
pub async fn create(
    st: &ApiState,
    t: &Target,
    headers: &HeaderMap,
    q: &Query,
    body: &[u8],
) -> Result<Response, ApiError> {
    let ct = content_type(headers, "application/json");
    let obj = object::decode(body, ct)?;
    let opts = WriteOptions::from_request(q, headers);
    let (out, warnings) = create_object(st, t, obj, &opts).await?;
    Ok(respond_object(
        t,
        headers,
        q,
        StatusCode::CREATED,
        &out,
        &warnings,
    ))
}

/// Creates an object: kind checked, server fields set, defaults,
/// validation, admission (built-in, webhooks, Pod Security, quota), then
/// stored unless a dry run. The object as stored (or as it would be) and
/// the warnings.
pub async fn create_object(
    st: &ApiState,
    t: &Target,
    mut obj: Value,
    opts: &WriteOptions,
) -> Result<(Value, Vec<String>), ApiError> {
    let r = t.resource;
    object::check_kind(r, &mut obj)?;
    let name = prepare_new(t, &mut obj, &opts.field_manager)?;
    let validation = opts.field_validation;
    let mut warnings = admit(r, &mut obj, validation, &name, None)?;
    let ns_obj = if r.namespaced {
        Some(check_namespace(st, r, &name, &t.namespace).await?)
    } else {
        None
    };
    super::admission::on_create(st, r, &mut obj).await?;
    let req = webhook::Request {
        resource: r,
        subresource: "",
        namespace: &t.namespace,
        name: &name,
        operation: "CREATE",
        old: None,
        dry_run: opts.dry_run,
    };
    warnings.extend(
        webhook::admit(st, &req, &mut obj, |o| admit(r, o, validation, &name, None)).await?,
    );
    if let Some(ns_obj) = &ns_obj {
        warnings.extend(super::pod_security::admit(
            &st.config.pod_security,
            r,
            &obj,
            ns_obj,
            super::auth::caller().as_deref(),
        )?);
    }
    // ResourceQuota admission last, as upstream orders it: what it charges
    // is what gets stored.
    if r.namespaced {
        super::quota::admit(st, r, &t.namespace, &obj, !opts.dry_run).await?;
    }
    if opts.dry_run {
        return Ok((obj, warnings));
    }
    let kv = st
        .store
        .create(t.key(&name), encode_stored(st, r, &obj).await?)
        .await
        .map_err(|e| ApiError::from_store(e, r, &name))?;
    st.metrics.object_written(r);
    Ok((served_after_write(st, r, obj, &kv).await?, warnings))
}

pub async fn get_object(
    st: &ApiState,
    t: &Target,
    name: &str,
) -> Result<(Value, KeyValue), ApiError> {
    let (kv, _) = st
        .store
        .get(&t.key(name))
        .await
        .map_err(|e| ApiError::from_store(e, t.resource, name))?;
    let kv = kv.ok_or_else(|| ApiError::not_found(t.resource, name))?;
    Ok((decode_served(st, t.resource, &kv).await?, kv))
}

pub async fn get(
    st: &ApiState,
    t: &Target,
    headers: &HeaderMap,
    q: &Query,
    name: &str,
) -> Result<Response, ApiError> {
    let (obj, _) = get_object(st, t, name).await?;
    if t.subresource.as_deref() == Some("scale") {
        return Ok(json_response(StatusCode::OK, &scale_of(t.resource, &obj)?));
    }
    Ok(respond_object(t, headers, q, StatusCode::OK, &obj, &[]))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: i64,
    start: String,
}

fn parse_rv(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

struct Selectors {
    labels: LabelSelector,
    fields: FieldSelector,
}

fn selectors(r: &Resource, q: &Query) -> Result<Selectors, ApiError> {
    Ok(Selectors {
        labels: LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
        fields: FieldSelector::parse_with(
            q.get("fieldSelector").map_or("", String::as_str),
            r,
            &crate::api::crd::of(r)
                .map(|v| v.selectable.clone())
                .unwrap_or_default(),
        )
        .map_err(ApiError::bad_request)?,
    })
}

impl Selectors {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches(obj)
    }

    /// Whether every object matches.
    fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

/// Lists objects; returns them and the list's resourceVersion and continue
/// token.
pub async fn list_objects(
    st: &ApiState,
    t: &Target,
    q: &Query,
) -> Result<(Vec<Value>, i64, Option<String>), ApiError> {
    let r = t.resource;
    let sel = selectors(r, q)?;
    let limit: usize = match q.get("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?,
        None => 0,
    };
    let (mut revision, mut after) = (0i64, None);
    if let Some(c) = q.get("continue").filter(|c| !c.is_empty()) {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c)
            .map_err(|_| ApiError::bad_request("continue key is not valid"))?;
        let c: Continue = serde_json::from_slice(&bytes)
            .map_err(|_| ApiError::bad_request("continue key is not valid"))?;
        if q.get("resourceVersion")
            .is_some_and(|v| !v.is_empty() && v != "0")
        {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        revision = c.rv;
        after = Some(c.start);
    } else if let Some(rv) = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
    {
        // "Not older than" (or exact with resourceVersionMatch=Exact).
        let rv = parse_rv(rv)?;
        if q.get("resourceVersionMatch").map(String::as_str) == Some("Exact") {
            revision = rv;
        } else {
            let cur = st
                .store
                .current_revision()
                .await
                .map_err(|e| ApiError::from_store(e, r, ""))?;
            if rv > cur {
                return Err(ApiError::timeout(format!(
                    "Too large resource version: {rv}, current: {cur}"
                )));
            }
        }
    }
    let prefix = t.prefix();
    // One key when the field selector pins the name.
    if let Some(name) = sel.fields.exact_name()
        && (!r.namespaced || !t.namespace.is_empty())
        && after.is_none()
    {
        let (kv, rev) = st
            .store
            .get(&t.key(name))
            .await
            .map_err(|e| ApiError::from_store(e, r, name))?;
        let items = decode_served_all(st, r, kv.as_slice())
            .await?
            .into_iter()
            .filter(|o| sel.matches(o))
            .collect();
        return Ok((items, rev, None));
    }
    let mut items = Vec::new();
    let page = if limit == 0 { 0 } else { limit.max(100) };
    loop {
        let resp = st
            .store
            .list(ListRequest {
                prefix: prefix.clone(),
                after: after.clone(),
                limit: page,
                revision,
            })
            .await
            .map_err(|e| match e {
                StoreError::Compacted { .. } => ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                e => ApiError::from_store(e, r, ""),
            })?;
        revision = resp.revision;
        let n = resp.kvs.len();
        let objects = decode_served_all(st, r, &resp.kvs).await?;
        for (i, (kv, obj)) in resp.kvs.iter().zip(objects).enumerate() {
            after = Some(kv.key.clone());
            if sel.matches(&obj) {
                items.push(obj);
                if limit != 0 && items.len() == limit {
                    let more = resp.more || i + 1 < n;
                    let token = more.then(|| {
                        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
                            serde_json::to_vec(&Continue {
                                rv: revision,
                                start: kv.key.clone(),
                            })
                            .expect("serialisable"),
                        )
                    });
                    return Ok((items, revision, token));
                }
            }
        }
        if !resp.more {
            return Ok((items, revision, None));
        }
    }
}

pub async fn list(
    st: &ApiState,
    t: &Target,
    headers: &HeaderMap,
    q: &Query,
) -> Result<Response, ApiError> {
    let (items, rev, cont) = list_objects(st, t, q).await?;
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    let body = if wants_table(headers) {
        table::table(t.resource, &items, meta, include_object(q), true)
    } else {
        let kind = crate::api::crd::of(t.resource).map_or_else(
            || format!("{}List", t.resource.kind),
            |v| v.list_kind.clone(),
        );
        json!({"kind": kind, "apiVersion": t.resource.api_version(),
               "metadata": meta, "items": items})
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// Writes an updated object; a no-op update writes nothing. Finishes a
/// deletion when the last finalizer goes.
pub async fn write_update(
    st: &ApiState,
    t: &Target,
    name: &str,
    cur: &Value,
    cur_rev: i64,
    mut new: Value,
    opts: &WriteOptions,
) -> Result<(Value, Vec<String>), ApiError> {
    let r = t.resource;
    let validation = opts.field_validation;
    let dry_run = opts.dry_run;
    let mut warnings = admit(r, &mut new, validation, name, Some(cur))?;
    if r.tracks_generation() && object::spec_changed(r, cur, &new) {
        let g = cur
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        new["metadata"]["generation"] = json!(g + 1);
    }
    super::admission::on_update(st, r, cur, &mut new).await?;
    let req = webhook::Request {
        resource: r,
        subresource: t.subresource.as_deref().unwrap_or(""),
        namespace: &t.namespace,
        name,
        operation: "UPDATE",
        old: Some(cur),
        dry_run,
    };
    warnings.extend(
        webhook::admit(st, &req, &mut new, |o| {
            admit(r, o, validation, name, Some(cur))
        })
        .await?,
    );
    super::quota::admit_update(st, r, cur, &new, !dry_run).await?;
    let mut cmp = new.clone();
    cmp["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
    if &cmp == cur || dry_run {
        return Ok((cmp, warnings));
    }
    let finalizers_empty = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
    let namespace_finalizers = r.builtin_kind() == "Namespace"
        && new
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
    let graceful_pod = r.builtin_kind() == "Pod"
        && new
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            > 0;
    if deleting && finalizers_empty && !graceful_pod && !namespace_finalizers {
        let kv = st
            .store
            .delete(t.key(name), Some(cur_rev))
            .await
            .map_err(|e| ApiError::from_store(e, r, name))?;
        st.metrics.object_written(r);
        let mut out = new;
        out["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
        return Ok((out, warnings));
    }
    let kv = st
        .store
        .update(
            t.key(name),
            encode_stored(st, r, &new).await?,
            Some(cur_rev),
        )
        .await
        .map_err(|e| ApiError::from_store(e, r, name))?;
    st.metrics.object_written(r);
    Ok((served_after_write(st, r, new, &kv).await?, warnings))
}

/// An update from a REST call: the body decoded, then [`update_object`].
pub async fn update(
    st: &ApiState,
    t: &Target,
    headers: &HeaderMap,
    q: &Query,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let r = t.resource;
    let ct = content_type(headers, "application/json");
    let new = object::decode(body, ct)?;
    let opts = WriteOptions::from_request(q, headers);
    let (out, warnings) = update_object(st, t, name, new, &opts).await?;
    if t.subresource.as_deref() == Some("scale") {
        return Ok(json_response(StatusCode::OK, &scale_of(r, &out)?));
    }
    Ok(respond_object(
        t,
        headers,
        q,
        StatusCode::OK,
        &out,
        &warnings,
    ))
}

/// Replaces an object (or its status or scale, per `t`'s subresource): a
/// `resourceVersion` in `new` is a precondition; the fields the
/// subresource does not own are kept; then [`write_update`].
pub async fn update_object(
    st: &ApiState,
    t: &Target,
    name: &str,
    mut new: Value,
    opts: &WriteOptions,
) -> Result<(Value, Vec<String>), ApiError> {
    let r = t.resource;
    let sub = t.subresource.as_deref();
    if sub == Some("scale") {
        new["apiVersion"] = json!(r.api_version());
        new["kind"] = json!(r.kind);
    }
    object::check_kind(r, &mut new)?;
    // The shape is checked before anything reads fields of it.
    typed_check(r, &new)?;
    let body_name = new
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let want_rv = new
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(parse_rv)
        .transpose()?;
    let (cur, kv) = get_object(st, t, name).await?;
    if want_rv.is_some_and(|rv| rv != kv.mod_revision) {
        return Err(ApiError::conflict(r, name));
    }
    let mut merged = merge_update(r, sub, &cur, new)?;
    super::fields::track_update(
        &cur,
        &mut merged,
        &opts.field_manager,
        sub.unwrap_or_default(),
        &now_rfc3339(),
    );
    write_update(st, t, name, &cur, kv.mod_revision, merged, opts).await
}

/// `PATCH`: the patch type from the Content-Type, the options from the
/// query, the write [`super::registry::patch`]'s.
pub async fn patch(
    st: &ApiState,
    t: &Target,
    headers: &HeaderMap,
    q: &Query,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    use super::registry::{PatchOptions, Patched};
    let ct = content_type(headers, "");
    let pt =
        PatchType::from_content_type(ct).ok_or_else(|| ApiError::unsupported_media_type(ct))?;
    let mut write = WriteOptions::from_request(q, headers);
    if pt == PatchType::Apply {
        write.field_manager = super::apply::manager(q)?;
    }
    let opts = PatchOptions {
        write,
        force: super::apply::forced(q),
    };
    let (code, w) = match super::registry::patch(st, t, name, pt, body, &opts).await? {
        Patched::Updated(w) => (StatusCode::OK, w),
        Patched::Created(w) => (StatusCode::CREATED, w),
    };
    if t.subresource.as_deref() == Some("scale") {
        return Ok(json_response(code, &scale_of(t.resource, &w.object)?));
    }
    Ok(respond_object(t, headers, q, code, &w.object, &w.warnings))
}

/// The body of a subresource request (a Binding, an Eviction, a
/// TokenRequest, …); an empty body is an empty object; another kind is
/// refused.
pub fn decode_kind(headers: &HeaderMap, body: &[u8], kind: &str) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    let v = object::decode(body, content_type(headers, "application/json"))?;
    match v.get("kind").and_then(Value::as_str) {
        Some(k) if k != kind => Err(ApiError::bad_request(format!(
            "the body of this request must be a {kind}, not a {k}"
        ))),
        _ => Ok(v),
    }
}
