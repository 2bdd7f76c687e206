//! A container's environment, as the kubelet makes it: service link
//! variables first, then `envFrom` sources in order, then `env` entries in
//! order (literal values with `$(VAR)` expansion, `fieldRef`,
//! `resourceFieldRef`, `configMapKeyRef`, `secretKeyRef`). Pure: ConfigMaps
//! and Secrets come through a lookup the caller provides.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, Service};

/// Looks up ConfigMap and Secret data in the pod's namespace.
pub trait Lookup {
    /// The ConfigMap's data (binary data excluded), `None` if it does not exist.
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, String>>;
    /// The Secret's decoded data, `None` if it does not exist.
    fn secret(&self, name: &str) -> Option<BTreeMap<String, String>>;
}

/// Why the environment could not be made (the kubelet reports
/// `CreateContainerConfigError` with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("unsupported fieldPath {0}")]
    FieldPath(String),
    #[error("unsupported resource {0}")]
    Resource(String),
}

/// What the downward API needs beyond the pod object.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    pub host_ip: String,
    pub pod_ip: String,
    /// Allocatable cpu (millicores) and memory (bytes): the defaults for
    /// unset limits.
    pub allocatable_millicpu: i64,
    pub allocatable_memory: i64,
}

/// Expands `$(VAR)` references from `env`; `$$` escapes a `$`; unknown
/// references are left as written (Kubernetes' rule).
pub fn expand(input: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let b = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'('
                && let Some(end) = input[i + 2..].find(')')
            {
                let name = &input[i + 2..i + 2 + end];
                match env(name) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(&input[i..i + 3 + end]),
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = input[i..].chars().next().unwrap_or('\u{0}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Service link variables (`FOO_SERVICE_HOST`, `FOO_PORT_80_TCP`, ...) for
/// the services of the pod's namespace that have a ClusterIP.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = vec![];
    for s in sorted {
        let Some(spec) = &s.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let name = env_name(s.metadata.name.as_deref().unwrap_or_default());
        out.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{name}_SERVICE_PORT_{}", env_name(pn)),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        out.push((
            format!("{name}_PORT"),
            format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
        ));
        for p in &ports {
            let pr = proto(p);
            let prefix = format!("{name}_PORT_{}_{}", p.port, pr.to_uppercase());
            out.push((
                prefix.clone(),
                format!("{}://{ip}:{}", pr.to_lowercase(), p.port),
            ));
            out.push((format!("{prefix}_PROTO"), pr.to_lowercase()));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.to_string()));
        }
    }
    out
}

fn env_name(s: &str) -> String {
    let n: String = s
        .chars()
        .map(|c| {
            if c == '-' || c == '.' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    if n.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{n}")
    } else {
        n
    }
}

/// The value of a downward-API `fieldPath` for env.
pub fn field_value(pod: &Pod, path: &str, node: &NodeFacts) -> Result<String, EnvError> {
    let m = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let bracket = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.hostIP" => node.host_ip.clone(),
        "status.hostIPs" => node.host_ip.clone(),
        "status.podIP" | "status.podIPs" => node.pod_ip.clone(),
        _ => {
            if let Some(k) = bracket("metadata.labels['") {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = bracket("metadata.annotations['") {
                m.annotations
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else {
                return Err(EnvError::FieldPath(path.to_string()));
            }
        }
    })
}

/// The value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, ...)
/// with its divisor; unset limits fall back to the node's allocatable.
pub fn resource_value(
    c: &Container,
    resource: &str,
    divisor: Option<&str>,
    node: &NodeFacts,
) -> Result<String, EnvError> {
    let res = c.resources.clone().unwrap_or_default();
    let (kind, what) = resource
        .split_once('.')
        .ok_or_else(|| EnvError::Resource(resource.to_string()))?;
    let map = match kind {
        "limits" => res.limits.unwrap_or_default(),
        "requests" => res.requests.unwrap_or_default(),
        _ => return Err(EnvError::Resource(resource.to_string())),
    };
    let q = map.get(what).map(|q| q.0.clone());
    match what {
        "cpu" => {
            let milli = q
                .as_deref()
                .and_then(crate::quantity::parse_millis)
                .unwrap_or(if kind == "limits" {
                    node.allocatable_millicpu
                } else {
                    0
                });
            let div = divisor
                .and_then(crate::quantity::parse_millis)
                .filter(|d| *d > 0)
                .unwrap_or(1000);
            // Rounded up, as the kubelet does.
            Ok(((milli + div - 1) / div).to_string())
        }
        "memory" | "ephemeral-storage" => {
            let bytes = q
                .as_deref()
                .and_then(crate::quantity::parse_bytes)
                .unwrap_or(if kind == "limits" {
                    node.allocatable_memory
                } else {
                    0
                });
            let div = divisor
                .and_then(crate::quantity::parse_bytes)
                .filter(|d| *d > 0)
                .unwrap_or(1);
            Ok(((bytes + div - 1) / div).to_string())
        }
        _ => Err(EnvError::Resource(resource.to_string())),
    }
}

/// Where `envFrom` and `valueFrom` take data from.
#[derive(Debug, Clone, Copy)]
enum Source {
    ConfigMap,
    Secret,
}

impl Source {
    fn get(self, lookup: &dyn Lookup, name: &str) -> Option<BTreeMap<String, String>> {
        match self {
            Self::ConfigMap => lookup.config_map(name),
            Self::Secret => lookup.secret(name),
        }
    }

    fn not_found(self, name: &str) -> EnvError {
        match self {
            Self::ConfigMap => EnvError::ConfigMapNotFound(name.to_string()),
            Self::Secret => EnvError::SecretNotFound(name.to_string()),
        }
    }

    fn key_missing(self, namespace: &str, name: &str, key: &str) -> EnvError {
        let (namespace, name, key) = (namespace.to_string(), name.to_string(), key.to_string());
        match self {
            Self::ConfigMap => EnvError::ConfigMapKey {
                namespace,
                name,
                key,
            },
            Self::Secret => EnvError::SecretKey {
                namespace,
                name,
                key,
            },
        }
    }
}

/// The container's environment, in order, duplicates resolved (later wins).
pub fn container_env(
    pod: &Pod,
    c: &Container,
    services: &[Service],
    lookup: &dyn Lookup,
    node: &NodeFacts,
) -> Result<Vec<(String, String)>, EnvError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out: Vec<(String, String)> = vec![];
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = out.iter_mut().find(|(n, _)| *n == k) {
            e.1 = v;
        } else {
            out.push((k, v));
        }
    };
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    // As the kubelet does: the pod's namespace's services when service
    // links are on, and always the apiserver's `default/kubernetes`
    // (unless the pod's namespace has its own `kubernetes`).
    let own_kubernetes = services.iter().any(|s| {
        s.metadata.namespace.as_deref() == Some(&ns)
            && s.metadata.name.as_deref() == Some("kubernetes")
    });
    let chosen: Vec<Service> = services
        .iter()
        .filter(|s| {
            let sns = s.metadata.namespace.as_deref().unwrap_or(&ns);
            let master = sns == "default" && s.metadata.name.as_deref() == Some("kubernetes");
            (sns == ns && (links || master)) || (master && !own_kubernetes)
        })
        .cloned()
        .collect();
    for (k, v) in service_env(&chosen) {
        set(&mut out, k, v);
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let sources = [
            from.config_map_ref
                .as_ref()
                .map(|r| (Source::ConfigMap, &r.name, r.optional)),
            from.secret_ref
                .as_ref()
                .map(|r| (Source::Secret, &r.name, r.optional)),
        ];
        for (source, name, optional) in sources.into_iter().flatten() {
            match source.get(lookup, name) {
                Some(data) => {
                    for (k, v) in data {
                        set(&mut out, format!("{prefix}{k}"), v);
                    }
                }
                None if optional == Some(true) => {}
                None => return Err(source.not_found(name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                field_value(pod, &f.field_path, node)?
            } else if let Some(r) = &src.resource_field_ref {
                resource_value(
                    c,
                    &r.resource,
                    r.divisor.as_ref().map(|d| d.0.as_str()),
                    node,
                )?
            } else if let Some((source, name, key, optional)) = src
                .config_map_key_ref
                .as_ref()
                .map(|k| (Source::ConfigMap, &k.name, &k.key, k.optional))
                .or_else(|| {
                    src.secret_key_ref
                        .as_ref()
                        .map(|k| (Source::Secret, &k.name, &k.key, k.optional))
                })
            {
                let value = match source.get(lookup, name) {
                    Some(data) => data
                        .get(key)
                        .cloned()
                        .ok_or_else(|| source.key_missing(&ns, name, key)),
                    None => Err(source.not_found(name)),
                };
                match value {
                    Ok(v) => v,
                    Err(_) if optional == Some(true) => continue,
                    Err(e) => return Err(e),
                }
            } else {
                String::new()
            }
        } else {
            let current = out.clone();
            expand(e.value.as_deref().unwrap_or_default(), &|n| {
                current.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
            })
        };
        set(&mut out, e.name.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;
    impl Lookup for Fake {
        fn config_map(&self, name: &str) -> Option<BTreeMap<String, String>> {
            (name == "cfg").then(|| {
                BTreeMap::from([("MODE".into(), "fast".into()), ("LEVEL".into(), "3".into())])
            })
        }
        fn secret(&self, name: &str) -> Option<BTreeMap<String, String>> {
            (name == "sec").then(|| BTreeMap::from([("PASSWORD".into(), "hunter2".into())]))
        }
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn expansion_rules() {
        let env = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(A", &env), "$(A");
        assert_eq!(expand("€$(A)", &env), "€1");
    }

    #[test]
    fn every_source_in_order() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{
                "name": "c", "image": "busybox",
                "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}},
                "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "sec"}}],
                "env": [
                    {"name": "GREETING", "value": "hello"},
                    {"name": "MSG", "value": "$(GREETING) from $(POD_NAME)"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "CPU_REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
                    {"name": "CPU_LIM", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "MODE"}}},
                    {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "PASSWORD"}}},
                    {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "x", "optional": true}}}
                ]
            }]}
        }));
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "foo-service"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 8765, "protocol": "TCP"}]}
        }))
        .unwrap();
        let node = NodeFacts {
            host_ip: "192.168.1.2".into(),
            pod_ip: "10.244.0.9".into(),
            allocatable_millicpu: 2000,
            allocatable_memory: 1 << 30,
        };
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env: BTreeMap<_, _> = container_env(&p, c, &[svc], &Fake, &node)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(env["CFG_MODE"], "fast");
        assert_eq!(env["PASSWORD"], "hunter2");
        assert_eq!(
            env["MSG"], "hello from $(POD_NAME)",
            "only earlier variables expand"
        );
        assert_eq!(env["APP"], "web");
        assert_eq!(env["NODE"], "n1");
        assert_eq!(env["POD_IP"], "10.244.0.9");
        assert_eq!(env["MEM"], "64");
        assert_eq!(env["CPU_REQ"], "250");
        assert_eq!(env["CPU_LIM"], "2", "unset limit = node allocatable");
        assert_eq!(env["MODE"], "fast");
        assert_eq!(env["PW"], "hunter2");
        assert!(!env.contains_key("OPT"));
        assert_eq!(env["FOO_SERVICE_SERVICE_HOST"], "10.96.0.10");
        assert_eq!(env["FOO_SERVICE_SERVICE_PORT"], "8765");
        assert_eq!(env["FOO_SERVICE_SERVICE_PORT_HTTP"], "8765");
        assert_eq!(env["FOO_SERVICE_PORT"], "tcp://10.96.0.10:8765");
        assert_eq!(env["FOO_SERVICE_PORT_8765_TCP_ADDR"], "10.96.0.10");
        assert_eq!(env["FOO_SERVICE_PORT_8765_TCP_PROTO"], "tcp");
    }

    #[test]
    fn missing_sources_are_config_errors() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "NOPE"}}}]}]}
        }));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let e = container_env(&p, c, &[], &Fake, &NodeFacts::default()).unwrap_err();
        assert_eq!(e.to_string(), "couldn't find key NOPE in ConfigMap ns/cfg");
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "absent"}}]}]}
        }));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let e = container_env(&p, c, &[], &Fake, &NodeFacts::default()).unwrap_err();
        assert_eq!(e.to_string(), "secret \"absent\" not found");
    }

    #[test]
    fn the_apiserver_service_is_in_every_namespace_service_links_or_not() {
        let svc = |ns: &str, name: &str, ip: &str| -> Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": ip, "ports": [{"name": "p", "port": 443, "protocol": "TCP"}]}
            }))
            .unwrap()
        };
        let services = [
            svc("prod", "web", "10.96.0.30"),
            svc("default", "kubernetes", "10.96.0.1"),
            svc("default", "other", "10.96.0.31"),
        ];
        let pod = |links: bool| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "prod"},
                "spec": {"enableServiceLinks": links, "containers": [{"name": "c", "image": "busybox"}]}
            }))
            .unwrap()
        };
        for links in [true, false] {
            let p = pod(links);
            let c = &p.spec.as_ref().unwrap().containers[0];
            let env: BTreeMap<_, _> = container_env(&p, c, &services, &Fake, &NodeFacts::default())
                .unwrap()
                .into_iter()
                .collect();
            assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1", "links {links}");
            assert_eq!(env.contains_key("WEB_SERVICE_HOST"), links);
            assert!(
                !env.contains_key("OTHER_SERVICE_HOST"),
                "another namespace's"
            );
        }
    }
}
