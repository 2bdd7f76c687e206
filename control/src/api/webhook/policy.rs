//! `ValidatingAdmissionPolicy` and its bindings: CEL validations run
//! in-process in the validating phase, beside the validating webhooks.
//!
//! A binding applies its policy to the requests both the policy's
//! `matchConstraints` and the binding's `matchResources` select; each
//! validation's expression sees `object`, `oldObject`, `request`,
//! `namespaceObject` and `variables`, and a false one denies (or warns,
//! per `validationActions`) with upstream's words. A policy with a
//! `paramKind` is evaluated once per parameter object its binding's
//! `paramRef` finds (by name or selector, [`super::params`]), the object as
//! `params`; none found denies or skips as `parameterNotFoundAction` says.

use serde_json::{Value, json};

use super::config::{Rule, strings};
use crate::api::status::{ApiError, Cause};

/// One compiled policy.
#[derive(Debug)]
pub struct Policy {
    pub name: String,
    pub fail_closed: bool,
    /// `paramKind`: (apiVersion, kind).
    pub param_kind: Option<(String, String)>,
    pub constraints: Matcher,
    pub validations: Vec<Validation>,
    pub variables: Vec<(String, cel::Program)>,
    pub conditions: Vec<(String, cel::Program)>,
}

#[derive(Debug)]
pub struct Validation {
    pub text: String,
    pub program: cel::Program,
    pub message: Option<String>,
    pub message_expression: Option<cel::Program>,
    pub reason: Option<String>,
}

/// `matchConstraints` or `matchResources`.
#[derive(Debug, Default)]
pub struct Matcher {
    pub rules: Vec<(Rule, Vec<String>)>,
    pub excluded: Vec<(Rule, Vec<String>)>,
    pub namespace_selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    pub object_selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    /// An empty `matchResources` of a binding matches what the policy does.
    pub empty: bool,
    /// `matchPolicy: Equivalent` (the default).
    pub equivalent: bool,
}

/// One binding.
#[derive(Debug)]
pub struct Binding {
    pub name: String,
    pub policy: String,
    pub resources: Matcher,
    pub deny: bool,
    pub warn: bool,
    pub param_ref: Option<ParamRef>,
}

/// A binding's `paramRef`.
#[derive(Debug)]
pub struct ParamRef {
    pub name: String,
    pub namespace: String,
    pub selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// `parameterNotFoundAction: Deny`.
    pub deny_not_found: bool,
}

fn rules(v: &Value) -> Vec<(Rule, Vec<String>)> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| (Rule::of(r), strings(&r["resourceNames"])))
        .collect()
}

fn matcher(v: &Value) -> Matcher {
    let selector = |k: &str| serde_json::from_value(v[k].clone()).unwrap_or_default();
    Matcher {
        rules: rules(&v["resourceRules"]),
        excluded: rules(&v["excludeResourceRules"]),
        namespace_selector: selector("namespaceSelector"),
        object_selector: selector("objectSelector"),
        empty: !v.is_object() || v.as_object().is_some_and(serde_json::Map::is_empty),
        equivalent: v["matchPolicy"].as_str() != Some("Exact"),
    }
}

fn compile_named(v: &Value, key: &str) -> Vec<(String, cel::Program)> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| {
            let p = rudder_cel::compile(x[key].as_str()?).ok()?;
            Some((x["name"].as_str().unwrap_or("").to_owned(), p))
        })
        .collect()
}

/// A stored policy, compiled.
pub fn policy_of(obj: &Value) -> Policy {
    let spec = &obj["spec"];
    Policy {
        name: obj["metadata"]["name"].as_str().unwrap_or("").to_owned(),
        fail_closed: spec["failurePolicy"].as_str() != Some("Ignore"),
        param_kind: spec.get("paramKind").filter(|k| k.is_object()).map(|k| {
            (
                k["apiVersion"].as_str().unwrap_or("").to_owned(),
                k["kind"].as_str().unwrap_or("").to_owned(),
            )
        }),
        constraints: matcher(&spec["matchConstraints"]),
        validations: spec["validations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| {
                let text = v["expression"].as_str()?.to_owned();
                Some(Validation {
                    program: rudder_cel::compile(&text).ok()?,
                    text,
                    message: v["message"]
                        .as_str()
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned),
                    message_expression: v["messageExpression"]
                        .as_str()
                        .and_then(|m| rudder_cel::compile(m).ok()),
                    reason: v["reason"].as_str().map(str::to_owned),
                })
            })
            .collect(),
        variables: compile_named(&spec["variables"], "expression"),
        conditions: compile_named(&spec["matchConditions"], "expression"),
    }
}

/// A stored binding.
pub fn binding_of(obj: &Value) -> Binding {
    let spec = &obj["spec"];
    let actions = strings(&spec["validationActions"]);
    Binding {
        name: obj["metadata"]["name"].as_str().unwrap_or("").to_owned(),
        policy: spec["policyName"].as_str().unwrap_or("").to_owned(),
        resources: matcher(&spec["matchResources"]),
        deny: actions.iter().any(|a| a == "Deny"),
        warn: actions.iter().any(|a| a == "Warn"),
        param_ref: spec
            .get("paramRef")
            .filter(|r| r.is_object())
            .map(|r| ParamRef {
                name: r["name"].as_str().unwrap_or("").to_owned(),
                namespace: r["namespace"].as_str().unwrap_or("").to_owned(),
                selector: r
                    .get("selector")
                    .filter(|s| s.is_object())
                    .and_then(|s| serde_json::from_value(s.clone()).ok()),
                deny_not_found: r["parameterNotFoundAction"].as_str() == Some("Deny"),
            }),
    }
}

/// Defaults of both kinds.
pub fn apply_defaults(obj: &mut Value, binding: bool) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let key = if binding {
        "matchResources"
    } else {
        "matchConstraints"
    };
    if !binding {
        spec.entry("failurePolicy").or_insert_with(|| json!("Fail"));
    }
    if let Some(m) = spec.get_mut(key).and_then(Value::as_object_mut) {
        m.entry("namespaceSelector").or_insert_with(|| json!({}));
        m.entry("objectSelector").or_insert_with(|| json!({}));
        m.entry("matchPolicy")
            .or_insert_with(|| json!("Equivalent"));
        for r in m
            .get_mut("resourceRules")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(r) = r.as_object_mut() {
                r.entry("scope").or_insert_with(|| json!("*"));
            }
        }
    }
}

/// Validates a policy (`binding` false) or a binding.
pub fn validate(obj: &Value, binding: bool, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    if binding {
        if spec["policyName"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required("spec.policyName"));
        }
        if let Some(r) = spec.get("paramRef").filter(|p| !p.is_null()) {
            validate_param_ref(r, causes);
        }
        let actions = strings(&spec["validationActions"]);
        if actions.is_empty() {
            causes.push(Cause::required("spec.validationActions"));
        }
        for a in actions {
            if !matches!(a.as_str(), "Deny" | "Warn" | "Audit") {
                causes.push(Cause::not_supported(
                    "spec.validationActions",
                    &json!(a),
                    &["Audit", "Deny", "Warn"],
                ));
            }
        }
        return;
    }
    if let Some(k) = spec.get("paramKind").filter(|p| !p.is_null()) {
        for key in ["apiVersion", "kind"] {
            if k[key].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("spec.paramKind.{key}")));
            }
        }
    }
    if spec
        .pointer("/matchConstraints/resourceRules")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        causes.push(Cause::required("spec.matchConstraints.resourceRules"));
    }
    let validations = spec["validations"].as_array().cloned().unwrap_or_default();
    if validations.is_empty()
        && spec["auditAnnotations"]
            .as_array()
            .is_none_or(Vec::is_empty)
    {
        causes.push(Cause::required_because(
            "spec.validations",
            "validations or auditAnnotations must contain at least one item",
        ));
    }
    let check = |path: String, expr: Option<&str>, causes: &mut Vec<Cause>| match expr {
        None | Some("") => causes.push(Cause::required(path)),
        Some(e) => {
            if let Err(err) = rudder_cel::compile(e) {
                causes.push(Cause::invalid(
                    path,
                    &json!(e),
                    format!("compilation failed: {err}"),
                ));
            }
        }
    };
    for (i, v) in validations.iter().enumerate() {
        check(
            format!("spec.validations[{i}].expression"),
            v["expression"].as_str(),
            causes,
        );
        if let Some(m) = v["messageExpression"].as_str() {
            check(
                format!("spec.validations[{i}].messageExpression"),
                Some(m),
                causes,
            );
        }
    }
    for (i, v) in spec["variables"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        check(
            format!("spec.variables[{i}].expression"),
            v["expression"].as_str(),
            causes,
        );
    }
    for (i, v) in spec["matchConditions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        check(
            format!("spec.matchConditions[{i}].expression"),
            v["expression"].as_str(),
            causes,
        );
    }
}

/// `validateParamRef`: a name or a selector, not both; what to do when
/// none is found.
fn validate_param_ref(r: &Value, causes: &mut Vec<Cause>) {
    let named = r["name"].as_str().is_some_and(|n| !n.is_empty());
    let selected = r.get("selector").is_some_and(|s| !s.is_null());
    match (named, selected) {
        (true, true) => causes.push(Cause::forbidden(
            "spec.paramRef.name",
            "name and selector are mutually exclusive",
        )),
        (false, false) => causes.push(Cause::required_because(
            "spec.paramRef",
            "one of name or selector must be set",
        )),
        _ => {}
    }
    if let Some(ns) = r["namespace"].as_str().filter(|n| !n.is_empty())
        && !rudder_k8s::names::is_dns_label(ns)
    {
        causes.push(Cause::invalid(
            "spec.paramRef.namespace",
            &json!(ns),
            rudder_k8s::names::DNS_LABEL_MSG,
        ));
    }
    match r["parameterNotFoundAction"].as_str() {
        Some("Allow" | "Deny") => {}
        None | Some("") => causes.push(Cause::required("spec.paramRef.parameterNotFoundAction")),
        Some(a) => causes.push(Cause::not_supported(
            "spec.paramRef.parameterNotFoundAction",
            &json!(a),
            &["Allow", "Deny"],
        )),
    }
}

/// The outcome of one policy through one binding.
#[derive(Debug)]
pub enum Verdict {
    Allowed,
    /// (message, code, reason) of the first failed validation.
    Failed(String, u16, &'static str),
}

fn status_of(reason: Option<&str>) -> (u16, &'static str) {
    match reason {
        Some("Forbidden") => (403, "Forbidden"),
        Some("Unauthorized") => (401, "Unauthorized"),
        Some("RequestEntityTooLarge") => (413, "RequestEntityTooLarge"),
        _ => (422, "Invalid"),
    }
}

/// Evaluates a policy's validations over the request's variables.
pub fn evaluate(p: &Policy, vars: &[(&str, Value)]) -> Result<Verdict, ApiError> {
    let mut ctx = rudder_cel::context();
    for (k, v) in vars {
        ctx.add_variable_from_value(*k, rudder_cel::to_cel(v));
    }
    for (name, c) in &p.conditions {
        match c.execute(&ctx) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => return Ok(Verdict::Allowed),
            other => {
                return Err(ApiError::internal(format!(
                    "ValidatingAdmissionPolicy '{}': match condition {name:?} failed: {other:?}",
                    p.name
                )));
            }
        }
    }
    let mut variables = std::collections::HashMap::new();
    for (name, e) in &p.variables {
        let mut with_vars = rudder_cel::context();
        for (k, v) in vars {
            with_vars.add_variable_from_value(*k, rudder_cel::to_cel(v));
        }
        with_vars.add_variable_from_value("variables", cel::Value::Map(variables.clone().into()));
        let value = e.execute(&with_vars).unwrap_or(cel::Value::Null);
        variables.insert(name.clone(), value);
    }
    ctx.add_variable_from_value("variables", cel::Value::Map(variables.into()));
    for v in &p.validations {
        let (code, reason) = status_of(v.reason.as_deref());
        match v.program.execute(&ctx) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => {
                let message = v
                    .message_expression
                    .as_ref()
                    .and_then(|m| match m.execute(&ctx) {
                        Ok(cel::Value::String(s)) if !s.trim().is_empty() => Some(s.to_string()),
                        _ => None,
                    })
                    .or_else(|| v.message.clone())
                    .unwrap_or_else(|| format!("failed expression: {}", v.text));
                return Ok(Verdict::Failed(message, code, reason));
            }
            other => {
                let err = format!("expression '{}' resulted in error: {other:?}", v.text);
                if p.fail_closed {
                    return Ok(Verdict::Failed(err, code, reason));
                }
            }
        }
    }
    Ok(Verdict::Allowed)
}
