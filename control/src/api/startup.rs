//! What every cluster has from its first start, made (or completed) at
//! each start of the apiserver: the system namespaces, the default RBAC
//! objects reconciled, the system PriorityClasses, the `kubernetes` Service
//! and its endpoints (this server's address), the cluster DNS Service, and
//! an APIService for every group-version served (kube-aggregator's
//! automanaged local ones).

use super::{registry::WriteOptions, *};

/// Creates what every cluster has: the default namespaces and the
/// `kubernetes` Service. Idempotent.
pub async fn bootstrap(st: &ApiState) -> Result<(), ApiError> {
    let ns_r = resources::by_kind("", "Namespace").expect("namespaces");
    let cluster = Target {
        resource: ns_r,
        namespace: String::new(),
        name: None,
        subresource: None,
    };
    let opts = WriteOptions::internal();
    for (plural, obj) in rbac::default_objects() {
        let t = Target {
            resource: resources::find("rbac.authorization.k8s.io", "v1", plural).expect("rbac"),
            namespace: String::new(),
            name: None,
            subresource: None,
        };
        if !registry::create_if_absent(st, &t, obj.clone(), &opts).await? {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            let (cur, kv) = handlers::get_object(st, &t, name).await?;
            if let Some(new) = rbac::reconcile(&cur, &obj) {
                tracing::info!(kind = plural, name, "reconciled a default RBAC object");
                handlers::write_update(st, &t, name, &cur, kv.mod_revision, new, &opts).await?;
            }
        }
    }
    let pc = Target {
        resource: resources::by_kind("scheduling.k8s.io", "PriorityClass").expect("served"),
        namespace: String::new(),
        name: None,
        subresource: None,
    };
    for obj in priority::system_classes() {
        registry::create_if_absent(st, &pc, obj, &opts).await?;
    }
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        registry::create_if_absent(st, &cluster, body, &opts).await?;
    }
    local_api_services(st, &opts).await?;
    let svc_r = resources::by_kind("", "Service").expect("services");
    let t = Target {
        resource: svc_r,
        namespace: "default".into(),
        name: None,
        subresource: None,
    };
    if handlers::get_object(st, &t, "kubernetes").await.is_err() {
        create_kubernetes_service(st, &t, &opts).await?;
    }
    kubernetes_endpoints(st, &opts).await
}

/// kube-apiserver's `groupPriorityMinimum` for the groups it serves (the
/// order clients prefer them in); others get 16000.
const GROUP_PRIORITY: &[(&str, i64)] = &[
    ("", 18000),
    ("apiregistration.k8s.io", 18000),
    ("apps", 17800),
    ("events.k8s.io", 17750),
    ("authentication.k8s.io", 17700),
    ("authorization.k8s.io", 17600),
    ("autoscaling", 17500),
    ("batch", 17400),
    ("certificates.k8s.io", 17300),
    ("networking.k8s.io", 17200),
    ("policy", 17100),
    ("rbac.authorization.k8s.io", 17000),
    ("storage.k8s.io", 16800),
    ("scheduling.k8s.io", 16600),
    ("coordination.k8s.io", 16500),
    ("node.k8s.io", 16300),
    ("discovery.k8s.io", 16200),
];

/// The APIService of one locally served group-version, as kube-aggregator
/// makes it: no service (local), always Available.
pub fn local_api_service(group: &str, version: &str) -> Value {
    let name = format!("{version}.{group}");
    let priority = GROUP_PRIORITY
        .iter()
        .find(|(g, _)| *g == group)
        .map_or(16000, |(_, p)| *p);
    json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": name, "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
        "spec": {"group": group, "version": version, "groupPriorityMinimum": priority,
                 "versionPriority": 15},
        "status": {"conditions": [{"type": "Available", "status": "True", "reason": "Local",
            "message": "Local APIServices are always available",
            "lastTransitionTime": handlers::now_rfc3339()}]},
    })
}

/// An APIService for every group-version this server serves.
async fn local_api_services(st: &ApiState, opts: &WriteOptions) -> Result<(), ApiError> {
    let t = Target {
        resource: resources::by_kind("apiregistration.k8s.io", "APIService").expect("served"),
        namespace: String::new(),
        name: None,
        subresource: None,
    };
    for (g, v) in resources::group_versions() {
        registry::create_if_absent(st, &t, local_api_service(g, v), opts).await?;
    }
    Ok(())
}

/// This server's address in the `kubernetes` Endpoints (which the
/// EndpointSlice controller mirrors), so pods reach the apiserver through
/// the Service. Several servers each add themselves. A loopback address is
/// not reachable from pods and is left out.
async fn kubernetes_endpoints(st: &ApiState, opts: &WriteOptions) -> Result<(), ApiError> {
    let Some((host, port)) = st.config.advertise.rsplit_once(':') else {
        return Ok(());
    };
    let (Ok(ip), Ok(port)) = (host.parse::<std::net::IpAddr>(), port.parse::<u16>()) else {
        return Ok(());
    };
    add_endpoint(
        st,
        opts,
        "default",
        "kubernetes",
        ip,
        &[("https", port, "TCP")],
    )
    .await
}

/// The cluster DNS: the `kube-system/kube-dns` Service on `cluster_ip`
/// (ports 53 UDP and TCP, as kubeadm's), with the DNS server's address as
/// its endpoint. Idempotent.
pub async fn cluster_dns_service(
    st: &ApiState,
    cluster_ip: std::net::Ipv4Addr,
    dns: SocketAddr,
) -> Result<(), ApiError> {
    let opts = WriteOptions::internal();
    let t = Target {
        resource: resources::by_kind("", "Service").expect("services"),
        namespace: "kube-system".into(),
        name: None,
        subresource: None,
    };
    if handlers::get_object(st, &t, "kube-dns").await.is_err() {
        let body = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system",
                         "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS",
                                    "kubernetes.io/cluster-service": "true"}},
            "spec": {"clusterIP": cluster_ip.to_string(), "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": dns.port()},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": dns.port()}]}});
        registry::create_if_absent(st, &t, body, &opts).await?;
    }
    let ip = if dns.ip().is_unspecified() {
        match st
            .config
            .advertise
            .rsplit_once(':')
            .and_then(|(h, _)| h.parse::<std::net::IpAddr>().ok())
        {
            Some(ip) => ip,
            None => return Ok(()),
        }
    } else {
        dns.ip()
    };
    add_endpoint(
        st,
        &opts,
        "kube-system",
        "kube-dns",
        ip,
        &[("dns", dns.port(), "UDP"), ("dns-tcp", dns.port(), "TCP")],
    )
    .await
}

/// Adds `ip` to the Endpoints `ns/name` with these ports (creating it),
/// unless it is a loopback or unspecified address, which pods cannot reach.
async fn add_endpoint(
    st: &ApiState,
    opts: &WriteOptions,
    ns: &str,
    name: &str,
    ip: std::net::IpAddr,
    ports: &[(&str, u16, &str)],
) -> Result<(), ApiError> {
    if ip.is_loopback() || ip.is_unspecified() {
        return Ok(());
    }
    let t = Target {
        resource: resources::by_kind("", "Endpoints").expect("endpoints"),
        namespace: ns.into(),
        name: None,
        subresource: None,
    };
    let first_port = ports.first().map_or(0, |p| p.1);
    let mut addrs: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let existing = handlers::get_object(st, &t, name).await.ok();
    if let Some((cur, _)) = &existing {
        for sub in cur["subsets"].as_array().into_iter().flatten() {
            let same_port = sub["ports"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["port"] == first_port));
            if same_port {
                for a in sub["addresses"].as_array().into_iter().flatten() {
                    addrs.extend(a["ip"].as_str().map(str::to_string));
                }
            }
        }
        if addrs.contains(&ip.to_string()) {
            return Ok(());
        }
    }
    addrs.insert(ip.to_string());
    let addresses: Vec<Value> = addrs.iter().map(|a| json!({"ip": a})).collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto}))
        .collect();
    let body = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns},
        "subsets": [{"addresses": addresses, "ports": ports}]});
    match existing {
        Some(_) => registry::update(st, &t, name, body, opts).await.map(drop),
        None => registry::create_if_absent(st, &t, body, opts)
            .await
            .map(drop),
    }
}

async fn create_kubernetes_service(
    st: &ApiState,
    t: &Target,
    opts: &WriteOptions,
) -> Result<(), ApiError> {
    let ip = st.config.services.first().to_string();
    let body = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}});
    registry::create_if_absent(st, t, body, opts)
        .await
        .map(drop)
}
