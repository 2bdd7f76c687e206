//! Controllers that run inside `rudder server` and talk to the apiserver only
//! through the Kubernetes API (kube-rs watches and requests), so they work
//! the same against any apiserver.
//!
//! - [`run_gc`]: the garbage collector (ownerReferences, `orphan` and
//!   `foregroundDeletion` finalizers) and the namespace finalizer, decided
//!   by [`gc::Graph::plan`].
//! - [`run_controllers`]: the scheduler and the workload, endpoint, node
//!   and volume controllers (and it runs [`run_gc`]). They decide from one informer cache
//!   ([`cache::Cache`]) by pure functions `plan(snapshot, now) -> Vec<Op>`
//!   and [`ops::Executor`] carries the ops out. They run only while this
//!   server holds the `kube-system/rudder-controller-manager` Lease.

pub mod autoscaler;
pub mod cache;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod gc;
pub mod hpa;
pub mod job;
pub mod lease;
pub mod misc;
pub mod nodes;
pub mod ops;
pub mod preemption;
pub mod replicaset;
pub mod schedule_round;
pub mod scheduler;
pub mod statefulset;
#[cfg(test)]
mod tests;
pub mod util;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use kube::{
    Api, Client,
    api::{
        ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
        Preconditions, PropagationPolicy,
    },
    runtime::watcher,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use gc::{Action, Graph, Node, ObjRef, OwnerRef, Policy};
use rudder_informer::Reflector;
use rudder_k8s::served::{self as resources, Resource, is_storage_version};

/// How often the plan is redone without any event (retries of failed
/// calls, live checks of vanished owners).
const RESYNC: Duration = Duration::from_secs(5);
/// An action is not repeated sooner than this while the watches catch up.
const REPEAT_AFTER: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ControllerError {
    let what = what.into();
    move |source| ControllerError::Api { what, source }
}

/// The resources the collector watches: every listable type served now
/// (in its storage version), custom kinds included.
fn watched() -> Vec<(&'static Resource, ApiResource)> {
    resources::all()
        .into_iter()
        .filter(|r| !r.create_only && !r.read_only && is_storage_version(r))
        .map(|r| {
            let ar = ApiResource {
                group: r.group.to_owned(),
                version: r.version.to_owned(),
                api_version: r.api_version(),
                kind: r.kind.to_owned(),
                plural: r.plural.to_owned(),
            };
            (r, ar)
        })
        .collect()
}

/// Starts the watch of the resource at index `i` of the collector's list.
fn spawn_watch(
    client: &Client,
    ar: &ApiResource,
    i: usize,
    tx: mpsc::Sender<Msg>,
) -> tokio::task::JoinHandle<()> {
    let api = Api::<DynamicObject>::all_with(client.clone(), ar);
    tokio::spawn(async move {
        let mut stream =
            rudder_informer::events(api, watcher::Config::default(), "garbage collector").boxed();
        while let Some(ev) = stream.next().await {
            if tx.send((i, ev.modify(slim))).await.is_err() {
                return;
            }
        }
    })
}

/// What the collector keeps of an object: its metadata but for managed
/// fields, labels and annotations, and of its body only a Namespace's
/// finalizers.
fn slim(o: &mut DynamicObject) {
    o.metadata.managed_fields = None;
    o.metadata.labels = None;
    o.metadata.annotations = None;
    let finalizers = o.data.pointer("/spec/finalizers").cloned();
    o.data = match finalizers {
        Some(f) => json!({"spec": {"finalizers": f}}),
        None => Value::Null,
    };
}

/// A watch event of the resource at an index of [`watched`].
type Msg = (usize, watcher::Event<DynamicObject>);

/// Settings of [`run_controllers`].
#[derive(Clone, Debug, Default)]
pub struct ControllerConfig {
    pub clock: ops::Clock,
    pub nodes: nodes::NodeConfig,
    /// Published in every namespace as the `kube-root-ca.crt` ConfigMap.
    pub ca_pem: Option<String>,
    /// This server's name in the leader Lease.
    pub identity: String,
    /// How often HorizontalPodAutoscalers are evaluated (0: 15 s).
    pub hpa_sync_period: Duration,
}

/// How long an identical patch or delete is not repeated while the cache
/// catches up (a guard against hot loops).
const SAME_OP_QUIET: Duration = Duration::from_secs(3);

/// Everything the controllers want done in one round.
pub fn plan_all(
    snap: &cache::Snapshot,
    cfg: &ControllerConfig,
    now: jiff::Timestamp,
) -> Vec<ops::Op> {
    let mut v = Vec::new();
    v.extend(misc::namespaces(snap, cfg.ca_pem.as_deref()));
    v.extend(nodes::plan(snap, &cfg.nodes, now));
    v.extend(deployment::plan(snap, now));
    v.extend(replicaset::plan(snap, now));
    v.extend(daemonset::plan(snap, now));
    v.extend(statefulset::plan(snap, now));
    v.extend(job::plan(snap, now));
    v.extend(cronjob::plan(snap, now));
    v.extend(endpoints::plan(snap, now));
    v.extend(disruption::plan(snap));
    v.extend(misc::volumes(snap));
    v
}

/// Runs the scheduler, the garbage collector and the controllers until
/// `stop` turns true (deciding only while this server leads).
pub async fn run_controllers(
    client: Client,
    cfg: ControllerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let cache = cache::Cache::default();
    let watches = cache.start(&client);
    let exec = ops::Executor::new(client.clone(), cache.clone(), cfg.clock.clone());
    let (leader_tx, leader) = watch::channel(false);
    let elector = tokio::spawn(lease::lead(
        client.clone(),
        cfg.identity.clone(),
        leader_tx,
        stop.clone(),
    ));
    let sched = tokio::spawn(run_scheduler(exec.clone(), leader.clone(), stop.clone()));
    let gc = tokio::spawn(run_gc(client.clone(), leader.clone(), stop.clone()));
    let autoscaler = tokio::spawn(autoscaler::run(
        exec.clone(),
        cfg.hpa_sync_period,
        leader.clone(),
        stop.clone(),
    ));
    let mut changed = cache.subscribe();
    let mut recent: HashMap<String, Instant> = HashMap::new();
    let mut last_plan = Duration::ZERO;
    loop {
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        // Let a burst of events land before deciding; on a big cluster,
        // wait longer so planning takes at most a fifth of the time.
        tokio::time::sleep(pause_after(last_plan, Duration::from_millis(20))).await;
        changed.borrow_and_update();
        if !*leader.borrow() || !cache.synced() {
            continue;
        }
        let started = Instant::now();
        let snap = cache.snapshot();
        let now = cfg.clock.now();
        recent.retain(|_, t| t.elapsed() < SAME_OP_QUIET);
        let planned = plan_all(&snap, &cfg, now);
        last_plan = started.elapsed();
        let todo: Vec<ops::Op> = planned
            .into_iter()
            .filter(|op| match op {
                ops::Op::Patch { .. } | ops::Op::Delete { .. } => {
                    recent.insert(format!("{op:?}"), Instant::now()).is_none()
                }
                _ => true,
            })
            .collect();
        if !todo.is_empty() {
            exec.run(todo).await;
        }
    }
    for t in watches {
        t.abort();
    }
    sched.abort();
    gc.abort();
    autoscaler.abort();
    // The elector releases the Lease on its way out (bounded inside).
    if tokio::time::timeout(Duration::from_secs(3), elector)
        .await
        .is_err()
    {
        tracing::debug!("the leader elector did not end in 3 s");
    }
}

async fn run_scheduler(
    exec: ops::Executor,
    leader: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut changed = exec.cache.subscribe();
    let mut assumed: HashMap<String, (String, Instant)> = HashMap::new();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(BINDS_IN_FLIGHT));
    let mut last_round = Duration::ZERO;
    let mut parsed = scheduler::BuildCache::default();
    loop {
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        tokio::time::sleep(pause_after(last_round, Duration::from_millis(10))).await;
        changed.borrow_and_update();
        if !*leader.borrow() || !exec.cache.synced() {
            continue;
        }
        let started = Instant::now();
        let snap = exec.cache.snapshot();
        let unbound: std::collections::HashSet<&str> = snap
            .pods
            .values()
            .filter(|p| scheduler::wants(p))
            .map(|p| util::uid(&p.metadata))
            .collect();
        // An assumption ends when the cache shows the binding (or the pod
        // is gone), or after 30 s (a failed bind).
        assumed.retain(|uid, (_, at)| {
            unbound.contains(uid.as_str()) && at.elapsed() < Duration::from_secs(30)
        });
        if unbound.len() == assumed.len() {
            // Nothing new to place (most changes are bindings coming back).
            last_round = Duration::ZERO;
            continue;
        }
        let mut nodes: HashMap<String, String> = assumed
            .iter()
            .map(|(k, (n, _))| (k.clone(), n.clone()))
            .collect();
        let mut round = scheduler::Round::new_with(&snap, &nodes, exec.clock.now(), &mut parsed);
        // Binds run in the background (at most BINDS_IN_FLIGHT at once)
        // while the round decides the next chunk: the pods they place are
        // assumed.
        // The state building and the first chunk's decisions: what a round
        // costs before its binds go out. The pause after it is as long
        // (a quarter of it, times pause_after's four), so that building
        // the state takes at most half a core and a pod created during a
        // round waits about one more.
        let mut first = true;
        while !round.done() {
            let ops = round.next(scheduler::CHUNK, &mut nodes, &mut rng);
            if first {
                last_round = started.elapsed() / 4;
                first = false;
            }
            for (uid, node) in &nodes {
                assumed
                    .entry(uid.clone())
                    .or_insert_with(|| (node.clone(), Instant::now()));
            }
            for op in ops {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                let exec = exec.clone();
                tokio::spawn(async move {
                    exec.run(vec![op]).await;
                    drop(permit);
                });
            }
        }
    }
}

/// How long to let events gather before the next plan: at least `min`,
/// and four times the last plan's duration, so that planning over a large
/// cluster never takes more than a fifth of a core.
fn pause_after(last_plan: Duration, min: Duration) -> Duration {
    (last_plan * 4).clamp(min, Duration::from_secs(2))
}

/// Scheduler API calls (binds, unschedulable status updates) in flight.
const BINDS_IN_FLIGHT: usize = 64;

/// Runs the garbage collector and namespace finalizer until `stop` turns
/// true.
pub async fn run_gc(
    client: Client,
    leader: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let resources = watched();
    let (tx, mut rx) = mpsc::channel::<Msg>(1024);
    let mut watchers: Vec<_> = resources
        .iter()
        .enumerate()
        .map(|(i, (_, ar))| spawn_watch(&client, ar, i, tx.clone()))
        .collect();
    let mut gc = Collector { client, resources };
    let mut graph = Graph::default();
    let mut synced = vec![false; gc.resources.len()];
    let mut seen: Vec<Reflector<DynamicObject>> =
        gc.resources.iter().map(|_| Reflector::new()).collect();
    let mut recent: HashMap<Action, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(RESYNC);
    let mut last_plan = Duration::ZERO;
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some((i, ev)) = m else { break };
                apply_event(&mut graph, &mut synced, &mut seen[i], i, gc.is_namespace(i), ev);
            }
            _ = tick.tick() => {
                // Custom kinds come and go: watch the new ones (a
                // dependent of a custom owner is then judged by the graph).
                for (r, ar) in watched() {
                    if !gc.resources.iter().any(|(w, _)| std::ptr::eq(*w, r)) {
                        watchers.push(spawn_watch(&gc.client, &ar, gc.resources.len(), tx.clone()));
                        gc.resources.push((r, ar));
                        synced.push(false);
                        seen.push(Reflector::new());
                    }
                }
                // A kind no longer served never syncs again; it must not
                // hold the collector back.
                for (i, (r, _)) in gc.resources.iter().enumerate() {
                    if !resources::is_served(r) {
                        synced[i] = true;
                    }
                }
            }
            _ = stop.wait_for(|s| *s) => break,
        }
        // Take what else is queued (and, on a big cluster, what comes in a
        // moment) before planning.
        if !last_plan.is_zero() {
            tokio::time::sleep(pause_after(last_plan, Duration::from_millis(5))).await;
        }
        while let Ok((i, ev)) = rx.try_recv() {
            apply_event(
                &mut graph,
                &mut synced,
                &mut seen[i],
                i,
                gc.is_namespace(i),
                ev,
            );
        }
        if !*leader.borrow() {
            continue;
        }
        let all_synced = synced.iter().all(|s| *s);
        recent.retain(|_, at| at.elapsed() < REPEAT_AFTER);
        let started = Instant::now();
        let actions = graph.plan(all_synced);
        last_plan = started.elapsed();
        for action in actions {
            if recent.contains_key(&action) {
                continue;
            }
            recent.insert(action.clone(), Instant::now());
            if let Err(e) = gc.execute(&action).await {
                tracing::warn!(error = %e, ?action, "garbage collector action failed; will retry");
            }
        }
    }
    for w in watchers {
        w.abort();
    }
}

/// Takes one watch event of resource `i` into the graph, through that
/// resource's reflector (a relist changes the graph only once complete).
fn apply_event(
    graph: &mut Graph,
    synced: &mut [bool],
    seen: &mut Reflector<DynamicObject>,
    i: usize,
    is_namespace: bool,
    ev: watcher::Event<DynamicObject>,
) {
    let delta = seen.apply(ev);
    for c in delta.changes {
        if let Some(uid) = c.before().and_then(|o| o.metadata.uid.as_deref()) {
            graph.remove(uid);
        }
        if let Some(n) = c.after().and_then(|o| to_node(i, is_namespace, o)) {
            graph.upsert(n);
        }
    }
    if delta.relisted {
        synced[i] = true;
    }
}

fn to_node(resource: usize, is_namespace: bool, o: &DynamicObject) -> Option<Node> {
    let m = &o.metadata;
    Some(Node {
        obj: ObjRef {
            resource,
            namespace: m.namespace.clone(),
            name: m.name.clone()?,
            uid: m.uid.clone()?,
        },
        owners: m
            .owner_references
            .iter()
            .flatten()
            .map(|r| OwnerRef {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
                name: r.name.clone(),
                uid: r.uid.clone(),
                block_owner_deletion: r.block_owner_deletion == Some(true),
            })
            .collect(),
        finalizers: m.finalizers.clone().unwrap_or_default(),
        deleting: m.deletion_timestamp.is_some(),
        namespace_finalizers: o
            .data
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        is_namespace,
    })
}

struct Collector {
    client: Client,
    resources: Vec<(&'static Resource, ApiResource)>,
}

impl Collector {
    fn is_namespace(&self, resource: usize) -> bool {
        self.resources[resource].0.kind == "Namespace"
    }

    fn api(&self, resource: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = &self.resources[resource].1;
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        }
    }

    fn api_of(&self, o: &ObjRef) -> Api<DynamicObject> {
        self.api(o.resource, o.namespace.as_deref())
    }

    fn describe(&self, o: &ObjRef) -> String {
        let r = self.resources[o.resource].0;
        match &o.namespace {
            Some(ns) => format!("{} {ns}/{}", r.qualified(), o.name),
            None => format!("{} {}", r.qualified(), o.name),
        }
    }

    async fn execute(&self, action: &Action) -> Result<(), ControllerError> {
        match action {
            Action::RemoveOwnerRef {
                dependent,
                owner_uid,
            } => {
                self.edit_list(dependent, "ownerReferences", |refs| {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
                })
                .await
            }
            Action::RemoveFinalizer { object, finalizer } => {
                self.edit_list(object, "finalizers", |f| {
                    f.retain(|x| x.as_str() != Some(finalizer));
                })
                .await
            }
            Action::Delete { object, policy } => {
                let policy = match policy {
                    Policy::Background => PropagationPolicy::Background,
                    Policy::Foreground => PropagationPolicy::Foreground,
                };
                self.delete(object, policy).await
            }
            Action::DeleteIfOwnersGone { object, owners } => {
                for o in owners {
                    if self.owner_exists(object, o).await? {
                        return Ok(());
                    }
                }
                tracing::info!(object = %self.describe(object), "deleting: its owners are gone");
                self.delete(object, PropagationPolicy::Background).await
            }
            Action::EmptyNamespace { namespace } => {
                for (i, (r, _)) in self.resources.iter().enumerate() {
                    if !r.namespaced || !r.verbs().contains(&"deletecollection") {
                        continue;
                    }
                    self.api(i, Some(namespace))
                        .delete_collection(&DeleteParams::background(), &ListParams::default())
                        .await
                        .map_err(api_err(format!(
                            "deleting the {} of Terminating namespace {namespace}",
                            r.qualified()
                        )))?;
                }
                Ok(())
            }
            Action::FinalizeNamespace { namespace } => {
                let api = self.api_of(namespace);
                let Some(mut ns) = api
                    .get_opt(&namespace.name)
                    .await
                    .map_err(api_err(format!("reading namespace {}", namespace.name)))?
                else {
                    return Ok(());
                };
                if ns.metadata.uid.as_deref() != Some(namespace.uid.as_str()) {
                    return Ok(());
                }
                if let Some(f) = ns
                    .data
                    .pointer_mut("/spec/finalizers")
                    .and_then(Value::as_array_mut)
                {
                    f.retain(|x| x.as_str() != Some(gc::NAMESPACE_FINALIZER));
                }
                tracing::info!(namespace = %namespace.name, "namespace is empty; finalizing");
                api.replace_subresource("finalize", &namespace.name, &PostParams::default(), &ns)
                    .await
                    .map(drop)
                    .map_err(api_err(format!("finalizing namespace {}", namespace.name)))
            }
        }
    }

    async fn delete(
        &self,
        object: &ObjRef,
        policy: PropagationPolicy,
    ) -> Result<(), ControllerError> {
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(object.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api_of(object).delete(&object.name, &dp).await {
            Ok(_) => Ok(()),
            // Gone already, or re-created with another uid: nothing to do.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(api_err(format!("deleting {}", self.describe(object)))(e)),
        }
    }

    /// Whether the owner `o` of `dependent` exists (same uid), by a live read.
    async fn owner_exists(
        &self,
        dependent: &ObjRef,
        o: &OwnerRef,
    ) -> Result<bool, ControllerError> {
        let (group, _) = o
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", &o.api_version));
        let Some(idx) = self
            .resources
            .iter()
            .position(|(r, _)| r.group == group && r.kind == o.kind)
        else {
            // A kind this server does not serve cannot exist here; one it
            // has just begun serving (a new CRD) is watched at the next
            // tick, and until then the owner is given the benefit of the
            // doubt.
            return Ok(resources::by_kind(group, &o.kind).is_some());
        };
        let ns = if self.resources[idx].0.namespaced {
            dependent.namespace.as_deref()
        } else {
            None
        };
        let found = self
            .api(idx, ns)
            .get_opt(&o.name)
            .await
            .map_err(api_err(format!("reading owner {} {}", o.kind, o.name)))?;
        Ok(found.is_some_and(|f| f.metadata.uid.as_deref() == Some(o.uid.as_str())))
    }

    /// Rewrites one list in `metadata` with a merge patch guarded by the
    /// object's resourceVersion (a concurrent write makes it fail and the
    /// next round retries).
    async fn edit_list(
        &self,
        object: &ObjRef,
        field: &str,
        edit: impl FnOnce(&mut Vec<Value>),
    ) -> Result<(), ControllerError> {
        let api = self.api_of(object);
        let Some(cur) = api
            .get_opt(&object.name)
            .await
            .map_err(api_err(format!("reading {}", self.describe(object))))?
        else {
            return Ok(());
        };
        if cur.metadata.uid.as_deref() != Some(object.uid.as_str()) {
            return Ok(());
        }
        let meta = serde_json::to_value(&cur.metadata).unwrap_or_default();
        let mut list = meta
            .get(field)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let before = list.len();
        edit(&mut list);
        if list.len() == before {
            return Ok(());
        }
        let patch = json!({"metadata": {
            "resourceVersion": cur.metadata.resource_version,
            field: if list.is_empty() { Value::Null } else { Value::Array(list) },
        }});
        match api
            .patch(&object.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(api_err(format!(
                "updating {field} of {}",
                self.describe(object)
            ))(e)),
        }
    }
}
