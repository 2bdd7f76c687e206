//! Endpoints and EndpointSlices from Service selectors (named targetPorts
//! resolved per pod, ready / serving / terminating conditions, the pod's
//! `hostname` when its `subdomain` names the Service, so that StatefulSet
//! pods get DNS names), Endpoints
//! of Services without a selector left to their users and mirrored into
//! EndpointSlices, and controller-made Endpoints removed with their Service.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    core::v1::{Endpoints, Pod, Service, ServicePort},
    discovery::v1::EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::{
    cache::{Kind, Snapshot},
    ops::Op,
    util,
};

pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// When the change a slice carries was seen (kube-proxy's network
/// programming latency starts there).
pub const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
pub const SLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";
pub const MIRROR_CONTROLLER: &str = "endpointslicemirroring-controller.k8s.io";
pub const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
const MAX_PER_SLICE: usize = 100;

/// One backend address, whatever it came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Backend {
    ip: String,
    ready: bool,
    serving: bool,
    terminating: bool,
    node: Option<String>,
    zone: Option<String>,
    /// The pod's `hostname`, when its `subdomain` is the Service.
    hostname: Option<String>,
    /// (namespace, name, uid) of the pod.
    target: Option<(String, String, String)>,
}

/// (name, port, protocol, appProtocol)
type PortSet = Vec<(String, i32, String, Option<String>)>;

fn resolve_port(sp: &ServicePort, pod: &Pod) -> Option<i32> {
    let proto = sp.protocol.as_deref().unwrap_or("TCP");
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == proto
            })
            .map(|p| p.container_port),
    }
}

fn backends_of(snap: &Snapshot, svc: &Service) -> BTreeMap<PortSet, Vec<Backend>> {
    let mut out: BTreeMap<PortSet, Vec<Backend>> = BTreeMap::new();
    let Some(spec) = &svc.spec else { return out };
    let Some(sel) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return out;
    };
    let ns = util::namespace(&svc.metadata);
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    for pod in super::cache::in_namespace(&snap.pods, ns) {
        if util::is_terminal(pod) || !util::map_selector_matches(sel, util::labels(&pod.metadata)) {
            continue;
        }
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|i| !i.is_empty())
        else {
            continue;
        };
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let zone = node.as_ref().and_then(|n| {
            snap.nodes.get(&(String::new(), n.clone())).and_then(|n| {
                util::labels(&n.metadata)
                    .get("topology.kubernetes.io/zone")
                    .cloned()
            })
        });
        let terminating = util::is_terminating(pod);
        let serving = util::is_ready(pod) || publish;
        // The endpoint controllers' ShouldSetHostname.
        let hostname = pod.spec.as_ref().and_then(|s| {
            s.hostname.clone().filter(|h| {
                !h.is_empty() && s.subdomain.as_deref() == Some(util::name(&svc.metadata))
            })
        });
        let ports: PortSet = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| {
                Some((
                    sp.name.clone().unwrap_or_default(),
                    resolve_port(sp, pod)?,
                    sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    sp.app_protocol.clone(),
                ))
            })
            .collect();
        out.entry(ports).or_default().push(Backend {
            ip,
            ready: serving && (!terminating || publish),
            serving,
            terminating,
            node,
            zone,
            hostname,
            target: Some((
                ns.to_owned(),
                util::name(&pod.metadata).to_owned(),
                util::uid(&pod.metadata).to_owned(),
            )),
        });
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

fn target_ref(t: &(String, String, String)) -> Value {
    json!({"kind": "Pod", "namespace": t.0, "name": t.1, "uid": t.2})
}

fn address(b: &Backend) -> Value {
    let mut a = json!({"ip": b.ip});
    if let Some(h) = &b.hostname {
        a["hostname"] = json!(h);
    }
    if let Some(n) = &b.node {
        a["nodeName"] = json!(n);
    }
    if let Some(t) = &b.target {
        a["targetRef"] = target_ref(t);
    }
    a
}

/// The Endpoints subsets for the backends (terminating pods left out, as
/// the endpoints controller does).
fn subsets(groups: &BTreeMap<PortSet, Vec<Backend>>, publish: bool) -> Value {
    let mut out = Vec::new();
    for (ports, backends) in groups {
        let ready: Vec<Value> = backends
            .iter()
            .filter(|b| b.ready && (!b.terminating || publish))
            .map(address)
            .collect();
        let not_ready: Vec<Value> = backends
            .iter()
            .filter(|b| !b.ready && !b.terminating)
            .map(address)
            .collect();
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        let mut s = json!({"ports": ports.iter().map(|(n, p, proto, app)| {
            let mut v = json!({"port": p, "protocol": proto});
            if !n.is_empty() { v["name"] = json!(n); }
            if let Some(a) = app { v["appProtocol"] = json!(a); }
            v
        }).collect::<Vec<_>>()});
        if !ready.is_empty() {
            s["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            s["notReadyAddresses"] = json!(not_ready);
        }
        out.push(s);
    }
    if out.is_empty() {
        Value::Null
    } else {
        json!(out)
    }
}

fn slice_ports(ports: &PortSet) -> Value {
    json!(
        ports
            .iter()
            .map(|(n, p, proto, app)| {
                let mut v = json!({"name": n, "port": p, "protocol": proto});
                if let Some(a) = app {
                    v["appProtocol"] = json!(a);
                }
                v
            })
            .collect::<Vec<_>>()
    )
}

fn slice_endpoint(b: &Backend) -> Value {
    let mut e = json!({
        "addresses": [b.ip],
        "conditions": {"ready": b.ready, "serving": b.serving, "terminating": b.terminating},
    });
    if let Some(h) = &b.hostname {
        e["hostname"] = json!(h);
    }
    if let Some(n) = &b.node {
        e["nodeName"] = json!(n);
    }
    if let Some(z) = &b.zone {
        e["zone"] = json!(z);
    }
    if let Some(t) = &b.target {
        e["targetRef"] = target_ref(t);
    }
    e
}

/// Canonical form of a stored slice's content for comparison.
fn slice_content(s: &EndpointSlice) -> (Value, Value) {
    let v = serde_json::to_value(s).unwrap_or_default();
    let ports = v.get("ports").cloned().unwrap_or(Value::Null);
    let eps = v.get("endpoints").cloned().unwrap_or(Value::Null);
    let norm = |x: Value| if x == json!([]) { Value::Null } else { x };
    (norm(ports), norm(eps))
}

/// Makes the service's slices (managed by `manager`) hold `groups`.
fn sync_slices(
    snap: &Snapshot,
    svc: &Service,
    groups: &BTreeMap<PortSet, Vec<Backend>>,
    manager: &str,
    now: jiff::Timestamp,
    ops: &mut Vec<Op>,
) {
    let m = &svc.metadata;
    let ns = util::namespace(m);
    let name = util::name(m);
    let mut existing: Vec<&EndpointSlice> = super::cache::in_namespace(&snap.slices, ns)
        .map(AsRef::as_ref)
        .filter(|s| {
            let l = util::labels(&s.metadata);
            l.get(SERVICE_NAME).map(String::as_str) == Some(name)
                && l.get(MANAGED_BY).map(String::as_str) == Some(manager)
                && s.metadata.deletion_timestamp.is_none()
        })
        .collect();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    // The desired slices: (ports, endpoints) chunks; one empty slice when
    // there is nothing.
    let mut desired: Vec<(Value, Value)> = Vec::new();
    for (ports, backends) in groups {
        for chunk in backends.chunks(MAX_PER_SLICE) {
            let ps = if ports.is_empty() {
                Value::Null
            } else {
                slice_ports(ports)
            };
            let eps = json!(chunk.iter().map(slice_endpoint).collect::<Vec<_>>());
            desired.push((ps, if eps == json!([]) { Value::Null } else { eps }));
        }
    }
    if desired.is_empty() {
        desired.push((Value::Null, Value::Null));
    }
    let mut labels = serde_json::to_value(util::labels(m)).unwrap_or_default();
    labels[SERVICE_NAME] = json!(name);
    labels[MANAGED_BY] = json!(manager);
    // When the change was seen, for the proxies' network programming
    // latency (upstream writes the same annotation).
    let annotations = json!({TRIGGER_TIME: now.to_string()});
    let mut unused: Vec<&EndpointSlice> = existing.clone();
    let mut todo = Vec::new();
    // Slices already right stay as they are.
    for d in desired {
        if let Some(i) = unused.iter().position(|s| slice_content(s) == d) {
            unused.remove(i);
        } else {
            todo.push(d);
        }
    }
    for (ports, eps) in todo {
        if let Some(s) = (!unused.is_empty()).then(|| unused.remove(0)) {
            ops.push(Op::patch(
                Kind::EndpointSlice,
                &s.metadata,
                json!({"metadata": {"labels": labels, "annotations": annotations,
                                    "resourceVersion": s.metadata.resource_version},
                       "ports": ports, "endpoints": eps}),
            ));
        } else {
            ops.push(Op::create(
                Kind::EndpointSlice,
                ns,
                json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {
                        "generateName": format!("{name}-"), "namespace": ns, "labels": labels,
                        "annotations": annotations,
                        "ownerReferences": [util::owner_ref("v1", "Service", m)],
                    },
                    "addressType": "IPv4", "ports": ports, "endpoints": eps.as_array().cloned().unwrap_or_default(),
                }),
            ));
        }
    }
    for s in unused {
        ops.push(Op::delete(Kind::EndpointSlice, &s.metadata));
    }
}

/// Backends from user-managed Endpoints (for mirroring).
fn backends_from_endpoints(ep: &Endpoints) -> BTreeMap<PortSet, Vec<Backend>> {
    let mut out: BTreeMap<PortSet, Vec<Backend>> = BTreeMap::new();
    for s in ep.subsets.iter().flatten() {
        let ports: PortSet = s
            .ports
            .iter()
            .flatten()
            .map(|p| {
                (
                    p.name.clone().unwrap_or_default(),
                    p.port,
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    p.app_protocol.clone(),
                )
            })
            .collect();
        let entry = out.entry(ports).or_default();
        for (ready, list) in [(true, &s.addresses), (false, &s.not_ready_addresses)] {
            for a in list.iter().flatten() {
                entry.push(Backend {
                    ip: a.ip.clone(),
                    ready,
                    serving: ready,
                    terminating: false,
                    node: a.node_name.clone(),
                    zone: None,
                    // Mirrored as the user wrote it.
                    hostname: a.hostname.clone(),
                    target: a.target_ref.as_ref().map(|t| {
                        (
                            t.namespace.clone().unwrap_or_default(),
                            t.name.clone().unwrap_or_default(),
                            t.uid.clone().unwrap_or_default(),
                        )
                    }),
                });
            }
        }
        entry.sort();
    }
    out
}

/// Every Service's Endpoints and EndpointSlices.
pub fn plan(snap: &Snapshot, now: jiff::Timestamp) -> Vec<Op> {
    let mut ops = Vec::new();
    for svc in snap.services.values() {
        let m = &svc.metadata;
        let Some(spec) = &svc.spec else { continue };
        if m.deletion_timestamp.is_some() || spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let key = (util::namespace(m).to_owned(), util::name(m).to_owned());
        let has_selector = spec.selector.as_ref().is_some_and(|s| !s.is_empty());
        if !has_selector {
            // User-managed Endpoints, mirrored into slices.
            if let Some(ep) = snap.endpoints.get(&key)
                && !util::labels(&ep.metadata).contains_key(SKIP_MIRROR)
            {
                sync_slices(
                    snap,
                    svc,
                    &backends_from_endpoints(ep),
                    MIRROR_CONTROLLER,
                    now,
                    &mut ops,
                );
            }
            continue;
        }
        let groups = backends_of(snap, svc);
        let publish = spec.publish_not_ready_addresses.unwrap_or(false);
        let subsets = subsets(&groups, publish);
        let mut labels = serde_json::to_value(util::labels(m)).unwrap_or_default();
        labels[SKIP_MIRROR] = json!("true");
        match snap.endpoints.get(&key) {
            None => ops.push(Op::create(
                Kind::Endpoints,
                &key.0,
                json!({"apiVersion": "v1", "kind": "Endpoints",
                       "metadata": {"name": key.1, "namespace": key.0, "labels": labels},
                       "subsets": subsets}),
            )),
            Some(ep) => {
                let cur = serde_json::to_value(&ep.subsets).unwrap_or(Value::Null);
                let cur = if cur == json!([]) { Value::Null } else { cur };
                let cur_labels =
                    serde_json::to_value(util::labels(&ep.metadata)).unwrap_or_default();
                if cur != subsets || cur_labels != labels {
                    ops.push(Op::patch(
                        Kind::Endpoints,
                        &ep.metadata,
                        json!({"metadata": {"labels": labels, "resourceVersion": ep.metadata.resource_version},
                               "subsets": subsets}),
                    ));
                }
            }
        }
        sync_slices(snap, svc, &groups, SLICE_CONTROLLER, now, &mut ops);
    }
    // Controller-made Endpoints whose Service is gone or lost its selector.
    for (key, ep) in &snap.endpoints {
        if !util::labels(&ep.metadata).contains_key(SKIP_MIRROR) {
            continue;
        }
        let selected = snap.services.get(key).is_some_and(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|s| !s.is_empty())
        });
        if !selected {
            ops.push(Op::delete(Kind::Endpoints, &ep.metadata));
        }
    }
    ops
}
