//! The ClusterRoles and ClusterRoleBindings kube-apiserver bootstraps (the
//! subset whose API this server serves), and their reconciliation at every
//! start as kube-apiserver's RBAC bootstrap does it: a default object
//! missing is created; one present, unless annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "false"`, gains the rules
//! (or aggregation selectors), subjects, labels and annotations of the
//! default that it lacks and keeps what the operator added. So a cluster
//! made by an older Rudder gets the permissions a newer one grants. The
//! objects themselves are data, in `defaults.yaml`.

use serde::Deserialize as _;
use serde_json::{Value, json};

/// The default ClusterRoles and ClusterRoleBindings kube-apiserver
/// bootstraps (the subset whose API this server serves), created when
/// missing: the documents of `defaults.yaml`, each with its resource's
/// plural.
pub fn default_objects() -> Vec<(&'static str, Value)> {
    serde_yaml::Deserializer::from_str(DEFAULTS)
        .map(|doc| {
            let o = Value::deserialize(doc).expect("defaults.yaml is valid YAML (tested)");
            let plural = match o["kind"].as_str() {
                Some("ClusterRoleBinding") => "clusterrolebindings",
                _ => "clusterroles",
            };
            (plural, o)
        })
        .collect()
}

/// The bootstrap policy as data, in the order it is created.
const DEFAULTS: &str = include_str!("defaults.yaml");

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// Appends to `have` (an array) the members of `want` it lacks; whether
/// it changed.
fn union(have: &mut Value, want: &Value) -> bool {
    let Some(want) = want.as_array() else {
        return false;
    };
    if !have.is_array() {
        *have = json!([]);
    }
    let Some(have) = have.as_array_mut() else {
        return false;
    };
    let mut changed = false;
    for w in want {
        if !have.contains(w) {
            have.push(w.clone());
            changed = true;
        }
    }
    changed
}

/// Adds to the map `have` the keys of `want` it lacks.
fn add_missing_keys(have: &mut Value, want: &Value) -> bool {
    let Some(want) = want.as_object() else {
        return false;
    };
    if !have.is_object() {
        *have = json!({});
    }
    let Some(have) = have.as_object_mut() else {
        return false;
    };
    let mut changed = false;
    for (k, v) in want {
        if !have.contains_key(k) {
            have.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    changed
}

/// The stored `existing` default object brought up to `default`, or `None`
/// when it needs nothing (or its owner opted out of updates). A binding
/// whose `roleRef` differs is left alone: the reference cannot change in
/// place.
pub fn reconcile(existing: &Value, default: &Value) -> Option<Value> {
    if existing
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(AUTOUPDATE))
        == Some(&json!("false"))
    {
        return None;
    }
    let mut out = existing.clone();
    let mut changed = false;
    for k in ["labels", "annotations"] {
        changed |= add_missing_keys(&mut out["metadata"][k], &default["metadata"][k]);
    }
    match default["kind"].as_str() {
        Some("ClusterRole") => {
            if let Some(sel) = default.pointer("/aggregationRule/clusterRoleSelectors") {
                // The aggregation controller owns an aggregated role's rules.
                changed |= union(&mut out["aggregationRule"]["clusterRoleSelectors"], sel);
            } else {
                changed |= union(&mut out["rules"], &default["rules"]);
            }
        }
        Some("ClusterRoleBinding") => {
            if existing["roleRef"] != default["roleRef"] {
                return None;
            }
            changed |= union(&mut out["subjects"], &default["subjects"]);
        }
        _ => return None,
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(rules: &Value) -> Value {
        json!({"kind": "ClusterRole", "metadata": {"name": "r", "annotations": {AUTOUPDATE: "true"}},
            "rules": rules})
    }

    #[test]
    fn missing_rules_are_added_and_extra_ones_kept() {
        let a = json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]});
        let b = json!({"apiGroups": ["x"], "resources": ["y"], "verbs": ["create"]});
        let extra = json!({"apiGroups": ["z"], "resources": ["w"], "verbs": ["list"]});
        let stored = role(&json!([a, extra]));
        let got = reconcile(&stored, &role(&json!([a, b]))).unwrap();
        assert_eq!(got["rules"], json!([a, extra, b]));
        // Up to date: nothing to write.
        assert_eq!(reconcile(&got, &role(&json!([a, b]))), None);
        // The owner opted out.
        let mut frozen = stored.clone();
        frozen["metadata"]["annotations"][AUTOUPDATE] = json!("false");
        assert_eq!(reconcile(&frozen, &role(&json!([a, b]))), None);
    }

    #[test]
    fn bindings_gain_subjects_unless_the_role_differs() {
        let binding = |role: &str, subjects: Value| {
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "b"},
                "roleRef": {"kind": "ClusterRole", "name": role}, "subjects": subjects})
        };
        let g = |n: &str| json!({"kind": "Group", "name": n});
        let got = reconcile(
            &binding("r", json!([g("a")])),
            &binding("r", json!([g("b")])),
        )
        .unwrap();
        assert_eq!(got["subjects"], json!([g("a"), g("b")]));
        assert_eq!(
            reconcile(&binding("other", json!([])), &binding("r", json!([g("b")]))),
            None
        );
    }

    #[test]
    fn aggregated_roles_gain_selectors_not_rules() {
        let mut d = role(&json!([]));
        d["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {"a": "true"}}]});
        let mut stored = role(&json!([{"verbs": ["get"]}]));
        stored["aggregationRule"] = json!({"clusterRoleSelectors": []});
        let got = reconcile(&stored, &d).unwrap();
        assert_eq!(got["rules"], json!([{"verbs": ["get"]}]));
        assert_eq!(got["aggregationRule"], d["aggregationRule"]);
    }

    #[test]
    fn every_default_is_its_own_fixed_point() {
        for (_, o) in default_objects() {
            assert_eq!(reconcile(&o, &o), None, "{}", o["metadata"]["name"]);
        }
    }
}
