//! Label and field selectors, as `labelSelector=` and `fieldSelector=` take
//! them.

pub use rudder_k8s::label_selector::{LabelSelector, labels_of};
use serde_json::Value;

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
