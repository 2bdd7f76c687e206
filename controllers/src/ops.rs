//! What controllers ask for ([`Op`]), and the executor that carries it out
//! through the API, writes results into the cache and records Events.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{StreamExt as _, stream};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions},
};
use serde_json::{Value, json};

use super::cache::{Cache, Kind, key_of};

/// The object an Event is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Involved {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Involved {
    pub fn of(kind: Kind, m: &ObjectMeta) -> Self {
        Self {
            kind,
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
        }
    }
}

/// An Event to record. `{name}` in the message of an event attached to a
/// create is replaced by the created object's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub component: &'static str,
    pub object: Involved,
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

impl EventRecord {
    pub fn normal(
        component: &'static str,
        object: Involved,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            component,
            object,
            warning: false,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn warning(
        component: &'static str,
        object: Involved,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            warning: true,
            ..Self::normal(component, object, reason, message)
        }
    }
}

/// One API call a controller wants made.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Create {
        kind: Kind,
        namespace: String,
        object: Value,
        event: Option<EventRecord>,
    },
    /// A JSON merge patch, of the object or of its `status`.
    Patch {
        kind: Kind,
        namespace: String,
        name: String,
        status: bool,
        patch: Value,
        event: Option<EventRecord>,
    },
    /// A delete guarded by uid.
    Delete {
        kind: Kind,
        namespace: String,
        name: String,
        uid: String,
        foreground: bool,
        event: Option<EventRecord>,
    },
    Bind {
        namespace: String,
        name: String,
        uid: String,
        node: String,
        event: Option<EventRecord>,
    },
    Event(EventRecord),
}

impl Op {
    pub fn patch(kind: Kind, m: &ObjectMeta, patch: Value) -> Self {
        Self::Patch {
            kind,
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
            status: false,
            patch,
            event: None,
        }
    }

    pub fn status(kind: Kind, m: &ObjectMeta, status: impl Into<Value>) -> Self {
        let status: Value = status.into();
        Self::Patch {
            kind,
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
            status: true,
            patch: json!({ "status": status }),
            event: None,
        }
    }

    pub fn delete(kind: Kind, m: &ObjectMeta) -> Self {
        Self::Delete {
            kind,
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            foreground: false,
            event: None,
        }
    }

    /// A delete whose dependents go first (foreground propagation).
    pub fn delete_foreground(kind: Kind, m: &ObjectMeta) -> Self {
        let mut op = Self::delete(kind, m);
        if let Self::Delete { foreground, .. } = &mut op {
            *foreground = true;
        }
        op
    }

    pub fn create(kind: Kind, namespace: &str, object: Value) -> Self {
        Self::Create {
            kind,
            namespace: namespace.into(),
            object,
            event: None,
        }
    }

    /// Attaches an event recorded when the call succeeds.
    pub fn with_event(mut self, e: EventRecord) -> Self {
        match &mut self {
            Self::Create { event, .. }
            | Self::Patch { event, .. }
            | Self::Delete { event, .. }
            | Self::Bind { event, .. } => {
                *event = Some(e);
            }
            Self::Event(_) => {}
        }
        self
    }
}

/// The controllers' clock: the system's, shifted by the whole seconds in
/// an optional file (tests move time forward by writing it).
#[derive(Clone, Debug, Default)]
pub struct Clock {
    pub offset_file: Option<PathBuf>,
}

impl Clock {
    pub fn now(&self) -> Timestamp {
        let offset = self
            .offset_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        Timestamp::now() + jiff::SignedDuration::from_secs(offset)
    }
}

/// Executes ops: up to this many at once.
const PARALLEL: usize = 16;

#[derive(Clone)]
pub struct Executor {
    pub client: Client,
    pub cache: Cache,
    pub clock: Clock,
    /// Which Events to make, bump or drop (client-go's correlator).
    recorded: Arc<Mutex<rudder_k8s::events::Correlator>>,
    /// Owners whose creates admission refused, and until when (and for
    /// how long the last time) their creates wait: as the controllers'
    /// rate-limited work queues, a refused ReplicaSet does not ask again
    /// every round. One second, doubling to five minutes; a success clears.
    refused: Arc<Mutex<HashMap<Involved, (Instant, Duration)>>>,
}

const REFUSED_FIRST: Duration = Duration::from_secs(1);
const REFUSED_MAX: Duration = Duration::from_secs(300);

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Executor {
    pub fn new(client: Client, cache: Cache, clock: Clock) -> Self {
        Self {
            client,
            cache,
            clock,
            recorded: Arc::default(),
            refused: Arc::default(),
        }
    }

    fn api(&self, kind: Kind, namespace: &str) -> Api<DynamicObject> {
        let ar = kind.api_resource();
        if kind.namespaced() {
            Api::namespaced_with(self.client.clone(), namespace, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        }
    }

    /// Runs the ops, several at a time; failures are logged (the next
    /// round sees the state and tries again).
    pub async fn run(&self, ops: Vec<Op>) {
        stream::iter(ops)
            .for_each_concurrent(PARALLEL, |op| async move {
                let what = format!("{op:?}");
                if let Err(e) = self.execute(op).await {
                    match &e {
                        kube::Error::Api(s) if s.code == 409 || s.code == 404 => {
                            tracing::debug!(error = %e, op = %short(&what), "controller call raced; will retry");
                        }
                        _ => {
                            tracing::warn!(error = %e, op = %short(&what), "controller call failed; will retry");
                        }
                    }
                }
            })
            .await;
    }

    /// Whether creates for `owner` wait after a refusal.
    fn backing_off(&self, owner: &Involved) -> bool {
        let refused = self.refused.lock().expect("refused lock");
        refused
            .get(owner)
            .is_some_and(|(until, _)| Instant::now() < *until)
    }

    fn back_off(&self, owner: &Involved) {
        let mut refused = self.refused.lock().expect("refused lock");
        if refused.len() > 10_000 {
            let now = Instant::now();
            refused.retain(|_, (until, _)| *until > now);
        }
        let next = refused
            .get(owner)
            .map_or(REFUSED_FIRST, |(_, d)| (*d * 2).min(REFUSED_MAX));
        refused.insert(owner.clone(), (Instant::now() + next, next));
    }

    async fn execute(&self, op: Op) -> Result<(), kube::Error> {
        match op {
            Op::Create {
                kind,
                namespace,
                object,
                event,
            } => {
                let owner = event.as_ref().map(|e| e.object.clone());
                if let Some(o) = &owner
                    && self.backing_off(o)
                {
                    return Ok(());
                }
                let obj: DynamicObject =
                    serde_json::from_value(object).map_err(kube::Error::SerdeError)?;
                let created = match self
                    .api(kind, &namespace)
                    .create(&PostParams::default(), &obj)
                    .await
                {
                    Ok(c) => c,
                    // Refused by admission (a quota, a LimitRange, Pod
                    // Security): said on the owner, as FailedCreate.
                    Err(kube::Error::Api(s)) if matches!(s.code, 403 | 422) => {
                        if let Some(o) = &owner {
                            self.back_off(o);
                        }
                        if let Some(e) = &event {
                            let msg = format!("Error creating: {}", s.message);
                            let failed = EventRecord::warning(
                                e.component,
                                e.object.clone(),
                                "FailedCreate",
                                msg,
                            );
                            self.record(failed).await;
                        }
                        return Err(kube::Error::Api(s));
                    }
                    Err(e) => return Err(e),
                };
                if let Some(o) = &owner {
                    self.refused.lock().expect("refused lock").remove(o);
                }
                let name = created.metadata.name.clone().unwrap_or_default();
                self.write_through(kind, &created)?;
                if let Some(mut e) = event {
                    e.message = e.message.replace("{name}", &name);
                    self.record(e).await;
                }
            }
            Op::Patch {
                kind,
                namespace,
                name,
                status,
                patch,
                event,
            } => {
                let api = self.api(kind, &namespace);
                let pp = PatchParams::default();
                let out = if status {
                    api.patch_status(&name, &pp, &Patch::Merge(&patch)).await?
                } else {
                    api.patch(&name, &pp, &Patch::Merge(&patch)).await?
                };
                self.write_through(kind, &out)?;
                if let Some(e) = event {
                    self.record(e).await;
                }
            }
            Op::Delete {
                kind,
                namespace,
                name,
                uid,
                foreground,
                event,
            } => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    propagation_policy: foreground
                        .then_some(kube::api::PropagationPolicy::Foreground),
                    ..DeleteParams::default()
                };
                let out = match self.api(kind, &namespace).delete(&name, &dp).await {
                    Ok(out) => out,
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        self.cache.forget(kind, &(namespace, name), &uid);
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                match out {
                    either::Either::Left(o) => self.write_through(kind, &o)?,
                    either::Either::Right(_) => {
                        self.cache.forget(kind, &(namespace, name), &uid);
                    }
                }
                if let Some(e) = event {
                    self.record(e).await;
                }
            }
            Op::Bind {
                namespace,
                name,
                uid,
                node,
                event,
            } => {
                let body = json!({
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name, "namespace": namespace, "uid": uid},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node},
                });
                let req = axum::http::Request::post(format!(
                    "/api/v1/namespaces/{namespace}/pods/{name}/binding"
                ))
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).map_err(kube::Error::SerdeError)?)
                .map_err(kube::Error::HttpError)?;
                let _: Value = self.client.request(req).await?;
                if let Some(e) = event {
                    self.record_detached(e);
                }
            }
            Op::Event(e) => self.record(e).await,
        }
        Ok(())
    }

    /// Puts an object the apiserver returned into the cache.
    fn write_through(&self, kind: Kind, o: &DynamicObject) -> Result<(), kube::Error> {
        let v = serde_json::to_value(o).map_err(kube::Error::SerdeError)?;
        self.cache.write_through(kind, v);
        Ok(())
    }

    /// Records an Event off the caller's path, as client-go's event
    /// broadcaster does: when too many are already queued, the event is
    /// dropped (and logged) rather than slowing the caller down.
    pub fn record_detached(&self, e: EventRecord) {
        static QUEUED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        const MAX_QUEUED: usize = 1000;
        if QUEUED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= MAX_QUEUED {
            QUEUED.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(reason = %e.reason, object = %e.object.name, "event dropped: too many queued");
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.record(e).await;
            QUEUED.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }

    /// Records an Event (core/v1) as client-go's recorder does: repeats
    /// bump one Event's count, similar ones are combined, and each object
    /// has a budget (`rudder_k8s::events`).
    pub async fn record(&self, e: EventRecord) {
        use rudder_k8s::events::{Decision, EventKey};
        let ns = if e.object.kind.namespaced() && !e.object.namespace.is_empty() {
            e.object.namespace.clone()
        } else {
            "default".to_owned()
        };
        let now_ts = self.clock.now();
        let now = super::util::rfc3339(now_ts);
        let type_ = if e.warning { "Warning" } else { "Normal" };
        let key = EventKey {
            source: e.component.to_string(),
            object: format!(
                "{}/{}/{}/{}",
                e.object.kind.kind(),
                e.object.namespace,
                e.object.name,
                e.object.uid
            ),
            type_: type_.to_string(),
            reason: e.reason.clone(),
            message: e.message.clone(),
        };
        let decision = self
            .recorded
            .lock()
            .expect("recorder lock")
            .decide(key, now_ts.as_millisecond() as f64 / 1000.0);
        let api = self.api(Kind::Event, &ns);
        let key = match decision {
            Decision::Drop => return,
            Decision::Bump { key, name, count } => {
                let patch = json!({"count": count, "lastTimestamp": now});
                let bumped = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                let mut recorded = self.recorded.lock().expect("recorder lock");
                if bumped.is_ok() {
                    recorded.recorded(key, name, count);
                    return;
                }
                recorded.forget(&key);
                key
            }
            Decision::Create { key } => key,
        };
        let name = format!(
            "{}.{:x}",
            e.object.name,
            now_ts.as_nanosecond() as u64 ^ u64::from(rand::random::<u16>())
        );
        let body = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {
                "kind": e.object.kind.kind(), "apiVersion": e.object.kind.api_version(),
                "namespace": if e.object.kind.namespaced() { Value::from(e.object.namespace.clone()) } else { Value::Null },
                "name": e.object.name, "uid": e.object.uid,
            },
            "reason": key.reason, "message": key.message,
            "type": type_,
            "source": {"component": e.component},
            "reportingComponent": e.component,
            "reportingInstance": e.component,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        });
        let Ok(obj) = serde_json::from_value::<DynamicObject>(body) else {
            return;
        };
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => self
                .recorded
                .lock()
                .expect("recorder lock")
                .recorded(key, name, 1),
            Err(err) => tracing::debug!(error = %err, "recording an event failed"),
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(300).collect()
}

/// The key of the object an op is about (for tests and logs).
pub fn op_key(op: &Op) -> Option<(String, String)> {
    match op {
        Op::Create { object, .. } => serde_json::from_value::<ObjectMeta>(
            object.get("metadata").cloned().unwrap_or_default(),
        )
        .ok()
        .map(|m| key_of(&m)),
        Op::Patch {
            namespace, name, ..
        }
        | Op::Delete {
            namespace, name, ..
        }
        | Op::Bind {
            namespace, name, ..
        } => Some((namespace.clone(), name.clone())),
        Op::Event(_) => None,
    }
}
