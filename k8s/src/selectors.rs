//! Label selectors, node selectors and required node affinity, taints and
//! tolerations, as Kubernetes evaluates them (`labels.Selector`,
//! `nodeaffinity.RequiredNodeAffinity`, `v1helper.TolerationsTolerateTaint`).
//! The scheduler, the controllers and the kubelet's admission all decide
//! with these, so a pod the scheduler places is one the node admits.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement},
};

/// Labels as stored on objects.
pub type Labels = BTreeMap<String, String>;

fn requirement_matches(labels: &Labels, key: &str, op: &str, values: &[String]) -> bool {
    let v = labels.get(key);
    match op {
        "In" => v.is_some_and(|v| values.contains(v)),
        "NotIn" => v.is_none_or(|v| !values.contains(v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(w)) = (
                v.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|w| w.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if op == "Gt" { v > w } else { v < w }
        }
        _ => false,
    }
}

/// Whether a metav1 LabelSelector selects `labels`. An empty selector
/// selects everything (as in Kubernetes' `LabelSelectorAsSelector`).
pub fn selector_matches(sel: &LabelSelector, labels: &Labels) -> bool {
    sel.match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel.match_expressions.iter().flatten().all(
            |LabelSelectorRequirement {
                 key,
                 operator,
                 values,
             }| {
                requirement_matches(labels, key, operator, values.as_deref().unwrap_or(&[]))
            },
        )
}

/// Whether a selector is empty (selects everything).
pub fn selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// Whether a Service-style map selector selects `labels` (an empty map
/// selects nothing: such Services have no selector).
pub fn map_selector_matches(sel: &Labels, labels: &Labels) -> bool {
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The node fields a `matchFields` requirement can name.
fn node_field(name: &str, key: &str) -> Option<String> {
    (key == "metadata.name").then(|| name.to_owned())
}

fn node_requirement(
    labels: &Labels,
    r: &NodeSelectorRequirement,
    field: Option<(&str, &str)>,
) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match field {
        None => requirement_matches(labels, &r.key, &r.operator, values),
        Some((name, _)) => {
            let mut one = Labels::new();
            if let Some(v) = node_field(name, &r.key) {
                one.insert(r.key.clone(), v);
            }
            requirement_matches(&one, &r.key, &r.operator, values)
        }
    }
}

/// Whether one node selector term matches the node (an empty term
/// matches nothing).
pub fn node_term_matches(t: &NodeSelectorTerm, name: &str, labels: &Labels) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
    let fields = t.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| node_requirement(labels, r, None))
        && fields
            .iter()
            .all(|r| node_requirement(labels, r, Some((name, &r.key))))
}

/// Whether a required NodeSelector (terms ORed) matches the node.
pub fn node_selector_matches(sel: &NodeSelector, name: &str, labels: &Labels) -> bool {
    sel.node_selector_terms
        .iter()
        .any(|t| node_term_matches(t, name, labels))
}

/// Whether the pod's nodeSelector and required node affinity admit the node.
pub fn pod_fits_node_affinity(pod: &Pod, name: &str, node_labels: &Labels) -> bool {
    let Some(spec) = &pod.spec else { return false };
    if let Some(ns) = &spec.node_selector
        && !ns.iter().all(|(k, v)| node_labels.get(k) == Some(v))
    {
        return false;
    }
    match spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        }) {
        Some(req) => node_selector_matches(req, name, node_labels),
        None => true,
    }
}

/// Whether a toleration tolerates a taint (Kubernetes' `ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref()
        && !e.is_empty()
        && e != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// The first taint with one of `effects` that none of `tolerations` tolerates.
pub fn untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints.iter().find(|taint| {
        effects.contains(&taint.effect.as_str()) && !tolerations.iter().any(|t| tolerates(t, taint))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        assert!(selector_matches(&sel, &l(&[("app", "web"), ("tier", "a")])));
        assert!(!selector_matches(
            &sel,
            &l(&[("app", "web"), ("tier", "c")])
        ));
        assert!(!selector_matches(
            &sel,
            &l(&[("app", "web"), ("tier", "a"), ("canary", "1")])
        ));
        assert!(selector_matches(&LabelSelector::default(), &l(&[])));
        assert!(!map_selector_matches(&l(&[]), &l(&[("a", "b")])));
    }

    #[test]
    fn node_terms_and_fields() {
        let sel: NodeSelector = serde_json::from_value(serde_json::json!({
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
                {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]}
            ]
        }))
        .unwrap();
        assert!(node_selector_matches(&sel, "n1", &l(&[])));
        assert!(!node_selector_matches(&sel, "n2", &l(&[("cores", "4")])));
        assert!(node_selector_matches(&sel, "n2", &l(&[("cores", "8")])));
    }

    #[test]
    fn toleration_rules() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let t = |op: &str, key: &str, value: &str, effect: &str| Toleration {
            key: Some(key.into()),
            operator: Some(op.into()),
            value: Some(value.into()),
            effect: Some(effect.into()),
            toleration_seconds: None,
        };
        assert!(tolerates(&t("Equal", "k", "v", "NoSchedule"), &taint));
        assert!(tolerates(&t("Equal", "k", "v", ""), &taint));
        assert!(!tolerates(&t("Equal", "k", "w", ""), &taint));
        assert!(tolerates(&t("Exists", "", "", ""), &taint));
        assert!(!tolerates(&t("Exists", "k", "", "NoExecute"), &taint));
    }
}
