//! `x-kubernetes-validations`: a CRD's CEL rules, compiled with the `cel`
//! crate (the maintained Rust CEL implementation) when the CRD is
//! installed and evaluated on every write of a custom object.
//!
//! As in kube-apiserver, `self` is the value at the schema node holding
//! the rule and `oldSelf` the same value before an update; a rule that
//! mentions `oldSelf` (a transition rule) is evaluated only on updates of
//! a value that existed before. `message`, `messageExpression`, `reason`
//! and `fieldPath` shape the cause. Old values are matched by property
//! name, by map key, and by list-map keys or set values in lists, as
//! upstream correlates them.
//!
//! Rules run in Kubernetes' CEL environment ([`rudder_cel`]: the
//! standard library with the extended strings, sets, lists, regex, URL,
//! quantity, IP and CIDR libraries, and `cel.bind`).
//!
//! What is not kube-apiserver's: there is no static cost estimate (the
//! crate has none); instead a rule's text is bounded and the number of
//! evaluations per request is capped, so a rule over a long list cannot
//! pin a core. A rule calling a function the environment lacks (the format
//! and semver libraries, two-variable comprehensions) fails to evaluate and
//! the write is refused with that error, never let through.

use std::sync::Arc;

use rudder_cel::to_cel;

use rudder_k8s::field::Path;
use serde_json::Value;

use crate::api::status::Cause;

/// The longest rule text accepted.
pub const MAX_RULE_BYTES: usize = 4096;

/// Rule evaluations per request, at most.
pub const MAX_EVALUATIONS: usize = 10_000;

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub text: String,
    program: cel::Program,
    message: Option<String>,
    message_expression: Option<cel::Program>,
    reason: Option<String>,
    field_path: Option<String>,
    transition: bool,
    /// How deep its comprehensions (`all`, `exists`, `map`, …) nest.
    nesting: u32,
}

/// Compiles the rules of one schema node; the error names the rule.
pub fn compile(rules: &[Value]) -> Result<Vec<Arc<Rule>>, (usize, String, String)> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let text = r["rule"].as_str().unwrap_or("").to_owned();
        if text.trim().is_empty() {
            return Err((i, "rule".into(), "rule is required".into()));
        }
        if text.len() > MAX_RULE_BYTES {
            return Err((
                i,
                "rule".into(),
                format!("may not be longer than {MAX_RULE_BYTES} bytes"),
            ));
        }
        let program = rudder_cel::compile(&text)
            .map_err(|e| (i, "rule".into(), format!("compilation failed: {e}")))?;
        let message_expression = match r["messageExpression"].as_str() {
            Some(m) if !m.trim().is_empty() => Some(rudder_cel::compile(m).map_err(|e| {
                (
                    i,
                    "messageExpression".into(),
                    format!("compilation failed: {e}"),
                )
            })?),
            _ => None,
        };
        let reason = r["reason"].as_str().map(str::to_owned);
        if let Some(reason) = &reason
            && !matches!(
                reason.as_str(),
                "FieldValueInvalid"
                    | "FieldValueForbidden"
                    | "FieldValueRequired"
                    | "FieldValueDuplicate"
            )
        {
            return Err((i, "reason".into(), format!("unsupported reason {reason:?}")));
        }
        out.push(Arc::new(Rule {
            transition: mentions_old_self(&text),
            nesting: comprehension_nesting(&text),
            text,
            program,
            message: r["message"]
                .as_str()
                .filter(|m| !m.is_empty())
                .map(str::to_owned),
            message_expression,
            reason,
            field_path: r["fieldPath"]
                .as_str()
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
        }));
    }
    Ok(out)
}

/// The deepest nesting of comprehension macros in a rule's text: what
/// makes its cost grow as a power of the size of the value it runs over.
fn comprehension_nesting(text: &str) -> u32 {
    const MACROS: &[&str] = &["all(", "exists(", "exists_one(", "map(", "filter("];
    let mut open: Vec<u32> = Vec::new();
    let (mut depth, mut deepest) = (0u32, 0u32);
    for (i, c) in text.char_indices() {
        match c {
            '(' => {
                depth += 1;
                let is_macro = i > 0
                    && MACROS.iter().any(|m| {
                        let name = &m[..m.len() - 1];
                        text[..i].ends_with(name) && text[..i - name.len()].ends_with('.')
                    });
                if is_macro {
                    open.push(depth);
                    deepest = deepest.max(u32::try_from(open.len()).unwrap_or(u32::MAX));
                }
            }
            ')' => {
                if open.last() == Some(&depth) {
                    open.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
    deepest
}

/// The elements of a value, counted up to `cap`.
fn elements(v: &Value, cap: u64) -> u64 {
    let mut n = 0u64;
    let mut stack = vec![v];
    while let Some(x) = stack.pop() {
        n += 1;
        if n >= cap {
            return cap;
        }
        match x {
            Value::Array(a) => stack.extend(a.iter()),
            Value::Object(m) => stack.extend(m.values()),
            _ => {}
        }
    }
    n
}

/// A rule's work, at most: the value's elements to the power of its
/// comprehension nesting. No static estimate is made from the schema (the
/// crate has none), so this stands in for kube-apiserver's cost limit.
pub const MAX_COST: u64 = 10_000_000;

/// Whether the rule text names `oldSelf` as an identifier.
fn mentions_old_self(text: &str) -> bool {
    text.match_indices("oldSelf").any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + "oldSelf".len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after) && before != Some('.')
    })
}

/// The JSON type name kube-apiserver shows as the value of a failed rule.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Counts evaluations against [`MAX_EVALUATIONS`].
#[derive(Debug, Default)]
pub struct Budget(usize);

/// Evaluates `rules` for the value at `path`; appends a cause per failed
/// rule. `old` is the correlated value before an update.
pub fn evaluate(
    rules: &[Arc<Rule>],
    new: &Value,
    old: Option<&Value>,
    path: &Path,
    budget: &mut Budget,
    out: &mut Vec<Cause>,
) {
    for rule in rules {
        if rule.transition && old.is_none() {
            continue;
        }
        budget.0 += 1;
        let field = field_of(path, rule.field_path.as_deref());
        if budget.0 > MAX_EVALUATIONS {
            out.push(Cause::forbidden(
                field,
                format!("validation rules were evaluated more than {MAX_EVALUATIONS} times for one request"),
            ));
            return;
        }
        if rule.nesting > 1 {
            let n = elements(new, MAX_COST) + old.map_or(0, |o| elements(o, MAX_COST));
            let cost = n.saturating_pow(rule.nesting);
            if cost > MAX_COST {
                out.push(Cause::forbidden(
                    field,
                    format!(
                        "validation rule {:?} would cost about {cost} over {n} elements, more than the budget of {MAX_COST}",
                        rule.text
                    ),
                ));
                continue;
            }
        }
        let mut ctx = rudder_cel::context();
        ctx.add_variable_from_value("self", to_cel(new));
        if let Some(old) = old {
            ctx.add_variable_from_value("oldSelf", to_cel(old));
        }
        let failed = match rule.program.execute(&ctx) {
            Ok(cel::Value::Bool(true)) => continue,
            Ok(cel::Value::Bool(false)) => None,
            Ok(other) => Some(format!("rule did not evaluate to a bool: {other:?}")),
            Err(e) => Some(format!("rule evaluation error: {e}")),
        };
        let message = failed.unwrap_or_else(|| message_of(rule, &ctx));
        let shown = Value::from(type_name(new));
        out.push(match rule.reason.as_deref() {
            Some("FieldValueForbidden") => Cause::forbidden(field, message),
            Some("FieldValueRequired") => Cause::required_because(field, &message),
            Some("FieldValueDuplicate") => Cause::duplicate(field, &shown),
            _ => Cause::invalid(field, &shown, message),
        });
    }
}

/// The field a cause names: the node's path, or the rule's `fieldPath`
/// below it.
fn field_of(path: &Path, rel: Option<&str>) -> String {
    let Some(rel) = rel else {
        return path.to_string();
    };
    let rel = if rel.starts_with('.') || rel.starts_with('[') {
        rel.to_owned()
    } else {
        format!(".{rel}")
    };
    format!("{path}{rel}").trim_start_matches('.').to_owned()
}

/// The message of a rule that evaluated to false.
fn message_of(rule: &Rule, ctx: &cel::Context<'_, '_>) -> String {
    if let Some(expr) = &rule.message_expression
        && let Ok(cel::Value::String(s)) = expr.execute(ctx)
        && !s.trim().is_empty()
    {
        return s.to_string();
    }
    rule.message
        .clone()
        .unwrap_or_else(|| format!("failed rule: {}", rule.text))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules(v: &Value) -> Vec<Arc<Rule>> {
        compile(v.as_array().unwrap()).unwrap()
    }

    fn run(rules: &[Arc<Rule>], new: &Value, old: Option<&Value>) -> Vec<String> {
        let mut out = Vec::new();
        evaluate(
            rules,
            new,
            old,
            &Path::new("spec"),
            &mut Budget::default(),
            &mut out,
        );
        out.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn rules_pass_fail_and_say_why_as_kube_apiserver_does() {
        let r = rules(&json!([
            {"rule": "self.minReplicas <= self.replicas", "message": "replicas should be at least minReplicas"},
            {"rule": "self.replicas <= 10"},
            {"rule": "self.name.startsWith('web')", "messageExpression": "'name ' + self.name + ' must start with web'"},
            {"rule": "has(self.name)", "reason": "FieldValueRequired", "fieldPath": ".name", "message": "a name is needed"},
        ]));
        assert_eq!(
            run(
                &r,
                &json!({"minReplicas": 1, "replicas": 3, "name": "web-1"}),
                None
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            run(
                &r,
                &json!({"minReplicas": 50, "replicas": 30, "name": "db"}),
                None
            ),
            vec![
                "spec: Invalid value: \"object\": replicas should be at least minReplicas",
                "spec: Invalid value: \"object\": failed rule: self.replicas <= 10",
                "spec: Invalid value: \"object\": name db must start with web",
            ]
        );
        let out = run(&r, &json!({"minReplicas": 1, "replicas": 1}), None);
        assert!(
            out.iter()
                .any(|o| o == "spec.name: Required value: a name is needed"),
            "{out:?}"
        );
    }

    #[test]
    fn transition_rules_run_only_on_updates() {
        let r = rules(&json!([{"rule": "self == oldSelf", "message": "Value is immutable"}]));
        assert!(r[0].transition);
        assert_eq!(run(&r, &json!("a"), None), Vec::<String>::new());
        assert_eq!(
            run(&r, &json!("a"), Some(&json!("a"))),
            Vec::<String>::new()
        );
        assert_eq!(
            run(&r, &json!("b"), Some(&json!("a"))),
            vec!["spec: Invalid value: \"string\": Value is immutable"]
        );
        assert!(!mentions_old_self("self.oldSelfish == 1"));
    }

    #[test]
    fn bad_rules_are_refused_at_compile_time_and_runtime_errors_refuse_the_write() {
        let e = compile(json!([{"rule": "self.x +"}]).as_array().unwrap()).unwrap_err();
        assert_eq!((e.0, e.1.as_str()), (0, "rule"));
        assert!(e.2.starts_with("compilation failed: "), "{e:?}");
        assert!(
            compile(
                json!([{"rule": "x".repeat(MAX_RULE_BYTES + 1)}])
                    .as_array()
                    .unwrap()
            )
            .is_err()
        );
        assert!(
            compile(
                json!([{"rule": "true", "reason": "Because"}])
                    .as_array()
                    .unwrap()
            )
            .is_err()
        );
        let r = rules(&json!([{"rule": "self.missing > 1"}]));
        let out = run(&r, &json!({}), None);
        assert!(out[0].contains("rule evaluation error"), "{out:?}");
    }

    #[test]
    fn nested_comprehensions_over_large_values_are_refused_before_they_run() {
        assert_eq!(
            comprehension_nesting("self.a.all(x, x > 0) && self.b.exists(y, y == 1)"),
            1
        );
        assert_eq!(
            comprehension_nesting("self.a.all(x, self.a.all(y, x != y || x == y))"),
            2
        );
        assert_eq!(comprehension_nesting("self.size() > 0 && mall(1)"), 0);
        let r = rules(&json!([{"rule": "self.all(x, self.all(y, self.all(z, x + y + z >= 0)))"}]));
        assert_eq!(r[0].nesting, 3);
        let small = json!([1, 2, 3]);
        assert_eq!(run(&r, &small, None), Vec::<String>::new());
        let large = Value::Array((0..500).map(Value::from).collect());
        let out = run(&r, &large, None);
        assert!(out[0].contains("more than the budget"), "{out:?}");
    }

    #[test]
    fn the_evaluation_budget_stops_a_runaway_request() {
        let r = rules(&json!([{"rule": "true"}]));
        let mut budget = Budget(MAX_EVALUATIONS);
        let mut out = Vec::new();
        evaluate(
            &r,
            &json!(1),
            None,
            &Path::new("spec"),
            &mut budget,
            &mut out,
        );
        assert!(out[0].to_string().contains("more than"), "{out:?}");
    }
}
