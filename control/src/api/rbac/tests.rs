//! Unit tests of RBAC: rules, bindings, escalation checks, the Node authorizer.

use serde_json::json;

use super::*;

fn user(name: &str, groups: &[&str]) -> User {
    User {
        name: name.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

fn defaults() -> Snapshot {
    let mut s = Snapshot::default();
    for (plural, o) in default_objects() {
        let name = o["metadata"]["name"].as_str().unwrap().to_owned();
        s.apply(
            &format!("{RBAC_PREFIX}{plural}/{name}"),
            Some(&serde_json::to_vec(&o).unwrap()),
        );
    }
    s
}

fn put(s: &mut Snapshot, plural: &str, ns: Option<&str>, o: &Value) {
    let name = o["metadata"]["name"].as_str().unwrap();
    let key = match ns {
        Some(ns) => format!("{RBAC_PREFIX}{plural}/{ns}/{name}"),
        None => format!("{RBAC_PREFIX}{plural}/{name}"),
    };
    s.apply(&key, Some(&serde_json::to_vec(o).unwrap()));
}

fn res(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
    let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
    Attributes::resource(verb, group, resource, sub, ns, name)
}

#[test]
fn role_bindings_grant_only_in_their_namespace() {
    let mut s = defaults();
    put(
        &mut s,
        "roles",
        Some("dev"),
        &json!({"metadata": {"name": "reader", "namespace": "dev"},
        "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]}),
    );
    put(
        &mut s,
        "rolebindings",
        Some("dev"),
        &json!({"metadata": {"name": "bob-reads", "namespace": "dev"},
        "roleRef": {"kind": "Role", "name": "reader"},
        "subjects": [{"kind": "User", "name": "bob"}]}),
    );
    let bob = user("bob", &["system:authenticated"]);
    assert!(rbac_allows(&s, &bob, &res("list", "", "pods", "dev", "")).is_some());
    assert!(rbac_allows(&s, &bob, &res("get", "", "pods/log", "dev", "p")).is_some());
    assert!(rbac_allows(&s, &bob, &res("get", "", "pods/exec", "dev", "p")).is_none());
    assert!(rbac_allows(&s, &bob, &res("list", "", "pods", "prod", "")).is_none());
    assert!(rbac_allows(&s, &bob, &res("list", "", "pods", "", "")).is_none());
    assert!(rbac_allows(&s, &bob, &res("delete", "", "pods", "dev", "p")).is_none());
    assert_eq!(
        res("delete", "", "pods", "dev", "p").denial(&bob),
        r#"User "bob" cannot delete resource "pods" in API group "" in the namespace "dev""#
    );
    // Everyone authenticated may discover and ask what they may do.
    assert!(rbac_allows(&s, &bob, &Attributes::non_resource("get", "/apis/apps/v1")).is_some());
    assert!(
        rbac_allows(
            &s,
            &bob,
            &res(
                "create",
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                "",
                ""
            )
        )
        .is_some()
    );
    assert!(rbac_allows(&s, &bob, &Attributes::non_resource("get", "/metrics")).is_none());
}

#[test]
fn aggregated_default_roles_nest_view_in_edit_in_admin() {
    let mut s = defaults();
    for (name, role) in [("v", "view"), ("e", "edit"), ("a", "admin")] {
        put(
            &mut s,
            "rolebindings",
            Some("team"),
            &json!({"metadata": {"name": name, "namespace": "team"},
            "roleRef": {"kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "User", "name": role}]}),
        );
    }
    let (v, e, a) = (user("view", &[]), user("edit", &[]), user("admin", &[]));
    let get_deploy = res("get", "apps", "deployments", "team", "web");
    let scale = res("patch", "apps", "deployments/scale", "team", "web");
    let secrets = res("get", "", "secrets", "team", "s");
    let roles = res(
        "create",
        "rbac.authorization.k8s.io",
        "rolebindings",
        "team",
        "",
    );
    for u in [&v, &e, &a] {
        assert!(rbac_allows(&s, u, &get_deploy).is_some(), "{}", u.name);
    }
    assert!(rbac_allows(&s, &v, &scale).is_none());
    assert!(
        rbac_allows(&s, &v, &secrets).is_none(),
        "view does not read secrets"
    );
    assert!(rbac_allows(&s, &e, &scale).is_some());
    assert!(rbac_allows(&s, &e, &secrets).is_some());
    assert!(rbac_allows(&s, &e, &roles).is_none());
    assert!(rbac_allows(&s, &a, &roles).is_some());
    assert!(
        rbac_allows(
            &s,
            &a,
            &res(
                "create",
                "rbac.authorization.k8s.io",
                "rolebindings",
                "other",
                ""
            )
        )
        .is_none()
    );
}

#[test]
fn rules_match_wildcards_resource_names_and_service_accounts() {
    let mut s = defaults();
    put(
        &mut s,
        "clusterroles",
        None,
        &json!({"metadata": {"name": "cm-one"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["app-config"], "verbs": ["get", "update"]},
                  {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["*"]}]}),
    );
    put(
        &mut s,
        "clusterrolebindings",
        None,
        &json!({"metadata": {"name": "robot"},
        "roleRef": {"kind": "ClusterRole", "name": "cm-one"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "ci"}]}),
    );
    let robot = user(
        "system:serviceaccount:ci:robot",
        &["system:serviceaccounts"],
    );
    assert!(rbac_allows(&s, &robot, &res("get", "", "configmaps", "x", "app-config")).is_some());
    assert!(rbac_allows(&s, &robot, &res("get", "", "configmaps", "x", "other")).is_none());
    assert!(rbac_allows(&s, &robot, &res("list", "", "configmaps", "x", "")).is_none());
    assert!(
        rbac_allows(
            &s,
            &robot,
            &res("update", "apps", "statefulsets/scale", "x", "db")
        )
        .is_some()
    );
    assert!(
        rbac_allows(
            &s,
            &robot,
            &res("update", "apps", "statefulsets", "x", "db")
        )
        .is_none()
    );
    assert!(
        rbac_allows(
            &s,
            &user("system:serviceaccount:other:robot", &[]),
            &res("get", "", "configmaps", "x", "app-config")
        )
        .is_none()
    );
    // Removing the binding revokes.
    s.apply(&format!("{RBAC_PREFIX}clusterrolebindings/robot"), None);
    assert!(rbac_allows(&s, &robot, &res("get", "", "configmaps", "x", "app-config")).is_none());
}

#[test]
fn label_selectors_follow_their_operators() {
    let labels = json!({"a": "1", "b": "2"});
    let m = |sel: Value| label_selector_matches(&sel, Some(&labels));
    assert!(m(json!({"matchLabels": {"a": "1"}})));
    assert!(!m(json!({"matchLabels": {"a": "2"}})));
    assert!(m(
        json!({"matchExpressions": [{"key": "b", "operator": "In", "values": ["2", "3"]}]})
    ));
    assert!(m(
        json!({"matchExpressions": [{"key": "c", "operator": "NotIn", "values": ["2"]}]})
    ));
    assert!(m(
        json!({"matchExpressions": [{"key": "a", "operator": "Exists"}]})
    ));
    assert!(!m(
        json!({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]})
    ));
    assert!(!m(
        json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]})
    ));
    assert!(m(json!({})));
}

#[test]
fn nodes_write_only_their_own_objects() {
    let n = "node-1";
    let none = NodeFacts::default();
    let mine = NodeFacts {
        pod_node: Some(n.into()),
        referenced_by_node_pod: true,
    };
    let theirs = NodeFacts {
        pod_node: Some("node-2".into()),
        referenced_by_node_pod: false,
    };
    assert!(node_allows(n, &res("patch", "", "nodes/status", "", n), &none).is_some());
    assert!(node_allows(n, &res("patch", "", "nodes/status", "", "node-2"), &none).is_none());
    assert!(node_allows(n, &res("update", "", "nodes", "", "node-2"), &none).is_none());
    assert!(node_allows(n, &res("create", "", "nodes", "", ""), &none).is_some());
    assert!(
        node_allows(
            n,
            &res(
                "update",
                "coordination.k8s.io",
                "leases",
                "kube-node-lease",
                n
            ),
            &none
        )
        .is_some()
    );
    assert!(
        node_allows(
            n,
            &res(
                "update",
                "coordination.k8s.io",
                "leases",
                "kube-node-lease",
                "node-2"
            ),
            &none
        )
        .is_none()
    );
    assert!(
        node_allows(
            n,
            &res("update", "coordination.k8s.io", "leases", "default", n),
            &none
        )
        .is_none()
    );
    assert!(node_allows(n, &res("patch", "", "pods/status", "d", "p"), &mine).is_some());
    assert!(node_allows(n, &res("patch", "", "pods/status", "d", "p"), &theirs).is_none());
    assert!(
        node_allows(n, &res("update", "", "pods", "d", "p"), &mine).is_none(),
        "spec is not the kubelet's"
    );
    assert!(node_allows(n, &res("delete", "", "pods", "d", "p"), &mine).is_some());
    assert!(node_allows(n, &res("get", "", "secrets", "d", "s"), &mine).is_some());
    assert!(node_allows(n, &res("get", "", "secrets", "d", "s"), &theirs).is_none());
    assert!(node_allows(n, &res("list", "", "secrets", "d", ""), &mine).is_none());
    assert!(node_allows(n, &res("watch", "", "pods", "", ""), &none).is_some());
    assert!(node_allows(n, &res("create", "", "events", "d", ""), &none).is_some());
    assert!(node_allows(n, &res("delete", "", "services", "d", "s"), &none).is_none());
    assert_eq!(
        node_name(&user("system:node:node-1", &["system:nodes"])),
        Some("node-1")
    );
    assert_eq!(node_name(&user("system:node:node-1", &[])), None);
}

#[test]
fn pod_references_cover_volumes_env_and_pull_secrets() {
    let pod = json!({"spec": {
        "serviceAccountName": "sa",
        "imagePullSecrets": [{"name": "pull"}],
        "volumes": [{"name": "v", "configMap": {"name": "cm-vol"}},
                    {"name": "s", "secret": {"secretName": "sec-vol"}},
                    {"name": "p", "projected": {"sources": [{"configMap": {"name": "cm-proj"}}]}},
                    {"name": "c", "persistentVolumeClaim": {"claimName": "data"}}],
        "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "sec-envfrom"}}]}],
        "containers": [{"name": "c", "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}}]}]}});
    for (res, name) in [
        ("configmaps", "cm-vol"),
        ("configmaps", "cm-proj"),
        ("configmaps", "cm-env"),
        ("secrets", "sec-vol"),
        ("secrets", "sec-envfrom"),
        ("secrets", "pull"),
        ("persistentvolumeclaims", "data"),
        ("serviceaccounts", "sa"),
    ] {
        assert!(pod_references(&pod, res, name), "{res} {name}");
    }
    assert!(!pod_references(&pod, "secrets", "cm-vol"));
    assert!(!pod_references(&pod, "configmaps", "other"));
    assert!(!pod_references(&pod, "serviceaccounts", "default"));
}

#[test]
fn roles_and_bindings_grant_only_what_their_writer_holds() {
    let mut s = defaults();
    put(
        &mut s,
        "rolebindings",
        Some("team"),
        &json!({"metadata": {"name": "a", "namespace": "team"},
        "roleRef": {"kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "User", "name": "alice"}]}),
    );
    let alice = user("alice", &["system:authenticated"]);
    let role = |rules: Value| json!({"metadata": {"name": "r"}, "rules": rules});
    // A role within what admin holds.
    let ok = role(
        json!([{"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["get", "list"]}]),
    );
    assert_eq!(
        escalation_check(&s, &alice, "create", "roles", "team", "r", Some(&ok)),
        Ok(())
    );
    // Nodes, or every resource, are not admin's to give.
    for rules in [
        json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]),
        json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
    ] {
        let err = escalation_check(
            &s,
            &alice,
            "create",
            "roles",
            "team",
            "r",
            Some(&role(rules)),
        )
        .unwrap_err();
        assert!(err.contains("not currently held"), "{err}");
    }
    // Elsewhere, nothing.
    assert!(escalation_check(&s, &alice, "create", "roles", "other", "r", Some(&ok)).is_err());
    // Bindings: to view/edit/admin inside team, yes; to cluster-admin, no.
    let binding = |role: &str| {
        json!({"metadata": {"name": "b"},
        "roleRef": {"kind": "ClusterRole", "name": role}, "subjects": [{"kind": "User", "name": "carol"}]})
    };
    for r in ["view", "edit", "admin"] {
        assert_eq!(
            escalation_check(
                &s,
                &alice,
                "create",
                "rolebindings",
                "team",
                "b",
                Some(&binding(r))
            ),
            Ok(()),
            "{r}"
        );
    }
    assert!(
        escalation_check(
            &s,
            &alice,
            "create",
            "rolebindings",
            "team",
            "b",
            Some(&binding("cluster-admin"))
        )
        .is_err()
    );
    // Patches need escalate/bind; granting `bind` on a role lets it be bound.
    assert!(escalation_check(&s, &alice, "patch", "roles", "team", "r", None).is_err());
    put(
        &mut s,
        "roles",
        Some("team"),
        &json!({"metadata": {"name": "binder", "namespace": "team"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "resourceNames": ["cluster-admin"], "verbs": ["bind"]}]}),
    );
    put(
        &mut s,
        "rolebindings",
        Some("team"),
        &json!({"metadata": {"name": "alice-binds", "namespace": "team"},
        "roleRef": {"kind": "Role", "name": "binder"}, "subjects": [{"kind": "User", "name": "alice"}]}),
    );
    assert_eq!(
        escalation_check(
            &s,
            &alice,
            "create",
            "rolebindings",
            "team",
            "b",
            Some(&binding("cluster-admin"))
        ),
        Ok(())
    );
}

#[test]
fn a_mirror_pod_may_refer_to_no_api_object() {
    let with = |spec: Value| json!({"metadata": {"name": "m"}, "spec": spec});
    let plain = with(json!({"containers": [{"name": "c", "image": "i",
        "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}],
        "volumes": [{"name": "d", "projected": {"sources": [{"downwardAPI": {"items": []}}]}}]}));
    assert_eq!(mirror_pod_refusal(&plain), None);
    for (spec, want) in [
        (
            json!({"containers": [{"name": "c", "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "admin-creds", "key": "k"}}}]}]}),
            "secrets",
        ),
        (
            json!({"initContainers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "x"}}]}], "containers": []}),
            "configmaps",
        ),
        (
            json!({"containers": [], "imagePullSecrets": [{"name": "reg"}]}),
            "secrets",
        ),
        (
            json!({"containers": [], "serviceAccountName": "default"}),
            "service account",
        ),
        (
            json!({"containers": [], "volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]}),
            "service account tokens",
        ),
        (
            json!({"containers": [], "volumes": [{"name": "c", "persistentVolumeClaim": {"claimName": "data"}}]}),
            "persistentvolumeclaims",
        ),
    ] {
        let why = mirror_pod_refusal(&with(spec.clone())).unwrap_or_else(|| panic!("{spec}"));
        assert!(why.contains(want), "{why} for {spec}");
    }
}
