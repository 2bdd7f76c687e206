//! Authorization as kube-apiserver's `--authorization-mode=Node,RBAC`:
//! the Node authorizer for kubelets (`system:node:<name>` in `system:nodes`),
//! then RBAC (Role, ClusterRole with aggregation, RoleBinding,
//! ClusterRoleBinding). `system:masters` is allowed everything, as in
//! Kubernetes.
//!
//! The RBAC objects are kept in memory ([`Snapshot`]), loaded from the store
//! and followed by a store watch; decisions are pure functions of the
//! snapshot ([`rbac_allows`]) or of the pods a node runs ([`node_allows`]).

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use serde_json::Value;

use super::{
    auth::User,
    resources::{RESOURCES, Resource},
};
use crate::store::{EventKind, ListRequest, Store, StoreError, WatchItem};

/// What a request asks to do, as authorizers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection;
    /// for non-resource requests the lower-case HTTP method.
    pub verb: String,
    pub resource: Option<ResourceAttributes>,
    /// The path, for non-resource requests (`/healthz`, `/api`, …).
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceAttributes {
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl Attributes {
    pub fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        Self {
            verb: verb.to_owned(),
            resource: Some(ResourceAttributes {
                group: group.to_owned(),
                resource: resource.to_owned(),
                subresource: subresource.to_owned(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
            path: String::new(),
        }
    }

    pub fn non_resource(verb: &str, path: &str) -> Self {
        Self {
            verb: verb.to_owned(),
            resource: None,
            path: path.to_owned(),
        }
    }

    /// Kubernetes' wording: `User "bob" cannot list resource "pods" in API
    /// group "" in the namespace "default"`.
    pub fn denial(&self, user: &User) -> String {
        match &self.resource {
            Some(r) => {
                let res = if r.subresource.is_empty() {
                    r.resource.clone()
                } else {
                    format!("{}/{}", r.resource, r.subresource)
                };
                let scope = if r.namespace.is_empty() {
                    "at the cluster scope".to_owned()
                } else {
                    format!("in the namespace {:?}", r.namespace)
                };
                format!(
                    "User {:?} cannot {} resource {res:?} in API group {:?} {scope}",
                    user.name, self.verb, r.group
                )
            }
            None => format!(
                "User {:?} cannot {} path {:?}",
                user.name, self.verb, self.path
            ),
        }
    }
}

/// The RBAC objects, by kind.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    cluster_roles: BTreeMap<String, Value>,
    /// (namespace, name)
    roles: BTreeMap<(String, String), Value>,
    cluster_role_bindings: BTreeMap<String, Value>,
    role_bindings: BTreeMap<(String, String), Value>,
}

const RBAC_PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

impl Snapshot {
    /// Applies one store key (`/registry/rbac.authorization.k8s.io/<plural>/[ns/]name`).
    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        let Some(rest) = key.strip_prefix(RBAC_PREFIX) else {
            return;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let obj = value.and_then(|v| serde_json::from_slice::<Value>(v).ok());
        match parts.as_slice() {
            ["clusterroles", name] => put(&mut self.cluster_roles, (*name).to_owned(), obj),
            ["clusterrolebindings", name] => {
                put(&mut self.cluster_role_bindings, (*name).to_owned(), obj);
            }
            ["roles", ns, name] => {
                put(&mut self.roles, ((*ns).to_owned(), (*name).to_owned()), obj);
            }
            ["rolebindings", ns, name] => put(
                &mut self.role_bindings,
                ((*ns).to_owned(), (*name).to_owned()),
                obj,
            ),
            _ => {}
        }
    }

    /// The rules of a ClusterRole, with those of the roles it aggregates.
    /// Aggregation nests (view is aggregated into edit, edit into admin),
    /// as the rules Kubernetes' aggregation controller writes do.
    fn cluster_role_rules(&self, name: &str) -> Vec<&Value> {
        let mut rules = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        self.collect_rules(name, &mut rules, &mut seen);
        rules
    }

    fn collect_rules<'a>(
        &'a self,
        name: &str,
        rules: &mut Vec<&'a Value>,
        seen: &mut std::collections::BTreeSet<String>,
    ) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        let Some(role) = self.cluster_roles.get(name) else {
            return;
        };
        rules.extend(array(role, "/rules"));
        if let Some(selectors) = role
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
        {
            for (other_name, other) in &self.cluster_roles {
                let labels = other.pointer("/metadata/labels");
                if selectors.iter().any(|s| label_selector_matches(s, labels)) {
                    self.collect_rules(other_name, rules, seen);
                }
            }
        }
    }
}

fn put<K: Ord>(map: &mut BTreeMap<K, Value>, k: K, v: Option<Value>) {
    match v {
        Some(v) => {
            map.insert(k, v);
        }
        None => {
            map.remove(&k);
        }
    }
}

fn array<'a>(v: &'a Value, ptr: &str) -> impl Iterator<Item = &'a Value> + use<'a> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn strings<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a str> {
    v.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// A `metav1.LabelSelector` object (matchLabels and matchExpressions)
/// against a label map (`rudder_k8s`'s selector; one that does not parse
/// matches nothing).
pub fn label_selector_matches(sel: &Value, labels: Option<&Value>) -> bool {
    let Ok(sel) = rudder_k8s::label_selector::LabelSelector::from_object(sel) else {
        return false;
    };
    // Looked up in place: this runs for every ClusterRole an aggregated
    // role's selectors are tried on, on each authorization.
    sel.matches_by(|k| labels?.get(k)?.as_str())
}

fn subject_matches(s: &Value, user: &User, binding_ns: &str) -> bool {
    let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
    match s.get("kind").and_then(Value::as_str) {
        Some("User") => user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = s
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let verbs_ok = strings(rule, "verbs").any(|v| v == "*" || v == a.verb);
    if !verbs_ok {
        return false;
    }
    match &a.resource {
        Some(r) => {
            let groups_ok = strings(rule, "apiGroups").any(|g| g == "*" || g == r.group);
            let combined = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let resources_ok = strings(rule, "resources").any(|x| {
                x == "*"
                    || x == combined
                    || (!r.subresource.is_empty() && x == format!("*/{}", r.subresource))
                    || (x.strip_suffix("/*") == Some(r.resource.as_str())
                        && !r.subresource.is_empty())
            });
            let mut names = strings(rule, "resourceNames").peekable();
            let names_ok = names.peek().is_none() || names.any(|n| n == r.name);
            groups_ok && resources_ok && names_ok
        }
        None => strings(rule, "nonResourceURLs").any(|u| {
            u == "*" || u == a.path || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
        }),
    }
}

/// The RBAC decision: `Some(reason)` when a binding allows the request.
pub fn rbac_allows(snap: &Snapshot, user: &User, a: &Attributes) -> Option<String> {
    for (name, b) in &snap.cluster_role_bindings {
        if !array(b, "/subjects").any(|s| subject_matches(s, user, "")) {
            continue;
        }
        let role = b
            .pointer("/roleRef/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if snap
            .cluster_role_rules(role)
            .iter()
            .any(|r| rule_allows(r, a))
        {
            return Some(format!(
                "RBAC: allowed by ClusterRoleBinding {name:?} of ClusterRole {role:?} to {:?}",
                user.name
            ));
        }
    }
    // Role bindings only grant inside their namespace, and never
    // non-resource URLs.
    let ns = a
        .resource
        .as_ref()
        .map(|r| r.namespace.as_str())
        .filter(|n| !n.is_empty())?;
    for ((bns, name), b) in snap.role_bindings.range((ns.to_owned(), String::new())..) {
        if bns != ns {
            break;
        }
        if !array(b, "/subjects").any(|s| subject_matches(s, user, ns)) {
            continue;
        }
        let kind = b
            .pointer("/roleRef/kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let role = b
            .pointer("/roleRef/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let rules: Vec<&Value> = match kind {
            "ClusterRole" => snap.cluster_role_rules(role),
            "Role" => snap
                .roles
                .get(&(ns.to_owned(), role.to_owned()))
                .map(|r| array(r, "/rules").collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if rules.iter().any(|r| rule_allows(r, a)) {
            return Some(format!(
                "RBAC: allowed by RoleBinding \"{name}/{ns}\" of {kind} {role:?} to {:?}",
                user.name
            ));
        }
    }
    None
}

/// Every permission in `rules` that `user` does not hold in `namespace`
/// ("" for cluster-wide), as `{APIGroups:[..], Resources:[..], Verbs:[..]}`.
/// A wildcard in a rule is only held through the same wildcard.
pub fn missing_permissions(
    snap: &Snapshot,
    user: &User,
    namespace: &str,
    rules: &[&Value],
) -> Vec<String> {
    let mut missing = Vec::new();
    for rule in rules {
        for verb in strings(rule, "verbs") {
            let urls: Vec<&str> = strings(rule, "nonResourceURLs").collect();
            if !urls.is_empty() {
                for url in urls {
                    if namespace.is_empty()
                        && rbac_allows(snap, user, &Attributes::non_resource(verb, url)).is_some()
                    {
                        continue;
                    }
                    missing.push(format!("{{NonResourceURLs:[{url:?}], Verbs:[{verb:?}]}}"));
                }
                continue;
            }
            let names: Vec<&str> = strings(rule, "resourceNames").collect();
            let names = if names.is_empty() { vec![""] } else { names };
            for group in strings(rule, "apiGroups") {
                for res in strings(rule, "resources") {
                    let (resource, sub) = res.split_once('/').unwrap_or((res, ""));
                    for name in &names {
                        let a = Attributes::resource(verb, group, resource, sub, namespace, name);
                        if rbac_allows(snap, user, &a).is_none() {
                            let names = if name.is_empty() {
                                String::new()
                            } else {
                                format!(", ResourceNames:[{name:?}]")
                            };
                            missing.push(format!(
                                "{{APIGroups:[{group:?}], Resources:[{res:?}]{names}, Verbs:[{verb:?}]}}"
                            ));
                        }
                    }
                }
            }
        }
    }
    missing
}

/// RBAC's escalation check for writes of roles and bindings by anyone but
/// `system:masters`: a role may only hold what its writer holds (or the
/// writer has `escalate`), a binding may only grant what its writer holds
/// (or the writer has `bind` on the role). A patch is judged by
/// `escalate`/`bind` alone. `obj` is the object in the body.
pub fn escalation_check(
    snap: &Snapshot,
    user: &User,
    verb: &str,
    plural: &str,
    namespace: &str,
    name: &str,
    obj: Option<&Value>,
) -> Result<(), String> {
    let group = "rbac.authorization.k8s.io";
    let grant = |v: &str, res: &str, n: &str| {
        rbac_allows(
            snap,
            user,
            &Attributes::resource(v, group, res, "", namespace, n),
        )
        .is_some()
    };
    let (rules, special): (Vec<&Value>, bool) = match plural {
        "roles" | "clusterroles" => {
            let special = grant("escalate", plural, name);
            let mut rules: Vec<&Value> = obj
                .map(|o| array(o, "/rules").collect())
                .unwrap_or_default();
            // An aggregated ClusterRole's rules come from the roles it selects.
            if let Some(o) = obj
                && let Some(sel) = o
                    .pointer("/aggregationRule/clusterRoleSelectors")
                    .and_then(Value::as_array)
            {
                for other in snap.cluster_roles.values() {
                    if sel
                        .iter()
                        .any(|s| label_selector_matches(s, other.pointer("/metadata/labels")))
                    {
                        rules.extend(array(other, "/rules"));
                    }
                }
            }
            (rules, special)
        }
        "rolebindings" | "clusterrolebindings" => {
            let kind = obj
                .and_then(|o| o.pointer("/roleRef/kind"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let role = obj
                .and_then(|o| o.pointer("/roleRef/name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let role_plural = if kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            let special = grant("bind", role_plural, role);
            let rules = match kind {
                "Role" => snap
                    .roles
                    .get(&(namespace.to_owned(), role.to_owned()))
                    .map(|r| array(r, "/rules").collect())
                    .unwrap_or_default(),
                _ => snap.cluster_role_rules(role),
            };
            (rules, special)
        }
        _ => return Ok(()),
    };
    if special {
        return Ok(());
    }
    if verb == "patch" {
        return Err(format!(
            "user {:?} may patch {plural} only with the {:?} verb on them",
            user.name,
            if plural.ends_with("bindings") {
                "bind"
            } else {
                "escalate"
            }
        ));
    }
    let missing = missing_permissions(snap, user, namespace, &rules);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}",
            user.name,
            user.groups,
            missing.join("\n")
        ))
    }
}

/// The node a kubelet's identity names (`system:node:<name>` in `system:nodes`).
pub fn node_name(user: &User) -> Option<&str> {
    if !user.groups.iter().any(|g| g == "system:nodes") {
        return None;
    }
    user.name
        .strip_prefix("system:node:")
        .filter(|n| !n.is_empty())
}

/// What the Node authorizer needs to know about the object a request
/// touches, read from the store by the caller.
#[derive(Clone, Debug, Default)]
pub struct NodeFacts {
    /// For pods (and their subresources): the pod's `spec.nodeName`.
    pub pod_node: Option<String>,
    /// For configmaps, secrets, PVCs and service accounts: whether a pod
    /// bound to this node refers to the object.
    pub referenced_by_node_pod: bool,
}

/// What the Node authorizer needs to look up for `a` before deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeLookup {
    None,
    /// The pod named in the request.
    Pod,
    /// Pods on the node in the request's namespace, for references.
    PodsReferencing,
}

pub fn node_lookup(a: &Attributes) -> NodeLookup {
    let Some(r) = &a.resource else {
        return NodeLookup::None;
    };
    match (r.group.as_str(), r.resource.as_str()) {
        ("", "pods") if !r.name.is_empty() && a.verb != "get" => NodeLookup::Pod,
        ("", "configmaps" | "secrets" | "persistentvolumeclaims")
            if a.verb == "get" && !r.name.is_empty() =>
        {
            NodeLookup::PodsReferencing
        }
        ("", "serviceaccounts") if r.subresource == "token" && !r.name.is_empty() => {
            NodeLookup::PodsReferencing
        }
        _ => NodeLookup::None,
    }
}

/// The Node authorizer: a kubelet reads what it needs to run its pods and
/// writes only its own Node and Lease and the status of its own pods.
pub fn node_allows(node: &str, a: &Attributes, facts: &NodeFacts) -> Option<String> {
    let r = a.resource.as_ref()?;
    let read = matches!(a.verb.as_str(), "get" | "list" | "watch");
    let own = |name: &str| name == node;
    let allowed = match (
        r.group.as_str(),
        r.resource.as_str(),
        r.subresource.as_str(),
    ) {
        // Cluster-wide reads the kubelet and proxy need.
        ("", "nodes" | "services" | "endpoints" | "pods" | "namespaces", "") if read => true,
        ("", "nodes" | "pods", "status") if read => true,
        ("discovery.k8s.io", "endpointslices", "") if read => true,
        ("", "nodes", "" | "status") => {
            matches!(a.verb.as_str(), "create" | "update" | "patch" | "delete")
                && (own(&r.name) || (a.verb == "create" && r.name.is_empty()))
        }
        ("coordination.k8s.io", "leases", "") => {
            r.namespace == "kube-node-lease"
                && (own(&r.name)
                    || (a.verb == "create" && r.name.is_empty())
                    || (read && r.name.is_empty()))
        }
        ("", "pods", "status") => {
            matches!(a.verb.as_str(), "update" | "patch") && facts.pod_node.as_deref() == Some(node)
        }
        ("", "pods", "") if a.verb == "delete" => facts.pod_node.as_deref() == Some(node),
        // Mirror pods of its static pods (NodeRestriction checks the body).
        ("", "pods", "") if a.verb == "create" => r.name.is_empty(),
        ("", "pods", "eviction") if a.verb == "create" => facts.pod_node.as_deref() == Some(node),
        ("", "configmaps" | "secrets" | "persistentvolumeclaims", "") if a.verb == "get" => {
            facts.referenced_by_node_pod
        }
        ("", "serviceaccounts", "token") if a.verb == "create" => facts.referenced_by_node_pod,
        ("", "persistentvolumes", "") if a.verb == "get" => true,
        // A kubelet asks who may use its API (system:node's rules).
        ("authorization.k8s.io", "subjectaccessreviews", "")
        | ("authentication.k8s.io", "tokenreviews", "") => a.verb == "create",
        ("" | "events.k8s.io", "events", "") => {
            matches!(a.verb.as_str(), "create" | "update" | "patch")
        }
        _ => false,
    };
    allowed.then(|| format!("Node: allowed for node {node:?}"))
}

/// Whether `pod` (on `node`) refers to `kind` `name` (configmap, secret,
/// persistentvolumeclaim, serviceaccount).
pub fn pod_references(pod: &Value, resource: &str, name: &str) -> bool {
    referenced_names(pod, resource).iter().any(|n| n == name)
}

/// The names of the objects of `resource` (configmaps, secrets,
/// persistentvolumeclaims, serviceaccounts) that `pod` refers to: volumes
/// and projected sources, env and envFrom of every container, image pull
/// secrets, its service account (`default` when unnamed).
pub fn referenced_names(pod: &Value, resource: &str) -> Vec<String> {
    let spec = &pod["spec"];
    let mut out: Vec<String> = Vec::new();
    let mut add = |v: Option<&Value>| {
        if let Some(n) = v.and_then(Value::as_str) {
            out.push(n.to_owned());
        }
    };
    match resource {
        "serviceaccounts" => match spec.get("serviceAccountName") {
            Some(v) => add(Some(v)),
            None => out.push("default".into()),
        },
        "persistentvolumeclaims" => {
            for v in array(spec, "/volumes") {
                add(v.pointer("/persistentVolumeClaim/claimName"));
            }
        }
        "configmaps" | "secrets" => {
            let (vol, key_ref, env_from, projected) = if resource == "configmaps" {
                (
                    "/configMap/name",
                    "configMapKeyRef",
                    "configMapRef",
                    "configMap",
                )
            } else {
                ("/secret/secretName", "secretKeyRef", "secretRef", "secret")
            };
            for v in array(spec, "/volumes") {
                add(v.pointer(vol));
                for s in array(v, "/projected/sources") {
                    add(s.pointer(&format!("/{projected}/name")));
                }
            }
            for c in ["containers", "initContainers", "ephemeralContainers"]
                .iter()
                .flat_map(|k| array(spec, &format!("/{k}")))
            {
                for e in array(c, "/env") {
                    add(e.pointer(&format!("/valueFrom/{key_ref}/name")));
                }
                for e in array(c, "/envFrom") {
                    add(e.pointer(&format!("/{env_from}/name")));
                }
            }
            if resource == "secrets" {
                for s in array(spec, "/imagePullSecrets") {
                    add(s.get("name"));
                }
            }
        }
        _ => {}
    }
    out
}

/// Why a kubelet may not create this pod as a mirror pod: NodeRestriction
/// lets a node create only pods that refer to no other API object, since
/// the node could read any object its pods refer to.
pub fn mirror_pod_refusal(pod: &Value) -> Option<String> {
    let spec = &pod["spec"];
    if spec["serviceAccountName"]
        .as_str()
        .is_some_and(|s| !s.is_empty())
    {
        return Some("can not create pods that reference a service account".into());
    }
    for r in ["secrets", "configmaps", "persistentvolumeclaims"] {
        if !referenced_names(pod, r).is_empty() {
            return Some(format!("can not create pods that reference {r}"));
        }
    }
    let projected_token = array(spec, "/volumes").any(|v| {
        v.get("ephemeral").is_some()
            || array(v, "/projected/sources").any(|s| {
                s.get("serviceAccountToken").is_some() || s.get("clusterTrustBundle").is_some()
            })
    });
    projected_token.then(|| {
        "can not create pods that use ephemeral volumes, service account tokens or cluster trust bundles".into()
    })
}

/// The authorizer the apiserver asks: superusers, the Node authorizer, then
/// RBAC over a snapshot kept current by a store watch.
#[derive(Debug, Default)]
pub struct Authorizer {
    snapshot: RwLock<Arc<Snapshot>>,
}

impl Authorizer {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, s: Snapshot) {
        *self
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(s);
    }

    /// Loads every RBAC object; returns the revision read at.
    pub async fn load(&self, store: &dyn Store) -> Result<i64, StoreError> {
        let resp = store
            .list(ListRequest {
                prefix: RBAC_PREFIX.into(),
                after: None,
                limit: 0,
                revision: 0,
            })
            .await?;
        let mut s = Snapshot::default();
        for kv in &resp.kvs {
            s.apply(&kv.key, Some(&kv.value));
        }
        self.set(s);
        Ok(resp.revision)
    }

    /// Follows the store's RBAC keys until `stop`, relisting when the
    /// watch breaks.
    pub async fn follow(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        mut from: i64,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let watch = store.watch(RBAC_PREFIX.into(), from + 1).await;
            let mut rx = match watch {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::debug!(error = %e, "RBAC watch refused; reloading");
                    tokio::sync::mpsc::channel(1).1
                }
            };
            loop {
                let item = tokio::select! {
                    i = rx.recv() => i,
                    _ = stop.wait_for(|s| *s) => return,
                };
                match item {
                    Some(Ok(WatchItem::Event(ev))) => {
                        let mut s = (*self.snapshot()).clone();
                        let v = (ev.kind == EventKind::Put).then_some(ev.kv.value.as_ref());
                        s.apply(&ev.kv.key, v);
                        self.set(s);
                        from = ev.kv.mod_revision;
                    }
                    Some(Ok(WatchItem::Progress(rev))) => from = from.max(rev),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "RBAC watch ended; reloading");
                        break;
                    }
                    None => break,
                }
            }
            loop {
                match self.load(store.as_ref()).await {
                    Ok(rev) => {
                        from = rev;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reloading RBAC objects failed; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stop.wait_for(|s| *s) => return,
                        }
                    }
                }
            }
        }
    }

    /// The decision for `user` doing `a`: `Ok(reason)` or `Err(reason)`.
    pub async fn authorize(
        &self,
        store: &dyn Store,
        user: &User,
        a: &Attributes,
    ) -> Result<String, String> {
        if user.groups.iter().any(|g| g == "system:masters") {
            return Ok("member of system:masters".into());
        }
        if let Some(node) = node_name(user) {
            let facts = node_facts(store, node, a).await;
            if let Some(why) = node_allows(node, a, &facts) {
                return Ok(why);
            }
        }
        rbac_allows(&self.snapshot(), user, a).ok_or_else(|| a.denial(user))
    }
}

fn resource_named(group: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
}

async fn node_facts(store: &dyn Store, node: &str, a: &Attributes) -> NodeFacts {
    let mut facts = NodeFacts::default();
    let Some(r) = &a.resource else {
        return facts;
    };
    let Some(pods) = resource_named("", "pods") else {
        return facts;
    };
    match node_lookup(a) {
        NodeLookup::None => {}
        NodeLookup::Pod => {
            let key = super::handlers::key(pods, &r.namespace, &r.name);
            if let Ok((Some(kv), _)) = store.get(&key).await
                && let Ok(p) = serde_json::from_slice::<Value>(&kv.value)
            {
                facts.pod_node = p
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
        }
        NodeLookup::PodsReferencing => {
            // The key of an empty name is the namespace's prefix.
            let prefix = super::handlers::key(pods, &r.namespace, "");
            if let Ok(resp) = store
                .list(ListRequest {
                    prefix,
                    after: None,
                    limit: 0,
                    revision: 0,
                })
                .await
            {
                // Mirror pods are the node's own word about its static
                // pods: what they refer to grants it nothing.
                facts.referenced_by_node_pod = resp.kvs.iter().any(|kv| {
                    serde_json::from_slice::<Value>(&kv.value).is_ok_and(|p| {
                        p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
                            && p.pointer("/metadata/annotations/kubernetes.io~1config.mirror")
                                .is_none()
                            && pod_references(&p, &r.resource, &r.name)
                    })
                });
            }
        }
    }
    facts
}

pub use defaults::{default_objects, reconcile};

mod defaults;
#[cfg(test)]
mod tests;
