//! Label and field selectors, as `labelSelector=` and `fieldSelector=` take
//! them.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn check_key(k: &str) -> Result<(), String> {
    if k.is_empty()
        || !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        return Err(format!("invalid label key {k:?}"));
    }
    Ok(())
}

fn set_values(rest: &str, whole: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: found {whole:?}, expected: '('"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                continue;
            }
            let req = if let Some(k) = p.strip_prefix('!') {
                check_key(k.trim())?;
                Requirement::NotExists(k.trim().to_owned())
            } else if let Some((k, v)) = p.split_once("!=") {
                check_key(k.trim())?;
                Requirement::NotEq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                check_key(k.trim())?;
                Requirement::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                check_key(k.trim())?;
                Requirement::NotIn(k.trim().to_owned(), set_values(rest, p)?)
            } else if let Some((k, rest)) = p.split_once(" in ") {
                check_key(k.trim())?;
                Requirement::In(k.trim().to_owned(), set_values(rest, p)?)
            } else {
                check_key(p)?;
                Requirement::Exists(p.to_owned())
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// From a `LabelSelector` object (`matchLabels` + `matchExpressions`).
    pub fn from_object(v: &Value) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if let Some(m) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in m {
                reqs.push(Requirement::Eq(
                    k.clone(),
                    val.as_str().unwrap_or("").to_owned(),
                ));
            }
        }
        if let Some(exprs) = v.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                reqs.push(match e.get("operator").and_then(Value::as_str) {
                    Some("In") => Requirement::In(key, values),
                    Some("NotIn") => Requirement::NotIn(key, values),
                    Some("Exists") => Requirement::Exists(key),
                    Some("DoesNotExist") => Requirement::NotExists(key),
                    o => return Err(format!("{o:?} is not a valid label selector operator")),
                });
            }
        }
        Ok(Self(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => labels.get(k) == Some(v),
            Requirement::NotEq(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }

    /// Matches an object's `metadata.labels`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.is_empty() || self.matches(&labels_of(obj))
    }
}

pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// A parsed field selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The fields each kind can be selected on, beyond metadata.name and
/// metadata.namespace (as kube-apiserver's field label conversions).
fn supported_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Secret" => &["type"],
        "Node" => &["spec.unschedulable"],
        "Namespace" => &["status.phase"],
        "ReplicaSet" | "ReplicationController" => &["status.replicas"],
        "Job" => &["status.successful"],
        "CertificateSigningRequest" => &["spec.signerName"],
        _ => &[],
    }
}

impl FieldSelector {
    pub fn parse(s: &str, kind: &str) -> Result<Self, String> {
        Self::parse_with(s, kind, &[])
    }

    /// As [`Self::parse`], also allowing `extra` fields (a custom kind's
    /// `selectableFields`).
    pub fn parse_with(s: &str, kind: &str, extra: &[String]) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = p.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: {p:?}; can't understand {p:?}"));
            };
            let field = field.trim();
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !supported_fields(kind).contains(&field)
                && !extra.iter().any(|e| e == field)
            {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push((field.to_owned(), eq, value.trim().to_owned()));
        }
        Ok(Self(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value `metadata.name=` pins, if any (lets a list read one key).
    pub fn exact_name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, eq, _)| *eq && f == "metadata.name")
            .map(|(_, _, v)| v.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let got = field_value(obj, field);
            (got == *want) == *eq
        })
    }
}

/// A field's value as a selector compares it ("" when absent).
fn field_value(obj: &Value, field: &str) -> String {
    let v = if field == "source" {
        obj.pointer("/source/component")
    } else {
        let ptr = format!("/{}", field.replace('.', "/"));
        obj.pointer(&ptr)
    };
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Null) | None => match field {
            "spec.unschedulable" | "spec.hostNetwork" => "false".into(),
            _ => String::new(),
        },
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn label_selector_operators() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("env", "prod")]);
        for (sel, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("tier in (front, back)", true),
            ("tier notin (front)", false),
            ("missing notin (x)", true),
            ("env", true),
            ("!env", false),
            ("!missing", true),
            ("app=web,tier in (front),!missing", true),
            ("app=web,env=dev", false),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&l),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("tier in front").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn selector_objects() {
        let s = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]
        }))
        .unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"},
                         "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let f = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", "Pod").unwrap();
        assert!(f.matches(&pod));
        assert!(
            !FieldSelector::parse("spec.nodeName=n2", "Pod")
                .unwrap()
                .matches(&pod)
        );
        assert!(
            FieldSelector::parse("spec.nodeName=", "Pod")
                .unwrap()
                .matches(&json!({}))
        );
        assert_eq!(
            FieldSelector::parse("metadata.name=p", "Pod")
                .unwrap()
                .exact_name(),
            Some("p")
        );
        assert_eq!(
            FieldSelector::parse("spec.foo=x", "Pod"),
            Err("field label not supported: spec.foo".into())
        );
        let node = json!({"metadata": {"name": "n"}});
        assert!(
            FieldSelector::parse("spec.unschedulable=false", "Node")
                .unwrap()
                .matches(&node)
        );
    }
}
