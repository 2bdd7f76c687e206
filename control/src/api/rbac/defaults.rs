//! The ClusterRoles and ClusterRoleBindings kube-apiserver bootstraps (the
//! subset whose API this server serves), and their reconciliation at every
//! start as kube-apiserver's RBAC bootstrap does it: a default object
//! missing is created; one present, unless annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "false"`, gains the rules
//! (or aggregation selectors), subjects, labels and annotations of the
//! default that it lacks and keeps what the operator added. So a cluster
//! made by an older Rudder gets the permissions a newer one grants.

use serde_json::{Value, json};

/// The default ClusterRoles and ClusterRoleBindings kube-apiserver
/// bootstraps (the subset whose API this server serves), created when
/// missing.
pub fn default_objects() -> Vec<(&'static str, Value)> {
    let read = json!(["get", "list", "watch"]);
    let write = json!(["create", "delete", "deletecollection", "patch", "update"]);
    let agg =
        |label: &str| json!({"rbac.authorization.k8s.io/aggregate-to-".to_owned() + label: "true"});
    let core_read = json!([
        "pods",
        "pods/log",
        "pods/status",
        "services",
        "services/status",
        "endpoints",
        "configmaps",
        "persistentvolumeclaims",
        "persistentvolumeclaims/status",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "replicationcontrollers/status",
        "serviceaccounts",
        "events",
        "limitranges",
        "resourcequotas",
        "resourcequotas/status",
        "namespaces",
        "namespaces/status",
        "bindings"
    ]);
    let apps = json!([
        "deployments",
        "deployments/scale",
        "deployments/status",
        "daemonsets",
        "daemonsets/status",
        "replicasets",
        "replicasets/scale",
        "replicasets/status",
        "statefulsets",
        "statefulsets/scale",
        "statefulsets/status",
        "controllerrevisions"
    ]);
    let batch = json!(["jobs", "jobs/status", "cronjobs", "cronjobs/status"]);
    let cluster_role = |name: &str, labels: Value, rules: Value, aggregate: Option<&str>| {
        let mut o = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels,
                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "rules": rules});
        if let Some(a) = aggregate {
            o["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": agg(a)}]});
            o["rules"] = json!([]);
        }
        o
    };
    let binding = |name: &str, role: &str, subjects: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects})
    };
    let group =
        |g: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g});
    let bootstrapping = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    let with = |base: &Value, extra: Value| {
        let mut b = base.clone();
        if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        b
    };
    vec![
        (
            "clusterroles",
            cluster_role(
                "cluster-admin",
                bootstrapping.clone(),
                json!([
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
                None,
            ),
        ),
        (
            "clusterroles",
            cluster_role("admin", bootstrapping.clone(), json!([]), Some("admin")),
        ),
        (
            "clusterroles",
            cluster_role(
                "edit",
                with(&bootstrapping, agg("admin")),
                json!([]),
                Some("edit"),
            ),
        ),
        (
            "clusterroles",
            cluster_role(
                "view",
                with(&bootstrapping, agg("edit")),
                json!([]),
                Some("view"),
            ),
        ),
        (
            "clusterroles",
            cluster_role(
                "system:aggregate-to-view",
                with(&bootstrapping, agg("view")),
                json!([
            {"apiGroups": [""], "resources": core_read, "verbs": read},
            {"apiGroups": ["apps"], "resources": apps, "verbs": read},
            {"apiGroups": ["batch"], "resources": batch, "verbs": read},
            {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers", "horizontalpodautoscalers/status"], "verbs": read},
            {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets", "poddisruptionbudgets/status"], "verbs": read},
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingresses/status", "networkpolicies"], "verbs": read},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read}]),
                None,
            ),
        ),
        (
            "clusterroles",
            cluster_role(
                "system:aggregate-to-edit",
                with(&bootstrapping, agg("edit")),
                json!([
            {"apiGroups": [""], "resources": ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "pods/eviction"], "verbs": write},
            {"apiGroups": [""], "resources": ["configmaps", "persistentvolumeclaims",
                "replicationcontrollers", "replicationcontrollers/scale", "secrets", "serviceaccounts",
                "services", "services/proxy"], "verbs": write},
            {"apiGroups": [""], "resources": ["secrets", "serviceaccounts"], "verbs": read},
            {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
            {"apiGroups": ["apps"], "resources": apps, "verbs": write},
            {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": write},
            {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": write},
            {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": write},
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "networkpolicies"], "verbs": write},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]}]),
                None,
            ),
        ),
        (
            "clusterroles",
            cluster_role(
                "system:aggregate-to-admin",
                with(&bootstrapping, agg("admin")),
                json!([
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings", "roles"],
             "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]}]),
                None,
            ),
        ),
        (
            "clusterroles",
            cluster_role(
                "system:basic-user",
                bootstrapping.clone(),
                json!([
            {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
                None,
            ),
        ),
        (
            "clusterroles",
            cluster_role(
                "system:discovery",
                bootstrapping.clone(),
                json!([
            {"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
                None,
            ),
        ),
        (
            "clusterroles",
            cluster_role(
                "system:public-info-viewer",
                bootstrapping.clone(),
                json!([
            {"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
                None,
            ),
        ),
        (
            "clusterroles",
            cluster_role(
                "system:monitoring",
                bootstrapping.clone(),
                json!([
            {"nonResourceURLs": ["/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics", "/readyz", "/readyz/*"], "verbs": ["get"]}]),
                None,
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "cluster-admin",
                "cluster-admin",
                json!([group("system:masters")]),
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:basic-user",
                "system:basic-user",
                json!([group("system:authenticated")]),
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:discovery",
                "system:discovery",
                json!([group("system:authenticated")]),
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:public-info-viewer",
                "system:public-info-viewer",
                json!([
                    group("system:authenticated"),
                    group("system:unauthenticated")
                ]),
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:monitoring",
                "system:monitoring",
                json!([group("system:monitoring")]),
            ),
        ),
        // Anyone holding a service-account token may find how to check one.
        (
            "clusterroles",
            cluster_role(
                "system:service-account-issuer-discovery",
                bootstrapping.clone(),
                json!([{"nonResourceURLs": ["/.well-known/openid-configuration", "/.well-known/openid-configuration/", "/openid/v1/jwks", "/openid/v1/jwks/"], "verbs": ["get"]}]),
                None,
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:service-account-issuer-discovery",
                "system:service-account-issuer-discovery",
                json!([group("system:serviceaccounts")]),
            ),
        ),
        // Bootstrap tokens may trade themselves for node credentials.
        (
            "clusterroles",
            cluster_role(
                "system:rudder:node-joiner",
                bootstrapping.clone(),
                json!([{"nonResourceURLs": ["/rudder/v1/join"], "verbs": ["post"]}]),
                None,
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:rudder:node-joiner",
                "system:rudder:node-joiner",
                json!([group("system:bootstrappers")]),
            ),
        ),
        // Nodes renew their credentials and get their kubelet serving
        // certificates.
        (
            "clusterroles",
            cluster_role(
                "system:rudder:node-credentials",
                bootstrapping.clone(),
                json!([{"nonResourceURLs": ["/rudder/v1/renew", "/rudder/v1/kubelet-serving"], "verbs": ["post"]}]),
                None,
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:rudder:node-credentials",
                "system:rudder:node-credentials",
                json!([group("system:nodes")]),
            ),
        ),
    ]
}

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
