//! The informer cache the controllers and the scheduler decide from: one
//! watch per kind, kept in maps of typed objects. Writes the controllers
//! make are written through (newer resourceVersions only), so a decision
//! made right after a create sees it before the watch delivers it.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use k8s_openapi::{
    api::{
        apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet},
        autoscaling::v2::HorizontalPodAutoscaler,
        batch::v1::{CronJob, Job},
        coordination::v1::Lease,
        core::v1::{
            ConfigMap, Endpoints, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod,
            ReplicationController, Service, ServiceAccount,
        },
        discovery::v1::EndpointSlice,
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Api, Client, runtime::watcher};
use rudder_informer::{Change, Reflector};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;

/// (namespace, name); the namespace is empty for cluster-scoped objects.
pub type Key = (String, String);

/// The objects of one kind, by key: a persistent map, so that a snapshot
/// of 10,000 pods is a pointer copy and a change copies one path of the
/// tree, not every key (the scheduler and the controllers take one per
/// round).
pub type Objects<T> = imbl::OrdMap<Key, Arc<T>>;

/// The kinds the controllers read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    Node,
    Lease,
    ReplicaSet,
    ReplicationController,
    Deployment,
    DaemonSet,
    StatefulSet,
    ControllerRevision,
    Job,
    CronJob,
    Service,
    Endpoints,
    EndpointSlice,
    Namespace,
    ServiceAccount,
    ConfigMap,
    PersistentVolumeClaim,
    PersistentVolume,
    HorizontalPodAutoscaler,
    PodDisruptionBudget,
    Event,
}

impl Kind {
    /// (group, kind) as served.
    pub fn group_kind(self) -> (&'static str, &'static str) {
        match self {
            Self::Pod => ("", "Pod"),
            Self::Node => ("", "Node"),
            Self::Lease => ("coordination.k8s.io", "Lease"),
            Self::ReplicaSet => ("apps", "ReplicaSet"),
            Self::ReplicationController => ("", "ReplicationController"),
            Self::Deployment => ("apps", "Deployment"),
            Self::DaemonSet => ("apps", "DaemonSet"),
            Self::StatefulSet => ("apps", "StatefulSet"),
            Self::ControllerRevision => ("apps", "ControllerRevision"),
            Self::Job => ("batch", "Job"),
            Self::CronJob => ("batch", "CronJob"),
            Self::Service => ("", "Service"),
            Self::Endpoints => ("", "Endpoints"),
            Self::EndpointSlice => ("discovery.k8s.io", "EndpointSlice"),
            Self::Namespace => ("", "Namespace"),
            Self::ServiceAccount => ("", "ServiceAccount"),
            Self::ConfigMap => ("", "ConfigMap"),
            Self::PersistentVolumeClaim => ("", "PersistentVolumeClaim"),
            Self::PersistentVolume => ("", "PersistentVolume"),
            Self::HorizontalPodAutoscaler => ("autoscaling", "HorizontalPodAutoscaler"),
            Self::PodDisruptionBudget => ("policy", "PodDisruptionBudget"),
            Self::Event => ("", "Event"),
        }
    }

    pub fn api_version(self) -> &'static str {
        match self.group_kind().0 {
            "" => "v1",
            "apps" => "apps/v1",
            "batch" => "batch/v1",
            "discovery.k8s.io" => "discovery.k8s.io/v1",
            "autoscaling" => "autoscaling/v2",
            "policy" => "policy/v1",
            _ => "coordination.k8s.io/v1",
        }
    }

    pub fn kind(self) -> &'static str {
        self.group_kind().1
    }

    pub fn api_resource(self) -> kube::api::ApiResource {
        let (group, kind) = self.group_kind();
        let r = rudder_k8s::served::by_kind(group, kind).expect("a served kind");
        kube::api::ApiResource {
            group: r.group.into(),
            version: r.version.into(),
            api_version: r.api_version(),
            kind: r.kind.into(),
            plural: r.plural.into(),
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Self::Node | Self::Namespace | Self::PersistentVolume)
    }
}

/// Everything the cache holds at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub pods: Objects<Pod>,
    pub nodes: Objects<Node>,
    pub leases: Objects<Lease>,
    pub replicasets: Objects<ReplicaSet>,
    pub replication_controllers: Objects<ReplicationController>,
    pub deployments: Objects<Deployment>,
    pub daemonsets: Objects<DaemonSet>,
    pub statefulsets: Objects<StatefulSet>,
    pub revisions: Objects<ControllerRevision>,
    pub jobs: Objects<Job>,
    pub cronjobs: Objects<CronJob>,
    pub services: Objects<Service>,
    pub endpoints: Objects<Endpoints>,
    pub slices: Objects<EndpointSlice>,
    pub namespaces: Objects<Namespace>,
    pub service_accounts: Objects<ServiceAccount>,
    pub config_maps: Objects<ConfigMap>,
    pub pvcs: Objects<PersistentVolumeClaim>,
    pub pvs: Objects<PersistentVolume>,
    pub hpas: Objects<HorizontalPodAutoscaler>,
    pub pdbs: Objects<PodDisruptionBudget>,
}

/// A kind the cache holds.
pub trait Cached:
    kube::Resource<DynamicType = ()>
    + DeserializeOwned
    + Clone
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
    const KIND: Kind;
    fn slot(s: &mut Snapshot) -> &mut Objects<Self>;
}

macro_rules! cached {
    ($($t:ty => $kind:ident, $field:ident;)*) => {
        $(impl Cached for $t {
            const KIND: Kind = Kind::$kind;
            fn slot(s: &mut Snapshot) -> &mut Objects<Self> {
                &mut s.$field
            }
        })*

        /// Writes an object returned by the apiserver into the cache.
        fn upsert_value(c: &CacheInner, kind: Kind, v: Value) {
            match kind {
                $(Kind::$kind => {
                    if let Ok(o) = serde_json::from_value::<$t>(v) {
                        c.upsert(Arc::new(o));
                    }
                })*
                Kind::Event => {}
            }
        }

        fn spawn_all(cache: &Cache, client: &Client) -> Vec<tokio::task::JoinHandle<()>> {
            vec![$(cache.spawn_watch::<$t>(client.clone()),)*]
        }

        /// How many kinds the cache watches.
        const WATCHED: usize = [$(Kind::$kind,)*].len();
    };
}

cached! {
    Pod => Pod, pods;
    Node => Node, nodes;
    Lease => Lease, leases;
    ReplicaSet => ReplicaSet, replicasets;
    ReplicationController => ReplicationController, replication_controllers;
    Deployment => Deployment, deployments;
    DaemonSet => DaemonSet, daemonsets;
    StatefulSet => StatefulSet, statefulsets;
    ControllerRevision => ControllerRevision, revisions;
    Job => Job, jobs;
    CronJob => CronJob, cronjobs;
    Service => Service, services;
    Endpoints => Endpoints, endpoints;
    EndpointSlice => EndpointSlice, slices;
    Namespace => Namespace, namespaces;
    ServiceAccount => ServiceAccount, service_accounts;
    ConfigMap => ConfigMap, config_maps;
    PersistentVolumeClaim => PersistentVolumeClaim, pvcs;
    PersistentVolume => PersistentVolume, pvs;
    HorizontalPodAutoscaler => HorizontalPodAutoscaler, hpas;
    PodDisruptionBudget => PodDisruptionBudget, pdbs;
}

/// The objects of one namespace, in name order.
pub fn in_namespace<'a, T>(objs: &'a Objects<T>, ns: &str) -> impl Iterator<Item = &'a Arc<T>> {
    let ns = ns.to_owned();
    objs.range((ns.clone(), String::new())..)
        .take_while(move |((n, _), _)| *n == ns)
        .map(|(_, o)| o)
}

pub fn key_of(m: &ObjectMeta) -> Key {
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

fn rv(m: &ObjectMeta) -> Option<u64> {
    m.resource_version.as_deref()?.parse().ok()
}

/// How long a deleted object's uid keeps late watch events out.
const TOMBSTONE: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct CacheInner {
    snap: Mutex<Snapshot>,
    synced: Mutex<HashSet<Kind>>,
    tombstones: Mutex<HashMap<String, Instant>>,
}

impl CacheInner {
    fn upsert<T: Cached>(&self, o: Arc<T>) {
        let m = o.meta();
        if let Some(uid) = &m.uid
            && self
                .tombstones
                .lock()
                .expect("cache lock")
                .get(uid)
                .is_some_and(|t| t.elapsed() < TOMBSTONE)
        {
            return;
        }
        let key = key_of(m);
        let mut s = self.snap.lock().expect("cache lock");
        let slot = T::slot(&mut s);
        if let Some(cur) = slot.get(&key)
            && cur.meta().uid == m.uid
            && let (Some(a), Some(b)) = (rv(cur.meta()), rv(m))
            && a > b
        {
            return;
        }
        slot.insert(key, o);
    }

    fn remove<T: Cached>(&self, key: &Key, uid: Option<&str>) {
        let mut s = self.snap.lock().expect("cache lock");
        let slot = T::slot(&mut s);
        if uid.is_none() || slot.get(key).and_then(|o| o.meta().uid.as_deref()) == uid {
            slot.remove(key);
        }
    }
}

/// The shared cache, cheap to clone.
#[derive(Clone, Debug)]
pub struct Cache {
    inner: Arc<CacheInner>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

impl Cache {
    /// Starts a watch per kind; the tasks run until aborted.
    pub fn start(&self, client: &Client) -> Vec<tokio::task::JoinHandle<()>> {
        spawn_all(self, client)
    }

    fn bump(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// A receiver that changes whenever the cache does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A copy of the current state (objects are shared, not copied).
    pub fn snapshot(&self) -> Snapshot {
        self.inner.snap.lock().expect("cache lock").clone()
    }

    /// Whether every kind has been listed once.
    pub fn synced(&self) -> bool {
        self.inner.synced.lock().expect("cache lock").len() == WATCHED
    }

    /// Writes an object the apiserver returned.
    pub fn write_through(&self, kind: Kind, v: Value) {
        upsert_value(&self.inner, kind, v);
        self.bump();
    }

    /// Forgets a deleted object and ignores late events about it.
    pub fn forget(&self, kind: Kind, key: &Key, uid: &str) {
        self.inner
            .tombstones
            .lock()
            .expect("cache lock")
            .insert(uid.to_owned(), Instant::now());
        macro_rules! rm {
            ($($k:ident => $t:ty),*) => {
                match kind {
                    $(Kind::$k => self.inner.remove::<$t>(key, Some(uid)),)*
                    _ => {}
                }
            };
        }
        rm!(Pod => Pod, ReplicaSet => ReplicaSet, Job => Job, EndpointSlice => EndpointSlice,
            Endpoints => Endpoints, ControllerRevision => ControllerRevision,
            PersistentVolume => PersistentVolume, PersistentVolumeClaim => PersistentVolumeClaim);
        self.bump();
    }

    /// Follows one kind through the informer: a relist (complete) replaces
    /// the kind's objects, other changes go through the write-through
    /// rules (tombstones, newer resourceVersions win).
    fn spawn_watch<T: Cached>(&self, client: Client) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            let api = Api::<T>::all(client);
            let mut stream =
                rudder_informer::events(api, watcher::Config::default(), T::KIND.kind()).boxed();
            let mut seen = Reflector::<T>::new();
            while let Some(ev) = stream.next().await {
                let delta = seen.apply(ev);
                if !delta.relisted && delta.changes.is_empty() {
                    continue;
                }
                if delta.relisted {
                    cache.replace(&seen);
                } else {
                    for c in delta.changes {
                        match c {
                            Change::Upsert { new, .. } => cache.inner.upsert(new),
                            Change::Remove { key, old } => cache
                                .inner
                                .remove::<T>(&(key.namespace, key.name), old.meta().uid.as_deref()),
                        }
                    }
                }
                cache.bump();
            }
        })
    }

    /// Replaces a kind's objects with a complete list, but for those
    /// deleted here since (tombstoned).
    fn replace<T: Cached>(&self, listed: &Reflector<T>) {
        let objs: Objects<T> = {
            let tomb = self.inner.tombstones.lock().expect("cache lock");
            listed
                .objects()
                .iter()
                .filter(|(_, o)| o.meta().uid.as_ref().is_none_or(|u| !tomb.contains_key(u)))
                .map(|(k, o)| ((k.namespace.clone(), k.name.clone()), o.clone()))
                .collect()
        };
        *T::slot(&mut self.inner.snap.lock().expect("cache lock")) = objs;
        self.inner
            .synced
            .lock()
            .expect("cache lock")
            .insert(T::KIND);
    }
}
