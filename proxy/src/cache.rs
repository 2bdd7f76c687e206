//! What the Service and EndpointSlice watches have delivered, kept so
//! that a change to one object names the Services it touches (the dirty
//! set), and a relist replaces the whole picture only once it is complete.
//! Pure: the daemon feeds it watch events.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    ops::RangeInclusive,
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::runtime::watcher;

use super::{ServiceSpec, desired};

/// A Service or EndpointSlice: (namespace, name).
pub(crate) type Key = (String, String);

pub(crate) fn key_of(meta: &kube::api::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// What the watches have delivered.
#[derive(Default)]
pub(crate) struct Cache {
    services: HashMap<Key, Service>,
    /// Slices by (namespace, slice name).
    slices: HashMap<Key, EndpointSlice>,
    /// Slice names by the service they belong to.
    by_service: HashMap<Key, BTreeSet<Key>>,
    /// Objects seen during a relist, replacing the cache at its end.
    relist_services: Option<HashMap<Key, Service>>,
    relist_slices: Option<HashMap<Key, EndpointSlice>>,
}

impl Cache {
    fn put_slice(&mut self, s: EndpointSlice, dirty: &mut HashSet<Key>) {
        let key = key_of(&s.metadata);
        self.drop_slice(&key, dirty);
        if let Some(svc) = desired::slice_service(&s) {
            self.by_service
                .entry(svc.clone())
                .or_default()
                .insert(key.clone());
            dirty.insert(svc);
        }
        self.slices.insert(key, s);
    }

    fn drop_slice(&mut self, key: &Key, dirty: &mut HashSet<Key>) {
        if let Some(old) = self.slices.remove(key)
            && let Some(svc) = desired::slice_service(&old)
        {
            if let Some(set) = self.by_service.get_mut(&svc) {
                set.remove(key);
                if set.is_empty() {
                    self.by_service.remove(&svc);
                }
            }
            dirty.insert(svc);
        }
    }

    pub(crate) fn specs(
        &self,
        key: &Key,
        node: &str,
        node_ports: &RangeInclusive<u16>,
    ) -> Vec<ServiceSpec> {
        let Some(svc) = self.services.get(key) else {
            return vec![];
        };
        let slices = self
            .by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k));
        desired::specs(svc, slices, node, node_ports)
    }

    pub(crate) fn on_service(
        &mut self,
        ev: watcher::Event<Service>,
        dirty: &mut HashSet<Key>,
    ) -> bool {
        match ev {
            watcher::Event::Apply(s) => {
                let k = key_of(&s.metadata);
                self.services.insert(k.clone(), s);
                dirty.insert(k);
            }
            watcher::Event::Delete(s) => {
                let k = key_of(&s.metadata);
                self.services.remove(&k);
                dirty.insert(k);
            }
            watcher::Event::Init => self.relist_services = Some(HashMap::new()),
            watcher::Event::InitApply(s) => {
                if let Some(m) = &mut self.relist_services {
                    m.insert(key_of(&s.metadata), s);
                }
            }
            watcher::Event::InitDone => {
                let new = self.relist_services.take().unwrap_or_default();
                dirty.extend(self.services.keys().cloned());
                dirty.extend(new.keys().cloned());
                self.services = new;
                return true;
            }
        }
        false
    }

    pub(crate) fn on_slice(
        &mut self,
        ev: watcher::Event<EndpointSlice>,
        dirty: &mut HashSet<Key>,
    ) -> bool {
        match ev {
            watcher::Event::Apply(s) => self.put_slice(s, dirty),
            watcher::Event::Delete(s) => self.drop_slice(&key_of(&s.metadata), dirty),
            watcher::Event::Init => self.relist_slices = Some(HashMap::new()),
            watcher::Event::InitApply(s) => {
                if let Some(m) = &mut self.relist_slices {
                    m.insert(key_of(&s.metadata), s);
                }
            }
            watcher::Event::InitDone => {
                let new = self.relist_slices.take().unwrap_or_default();
                let old: Vec<Key> = self.slices.keys().cloned().collect();
                for k in old {
                    self.drop_slice(&k, dirty);
                }
                for (_, s) in new {
                    self.put_slice(s, dirty);
                }
                return true;
            }
        }
        false
    }
}

impl Cache {
    /// The Service, if it exists.
    pub(crate) fn service(&self, key: &Key) -> Option<&Service> {
        self.services.get(key)
    }

    /// The Services known.
    pub(crate) fn service_keys(&self) -> impl Iterator<Item = &Key> {
        self.services.keys()
    }

    /// kube-proxy's health check ports: for each LoadBalancer Service with
    /// `externalTrafficPolicy: Local` and a `healthCheckNodePort`, that port
    /// and the Service's ready endpoints on `node`.
    pub(crate) fn health_checks(&self, node: &str) -> BTreeMap<u16, (Key, usize)> {
        let mut out = BTreeMap::new();
        for (key, svc) in &self.services {
            let Some(spec) = &svc.spec else { continue };
            let port = spec.health_check_node_port.unwrap_or(0);
            if spec.type_.as_deref() != Some("LoadBalancer")
                || spec.external_traffic_policy.as_deref() != Some("Local")
                || !(1..=65535).contains(&port)
            {
                continue;
            }
            let slices = self
                .by_service
                .get(key)
                .into_iter()
                .flatten()
                .filter_map(|k| self.slices.get(k));
            let local = desired::ready_local_endpoints(slices, node);
            out.insert(port as u16, (key.clone(), local));
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
        assert!(!cache.slices.contains_key(&("default".into(), "a-1".into())));
        assert!(
            !cache
                .by_service
                .contains_key(&("default".into(), "a".into()))
        );
    }
}
