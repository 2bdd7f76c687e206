//! What the Service and EndpointSlice watches have delivered, kept so
//! that a change to one object names the Services it touches (the dirty
//! set). The relist rules are the informer's (`rudder_informer::Reflector`):
//! a relist replaces the whole picture only once it is complete, and what
//! it dropped is dirtied. Pure: the daemon feeds it watch events.

use std::{
    collections::{BTreeMap, HashSet},
    ops::RangeInclusive,
    sync::Arc,
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::runtime::watcher;
use rudder_informer::{Change, ObjectKey, Reflector};

use super::{ServiceSpec, desired};

/// A Service or EndpointSlice: (namespace, name).
pub(crate) type Key = (String, String);

fn key(k: &ObjectKey) -> Key {
    (k.namespace.clone(), k.name.clone())
}

/// The index of slices by the Service they belong to.
const BY_SERVICE: &str = "service";

fn slice_service(s: &EndpointSlice) -> Vec<String> {
    desired::slice_service(s)
        .map(|(ns, name)| format!("{ns}/{name}"))
        .into_iter()
        .collect()
}

/// What the watches have delivered.
pub(crate) struct Cache {
    services: Reflector<Service>,
    slices: Reflector<EndpointSlice>,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            services: Reflector::new(),
            slices: Reflector::new().with_index(BY_SERVICE, slice_service),
        }
    }
}

impl Cache {
    /// The slices of a Service.
    fn slices_of<'a>(&'a self, svc: &Key) -> impl Iterator<Item = &'a EndpointSlice> + 'a {
        let value = format!("{}/{}", svc.0, svc.1);
        self.slices
            .by_index(BY_SERVICE, &value)
            .map(|(_, s)| s.as_ref())
    }

    pub(crate) fn specs(
        &self,
        key: &Key,
        node: &str,
        node_ports: &RangeInclusive<u16>,
    ) -> Vec<ServiceSpec> {
        let Some(svc) = self.service(key) else {
            return vec![];
        };
        desired::specs(svc, self.slices_of(key), node, node_ports)
    }

    /// Applies a Service watch event; says whether it completed a relist.
    pub(crate) fn on_service(
        &mut self,
        ev: watcher::Event<Service>,
        dirty: &mut HashSet<Key>,
    ) -> bool {
        let delta = self.services.apply(ev);
        dirty.extend(delta.changes.iter().map(|c| key(c.key())));
        delta.relisted
    }

    /// Applies an EndpointSlice watch event: the Services of the slice's
    /// old and new versions are dirty. Says whether it completed a relist.
    pub(crate) fn on_slice(
        &mut self,
        ev: watcher::Event<EndpointSlice>,
        dirty: &mut HashSet<Key>,
    ) -> bool {
        let delta = self.slices.apply(ev);
        for c in &delta.changes {
            let sides: [Option<&Arc<EndpointSlice>>; 2] = match c {
                Change::Upsert { old, new, .. } => [old.as_ref(), Some(new)],
                Change::Remove { old, .. } => [Some(old), None],
            };
            dirty.extend(
                sides
                    .into_iter()
                    .flatten()
                    .filter_map(|s| desired::slice_service(s)),
            );
        }
        delta.relisted
    }
}

impl Cache {
    /// The Service, if it exists.
    pub(crate) fn service(&self, key: &Key) -> Option<&Service> {
        self.services
            .get(&ObjectKey::new(&key.0, &key.1))
            .map(AsRef::as_ref)
    }

    /// The Services known.
    pub(crate) fn service_keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.services.objects().keys().map(key)
    }

    /// Every service port this node serves, each front end once, from the
    /// Service that owns it (the rule of [`super::owners`], as the eBPF
    /// loop applies it): a Service whose `externalIPs` name another's
    /// ClusterIP and port cannot take its traffic, nor make the netfilter
    /// rules fail by declaring a front end twice.
    pub(crate) fn owned_specs(
        &self,
        node: &str,
        node_ports: &RangeInclusive<u16>,
    ) -> Vec<ServiceSpec> {
        let mut owners = super::owners::Owners::default();
        let mut all = Vec::new();
        for k in self.service_keys() {
            let specs = self.specs(&k, node, node_ports);
            let Some(svc) = self.service(&k) else {
                continue;
            };
            let claims: Vec<_> = specs
                .iter()
                .map(|s| (s.frontend, desired::rank(svc, &s.frontend)))
                .collect();
            let created = svc
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            owners.set(&k, &created, &claims);
            all.push((k, specs));
        }
        all.into_iter()
            .flat_map(|(k, specs)| {
                let owners = &owners;
                specs
                    .into_iter()
                    .filter(move |s| owners.owner(&s.frontend) == Some(&k))
            })
            .collect()
    }

    /// kube-proxy's health check ports: for each LoadBalancer Service with
    /// `externalTrafficPolicy: Local` and a `healthCheckNodePort`, that port
    /// and the Service's ready endpoints on `node`.
    pub(crate) fn health_checks(&self, node: &str) -> BTreeMap<u16, (Key, usize)> {
        let mut out = BTreeMap::new();
        for (k, svc) in self.services.objects() {
            let Some(spec) = &svc.spec else { continue };
            let port = spec.health_check_node_port.unwrap_or(0);
            if spec.type_.as_deref() != Some("LoadBalancer")
                || spec.external_traffic_policy.as_deref() != Some("Local")
                || !(1..=65535).contains(&port)
            {
                continue;
            }
            let k = key(k);
            let local = desired::ready_local_endpoints(self.slices_of(&k), node);
            out.insert(port as u16, (k, local));
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    pub(crate) fn service(name: &str, ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}
        }))
        .unwrap()
    }

    pub(crate) fn slice(name: &str, svc: &str, ips: &[&str]) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": "", "port": 8080}],
            "endpoints": ips.iter().map(|ip| json!({"addresses": [ip]})).collect::<Vec<_>>()
        }))
        .unwrap()
    }

    #[test]
    fn health_check_ports_count_the_ready_local_endpoints() {
        let mut cache = Cache::default();
        let mut dirty = HashSet::new();
        let lb = |name: &str, policy: &str, port: Option<u16>| -> Service {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy,
                         "healthCheckNodePort": port, "ports": [{"port": 80}]}
            }))
            .unwrap()
        };
        for s in [
            lb("local", "Local", Some(32100)),
            lb("cluster", "Cluster", None),
            lb("none", "Local", None),
        ] {
            cache.on_service(watcher::Event::Apply(s), &mut dirty);
        }
        let endpoints: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "local-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "local"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.0.5"], "nodeName": "n1"},
                {"addresses": ["10.244.0.6"], "nodeName": "n1", "conditions": {"ready": true}},
                {"addresses": ["10.244.0.7"], "nodeName": "n1", "conditions": {"ready": false}},
                {"addresses": ["10.244.1.5"], "nodeName": "n2"}
            ]
        }))
        .unwrap();
        cache.on_slice(watcher::Event::Apply(endpoints), &mut dirty);
        let key = ("default".to_string(), "local".to_string());
        assert_eq!(
            cache.health_checks("n1"),
            BTreeMap::from([(32100, (key.clone(), 2))])
        );
        assert_eq!(
            cache.health_checks("n2"),
            BTreeMap::from([(32100, (key.clone(), 1))])
        );
        assert_eq!(
            cache.health_checks("n3"),
            BTreeMap::from([(32100, (key, 0))])
        );
    }

    #[test]
    fn each_front_end_is_served_once_from_its_owner() {
        let mut cache = Cache::default();
        let mut dirty = HashSet::new();
        // An older Service's externalIP, then a ClusterIP that a newer
        // Service also names as its externalIP.
        let svc = |name: &str, created: &str, ip: &str, external: &[&str]| -> Service {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default",
                             "creationTimestamp": created},
                "spec": {"clusterIP": ip, "externalIPs": external, "ports": [{"port": 80}]}
            }))
            .unwrap()
        };
        for s in [
            svc("dns", "2026-01-02T00:00:00Z", "10.96.0.10", &[]),
            svc(
                "hijack",
                "2026-01-01T00:00:00Z",
                "10.96.0.99",
                &["10.96.0.10", "192.0.2.7"],
            ),
            svc(
                "later",
                "2026-01-03T00:00:00Z",
                "10.96.0.98",
                &["192.0.2.7"],
            ),
        ] {
            cache.on_service(watcher::Event::Apply(s), &mut dirty);
        }
        for (name, svc, ip) in [
            ("dns-1", "dns", "10.244.0.5"),
            ("hijack-1", "hijack", "10.244.0.6"),
            ("later-1", "later", "10.244.0.7"),
        ] {
            cache.on_slice(watcher::Event::Apply(slice(name, svc, &[ip])), &mut dirty);
        }
        let specs = cache.owned_specs("n1", &desired::DEFAULT_NODE_PORTS);
        let served = |addr: &str| -> Vec<String> {
            specs
                .iter()
                .filter(|s| s.frontend.addr.to_string() == addr)
                .map(|s| s.endpoints[0].addr.to_string())
                .collect()
        };
        // The ClusterIP stays its Service's, though the other is older.
        assert_eq!(served("10.96.0.10"), ["10.244.0.5"]);
        // Between two externalIPs the older Service keeps it.
        assert_eq!(served("192.0.2.7"), ["10.244.0.6"]);
        assert_eq!(served("10.96.0.98"), ["10.244.0.7"]);
        let mut fronts: Vec<_> = specs.iter().map(|s| s.frontend).collect();
        let n = fronts.len();
        fronts.sort();
        fronts.dedup();
        assert_eq!(fronts.len(), n, "a front end twice");
    }

    #[test]
    fn a_relist_replaces_the_cache_and_dirties_what_vanished() {
        let mut cache = Cache::default();
        let mut dirty = HashSet::new();
        cache.on_slice(
            watcher::Event::Apply(slice("a-1", "a", &["10.244.0.5"])),
            &mut dirty,
        );
        dirty.clear();
        cache.on_slice(watcher::Event::Init, &mut dirty);
        cache.on_slice(
            watcher::Event::InitApply(slice("c-1", "c", &["10.244.0.6"])),
            &mut dirty,
        );
        assert!(
            dirty.is_empty(),
            "nothing changes until the relist is complete"
        );
        assert!(cache.on_slice(watcher::Event::InitDone, &mut dirty));
        assert_eq!(
            dirty,
            HashSet::from([
                ("default".into(), "a".into()),
                ("default".into(), "c".into())
            ])
        );
        assert!(
            cache
                .slices
                .get(&ObjectKey::new("default", "a-1"))
                .is_none()
        );
        assert_eq!(cache.slices_of(&("default".into(), "a".into())).count(), 0);
    }

    #[test]
    fn a_slice_moved_to_another_service_dirties_both() {
        let mut cache = Cache::default();
        let mut dirty = HashSet::new();
        cache.on_slice(
            watcher::Event::Apply(slice("s-1", "a", &["10.244.0.5"])),
            &mut dirty,
        );
        dirty.clear();
        cache.on_slice(
            watcher::Event::Apply(slice("s-1", "b", &["10.244.0.5"])),
            &mut dirty,
        );
        assert_eq!(
            dirty,
            HashSet::from([
                ("default".into(), "a".into()),
                ("default".into(), "b".into())
            ])
        );
        assert_eq!(cache.slices_of(&("default".into(), "a".into())).count(), 0);
        assert_eq!(cache.slices_of(&("default".into(), "b".into())).count(), 1);
    }
}
