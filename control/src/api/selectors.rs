//! Label and field selectors, as `labelSelector=` and `fieldSelector=` take
//! them.

pub use rudder_k8s::label_selector::{LabelSelector, labels_of};
use serde_json::Value;

use super::resources::Resource;

/// A parsed field selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses a selector on objects of `r`: `metadata.name`,
    /// `metadata.namespace` and the kind's own fields
    /// ([`super::kinds::Rules::fields`]).
    pub fn parse(s: &str, r: &Resource) -> Result<Self, String> {
        Self::parse_with(s, r, &[])
    }

    /// As [`Self::parse`], also allowing `extra` fields (a custom kind's
    /// `selectableFields`).
    pub fn parse_with(s: &str, r: &Resource, extra: &[String]) -> Result<Self, String> {
        let supported = super::kinds::of(r).map_or(&[][..], |k| k.fields);
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
                && !supported.contains(&field)
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

    fn kind(kind: &str) -> &'static Resource {
        super::super::resources::RESOURCES
            .iter()
            .find(|r| r.kind == kind)
            .unwrap()
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"},
                         "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let f = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", kind("Pod")).unwrap();
        assert!(f.matches(&pod));
        assert!(
            !FieldSelector::parse("spec.nodeName=n2", kind("Pod"))
                .unwrap()
                .matches(&pod)
        );
        assert!(
            FieldSelector::parse("spec.nodeName=", kind("Pod"))
                .unwrap()
                .matches(&json!({}))
        );
        assert_eq!(
            FieldSelector::parse("metadata.name=p", kind("Pod"))
                .unwrap()
                .exact_name(),
            Some("p")
        );
        assert_eq!(
            FieldSelector::parse("spec.foo=x", kind("Pod")),
            Err("field label not supported: spec.foo".into())
        );
        let node = json!({"metadata": {"name": "n"}});
        assert!(
            FieldSelector::parse("spec.unschedulable=false", kind("Node"))
                .unwrap()
                .matches(&node)
        );
    }
}
