//! Admission webhooks: the `MutatingAdmissionWebhook` and
//! `ValidatingAdmissionWebhook` plugins of kube-apiserver.
//!
//! The configurations ([`config`]) are followed from the store by a watch
//! in every server ([`follow`]) and compiled once. A write then calls the
//! mutating hooks that match it in order (configuration name, then
//! position), applying each JSON patch and calling once more those asking
//! for `reinvocationPolicy: IfNeeded` when a later hook changed the object;
//! the object is validated again; then the validating hooks are called,
//! all of them at once, as upstream does. A hook
//! matches by its rules (operation, group, version, resource and
//! subresource, scope), its namespace and object selectors and its
//! `matchConditions` (CEL over `object`, `oldObject` and `request`).
//!
//! A hook is called over HTTPS ([`call`]), trusting its `caBundle`: at
//! its URL, or at a ready endpoint of its Service (as kube-apiserver does
//! with `--enable-aggregator-routing`, so it works without a Service
//! dataplane on the control plane) with the certificate checked for
//! `<service>.<namespace>.svc`; a URL without a `caBundle` is checked
//! against the system roots. A failure to call refuses the request
//! under `failurePolicy: Fail` and is skipped under `Ignore`; a dry run is
//! refused by a hook with side effects.

pub mod call;
pub mod config;
pub mod equivalent;
pub mod params;
pub mod policy;

use std::sync::{Arc, LazyLock, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use self::config::Hook;
use super::{ApiState, auth::User, handlers::decode_stored, resources::Resource, status::ApiError};
use crate::store::ListRequest;

type Hooks = Arc<Vec<Arc<Hook>>>;

static HOOKS: LazyLock<RwLock<Hooks>> = LazyLock::new(RwLock::default);

fn hooks() -> Hooks {
    HOOKS.read().expect("webhook registry").clone()
}

/// The admission policies and their bindings.
type Policies = Arc<(Vec<policy::Policy>, Vec<policy::Binding>)>;

static POLICIES: LazyLock<RwLock<Policies>> = LazyLock::new(RwLock::default);

fn policies() -> Policies {
    POLICIES.read().expect("policy registry").clone()
}

/// Whether anything at all is configured (the common case is nothing).
fn anything() -> bool {
    !hooks().is_empty() || !policies().1.is_empty()
}

const POLICY_PREFIXES: [&str; 2] = [
    "/registry/admissionregistration.k8s.io/validatingadmissionpolicies/",
    "/registry/admissionregistration.k8s.io/validatingadmissionpolicybindings/",
];

const PREFIXES: [(&str, bool); 2] = [
    (
        "/registry/admissionregistration.k8s.io/mutatingwebhookconfigurations/",
        true,
    ),
    (
        "/registry/admissionregistration.k8s.io/validatingwebhookconfigurations/",
        false,
    ),
];

/// Loads the configurations once (before serving), then follows them
/// until `stop`.
pub async fn follow(st: Arc<ApiState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let rev = load(&st).await;
        let changed = crate::store::next_change(
            st.store.as_ref(),
            "/registry/admissionregistration.k8s.io/",
            rev,
        );
        tokio::select! {
            () = changed => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Reads every configuration and installs the hooks; returns the revision
/// read (0 on failure).
pub async fn load(st: &ApiState) -> i64 {
    let mut all = Vec::new();
    let mut rev = i64::MAX;
    for (prefix, mutating) in PREFIXES {
        let list = match st
            .store
            .list(ListRequest {
                prefix: prefix.into(),
                after: None,
                limit: 0,
                revision: 0,
            })
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "loading webhook configurations failed");
                return 0;
            }
        };
        rev = rev.min(list.revision);
        let mut configs: Vec<Value> = list
            .kvs
            .iter()
            .filter_map(|kv| decode_stored(kv).ok())
            .collect();
        configs.sort_by(|a, b| {
            a["metadata"]["name"]
                .as_str()
                .cmp(&b["metadata"]["name"].as_str())
        });
        for c in &configs {
            all.extend(config::hooks_of(c, mutating).into_iter().map(Arc::new));
        }
    }
    *HOOKS.write().expect("webhook registry") = Arc::new(all);
    let mut loaded: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
    for (i, prefix) in POLICY_PREFIXES.iter().enumerate() {
        match st
            .store
            .list(ListRequest {
                prefix: (*prefix).into(),
                after: None,
                limit: 0,
                revision: 0,
            })
            .await
        {
            Ok(l) => {
                rev = rev.min(l.revision);
                loaded[i] = l
                    .kvs
                    .iter()
                    .filter_map(|kv| decode_stored(kv).ok())
                    .collect();
            }
            Err(e) => {
                tracing::warn!(error = %e, "loading admission policies failed");
                return 0;
            }
        }
    }
    let [ps, bs] = loaded;
    *POLICIES.write().expect("policy registry") = Arc::new((
        ps.iter().map(policy::policy_of).collect(),
        bs.iter().map(policy::binding_of).collect(),
    ));
    rev
}

/// One admission request, as the hooks are shown it.
#[derive(Debug)]
pub struct Request<'a> {
    pub resource: &'a Resource,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub operation: &'a str,
    pub old: Option<&'a Value>,
    pub dry_run: bool,
}

/// What the hooks said beyond allowing: warnings to send back.
#[derive(Debug, Default)]
pub struct Outcome {
    pub warnings: Vec<String>,
    pub mutated: bool,
}

fn labels(v: Option<&Value>) -> rudder_k8s::selectors::Labels {
    v.map(crate::api::selectors::labels_of).unwrap_or_default()
}

/// The namespace's labels, for namespace selectors.
async fn namespace_labels(
    st: &ApiState,
    req: &Request<'_>,
    obj: &Value,
) -> rudder_k8s::selectors::Labels {
    if req.resource.builtin_kind() == "Namespace" {
        return labels(Some(obj));
    }
    if req.namespace.is_empty() {
        return Default::default();
    }
    let ns_r = super::resources::by_kind("", "Namespace").expect("namespaces");
    match st
        .store
        .get(&super::handlers::key(ns_r, "", req.namespace))
        .await
    {
        Ok((Some(kv), _)) => labels(decode_stored(&kv).ok().as_ref()),
        _ => Default::default(),
    }
}

/// Whether a namespace selector (namespaced objects and namespaces only)
/// and an object selector (the new or the old object) choose the request.
fn selected(
    namespaces: &LabelSelector,
    objects: &LabelSelector,
    req: &Request<'_>,
    obj: &Value,
    ns_labels: &rudder_k8s::selectors::Labels,
) -> bool {
    use rudder_k8s::selectors::selector_matches;
    let r = req.resource;
    let ns_ok = !(r.namespaced || r.builtin_kind() == "Namespace")
        || selector_matches(namespaces, ns_labels);
    ns_ok
        && (selector_matches(objects, &labels(Some(obj)))
            || req
                .old
                .is_some_and(|o| selector_matches(objects, &labels(Some(o)))))
}

/// A hook that matches a request, and the equivalent resource it is
/// called as (`None`: the requested one).
type Matched = (Arc<Hook>, Option<&'static Resource>);

/// The hooks of one kind (mutating or not) that match the request.
async fn matching(
    st: &ApiState,
    req: &Request<'_>,
    obj: &Value,
    mutating: bool,
    user: &User,
) -> Result<Vec<Matched>, ApiError> {
    let all = hooks();
    let candidates: Vec<(Arc<Hook>, Option<&'static Resource>)> = all
        .iter()
        .filter(|h| h.mutating == mutating)
        .filter_map(|h| Some((h.clone(), equivalent::matched_as(h, req)?)))
        .collect();
    if candidates.is_empty() {
        return Ok(candidates);
    }
    let ns_labels = namespace_labels(st, req, obj).await;
    let mut out = Vec::new();
    for (h, as_) in candidates {
        let chosen = selected(
            &h.namespace_selector,
            &h.object_selector,
            req,
            obj,
            &ns_labels,
        );
        if chosen && conditions_hold(&h, req, obj, user)? {
            out.push((h, as_));
        }
    }
    Ok(out)
}

/// `matchConditions`: all must hold. An error counts by the failure
/// policy: refused when failing closed, else the hook is skipped.
fn conditions_hold(
    h: &Hook,
    req: &Request<'_>,
    obj: &Value,
    user: &User,
) -> Result<bool, ApiError> {
    if h.match_conditions.is_empty() {
        return Ok(true);
    }
    let mut ctx = rudder_cel::context();
    let object = if req.operation == "DELETE" {
        &Value::Null
    } else {
        obj
    };
    ctx.add_variable_from_value("object", rudder_cel::to_cel(object));
    ctx.add_variable_from_value(
        "oldObject",
        rudder_cel::to_cel(req.old.unwrap_or(&Value::Null)),
    );
    ctx.add_variable_from_value(
        "request",
        rudder_cel::to_cel(&request_json(req, user, "", &Value::Null)),
    );
    for (name, program) in &h.match_conditions {
        match program.execute(&ctx) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => return Ok(false),
            other => {
                if h.fail_closed {
                    return Err(ApiError::internal(format!(
                        "failed calling webhook {:?}: failed to evaluate match condition {name:?}: {other:?}",
                        h.name
                    )));
                }
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The `request` of an AdmissionReview.
fn request_json(req: &Request<'_>, user: &User, uid: &str, obj: &Value) -> Value {
    request_json_as(req, req.resource, req.old, user, uid, obj)
}

/// The `request` of an AdmissionReview for a hook matched as `matched`
/// (the objects already at its version).
fn request_json_as(
    req: &Request<'_>,
    matched: &Resource,
    old: Option<&Value>,
    user: &User,
    uid: &str,
    obj: &Value,
) -> Value {
    let gvk = |r: &Resource| json!({"group": r.group, "version": r.version, "kind": r.kind});
    let gvr = |r: &Resource| json!({"group": r.group, "version": r.version, "resource": r.plural});
    let mut v = json!({
        "uid": uid, "kind": gvk(matched), "resource": gvr(matched),
        "requestKind": gvk(req.resource), "requestResource": gvr(req.resource),
        "name": req.name, "operation": req.operation,
        "userInfo": {"username": user.name, "groups": user.groups},
        "object": if req.operation == "DELETE" { Value::Null } else { obj.clone() },
        "oldObject": old.cloned().unwrap_or(Value::Null),
        "dryRun": req.dry_run,
        "options": match req.operation {
            "CREATE" => json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}),
            "UPDATE" => json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}),
            _ => json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"}),
        },
    });
    if !req.subresource.is_empty() {
        v["subResource"] = json!(req.subresource);
        v["requestSubResource"] = json!(req.subresource);
    }
    if !req.namespace.is_empty() {
        v["namespace"] = json!(req.namespace);
    }
    v
}

fn caller() -> User {
    super::auth::caller_user().unwrap_or_else(|| User {
        name: "system:apiserver".into(),
        groups: vec!["system:masters".into()],
    })
}

/// The hooks around the server's own admission of a create or update:
/// the mutating ones, the object admitted again by `revalidate` when one
/// changed it (a hook may not rename or move it), then the validating
/// ones. Returns the warnings the hooks sent.
pub async fn admit(
    st: &ApiState,
    req: &Request<'_>,
    obj: &mut Value,
    revalidate: impl FnOnce(&mut Value) -> Result<Vec<String>, ApiError>,
) -> Result<Vec<String>, ApiError> {
    if !anything() {
        return Ok(Vec::new());
    }
    let before = (
        obj["metadata"]["name"].clone(),
        obj["metadata"]["namespace"].clone(),
    );
    let mut m = mutate(st, req, obj).await?;
    if m.mutated {
        if (
            obj["metadata"]["name"].clone(),
            obj["metadata"]["namespace"].clone(),
        ) != before
        {
            return Err(ApiError::internal(
                "an admission webhook changed the object's name or namespace",
            ));
        }
        m.warnings.extend(revalidate(obj)?);
    }
    let v = validate(st, req, obj).await?;
    m.warnings.extend(v.warnings);
    Ok(m.warnings)
}

/// Runs the mutating hooks over `obj`.
pub async fn mutate(
    st: &ApiState,
    req: &Request<'_>,
    obj: &mut Value,
) -> Result<Outcome, ApiError> {
    let mut out = Outcome::default();
    if hooks().is_empty() || req.operation == "DELETE" {
        return Ok(out);
    }
    let user = caller();
    let hooks = matching(st, req, obj, true, &user).await?;
    let mut changed_after: Vec<bool> = vec![false; hooks.len()];
    for (i, h) in hooks.iter().enumerate() {
        if call_one(st, h, req, obj, &user, &mut out).await? {
            out.mutated = true;
            for c in changed_after.iter_mut().take(i) {
                *c = true;
            }
        }
    }
    // Reinvoked once, in order, those that asked and saw later changes.
    for (i, h) in hooks.iter().enumerate() {
        if h.0.reinvoke && changed_after[i] && call_one(st, h, req, obj, &user, &mut out).await? {
            out.mutated = true;
        }
    }
    Ok(out)
}

/// Runs the validating hooks, then the admission policies.
pub async fn validate(st: &ApiState, req: &Request<'_>, obj: &Value) -> Result<Outcome, ApiError> {
    let mut out = Outcome::default();
    if !anything() {
        return Ok(out);
    }
    let user = caller();
    let hooks = matching(st, req, obj, false, &user).await?;
    // All at once, as upstream calls them; the first refusal in
    // configuration order is the one reported.
    let calls = hooks.iter().map(|h| {
        let user = &user;
        async move {
            let mut seen = Outcome::default();
            let result = call_one(st, h, req, &mut obj.clone(), user, &mut seen).await;
            (result, seen.warnings)
        }
    });
    for (result, warnings) in futures_util::future::join_all(calls).await {
        out.warnings.extend(warnings);
        result?;
    }
    run_policies(st, req, obj, &user, &mut out).await?;
    Ok(out)
}

/// Whether a policy's constraints or a binding's resources select the
/// request as the resource `r` (the requested one, or an equivalent).
fn selects_as(
    m: &policy::Matcher,
    req: &Request<'_>,
    r: &Resource,
    obj: &Value,
    ns_labels: &rudder_k8s::selectors::Labels,
) -> bool {
    let hit = |rules: &[(config::Rule, Vec<String>)]| {
        rules.iter().any(|(rule, names)| {
            rule.matches_at(req, r) && (names.is_empty() || names.iter().any(|n| n == req.name))
        })
    };
    // A binding without resource rules narrows by its selectors only.
    (m.rules.is_empty() || hit(&m.rules))
        && !hit(&m.excluded)
        && selected(
            &m.namespace_selector,
            &m.object_selector,
            req,
            obj,
            ns_labels,
        )
}

/// How a policy's constraints select the request: `None` not at all,
/// `Some(None)` as it is, `Some(Some(e))` as the equivalent resource `e`
/// (`matchPolicy: Equivalent`, [`equivalent`]).
fn selects(
    m: &policy::Matcher,
    req: &Request<'_>,
    obj: &Value,
    ns_labels: &rudder_k8s::selectors::Labels,
) -> Option<Option<&'static Resource>> {
    if selects_as(m, req, req.resource, obj, ns_labels) {
        return Some(None);
    }
    if !m.equivalent {
        return None;
    }
    equivalent::others(req.resource)
        .find(|e| selects_as(m, req, e, obj, ns_labels))
        .map(Some)
}

/// The bound admission policies over one request: a failed validation
/// denies or warns as its binding says.
async fn run_policies(
    st: &ApiState,
    req: &Request<'_>,
    obj: &Value,
    user: &User,
    out: &mut Outcome,
) -> Result<(), ApiError> {
    let all = policies();
    let (ps, bs) = (&all.0, &all.1);
    if bs.is_empty() {
        return Ok(());
    }
    let ns_labels = namespace_labels(st, req, obj).await;
    let object = if req.operation == "DELETE" {
        Value::Null
    } else {
        obj.clone()
    };
    let old_object = req.old.cloned().unwrap_or(Value::Null);
    let request = request_json(req, user, "", &Value::Null);
    let mut vars = [
        ("object", object.clone()),
        ("oldObject", old_object.clone()),
        ("request", request.clone()),
        ("params", Value::Null),
    ];
    let mut converted = false;
    for b in bs {
        let Some(p) = ps.iter().find(|p| p.name == b.policy) else {
            continue;
        };
        let Some(as_) = selects(&p.constraints, req, obj, &ns_labels) else {
            continue;
        };
        if !b.resources.empty && selects(&b.resources, req, obj, &ns_labels).is_none() {
            continue;
        }
        // The objects at the version the policy's rules name (put back
        // only after a binding had them converted).
        if let Some(e) = as_ {
            vars[0].1 = equivalent::convert(st, req.resource, e, &object).await?;
            vars[1].1 = equivalent::convert(st, req.resource, e, &old_object).await?;
            vars[2].1 = request_json_as(req, e, None, user, "", &Value::Null);
            converted = true;
        } else if converted {
            vars[0].1 = object.clone();
            vars[1].1 = old_object.clone();
            vars[2].1 = request.clone();
            converted = false;
        }
        let params = match &p.param_kind {
            None => vec![Value::Null],
            Some(kind) => {
                match params::collect(st, kind, b.param_ref.as_ref(), req.namespace).await {
                    Ok(Some(found)) => found,
                    Ok(None) => continue,
                    Err(e) if p.fail_closed => {
                        return Err(ApiError::denied(
                            403,
                            "Forbidden",
                            format!(
                                "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: failed to configure binding: {e}",
                                p.name, b.name
                            ),
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(policy = %p.name, binding = %b.name, error = %e, "binding ignored by its failure policy");
                        continue;
                    }
                }
            }
        };
        for param in params {
            vars[3].1 = param;
            if let policy::Verdict::Failed(msg, code, reason) = policy::evaluate(p, &vars)? {
                if b.deny {
                    return Err(ApiError::denied(
                        code,
                        reason,
                        format!(
                            "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {msg}",
                            p.name, b.name
                        ),
                    ));
                }
                if b.warn {
                    out.warnings.push(format!(
                        "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {msg}",
                        p.name, b.name
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Calls one hook (at the equivalent version it matched, converting the
/// objects there and a mutated one back); returns whether it changed the
/// object.
async fn call_one(
    st: &ApiState,
    (h, as_): &Matched,
    req: &Request<'_>,
    obj: &mut Value,
    user: &User,
    out: &mut Outcome,
) -> Result<bool, ApiError> {
    let Some(e) = *as_ else {
        return call_at(st, h, req, req.resource, req.old, obj, user, out).await;
    };
    let mut sent = equivalent::convert(st, req.resource, e, obj).await?;
    let old = match req.old {
        Some(o) => Some(equivalent::convert(st, req.resource, e, o).await?),
        None => None,
    };
    let changed = call_at(st, h, req, e, old.as_ref(), &mut sent, user, out).await?;
    if changed {
        *obj = equivalent::convert(st, e, req.resource, &sent).await?;
    }
    Ok(changed)
}

/// Calls one hook with the objects at `matched`'s version.
#[allow(clippy::too_many_arguments, reason = "one call's whole context")]
async fn call_at(
    st: &ApiState,
    h: &Hook,
    req: &Request<'_>,
    matched: &Resource,
    old: Option<&Value>,
    obj: &mut Value,
    user: &User,
    out: &mut Outcome,
) -> Result<bool, ApiError> {
    if req.dry_run && !matches!(h.side_effects.as_str(), "None" | "NoneOnDryRun") {
        return Err(ApiError::bad_request(format!(
            "admission webhook {:?} does not support dry run",
            h.name
        )));
    }
    let uid = uuid::Uuid::new_v4().to_string();
    let review = json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": request_json_as(req, matched, old, user, &uid, obj)});
    let resp = match call::post(st, h, &review).await {
        Ok(r) => r,
        Err(e) if h.fail_closed => {
            return Err(ApiError::internal(format!(
                "failed calling webhook {:?}: {e}",
                h.name
            )));
        }
        Err(e) => {
            tracing::warn!(webhook = %h.name, error = %e, "webhook failed; ignored by its failure policy");
            return Ok(false);
        }
    };
    call::judge(h, &uid, &resp, obj, out)
}
