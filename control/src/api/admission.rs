//! What the apiserver does to objects beyond defaults: namespace rules,
//! Service ClusterIP and NodePort allocation (conflicts rejected), Service
//! external IPs (no special address, nothing in the service CIDR, none at
//! all with DenyServiceExternalIPs), the initial pod status, the Priority
//! and LimitRanger plugins ([`super::priority`], [`super::limits`]) and a
//! new ResourceQuota's first status ([`super::quota`]).

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::{
    ApiState,
    handlers::{Target, list_objects},
    resources::{Resource, by_kind},
    status::{ApiError, Cause},
};

/// Namespaces that exist from the start and cannot be deleted.
pub const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// The Service address range and NodePort range.
#[derive(Clone, Debug)]
pub struct ServiceRanges {
    pub cidr: (Ipv4Addr, u8),
    pub node_ports: (u16, u16),
    /// The DenyServiceExternalIPs admission plugin: no new externalIPs.
    pub deny_external_ips: bool,
}

impl Default for ServiceRanges {
    fn default() -> Self {
        Self {
            cidr: (Ipv4Addr::new(10, 96, 0, 0), 12),
            node_ports: (30000, 32767),
            deny_external_ips: false,
        }
    }
}

impl ServiceRanges {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.cidr.1))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.cidr.0) & mask
    }

    /// The first usable address: the `kubernetes` Service's.
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.0) + 1)
    }

    fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.cidr.1))
    }
}

/// Every ClusterIP and NodePort in use, from the stored Services.
async fn in_use(st: &ApiState) -> Result<(Vec<Ipv4Addr>, Vec<i64>), ApiError> {
    let t = Target {
        resource: by_kind("", "Service").expect("services"),
        namespace: String::new(),
        name: None,
        subresource: None,
    };
    let (items, _, _) = list_objects(st, &t, &Default::default()).await?;
    let mut ips = Vec::new();
    let mut ports = Vec::new();
    for s in items {
        if let Some(ip) = s
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .and_then(|i| i.parse().ok())
        {
            ips.push(ip);
        }
        for p in s
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
                ports.push(n);
            }
        }
        if let Some(n) = s
            .pointer("/spec/healthCheckNodePort")
            .and_then(Value::as_i64)
        {
            ports.push(n);
        }
    }
    Ok((ips, ports))
}

async fn allocate_service(
    st: &ApiState,
    r: &Resource,
    svc: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let name = svc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let ty = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_owned();
    // Allocation is serialised so that two creates never pick the same
    // address (the store write that follows is the commit point).
    let _guard = st.alloc_lock.lock().await;
    let (mut ips, mut ports) = in_use(st).await?;
    if let Some(o) = old {
        release_own(o, &mut ips, &mut ports);
    }
    let ranges = &st.config.services;
    if ty == "ExternalName" {
        return Ok(());
    }
    assign_cluster_ip(r, &name, svc, &ips, ranges)?;
    if ty == "NodePort" || ty == "LoadBalancer" {
        let (lo, hi) = ranges.node_ports;
        let n_ports = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..n_ports {
            let want = svc["spec"]["ports"][i]
                .get("nodePort")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if want != 0 {
                if want < i64::from(lo) || want > i64::from(hi) {
                    return Err(ApiError::invalid(
                        r,
                        &name,
                        vec![Cause::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            &json!(want),
                            format!(
                                "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                            ),
                        )],
                    ));
                }
                if ports.contains(&want) {
                    return Err(ApiError::invalid(
                        r,
                        &name,
                        vec![Cause::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            &json!(want),
                            "provided port is already allocated",
                        )],
                    ));
                }
                ports.push(want);
                continue;
            }
            let port = free_port(&ports, (lo, hi))?;
            ports.push(port);
            svc["spec"]["ports"][i]["nodePort"] = json!(port);
        }
    } else if let Some(ps) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ps {
            if let Some(m) = p.as_object_mut() {
                m.remove("nodePort");
            }
        }
    }
    health_check_port(r, &name, svc, old, &mut ports, ranges.node_ports)
}

/// Forgets what the Service's old version holds (its cluster IP, node
/// ports and health-check port): they are not conflicts on update.
fn release_own(o: &Value, ips: &mut Vec<Ipv4Addr>, ports: &mut Vec<i64>) {
    if let Some(ip) = o
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .and_then(|i| i.parse::<Ipv4Addr>().ok())
    {
        ips.retain(|x| *x != ip);
    }
    for p in o
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
            ports.retain(|x| *x != n);
        }
    }
    if let Some(n) = o
        .pointer("/spec/healthCheckNodePort")
        .and_then(Value::as_i64)
    {
        ports.retain(|x| *x != n);
    }
}

/// The cluster IP: none for a headless Service, a free address of the
/// range when none is asked for, else the one asked for if it is in the
/// range and free.
fn assign_cluster_ip(
    r: &Resource,
    name: &str,
    svc: &mut Value,
    ips: &[Ipv4Addr],
    ranges: &ServiceRanges,
) -> Result<(), ApiError> {
    let requested = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    match requested.as_str() {
        "None" => {}
        "" => {
            let size = ranges.size();
            let base = u32::from(ranges.cidr.0);
            let start = rand::random_range(1..size - 1);
            let ip = (0..size - 2)
                .map(|i| Ipv4Addr::from(base + 1 + (start - 1 + i) % (size - 2)))
                .find(|ip| !ips.contains(ip))
                .ok_or_else(|| ApiError::internal("the Service IP range is full"))?;
            svc["spec"]["clusterIP"] = json!(ip.to_string());
            svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
        }
        ip => {
            let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                ApiError::invalid(
                    r,
                    name,
                    vec![Cause::invalid(
                        "spec.clusterIPs[0]",
                        &json!(ip),
                        "must be a valid IP address",
                    )],
                )
            })?;
            if !ranges.contains(parsed) {
                return Err(ApiError::invalid(
                    r,
                    name,
                    vec![Cause::invalid(
                        "spec.clusterIPs",
                        &json!([ip]),
                        format!(
                            "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}/{}",
                            ranges.cidr.0, ranges.cidr.1
                        ),
                    )],
                ));
            }
            if ips.contains(&parsed) {
                return Err(ApiError::invalid(
                    r,
                    name,
                    vec![Cause::invalid(
                        "spec.clusterIPs",
                        &json!([ip]),
                        format!("failed to allocate IP {ip}: provided IP is already allocated"),
                    )],
                ));
            }
            svc["spec"]["clusterIPs"] = json!([ip]);
        }
    }
    Ok(())
}

/// A port of the NodePort range none of `ports` holds, from a random start.
fn free_port(ports: &[i64], (lo, hi): (u16, u16)) -> Result<i64, ApiError> {
    let span = i64::from(hi - lo) + 1;
    let start = rand::random_range(0..span);
    (0..span)
        .map(|k| i64::from(lo) + (start + k) % span)
        .find(|p| !ports.contains(p))
        .ok_or_else(|| ApiError::internal("the NodePort range is full"))
}

/// `spec.healthCheckNodePort`, as kube-apiserver keeps it: for a
/// LoadBalancer Service with `externalTrafficPolicy: Local`, the port asked
/// for (in the NodePort range and free) or one allocated from that range;
/// dropped when the Service stops being one; refused on any other.
fn health_check_port(
    r: &Resource,
    name: &str,
    svc: &mut Value,
    old: Option<&Value>,
    ports: &mut Vec<i64>,
    (lo, hi): (u16, u16),
) -> Result<(), ApiError> {
    let field = "spec.healthCheckNodePort";
    let applies = svc.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer")
        && svc
            .pointer("/spec/externalTrafficPolicy")
            .and_then(Value::as_str)
            == Some("Local");
    let want = svc
        .pointer("/spec/healthCheckNodePort")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let had = old
        .and_then(|o| o.pointer("/spec/healthCheckNodePort"))
        .and_then(Value::as_i64);
    let invalid =
        |msg: String| ApiError::invalid(r, name, vec![Cause::invalid(field, &json!(want), msg)]);
    if !applies {
        if want != 0 && Some(want) != had {
            return Err(invalid(
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"
                    .into(),
            ));
        }
        if let Some(m) = svc.pointer_mut("/spec").and_then(Value::as_object_mut) {
            m.remove("healthCheckNodePort");
        }
        return Ok(());
    }
    let port = if want != 0 {
        if want < i64::from(lo) || want > i64::from(hi) {
            return Err(invalid(format!(
                "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
            )));
        }
        if ports.contains(&want) {
            return Err(invalid("provided port is already allocated".into()));
        }
        want
    } else {
        free_port(ports, (lo, hi))?
    };
    ports.push(port);
    svc["spec"]["healthCheckNodePort"] = json!(port);
    Ok(())
}

/// Checks a Service's `externalIPs`: valid, not special, not in the
/// service CIDR (where they would shadow another Service's ClusterIP), and,
/// with DenyServiceExternalIPs, none that the old object did not have.
fn check_external_ips(
    st: &ApiState,
    r: &Resource,
    svc: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let ranges = &st.config.services;
    let before: Vec<&Value> = old
        .and_then(|o| o.pointer("/spec/externalIPs"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut causes = Vec::new();
    for (i, ip) in svc
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = format!("spec.externalIPs[{i}]");
        if ranges.deny_external_ips && !before.contains(&ip) {
            causes.push(Cause::forbidden(
                field,
                "use of external IPs is denied by admission control",
            ));
            continue;
        }
        let (parsed, errs) = rudder_k8s::net::validate_ip(ip.as_str().unwrap_or_default(), &field);
        causes.extend(errs);
        if let Some(std::net::IpAddr::V4(v4)) = parsed
            && ranges.contains(v4)
        {
            causes.push(Cause::invalid(
                field,
                ip,
                format!(
                    "may not be in the service CIDR ({}/{}): it would take another Service's ClusterIP",
                    ranges.cidr.0, ranges.cidr.1
                ),
            ));
        }
    }
    invalid_if_any(r, svc, causes)
}

/// The built-in admission of a create: the kind's [`super::kinds`] hook.
pub async fn on_create(st: &ApiState, r: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    match super::kinds::of(r).and_then(|k| k.on_create) {
        Some(admit) => admit(st, r, obj).await,
        None => Ok(()),
    }
}

/// The built-in admission of an update: the kind's [`super::kinds`] hook.
pub async fn on_update(
    st: &ApiState,
    r: &Resource,
    cur: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    match super::kinds::of(r).and_then(|k| k.on_update) {
        Some(admit) => admit(st, r, cur, new).await,
        None => Ok(()),
    }
}

/// The kinds' admission hooks, as their [`super::kinds`] entries name
/// them.
pub mod hooks {
    use futures_util::future::BoxFuture;
    use serde_json::{Value, json};

    use super::{ApiError, ApiState, Resource, namespace};

    type Admitted<'a> = BoxFuture<'a, Result<(), ApiError>>;

    /// A Service: external IPs checked, ClusterIP and NodePorts allocated,
    /// an empty status as kube-apiserver returns one.
    pub fn service_create<'a>(
        st: &'a ApiState,
        r: &'a Resource,
        obj: &'a mut Value,
    ) -> Admitted<'a> {
        Box::pin(async move {
            super::check_external_ips(st, r, obj, None)?;
            super::allocate_service(st, r, obj, None).await?;
            if obj.get("status").is_none_or(Value::is_null) {
                obj["status"] = json!({"loadBalancer": {}});
            }
            Ok(())
        })
    }

    /// A Service's allocations kept or checked across an update.
    pub fn service_update<'a>(
        st: &'a ApiState,
        r: &'a Resource,
        cur: &'a Value,
        new: &'a mut Value,
    ) -> Admitted<'a> {
        Box::pin(super::update_service(st, r, cur, new))
    }

    /// A Job's generated selector.
    pub fn job_create<'a>(_: &'a ApiState, _: &'a Resource, obj: &'a mut Value) -> Admitted<'a> {
        super::job_selector(obj);
        Box::pin(async { Ok(()) })
    }

    /// A CustomResourceDefinition's first status.
    pub fn crd_create<'a>(_: &'a ApiState, _: &'a Resource, obj: &'a mut Value) -> Admitted<'a> {
        crate::api::crd::definition::initial_status(obj);
        Box::pin(async { Ok(()) })
    }

    /// What may not change in a CustomResourceDefinition.
    pub fn crd_update<'a>(
        _: &'a ApiState,
        r: &'a Resource,
        cur: &'a Value,
        new: &'a mut Value,
    ) -> Admitted<'a> {
        let mut causes = Vec::new();
        crate::api::crd::definition::validate_update(cur, new, &mut causes);
        let checked = super::invalid_if_any(r, new, causes);
        Box::pin(async move { checked })
    }

    /// The DefaultIngressClass plugin.
    pub fn ingress_create<'a>(
        st: &'a ApiState,
        _: &'a Resource,
        obj: &'a mut Value,
    ) -> Admitted<'a> {
        Box::pin(super::default_ingress_class(st, obj))
    }

    /// A PriorityClass: one global default.
    pub fn priority_class_create<'a>(
        st: &'a ApiState,
        r: &'a Resource,
        obj: &'a mut Value,
    ) -> Admitted<'a> {
        Box::pin(crate::api::priority::admit_class(st, r, obj))
    }

    /// A PriorityClass's value and preemption policy may not change.
    pub fn priority_class_update<'a>(
        st: &'a ApiState,
        r: &'a Resource,
        cur: &'a Value,
        new: &'a mut Value,
    ) -> Admitted<'a> {
        Box::pin(async move {
            let mut causes = Vec::new();
            crate::api::priority::validate(new, Some(cur), &mut causes);
            super::invalid_if_any(r, new, causes)?;
            crate::api::priority::admit_class(st, r, new).await
        })
    }

    /// A ResourceQuota's first status (what is used already).
    pub fn resource_quota_create<'a>(
        st: &'a ApiState,
        _: &'a Resource,
        obj: &'a mut Value,
    ) -> Admitted<'a> {
        Box::pin(crate::api::quota::initial_status(st, obj))
    }

    /// A claim within its namespace's LimitRanges.
    pub fn claim_create<'a>(st: &'a ApiState, r: &'a Resource, obj: &'a mut Value) -> Admitted<'a> {
        Box::pin(async move {
            let ns = namespace(obj);
            crate::api::limits::admit_claim(st, r, &ns, obj).await
        })
    }

    /// A Pod: its priority, its LimitRanges' defaults and bounds, its
    /// service account token volume, its first status.
    pub fn pod_create<'a>(st: &'a ApiState, r: &'a Resource, obj: &'a mut Value) -> Admitted<'a> {
        Box::pin(async move {
            crate::api::priority::admit_pod(st, obj).await?;
            let ns = namespace(obj);
            crate::api::limits::admit_pod(st, r, &ns, obj).await?;
            super::service_account_volume(st, obj).await;
            if obj.get("status").and_then(|s| s.get("phase")).is_none() {
                obj["status"] = json!({"phase": "Pending", "qosClass": rudder_k8s::qos::pod_value_qos(obj).as_str()});
            }
            Ok(())
        })
    }

    /// A Pod keeps the priority it was admitted with.
    pub fn pod_update<'a>(
        _: &'a ApiState,
        _: &'a Resource,
        cur: &'a Value,
        new: &'a mut Value,
    ) -> Admitted<'a> {
        crate::api::priority::keep_on_update(cur, new);
        Box::pin(async { Ok(()) })
    }
}

/// An Invalid error naming `obj` if there are causes.
fn invalid_if_any(r: &Resource, obj: &Value, causes: Vec<Cause>) -> Result<(), ApiError> {
    if causes.is_empty() {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    Err(ApiError::invalid(r, name, causes))
}

/// The annotation that makes an IngressClass the default.
pub const DEFAULT_INGRESS_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";

/// The DefaultIngressClass admission plugin: an Ingress that names no
/// class gets the default IngressClass, if exactly one is marked (several
/// marked: refused, as upstream).
async fn default_ingress_class(st: &ApiState, ing: &mut Value) -> Result<(), ApiError> {
    if ing
        .pointer("/spec/ingressClassName")
        .is_some_and(|c| !c.is_null())
        || ing
            .pointer("/metadata/annotations/kubernetes.io~1ingress.class")
            .is_some()
    {
        return Ok(());
    }
    let t = Target {
        resource: by_kind("networking.k8s.io", "IngressClass").expect("served"),
        namespace: String::new(),
        name: None,
        subresource: None,
    };
    let (classes, _, _) = list_objects(st, &t, &Default::default()).await?;
    let defaults: Vec<&str> = classes
        .iter()
        .filter(|c| {
            c.pointer("/metadata/annotations")
                .and_then(|a| a.get(DEFAULT_INGRESS_CLASS))
                .and_then(Value::as_str)
                == Some("true")
        })
        .filter_map(|c| c.pointer("/metadata/name").and_then(Value::as_str))
        .collect();
    match defaults.as_slice() {
        [] => Ok(()),
        [one] => {
            ing["spec"]["ingressClassName"] = json!(one);
            Ok(())
        }
        many => Err(ApiError::forbidden(format!(
            "{} default IngressClasses were found, only 1 allowed",
            many.len()
        ))),
    }
}

/// The annotation of a mirror pod (the API's view of a kubelet's static pod).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Where the ServiceAccount admission plugin mounts the pod's API access.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The ServiceAccount admission plugin's projected volume: unless the pod
/// or its service account opts out, a `kube-api-access-xxxxx` volume (a
/// bound token valid for an hour, `kube-root-ca.crt`'s `ca.crt` and the
/// namespace) mounted read-only at [`SERVICE_ACCOUNT_MOUNT`] in every
/// container that has nothing there yet.
async fn service_account_volume(st: &ApiState, pod: &mut Value) {
    // Mirror pods stand for static pods the kubelet runs from files, with
    // no API credentials of their own.
    if pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(MIRROR_ANNOTATION))
        .is_some()
    {
        return;
    }
    let Some(spec) = pod.get("spec") else { return };
    if spec["automountServiceAccountToken"] == json!(false) {
        return;
    }
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let sa = spec["serviceAccountName"].as_str().unwrap_or("default");
    if spec["automountServiceAccountToken"].is_null()
        && let Some(r) = by_kind("", "ServiceAccount")
        && let Ok((Some(kv), _)) = st.store.get(&super::handlers::key(r, ns, sa)).await
        && let Ok(sa_obj) = serde_json::from_slice::<Value>(&kv.value)
        && sa_obj["automountServiceAccountToken"] == json!(false)
    {
        return;
    }
    let suffix: String = {
        const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..5)
            .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
            .collect()
    };
    let name = format!("kube-api-access-{suffix}");
    let volume = json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}});
    let mount = json!({"name": name, "readOnly": true, "mountPath": SERVICE_ACCOUNT_MOUNT});
    let mut used = false;
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        for c in pod["spec"][key].as_array_mut().into_iter().flatten() {
            let has = c["volumeMounts"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["mountPath"] == SERVICE_ACCOUNT_MOUNT));
            if has {
                continue;
            }
            if !c["volumeMounts"].is_array() {
                c["volumeMounts"] = json!([]);
            }
            c["volumeMounts"]
                .as_array_mut()
                .expect("made an array above")
                .push(mount.clone());
            used = true;
        }
    }
    if used {
        if !pod["spec"]["volumes"].is_array() {
            pod["spec"]["volumes"] = json!([]);
        }
        pod["spec"]["volumes"]
            .as_array_mut()
            .expect("made an array above")
            .push(volume);
    }
}

/// A Service's update: external IPs checked; the ClusterIP kept when
/// omitted and refused when changed; NodePorts omitted keep theirs.
async fn update_service(
    st: &ApiState,
    r: &Resource,
    cur: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    check_external_ips(st, r, new, Some(cur))?;
    let name = new
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let old_ip = cur.pointer("/spec/clusterIP").cloned();
    let new_ip = new.pointer("/spec/clusterIP").cloned();
    if new_ip.is_none() || new_ip == Some(json!("")) {
        // Omitted in an update (kubectl apply): the allocation stays.
        if let Some(ip) = old_ip.clone() {
            new["spec"]["clusterIP"] = ip;
            new["spec"]["clusterIPs"] = cur
                .pointer("/spec/clusterIPs")
                .cloned()
                .unwrap_or(json!([]));
        }
    } else if old_ip.is_some() && new_ip != old_ip {
        return Err(ApiError::invalid(
            r,
            &name,
            vec![Cause::invalid(
                "spec.clusterIPs[0]",
                new_ip.as_ref().unwrap_or(&Value::Null),
                "may not change once set",
            )],
        ));
    }
    // NodePorts omitted in an update keep their allocation.
    if let (Some(old_ports), Some(new_ports)) = (
        cur.pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned(),
        new.pointer_mut("/spec/ports").and_then(Value::as_array_mut),
    ) {
        for p in new_ports.iter_mut() {
            if p.get("nodePort").is_none()
                && let Some(o) = old_ports.iter().find(|o| o.get("port") == p.get("port"))
                && let Some(np) = o.get("nodePort")
            {
                p["nodePort"] = np.clone();
            }
        }
    }
    allocate_service(st, r, new, Some(cur)).await?;
    Ok(())
}

/// A Job's generated selector and pod labels (unless `manualSelector`),
/// from its uid, as kube-apiserver does.
fn job_selector(job: &mut Value) {
    if job.pointer("/spec/manualSelector") == Some(&json!(true)) {
        return;
    }
    let uid = job.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
    let name = job
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null);
    let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let template = spec.entry("template").or_insert_with(|| json!({}));
    if !template.get("metadata").is_some_and(Value::is_object) {
        template["metadata"] = json!({});
    }
    if !template["metadata"]
        .get("labels")
        .is_some_and(Value::is_object)
    {
        template["metadata"]["labels"] = json!({});
    }
    let labels = &mut template["metadata"]["labels"];
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        labels[k] = v.clone();
    }
    let pod_labels = labels.clone();
    if job
        .pointer("/metadata/labels")
        .is_none_or(|l| l.as_object().is_none_or(serde_json::Map::is_empty))
    {
        job["metadata"]["labels"] = pod_labels;
    }
}

fn namespace(obj: &Value) -> String {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}
