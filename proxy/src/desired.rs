//! Services and EndpointSlices (the API objects) → the service ports the
//! datapath should serve ([`ServiceSpec`]s). Pure: the proxy's watch loop
//! keeps the objects and calls [`specs`] for each service that changed.
//!
//! The rules are kube-proxy's:
//! - headless (`clusterIP: None`) and `ExternalName` services get nothing,
//!   nor services naming another proxy in `service.kubernetes.io/service-proxy-name`;
//! - a port's endpoints come from the slices labelled
//!   `kubernetes.io/service-name`, matched by port name and protocol;
//!   conditions default as the API says (ready: true, serving: ready,
//!   terminating: false);
//! - `internalTrafficPolicy: Local` keeps only the endpoints on this node
//!   (and none elsewhere: the service then refuses, as kube-proxy's does);
//! - the ClusterIPs, the `externalIPs`, the LoadBalancer ingress IPs and
//!   (for `NodePort` and `LoadBalancer` services) the node ports are front
//!   ends of the same endpoints; a node port is the front end with address
//!   0.0.0.0 (every node address);
//! - `externalTrafficPolicy: Local` makes the external front ends (node
//!   ports, externalIPs, LoadBalancer IPs) use only this node's endpoints
//!   and keep the client's source address;
//! - `sessionAffinity: ClientIP` with `timeoutSeconds`, 10800 by default.
//!
//! And what the objects say is not trusted further than the apiserver's
//! own validation would allow: a front end or endpoint address that is
//! unspecified, loopback, link-local, multicast or broadcast is dropped
//! (`externalIPs: [0.0.0.0]` would otherwise be a port on every node
//! address, outside the NodePort range), and so is a node port outside
//! the configured range.

use std::{collections::BTreeSet, net::Ipv4Addr, ops::RangeInclusive};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use super::{Endpoint, Frontend, Proto, ServiceSpec, owners::Rank};

/// Label of an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Services with this label are served by the named proxy, not this one.
pub const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;
/// The apiserver's default `--service-node-port-range`.
pub const DEFAULT_NODE_PORTS: RangeInclusive<u16> = 30000..=32767;

/// Whether an address may be a front end or an endpoint: a unicast address
/// a packet can be sent to (kube-apiserver refuses the others in
/// Endpoints and externalIPs).
pub fn usable(a: Ipv4Addr) -> bool {
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_link_local()
        || a.is_multicast()
        || a.is_broadcast())
}

/// `rudder.io/lb-algorithm: maglev` on a Service: its traffic from outside
/// the cluster picks backends by Maglev consistent hashing (see
/// `proxy/maglev.rs`); anything else, or nothing, is random choice.
pub const LB_ALGORITHM_ANNOTATION: &str = "rudder.io/lb-algorithm";

/// `rudder.io/forwarding-mode: dsr` on a Service: its traffic from outside
/// the cluster (node ports, externalIPs, LoadBalancer IPs) is forwarded by
/// direct server return, the backends' replies going straight to the
/// client from their own node (after Cilium's
/// `service.cilium.io/forwarding-mode`). `snat`, anything else, or
/// nothing: source NAT, replies back through the node the client reached.
/// With `externalTrafficPolicy: Local` the client's address is kept anyway
/// and the backends are local: no direct server return.
pub const FORWARDING_MODE_ANNOTATION: &str = "rudder.io/forwarding-mode";

/// The service ports of one Service, given its EndpointSlices (only those of
/// this service are used), this node's name and the node-port range.
/// Sorted by front end.
pub fn specs<'a>(
    svc: &Service,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &str,
    node_ports: &RangeInclusive<u16>,
) -> Vec<ServiceSpec> {
    let Some(spec) = &svc.spec else {
        return vec![];
    };
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let namespace = svc.metadata.namespace.as_deref().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName")
        || svc
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(PROXY_NAME_LABEL))
    {
        return vec![];
    }
    let cluster_addrs = cluster_ips(svc);
    let external_addrs = external_addrs(svc);
    if cluster_addrs.is_empty() && external_addrs.is_empty() {
        return vec![];
    }
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = matches!(
        spec.external_traffic_policy.as_deref(),
        Some("Local" | "OnlyLocal")
    );
    let has_node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let annotation = |name: &str, value: &str| {
        svc.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(name))
            .is_some_and(|v| v == value)
    };
    let maglev = annotation(LB_ALGORITHM_ANNOTATION, "maglev");
    let dsr = annotation(FORWARDING_MODE_ANNOTATION, "dsr") && !external_local;
    let slices: Vec<&EndpointSlice> = slices
        .into_iter()
        .filter(|s| {
            s.address_type == "IPv4"
                && s.metadata.namespace.as_deref().unwrap_or_default() == namespace
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .is_some_and(|n| n == name)
        })
        .collect();

    let mut out = Vec::new();
    for port in spec.ports.iter().flatten() {
        let proto = match port.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => Proto::Tcp,
            "UDP" => Proto::Udp,
            // SCTP: not served by this datapath.
            _ => continue,
        };
        let Ok(svc_port) = u16::try_from(port.port) else {
            continue;
        };
        let port_name = port.name.as_deref().unwrap_or_default();
        let internal = endpoints_for(&slices, port_name, proto, internal_local.then_some(node));
        let external = endpoints_for(&slices, port_name, proto, external_local.then_some(node));
        // Maglev serves traffic from outside: external addresses and
        // node ports.
        let mut add = |addr: Ipv4Addr, port: u16, endpoints: &Vec<Endpoint>, external: bool| {
            out.push(ServiceSpec {
                frontend: Frontend { addr, port, proto },
                endpoints: endpoints.clone(),
                affinity_timeout,
                keep_source: external && external_local,
                maglev: external && maglev,
                dsr: external && dsr,
            });
        };
        for addr in &cluster_addrs {
            add(*addr, svc_port, &internal, false);
        }
        for addr in &external_addrs {
            add(*addr, svc_port, &external, true);
        }
        if has_node_ports
            && let Some(np) = port
                .node_port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| node_ports.contains(p))
        {
            add(Ipv4Addr::UNSPECIFIED, np, &external, true);
        }
    }
    out.sort_by_key(|s| s.frontend);
    out.dedup_by_key(|s| s.frontend);
    out
}

/// The service's IPv4 ClusterIPs (none for headless services).
pub fn cluster_ips(svc: &Service) -> Vec<Ipv4Addr> {
    let Some(spec) = &svc.spec else {
        return vec![];
    };
    let ips: BTreeSet<Ipv4Addr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .filter(|a| usable(*a))
        .collect();
    ips.into_iter().collect()
}

/// The service's external front ends: its `externalIPs` and LoadBalancer
/// ingress IPs (except those in `Proxy` mode, which a load balancer in
/// front of the node answers for).
pub fn external_addrs(svc: &Service) -> Vec<Ipv4Addr> {
    let Some(spec) = &svc.spec else {
        return vec![];
    };
    let cluster = cluster_ips(svc);
    let mut addrs = BTreeSet::new();
    for ip in spec.external_ips.iter().flatten() {
        if let Ok(a) = ip.parse::<Ipv4Addr>() {
            addrs.insert(a);
        }
    }
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    for i in ingress.into_iter().flatten() {
        if i.ip_mode.as_deref() == Some("Proxy") {
            continue;
        }
        if let Some(a) = i.ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok()) {
            addrs.insert(a);
        }
    }
    addrs
        .into_iter()
        .filter(|a| usable(*a) && !cluster.contains(a))
        .collect()
}

/// How strong the Service's claim on one of its front ends is (see
/// [`super::owners`]).
pub fn rank(svc: &Service, f: &Frontend) -> Rank {
    if f.addr.is_unspecified() {
        Rank::NodePort
    } else if cluster_ips(svc).contains(&f.addr) {
        Rank::ClusterIp
    } else {
        Rank::External
    }
}

/// How many endpoints of the slices on `node` are ready (the API's default:
/// ready unless it says not), their usable addresses counted once: what
/// kube-proxy reports on a `healthCheckNodePort`.
pub fn ready_local_endpoints<'a>(
    slices: impl Iterator<Item = &'a EndpointSlice>,
    node: &str,
) -> usize {
    slices
        .flat_map(|s| &s.endpoints)
        .filter(|e| {
            e.node_name.as_deref() == Some(node)
                && e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
        })
        .flat_map(|e| &e.addresses)
        .filter_map(|a| a.parse::<Ipv4Addr>().ok())
        .filter(|a| usable(*a))
        .collect::<BTreeSet<_>>()
        .len()
}

/// The endpoints of one service port across the slices. `node`: keep only
/// endpoints on that node (`internalTrafficPolicy: Local`).
fn endpoints_for(
    slices: &[&EndpointSlice],
    port_name: &str,
    proto: Proto,
    node: Option<&str>,
) -> Vec<Endpoint> {
    let want = match proto {
        Proto::Tcp => "TCP",
        Proto::Udp => "UDP",
    };
    let mut out = BTreeSet::new();
    for slice in slices {
        let port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && p.protocol.as_deref().unwrap_or("TCP") == want
        });
        let Some(port) = port
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in &slice.endpoints {
            if let Some(node) = node
                && ep.node_name.as_deref() != Some(node)
            {
                continue;
            }
            let c = ep.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            for a in &ep.addresses {
                if let Ok(addr) = a.parse::<Ipv4Addr>()
                    && usable(addr)
                {
                    out.insert(Endpoint {
                        addr,
                        port,
                        ready,
                        serving,
                        terminating,
                    });
                }
            }
        }
    }
    out.into_iter().collect()
}

/// The service an EndpointSlice belongs to, as `(namespace, name)`.
pub fn slice_service(slice: &EndpointSlice) -> Option<(String, String)> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((
        slice.metadata.namespace.clone().unwrap_or_default(),
        name.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn web() -> Service {
        svc(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080},
                               {"name": "dns", "port": 53, "protocol": "UDP"}]}
        }))
    }

    fn web_slice(name: &str, eps: impl Into<serde_json::Value>) -> EndpointSlice {
        let eps: serde_json::Value = eps.into();
        slice(json!({
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": eps
        }))
    }

    #[test]
    fn ports_match_slices_by_name_and_protocol() {
        let s = web_slice(
            "web-a",
            json!([{"addresses": ["10.244.1.5"], "nodeName": "n1"},
                   {"addresses": ["10.244.2.5"], "nodeName": "n2",
                    "conditions": {"ready": false, "serving": true, "terminating": true}}]),
        );
        let out = specs(&web(), [&s], "n1", &DEFAULT_NODE_PORTS);
        assert_eq!(out.len(), 2);
        let dns = &out[0];
        assert_eq!(
            dns.frontend,
            Frontend {
                addr: "10.96.0.20".parse().unwrap(),
                port: 53,
                proto: Proto::Udp
            }
        );
        assert_eq!(dns.endpoints.len(), 2);
        assert!(dns.endpoints.iter().all(|e| e.port == 5353));
        let http = &out[1];
        assert_eq!(http.frontend.port, 80);
        assert_eq!(http.frontend.proto, Proto::Tcp);
        assert_eq!(
            http.backends(),
            vec![("10.244.1.5".parse().unwrap(), 8080)],
            "only the ready endpoint takes new flows"
        );
        let t = http.endpoints.iter().find(|e| e.terminating).unwrap();
        assert!(!t.ready && t.serving);
        assert_eq!(http.affinity_timeout, None);
    }

    #[test]
    fn conditions_default_as_the_api_says() {
        let s = web_slice(
            "web-a",
            json!([{"addresses": ["10.244.1.5"]},
                   {"addresses": ["10.244.1.6"], "conditions": {"ready": false}}]),
        );
        let out = specs(&web(), [&s], "n1", &DEFAULT_NODE_PORTS);
        let eps = &out[1].endpoints;
        assert!(eps[0].ready && eps[0].serving && !eps[0].terminating);
        assert!(!eps[1].ready && !eps[1].serving && !eps[1].terminating);
    }

    #[test]
    fn endpoints_are_merged_across_slices_and_deduplicated() {
        let a = web_slice("web-a", json!([{"addresses": ["10.244.1.5"]}]));
        let b = web_slice(
            "web-b",
            json!([{"addresses": ["10.244.1.5"]}, {"addresses": ["10.244.1.7"]}]),
        );
        let other = slice(json!({
            "metadata": {"name": "x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "other"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 1}],
            "endpoints": [{"addresses": ["10.244.9.9"]}]
        }));
        let elsewhere = slice(json!({
            "metadata": {"name": "y", "namespace": "prod",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 1}],
            "endpoints": [{"addresses": ["10.244.9.8"]}]
        }));
        let ipv6 = slice(json!({
            "metadata": {"name": "z", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv6",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["fd00::1"]}]
        }));
        let out = specs(
            &web(),
            [&a, &b, &other, &elsewhere, &ipv6],
            "n1",
            &DEFAULT_NODE_PORTS,
        );
        assert_eq!(
            out[1].backends(),
            vec![
                ("10.244.1.5".parse().unwrap(), 8080),
                ("10.244.1.7".parse().unwrap(), 8080)
            ]
        );
    }

    #[test]
    fn unnamed_single_port() {
        let s = svc(json!({
            "metadata": {"name": "one", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.30", "ports": [{"port": 80}]}
        }));
        let sl = slice(json!({
            "metadata": {"name": "one-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "one"}},
            "addressType": "IPv4",
            "ports": [{"name": "", "port": 9376, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.0.4"]}]
        }));
        let out = specs(&s, [&sl], "n1", &DEFAULT_NODE_PORTS);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].backends(),
            vec![("10.244.0.4".parse().unwrap(), 9376)]
        );
    }

    #[test]
    fn headless_external_name_other_proxy_and_sctp_get_nothing() {
        let headless = svc(json!({
            "metadata": {"name": "h", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }));
        let ext = svc(json!({
            "metadata": {"name": "e", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}
        }));
        let other = svc(json!({
            "metadata": {"name": "o", "namespace": "default",
                         "labels": {"service.kubernetes.io/service-proxy-name": "other"}},
            "spec": {"clusterIP": "10.96.0.40", "ports": [{"port": 80}]}
        }));
        let sctp = svc(json!({
            "metadata": {"name": "s", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.41", "ports": [{"port": 80, "protocol": "SCTP"}]}
        }));
        for s in [headless, ext, other, sctp] {
            assert!(
                specs(&s, [], "n1", &DEFAULT_NODE_PORTS).is_empty(),
                "{:?}",
                s.metadata.name
            );
        }
    }

    #[test]
    fn external_and_load_balancer_ips_are_front_ends() {
        let s = svc(json!({
            "metadata": {"name": "lb", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.50",
                     "externalIPs": ["192.0.2.10", "2001:db8::1"],
                     "ports": [{"port": 443, "nodePort": 30443}]},
            "status": {"loadBalancer": {"ingress": [
                {"ip": "198.51.100.7"},
                {"ip": "198.51.100.8", "ipMode": "Proxy"},
                {"hostname": "lb.example.com"}]}}
        }));
        let addrs: Vec<String> = specs(&s, [], "n1", &DEFAULT_NODE_PORTS)
            .iter()
            .map(|s| s.frontend.addr.to_string())
            .collect();
        assert_eq!(
            addrs,
            ["0.0.0.0", "10.96.0.50", "192.0.2.10", "198.51.100.7"]
        );
        let np = &specs(&s, [], "n1", &DEFAULT_NODE_PORTS)[0];
        assert_eq!(
            np.frontend.port, 30443,
            "the node port is the 0.0.0.0 front end"
        );
    }

    #[test]
    fn hostile_addresses_and_ports_make_no_front_end_or_endpoint() {
        let s = svc(json!({
            "metadata": {"name": "evil", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.60",
                     "externalIPs": ["0.0.0.0", "127.0.0.1", "169.254.169.254", "224.0.0.1",
                                     "255.255.255.255", "192.0.2.1"],
                     "ports": [{"name": "a", "port": 10250, "nodePort": 10250},
                               {"name": "b", "port": 80, "nodePort": 30080}]},
        }));
        let sl = slice(json!({
            "metadata": {"name": "evil-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "evil"}},
            "addressType": "IPv4",
            "ports": [{"name": "b", "port": 8080}],
            "endpoints": [{"addresses": ["127.0.0.1"]}, {"addresses": ["169.254.169.254"]},
                          {"addresses": ["0.0.0.0"]}, {"addresses": ["10.244.0.9"]}]
        }));
        let out = specs(&s, [&sl], "n1", &DEFAULT_NODE_PORTS);
        let fronts: Vec<String> = out
            .iter()
            .map(|s| format!("{}:{}", s.frontend.addr, s.frontend.port))
            .collect();
        // No 0.0.0.0:10250 (neither from the externalIP nor the out-of-range
        // node port): only the ClusterIP, the usable externalIP, the node
        // port in range.
        assert_eq!(
            fronts,
            [
                "0.0.0.0:30080",
                "10.96.0.60:80",
                "10.96.0.60:10250",
                "192.0.2.1:80",
                "192.0.2.1:10250"
            ]
        );
        let b = out.iter().find(|s| s.frontend.port == 80).unwrap();
        assert_eq!(b.backends(), [(Ipv4Addr::new(10, 244, 0, 9), 8080)]);
        assert_eq!(rank(&s, &out[0].frontend), Rank::NodePort);
        assert_eq!(rank(&s, &out[1].frontend), Rank::ClusterIp);
        assert_eq!(rank(&s, &out[3].frontend), Rank::External);
    }

    #[test]
    fn maglev_is_asked_for_by_annotation_for_traffic_from_outside() {
        let mut s = svc(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.20",
                     "externalIPs": ["192.0.2.10"],
                     "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}
        }));
        let sl = web_slice("web-a", json!([{"addresses": ["10.244.1.5"]}]));
        let maglev = |s: &Service| -> Vec<(String, bool)> {
            specs(s, [&sl], "n1", &DEFAULT_NODE_PORTS)
                .iter()
                .map(|x| (x.frontend.addr.to_string(), x.maglev))
                .collect()
        };
        assert!(maglev(&s).iter().all(|(_, m)| !m));
        for (value, on) in [("maglev", true), ("random", false), ("Maglev", false)] {
            s.metadata.annotations =
                Some([(LB_ALGORITHM_ANNOTATION.to_string(), value.to_string())].into());
            let want = [
                ("0.0.0.0".to_string(), on),
                ("10.96.0.20".to_string(), false),
                ("192.0.2.10".to_string(), on),
            ];
            assert_eq!(maglev(&s), want, "{value}");
        }
    }

    #[test]
    fn direct_server_return_is_asked_for_by_annotation_for_traffic_from_outside() {
        let mut s = svc(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.20",
                     "externalIPs": ["192.0.2.10"],
                     "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}
        }));
        let sl = web_slice("web-a", json!([{"addresses": ["10.244.1.5"]}]));
        let dsr = |s: &Service| -> Vec<(String, bool)> {
            specs(s, [&sl], "n1", &DEFAULT_NODE_PORTS)
                .iter()
                .map(|x| (x.frontend.addr.to_string(), x.dsr))
                .collect()
        };
        assert!(dsr(&s).iter().all(|(_, d)| !d));
        for (value, on) in [("dsr", true), ("snat", false), ("DSR", false), ("", false)] {
            s.metadata.annotations =
                Some([(FORWARDING_MODE_ANNOTATION.to_string(), value.to_string())].into());
            let want = [
                ("0.0.0.0".to_string(), on),
                ("10.96.0.20".to_string(), false),
                ("192.0.2.10".to_string(), on),
            ];
            assert_eq!(dsr(&s), want, "{value:?}");
        }
        // externalTrafficPolicy: Local keeps the client's address with
        // local backends: nothing to return directly.
        s.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
        assert!(dsr(&s).iter().all(|(_, d)| !d));
    }

    #[test]
    fn node_ports_and_external_traffic_policy_local() {
        let mut s = svc(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.20",
                     "externalIPs": ["192.0.2.10"],
                     "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}
        }));
        let sl = web_slice(
            "web-a",
            json!([{"addresses": ["10.244.1.5"], "nodeName": "n1"},
                   {"addresses": ["10.244.2.5"], "nodeName": "n2"}]),
        );
        let by_addr = |specs: &[ServiceSpec], a: &str| -> ServiceSpec {
            specs
                .iter()
                .find(|s| s.frontend.addr.to_string() == a)
                .cloned()
                .unwrap()
        };
        let out = specs(&s, [&sl], "n1", &DEFAULT_NODE_PORTS);
        assert_eq!(out.len(), 3);
        let np = by_addr(&out, "0.0.0.0");
        assert_eq!((np.frontend.port, np.keep_source), (30080, false));
        assert_eq!(np.backends().len(), 2, "Cluster: every endpoint");

        s.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
        let out = specs(&s, [&sl], "n1", &DEFAULT_NODE_PORTS);
        for a in ["0.0.0.0", "192.0.2.10"] {
            let f = by_addr(&out, a);
            assert!(f.keep_source, "{a}");
            assert_eq!(
                f.backends(),
                vec![("10.244.1.5".parse().unwrap(), 8080)],
                "{a}"
            );
        }
        let c = by_addr(&out, "10.96.0.20");
        assert!(!c.keep_source);
        assert_eq!(
            c.backends().len(),
            2,
            "the ClusterIP is not external traffic"
        );
        // A node without local endpoints refuses external traffic.
        assert!(
            by_addr(&specs(&s, [&sl], "n3", &DEFAULT_NODE_PORTS), "0.0.0.0")
                .backends()
                .is_empty()
        );

        // A ClusterIP service has no node port even if one is given.
        s.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        assert!(
            specs(&s, [&sl], "n1", &DEFAULT_NODE_PORTS)
                .iter()
                .all(|f| !f.frontend.addr.is_unspecified())
        );
    }

    #[test]
    fn affinity_timeout_defaults_to_three_hours() {
        let mut s = web();
        s.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        assert_eq!(
            specs(&s, [], "n1", &DEFAULT_NODE_PORTS)[0].affinity_timeout,
            Some(DEFAULT_AFFINITY_TIMEOUT)
        );
        s.spec.as_mut().unwrap().session_affinity_config =
            Some(serde_json::from_value(json!({"clientIP": {"timeoutSeconds": 60}})).unwrap());
        assert_eq!(
            specs(&s, [], "n1", &DEFAULT_NODE_PORTS)[0].affinity_timeout,
            Some(60)
        );
        s.spec.as_mut().unwrap().session_affinity = Some("None".into());
        assert_eq!(
            specs(&s, [], "n1", &DEFAULT_NODE_PORTS)[0].affinity_timeout,
            None
        );
    }

    #[test]
    fn internal_traffic_policy_local_keeps_this_nodes_endpoints() {
        let mut s = web();
        s.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
        let sl = web_slice(
            "web-a",
            json!([{"addresses": ["10.244.1.5"], "nodeName": "n1"},
                   {"addresses": ["10.244.2.5"], "nodeName": "n2"}]),
        );
        assert_eq!(
            specs(&s, [&sl], "n1", &DEFAULT_NODE_PORTS)[1].backends(),
            vec![("10.244.1.5".parse().unwrap(), 8080)]
        );
        assert!(
            specs(&s, [&sl], "n3", &DEFAULT_NODE_PORTS)[1]
                .backends()
                .is_empty(),
            "no local endpoint: the service refuses on this node"
        );
    }

    #[test]
    fn slices_name_their_service() {
        let s = web_slice("web-a", json!([]));
        assert_eq!(slice_service(&s), Some(("default".into(), "web".into())));
    }
}
