//! The controllers' pure logic: given a cache snapshot, what they ask for.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    cache::{Cached, Kind, Snapshot, key_of},
    ops::Op,
    *,
};

fn now() -> Timestamp {
    "2026-11-22T12:00:00Z".parse().unwrap()
}

fn put<T: Cached>(s: &mut Snapshot, v: Value) {
    let o: T = serde_json::from_value(v).unwrap();
    let k = key_of(kube::Resource::meta(&o));
    T::slot(s).insert(k, Arc::new(o));
}

fn node(name: &str) -> Value {
    json!({"metadata": {"name": name, "uid": format!("u-{name}"), "labels": {"kubernetes.io/hostname": name},
                        "creationTimestamp": "2026-11-22T11:59:00Z"},
           "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                      "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-11-22T11:59:59Z"}]}})
}

fn pod(
    name: &str,
    labels: impl Into<Value>,
    owner: Option<&str>,
    node: Option<&str>,
    ready: bool,
) -> Value {
    let mut p = json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"), "labels": labels.into(),
                     "creationTimestamp": "2026-11-22T11:00:00Z", "resourceVersion": "5"},
        "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": if node.is_some() { "Running" } else { "Pending" }},
    });
    if let Some(o) = owner {
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": o,
            "uid": format!("u-{o}"), "controller": true}]);
    }
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
        p["status"]["podIP"] = json!(format!("10.244.0.{}", name.len()));
    }
    if ready {
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-22T11:00:00Z"}]);
    }
    p
}

fn creates(ops: &[Op], kind: Kind) -> Vec<&Value> {
    ops.iter()
        .filter_map(|o| match o {
            Op::Create {
                kind: k, object, ..
            } if *k == kind => Some(object),
            _ => None,
        })
        .collect()
}

fn deletes(ops: &[Op], kind: Kind) -> Vec<String> {
    ops.iter()
        .filter_map(|o| match o {
            Op::Delete { kind: k, name, .. } if *k == kind => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// The (name, body) of each patch of `kind`, of the object or of its
/// status subresource.
fn patches_of(ops: &[Op], kind: Kind, of_status: bool) -> Vec<(&str, &Value)> {
    ops.iter()
        .filter_map(|o| match o {
            Op::Patch {
                kind: k,
                name,
                patch,
                status,
                ..
            } if *k == kind && *status == of_status => Some((name.as_str(), patch)),
            _ => None,
        })
        .collect()
}

fn patches(ops: &[Op], kind: Kind) -> Vec<(&str, &Value)> {
    patches_of(ops, kind, false)
}

fn rs(
    name: &str,
    replicas: i32,
    available: i32,
    template_image: &str,
    revision: &str,
    deploy: &str,
) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"), "resourceVersion": "3",
                     "annotations": {"deployment.kubernetes.io/revision": revision},
                     "creationTimestamp": "2026-11-22T10:00:00Z",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deploy,
                                          "uid": format!("u-{deploy}"), "controller": true}]},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": name}},
                              "spec": {"containers": [{"name": "c", "image": template_image}]}}},
        "status": {"replicas": replicas, "readyReplicas": available, "availableReplicas": available},
    })
}

fn deployment(replicas: i32, image: &str, surge: i32, unavailable: i32) -> Value {
    json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u-web", "generation": 2, "resourceVersion": "9"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": image}]}}},
    })
}

fn scaled_to(ops: &[Op]) -> Vec<(String, i64)> {
    patches(ops, Kind::ReplicaSet)
        .into_iter()
        .filter_map(|(n, p)| Some((n.to_owned(), p.pointer("/spec/replicas")?.as_i64()?)))
        .collect()
}

#[test]
fn replicaset_creates_missing_and_deletes_the_least_valuable() {
    let mut s = Snapshot::default();
    put::<k8s_openapi::api::apps::v1::ReplicaSet>(&mut s, rs("r", 3, 0, "nginx", "1", "web"));
    put::<k8s_openapi::api::core::v1::Pod>(
        &mut s,
        pod("a", json!({"app": "web"}), Some("r"), Some("n1"), true),
    );
    let ops = replicaset::plan(&s, now());
    assert_eq!(creates(&ops, Kind::Pod).len(), 2);
    let p = creates(&ops, Kind::Pod)[0];
    assert_eq!(p["metadata"]["generateName"], "r-");
    assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "u-r");

    // Four pods for three replicas: the unscheduled one goes first.
    put::<k8s_openapi::api::core::v1::Pod>(
        &mut s,
        pod("b", json!({"app": "web"}), Some("r"), Some("n1"), true),
    );
    put::<k8s_openapi::api::core::v1::Pod>(
        &mut s,
        pod("c", json!({"app": "web"}), Some("r"), Some("n2"), false),
    );
    put::<k8s_openapi::api::core::v1::Pod>(
        &mut s,
        pod("d", json!({"app": "web"}), Some("r"), None, false),
    );
    let ops = replicaset::plan(&s, now());
    assert_eq!(deletes(&ops, Kind::Pod), ["d"]);
    // An orphan matching the selector is adopted.
    put::<k8s_openapi::api::core::v1::Pod>(
        &mut s,
        pod("e", json!({"app": "web"}), None, Some("n1"), true),
    );
    let ops = replicaset::plan(&s, now());
    assert!(
        patches(&ops, Kind::Pod)
            .iter()
            .any(|(n, p)| *n == "e" && p["metadata"]["ownerReferences"][0]["uid"] == "u-r")
    );
}

#[test]
fn deployment_creates_its_first_replicaset_at_full_size() {
    let mut s = Snapshot::default();
    put::<k8s_openapi::api::apps::v1::Deployment>(&mut s, deployment(3, "nginx:1.25", 1, 0));
    let ops = deployment::plan(&s, now());
    let c = creates(&ops, Kind::ReplicaSet);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["spec"]["replicas"], 3);
    assert_eq!(
        c[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let hash = c[0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(c[0]["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(
        c[0]["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash
    );
}

#[test]
fn rolling_update_stays_within_surge_and_unavailability() {
    // 4 replicas, surge 1, unavailable 0: the new ReplicaSet grows by one,
    // the old shrinks only as new pods become available.
    let mut s = Snapshot::default();
    put::<k8s_openapi::api::apps::v1::Deployment>(&mut s, deployment(4, "nginx:1.26", 1, 0));
    put::<k8s_openapi::api::apps::v1::ReplicaSet>(
        &mut s,
        rs("web-old", 4, 4, "nginx:1.25", "1", "web"),
    );
    let ops = deployment::plan(&s, now());
    let c = creates(&ops, Kind::ReplicaSet);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["spec"]["replicas"], 1, "surge of one");
    assert_eq!(
        c[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let name = c[0]["metadata"]["name"].as_str().unwrap().to_owned();
    let hash = name.trim_start_matches("web-").to_owned();
    let mut new = rs(&name, 1, 0, "nginx:1.26", "2", "web");
    new["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    put::<k8s_openapi::api::apps::v1::ReplicaSet>(&mut s, new.clone());
    // The new pod is not available yet: nothing may shrink, nothing may grow.
    assert!(scaled_to(&deployment::plan(&s, now())).is_empty());
    // Available: the old one gives one up.
    new["status"]["availableReplicas"] = json!(1);
    put::<k8s_openapi::api::apps::v1::ReplicaSet>(&mut s, new.clone());
    assert_eq!(
        scaled_to(&deployment::plan(&s, now())),
        [("web-old".to_owned(), 3)]
    );
    // With room again, the new one grows.
    put::<k8s_openapi::api::apps::v1::ReplicaSet>(
        &mut s,
        rs("web-old", 3, 3, "nginx:1.25", "1", "web"),
    );
    assert_eq!(scaled_to(&deployment::plan(&s, now())), [(name.clone(), 2)]);
}

#[test]
fn rollback_promotes_the_old_replicaset_to_the_newest_revision() {
    let mut s = Snapshot::default();
    put::<k8s_openapi::api::apps::v1::Deployment>(&mut s, deployment(2, "nginx:1.25", 1, 0));
    let mut old = rs("web-a", 0, 0, "nginx:1.25", "1", "web");
    old["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] = json!("a");
    put::<k8s_openapi::api::apps::v1::ReplicaSet>(&mut s, old);
    put::<k8s_openapi::api::apps::v1::ReplicaSet>(
        &mut s,
        rs("web-b", 2, 2, "nginx:1.26", "2", "web"),
    );
    let ops = deployment::plan(&s, now());
    assert!(
        patches(&ops, Kind::ReplicaSet)
            .iter()
            .any(|(n, p)| *n == "web-a"
                && p["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"),
        "{ops:?}"
    );
    assert!(creates(&ops, Kind::ReplicaSet).is_empty());
}

#[test]
fn scheduler_spreads_and_explains() {
    let mut s = Snapshot::default();
    for n in ["n1", "n2", "n3"] {
        put::<k8s_openapi::api::core::v1::Node>(&mut s, node(n));
    }
    for i in 0..3 {
        put::<k8s_openapi::api::core::v1::Pod>(
            &mut s,
            pod(
                &format!("p{i}"),
                json!({"app": "web"}),
                Some("r"),
                None,
                false,
            ),
        );
    }
    let mut assumed = HashMap::new();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
    let ops = scheduler::round(&s, &mut assumed, &mut rng, now());
    let nodes: std::collections::BTreeSet<&str> = ops
        .iter()
        .filter_map(|o| match o {
            Op::Bind { node, .. } => Some(node.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(nodes.len(), 3, "three replicas on three nodes: {ops:?}");

    // Taints, cordons and selectors: the message counts nodes per reason.
    let mut s = Snapshot::default();
    let mut n1 = node("n1");
    n1["spec"] =
        json!({"taints": [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]});
    let mut n2 = node("n2");
    n2["spec"] = json!({"unschedulable": true});
    let mut n3 = node("n3");
    n3["status"]["allocatable"]["cpu"] = json!("100m");
    for n in [n1, n2, n3, node("n4")] {
        put::<k8s_openapi::api::core::v1::Node>(&mut s, n);
    }
    let mut p = pod("big", json!({}), None, None, false);
    p["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "1"}});
    p["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "n3"});
    let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(p).unwrap();
    let st = scheduler::ClusterState::build(&s, &HashMap::new());
    assert_eq!(
        scheduler::schedule(&st, &p, &mut rng),
        scheduler::Decision::Unschedulable(
            "0/4 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node affinity/selector, \
             1 node(s) had untolerated taint {dedicated: infra}, 1 node(s) were unschedulable."
                .into()
        )
    );
}

#[test]
fn scheduler_honours_anti_affinity_topology_spread_and_host_ports() {
    let mut s = Snapshot::default();
    for n in ["n1", "n2"] {
        put::<k8s_openapi::api::core::v1::Node>(&mut s, node(n));
    }
    let mut existing = pod("x", json!({"app": "db"}), None, Some("n1"), true);
    existing["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 8080}]);
    put::<k8s_openapi::api::core::v1::Pod>(&mut s, existing);
    let st = scheduler::ClusterState::build(&s, &HashMap::new());
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    let place = |v: Value, rng: &mut rand::rngs::StdRng| {
        let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(v).unwrap();
        scheduler::schedule(&st, &p, rng)
    };
    let mut anti = pod("y", json!({"app": "db"}), None, None, false);
    anti["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}});
    assert_eq!(
        place(anti, &mut rng),
        scheduler::Decision::Bind("n2".into())
    );
    let mut spread = pod("z", json!({"app": "db"}), None, None, false);
    spread["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "db"}}}]);
    assert_eq!(
        place(spread, &mut rng),
        scheduler::Decision::Bind("n2".into())
    );
    let mut port = pod("w", json!({}), None, None, false);
    port["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 8080}]);
    assert_eq!(
        place(port, &mut rng),
        scheduler::Decision::Bind("n2".into())
    );
    let mut affinity = pod("v", json!({}), None, None, false);
    affinity["spec"]["affinity"] = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}});
    assert_eq!(
        place(affinity, &mut rng),
        scheduler::Decision::Bind("n1".into())
    );
}

#[test]
fn endpoint_slices_resolve_named_ports_and_conditions() {
    let mut s = Snapshot::default();
    put::<k8s_openapi::api::core::v1::Service>(
        &mut s,
        json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u-svc"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}),
    );
    put::<k8s_openapi::api::core::v1::Pod>(
        &mut s,
        pod("a", json!({"app": "web"}), None, Some("n1"), true),
    );
    put::<k8s_openapi::api::core::v1::Pod>(
        &mut s,
        pod("bb", json!({"app": "web"}), None, Some("n1"), false),
    );
    let mut term = pod("ccc", json!({"app": "web"}), None, Some("n1"), true);
    term["metadata"]["deletionTimestamp"] = json!("2026-11-22T11:59:00Z");
    put::<k8s_openapi::api::core::v1::Pod>(&mut s, term);
    let ops = endpoints::plan(&s, Timestamp::UNIX_EPOCH);
    let slice = creates(&ops, Kind::EndpointSlice)[0];
    assert_eq!(slice["ports"][0]["port"], 8080);
    // When the change was seen, for the proxies' programming latency.
    assert_eq!(
        slice["metadata"]["annotations"][endpoints::TRIGGER_TIME],
        "1970-01-01T00:00:00Z"
    );
    let cond = |name: &str| {
        slice["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["targetRef"]["name"] == name)
            .unwrap()["conditions"]
            .clone()
    };
    assert_eq!(
        cond("a"),
        json!({"ready": true, "serving": true, "terminating": false})
    );
    assert_eq!(
        cond("bb"),
        json!({"ready": false, "serving": false, "terminating": false})
    );
    assert_eq!(
        cond("ccc"),
        json!({"ready": false, "serving": true, "terminating": true})
    );
    let ep = creates(&ops, Kind::Endpoints)[0];
    assert_eq!(ep["subsets"][0]["addresses"].as_array().unwrap().len(), 1);
    assert_eq!(
        ep["subsets"][0]["notReadyAddresses"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// A ReplicationController keeps its replicas as a ReplicaSet does, its
/// pods owned by it (v1), with a selector that defaults to the template's
/// labels.
#[test]
fn replication_controllers_make_their_pods() {
    let mut s = Snapshot::default();
    put::<k8s_openapi::api::core::v1::ReplicationController>(
        &mut s,
        json!({"metadata": {"name": "old", "namespace": "default", "uid": "u-rc", "generation": 1},
               "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "old"}},
                        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    );
    let ops = replicaset::plan(&s, now());
    let made = creates(&ops, Kind::Pod);
    assert_eq!(made.len(), 2);
    let owner = &made[0]["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["apiVersion"].as_str(), owner["kind"].as_str()),
        (Some("v1"), Some("ReplicationController"))
    );
    assert_eq!(made[0]["metadata"]["generateName"], "old-");
    // Its pods, running: no more are made, and the status counts them.
    for i in 0..2 {
        let mut p = pod(
            &format!("old-{i}"),
            json!({"app": "old"}),
            None,
            Some("n1"),
            true,
        );
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ReplicationController",
            "name": "old", "uid": "u-rc", "controller": true}]);
        put::<k8s_openapi::api::core::v1::Pod>(&mut s, p);
    }
    let ops = replicaset::plan(&s, now());
    assert!(creates(&ops, Kind::Pod).is_empty());
    assert!(
        ops.iter()
            .any(|o| format!("{o:?}").contains("ReplicationController"))
    );
}

/// A StatefulSet's pods (hostname + subdomain naming the headless
/// Service) get their hostname in the slices and Endpoints, so their DNS
/// names resolve; a pod whose subdomain names another Service does not.
#[test]
fn endpoints_carry_the_hostname_of_pods_in_the_services_subdomain() {
    let mut s = Snapshot::default();
    put::<k8s_openapi::api::core::v1::Service>(
        &mut s,
        json!({"metadata": {"name": "web", "namespace": "default", "uid": "u-svc"},
               "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    );
    for (name, sub) in [("web-0", "web"), ("web-1", "other")] {
        let mut p = pod(name, json!({"app": "web"}), None, Some("n1"), true);
        p["spec"]["hostname"] = json!(name);
        p["spec"]["subdomain"] = json!(sub);
        put::<k8s_openapi::api::core::v1::Pod>(&mut s, p);
    }
    let ops = endpoints::plan(&s, Timestamp::UNIX_EPOCH);
    let slice = creates(&ops, Kind::EndpointSlice)[0];
    let host = |name: &str| {
        slice["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["targetRef"]["name"] == name)
            .unwrap()
            .get("hostname")
            .cloned()
    };
    assert_eq!(host("web-0"), Some(json!("web-0")));
    assert_eq!(host("web-1"), None);
    let ep = creates(&ops, Kind::Endpoints)[0];
    assert!(
        ep["subsets"][0]["addresses"]
            .to_string()
            .contains(r#""hostname":"web-0""#)
    );
}

#[test]
fn lost_nodes_are_tainted_and_pods_evicted_after_their_toleration() {
    let mut s = Snapshot::default();
    let mut n = node("n1");
    n["spec"] = json!({"podCIDR": "10.244.0.0/24"});
    put::<k8s_openapi::api::core::v1::Node>(&mut s, n.clone());
    let cfg = nodes::NodeConfig::default();
    // Fresh heartbeat: nothing to do.
    assert!(nodes::plan(&s, &cfg, now()).is_empty());
    // 60 s later: Unknown and tainted.
    let later = now() + jiff::SignedDuration::from_secs(60);
    let ops = nodes::plan(&s, &cfg, later);
    let taints = &patches(&ops, Kind::Node)[0].1["spec"]["taints"];
    assert!(
        taints
            .to_string()
            .contains("node.kubernetes.io/unreachable"),
        "{taints}"
    );
    // A pod tolerating unreachable for 300 s goes 300 s after the taint.
    n["spec"]["taints"] = json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "2026-11-22T12:01:00Z"},
                                 {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": "2026-11-22T12:01:00Z"}]);
    n["status"]["conditions"][0]["status"] = json!("Unknown");
    put::<k8s_openapi::api::core::v1::Node>(&mut s, n);
    let mut p = pod("a", json!({}), None, Some("n1"), true);
    p["spec"]["tolerations"] = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]);
    put::<k8s_openapi::api::core::v1::Pod>(&mut s, p);
    put::<k8s_openapi::api::core::v1::Pod>(&mut s, pod("b", json!({}), None, Some("n1"), true));
    let at = |secs: i64| {
        deletes(
            &nodes::plan(&s, &cfg, now() + jiff::SignedDuration::from_secs(secs)),
            Kind::Pod,
        )
    };
    assert_eq!(at(61), ["b"], "no toleration: at once");
    assert_eq!(at(360), ["a", "b"]);
}

fn status_patches(ops: &[Op], kind: Kind) -> Vec<(&str, &Value)> {
    patches_of(ops, kind, true)
}

#[test]
fn pods_of_a_node_that_is_not_ready_are_marked_not_ready() {
    let mut s = Snapshot::default();
    let mut n = node("n1");
    n["spec"] = json!({"podCIDR": "10.244.0.0/24"});
    put::<k8s_openapi::api::core::v1::Node>(&mut s, n.clone());
    let mut ready = pod("a", json!({}), None, Some("n1"), true);
    ready["status"]["conditions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "PodScheduled", "status": "True"}));
    put::<k8s_openapi::api::core::v1::Pod>(&mut s, ready);
    put::<k8s_openapi::api::core::v1::Pod>(
        &mut s,
        pod("elsewhere", json!({}), None, Some("n2"), true),
    );
    let cfg = nodes::NodeConfig::default();
    // Ready node: the pods are left alone.
    assert!(status_patches(&nodes::plan(&s, &cfg, now()), Kind::Pod).is_empty());
    // The heartbeat goes stale: in the same pass the node goes Unknown and
    // its pod (only its) is marked not Ready, other conditions kept.
    let later = now() + jiff::SignedDuration::from_secs(60);
    let ops = nodes::plan(&s, &cfg, later);
    let marked = status_patches(&ops, Kind::Pod);
    assert_eq!(marked.len(), 1, "{marked:?}");
    assert_eq!(marked[0].0, "a");
    let conds = marked[0].1["status"]["conditions"].as_array().unwrap();
    let by_type = |t: &str| conds.iter().find(|c| c["type"] == t).unwrap();
    assert_eq!(by_type("Ready")["status"], "False");
    assert_eq!(
        by_type("Ready")["lastTransitionTime"],
        "2026-11-22T12:01:00Z"
    );
    assert_eq!(by_type("PodScheduled")["status"], "True");
    // Once it is False, nothing more is written.
    let mut marked_pod = pod("a", json!({}), None, Some("n1"), false);
    marked_pod["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
    put::<k8s_openapi::api::core::v1::Pod>(&mut s, marked_pod);
    n["status"]["conditions"][0]["status"] = json!("Unknown");
    put::<k8s_openapi::api::core::v1::Node>(&mut s, n);
    assert!(status_patches(&nodes::plan(&s, &cfg, later), Kind::Pod).is_empty());
}

#[test]
fn pod_cidrs_are_allocated_without_overlap() {
    let mut s = Snapshot::default();
    let mut a = node("a");
    a["spec"] = json!({"podCIDR": "10.244.0.0/24"});
    put::<k8s_openapi::api::core::v1::Node>(&mut s, a);
    put::<k8s_openapi::api::core::v1::Node>(&mut s, node("b"));
    let ops = nodes::plan(&s, &nodes::NodeConfig::default(), now());
    let p = patches(&ops, Kind::Node);
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0],
        (
            "b",
            &json!({"spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}})
        )
    );
}

#[test]
fn jobs_count_each_finished_pod_once_and_back_off() {
    let mut s = Snapshot::default();
    let job = json!({
        "metadata": {"name": "j", "namespace": "default", "uid": "u-j"},
        "spec": {"completions": 1, "parallelism": 1, "backoffLimit": 2,
                 "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "Never"}}},
        "status": {"startTime": "2026-11-22T11:00:00Z"},
    });
    put::<k8s_openapi::api::batch::v1::Job>(&mut s, job.clone());
    let ops = job::plan(&s, now());
    let c = creates(&ops, Kind::Pod);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["metadata"]["finalizers"], json!([job::TRACKING]));
    // The pod failed a second ago: counted, and no new pod during back-off.
    let mut p = pod("j-1", json!({}), None, Some("n1"), false);
    p["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u-j", "controller": true}]);
    p["metadata"]["finalizers"] = json!([job::TRACKING]);
    p["status"]["phase"] = json!("Failed");
    p["status"]["containerStatuses"] = json!([{"name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 1, "finishedAt": "2026-11-22T11:59:59Z"}}}]);
    put::<k8s_openapi::api::core::v1::Pod>(&mut s, p);
    let ops = job::plan(&s, now());
    assert!(creates(&ops, Kind::Pod).is_empty(), "back-off");
    let st = ops
        .iter()
        .find_map(|o| match o {
            Op::Patch {
                status: true,
                patch,
                ..
            } => Some(patch.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(st["status"]["failed"], 1);
    assert_eq!(
        st["status"]["uncountedTerminatedPods"]["failed"],
        json!(["u-j-1"])
    );
    // Recorded: the finalizer goes, the count does not grow again.
    let mut j2 = job;
    j2["status"]["failed"] = json!(1);
    j2["status"]["uncountedTerminatedPods"] = json!({"failed": ["u-j-1"]});
    put::<k8s_openapi::api::batch::v1::Job>(&mut s, j2);
    let ops = job::plan(&s, now() + jiff::SignedDuration::from_secs(11));
    assert!(
        patches(&ops, Kind::Pod)
            .iter()
            .any(|(n, p)| *n == "j-1" && p["metadata"]["finalizers"].is_null())
    );
    assert_eq!(creates(&ops, Kind::Pod).len(), 1, "retried after 10 s");
    assert!(!ops.iter().any(
        |o| matches!(o, Op::Patch { status: true, patch, .. } if patch["status"]["failed"] == 2)
    ));
}

#[test]
fn statefulsets_create_in_order_and_scale_down_from_the_top() {
    let mut s = Snapshot::default();
    let sts = json!({
        "metadata": {"name": "db", "namespace": "default", "uid": "u-db", "generation": 1},
        "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
    });
    put::<k8s_openapi::api::apps::v1::StatefulSet>(&mut s, sts.clone());
    let names = |ops: &[Op]| -> Vec<String> {
        creates(ops, Kind::Pod)
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&statefulset::plan(&s, now())), ["db-0"]);
    let member = |i: i32, ready: bool| {
        let mut p = pod(
            &format!("db-{i}"),
            json!({"app": "db"}),
            None,
            Some("n1"),
            ready,
        );
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u-db", "controller": true}]);
        p
    };
    put::<k8s_openapi::api::core::v1::Pod>(&mut s, member(0, false));
    assert!(
        names(&statefulset::plan(&s, now())).is_empty(),
        "waits for db-0 to be ready"
    );
    put::<k8s_openapi::api::core::v1::Pod>(&mut s, member(0, true));
    assert_eq!(names(&statefulset::plan(&s, now())), ["db-1"]);
    put::<k8s_openapi::api::core::v1::Pod>(&mut s, member(1, true));
    put::<k8s_openapi::api::core::v1::Pod>(&mut s, member(2, true));
    let mut one = sts;
    one["spec"]["replicas"] = json!(1);
    put::<k8s_openapi::api::apps::v1::StatefulSet>(&mut s, one);
    assert_eq!(deletes(&statefulset::plan(&s, now()), Kind::Pod), ["db-2"]);
}

#[test]
fn daemonsets_cover_cordoned_nodes_but_not_untolerated_taints() {
    let mut s = Snapshot::default();
    let mut cordoned = node("c");
    cordoned["spec"] = json!({"unschedulable": true, "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]});
    let mut tainted = node("t");
    tainted["spec"] = json!({"taints": [{"key": "gpu", "effect": "NoSchedule"}]});
    for n in [node("a"), cordoned, tainted] {
        put::<k8s_openapi::api::core::v1::Node>(&mut s, n);
    }
    put::<k8s_openapi::api::apps::v1::DaemonSet>(
        &mut s,
        json!({
            "metadata": {"name": "ds", "namespace": "default", "uid": "u-ds", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "ds"}},
                     "template": {"metadata": {"labels": {"app": "ds"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
        }),
    );
    let ops = daemonset::plan(&s, now());
    let targets: Vec<Value> = creates(&ops, Kind::Pod)
        .iter()
        .map(|p| {
            p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
                .clone()
        })
        .collect();
    assert_eq!(targets, [json!("a"), json!("c")]);
}

#[test]
fn large_clusters_are_searched_partly_from_a_rotating_start() {
    assert_eq!(scheduler::feasible_nodes_to_find(50), 50);
    assert_eq!(scheduler::feasible_nodes_to_find(100), 100);
    assert_eq!(scheduler::feasible_nodes_to_find(1_000), 420);
    assert_eq!(scheduler::feasible_nodes_to_find(5_000), 500);
    assert_eq!(scheduler::feasible_nodes_to_find(100_000), 5_000);
    let mut s = Snapshot::default();
    for i in 0..1_000 {
        put::<k8s_openapi::api::core::v1::Node>(&mut s, node(&format!("n{i:04}")));
    }
    // 300 pods over 1,000 nodes, each search stopping after 420 feasible:
    // the rotating start spreads them over the whole cluster.
    for i in 0..300 {
        put::<k8s_openapi::api::core::v1::Pod>(
            &mut s,
            pod(&format!("p{i:03}"), json!({}), None, None, false),
        );
    }
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let ops = scheduler::round(&s, &mut HashMap::new(), &mut rng, now());
    let nodes: std::collections::BTreeSet<&str> = ops
        .iter()
        .filter_map(|o| match o {
            Op::Bind { node, .. } => Some(node.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(ops.len(), 300);
    assert_eq!(
        nodes.len(),
        300,
        "every pod on its own (least allocated) node"
    );
    assert!(
        nodes.iter().any(|n| *n >= "n0900"),
        "the last nodes are reached too"
    );
    // A pod no node fits is still checked against every node.
    let mut big = pod("huge", json!({}), None, None, false);
    big["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "1000"}});
    let big: k8s_openapi::api::core::v1::Pod = serde_json::from_value(big).unwrap();
    let st = scheduler::ClusterState::build(&s, &HashMap::new());
    assert_eq!(
        scheduler::schedule(&st, &big, &mut rng),
        scheduler::Decision::Unschedulable(
            "0/1000 nodes are available: 1000 Insufficient cpu.".into()
        )
    );
}

#[test]
fn on_failure_jobs_count_container_restarts_against_the_backoff_limit() {
    let job_with = |limit: i32| {
        json!({
            "metadata": {"name": "j", "namespace": "default", "uid": "u-j"},
            "spec": {"completions": 1, "parallelism": 1, "backoffLimit": limit,
                     "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}],
                                           "restartPolicy": "OnFailure"}}},
            "status": {"startTime": "2026-11-22T11:00:00Z", "active": 1},
        })
    };
    let running_with = |restarts: i32| {
        let mut p = pod("j-1", json!({}), None, Some("n1"), false);
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u-j", "controller": true}]);
        p["metadata"]["finalizers"] = json!([job::TRACKING]);
        p["status"]["phase"] = json!("Running");
        p["status"]["containerStatuses"] = json!([{"name": "c", "image": "busybox", "imageID": "",
            "ready": false, "restartCount": restarts,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]);
        p
    };
    let failed_reason = |limit: i32, restarts: i32| {
        let mut s = Snapshot::default();
        put::<k8s_openapi::api::batch::v1::Job>(&mut s, job_with(limit));
        put::<k8s_openapi::api::core::v1::Pod>(&mut s, running_with(restarts));
        let ops = job::plan(&s, now());
        let deleted = ops.iter().any(|o| {
            matches!(
                o,
                Op::Delete {
                    kind: Kind::Pod,
                    ..
                }
            )
        });
        ops.iter().find_map(|o| match o {
            Op::Patch {
                status: true,
                patch,
                ..
            } => patch["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Failed"))
                .map(|c| (c["reason"].as_str().unwrap_or_default().to_owned(), deleted)),
            _ => None,
        })
    };
    // Five restarts under a limit of six: still running.
    assert_eq!(failed_reason(6, 5), None);
    // The sixth restart reaches it: failed, and the running pod deleted.
    assert_eq!(
        failed_reason(6, 6),
        Some(("BackoffLimitExceeded".to_owned(), true))
    );
    // A limit of 0: the first restart fails the Job.
    assert_eq!(
        failed_reason(0, 1),
        Some(("BackoffLimitExceeded".to_owned(), true))
    );
    assert_eq!(failed_reason(0, 0), None);
}

#[test]
fn the_garbage_collectors_graph_follows_relists_and_recreated_objects() {
    use kube::runtime::watcher::Event;
    let obj = |uid: &str| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "default", "uid": uid,
                         "resourceVersion": uid, "managedFields": [{"manager": "x"}]},
            "data": {"big": "x"}}))
        .unwrap()
    };
    let mut graph = Graph::default();
    let mut synced = [false];
    let mut seen = Reflector::new();
    let mut feed = |graph: &mut Graph, synced: &mut [bool], ev| {
        apply_event(graph, synced, &mut seen, 0, false, ev);
    };
    feed(&mut graph, &mut synced, Event::Init);
    feed(&mut graph, &mut synced, Event::InitApply(obj("1")));
    assert!(
        graph.is_empty() && !synced[0],
        "nothing before the list ends"
    );
    feed(&mut graph, &mut synced, Event::InitDone);
    assert_eq!(graph.len(), 1);
    assert!(synced[0]);
    // Deleted and made again while the watch was down: the relist drops
    // the old uid from the graph and adds the new one.
    feed(&mut graph, &mut synced, Event::Init);
    feed(&mut graph, &mut synced, Event::InitApply(obj("2")));
    feed(&mut graph, &mut synced, Event::InitDone);
    assert_eq!(graph.len(), 1);
    feed(&mut graph, &mut synced, Event::Delete(obj("2")));
    assert!(graph.is_empty());
}

#[test]
fn the_garbage_collector_keeps_only_what_it_decides_from() {
    let mut o: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "ns", "uid": "u", "labels": {"a": "b"},
                     "annotations": {"big": "x"}, "managedFields": [{"manager": "x"}],
                     "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "uo"}]},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}))
    .unwrap();
    slim(&mut o);
    assert!(o.metadata.labels.is_none() && o.metadata.annotations.is_none());
    assert!(o.metadata.managed_fields.is_none());
    assert_eq!(o.metadata.owner_references.as_ref().map(Vec::len), Some(1));
    assert_eq!(o.data, json!({"spec": {"finalizers": ["kubernetes"]}}));
}
