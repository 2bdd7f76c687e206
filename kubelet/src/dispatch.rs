//! The pod dispatcher: what the node is told about its pods (the
//! apiserver's watch of the pods bound to it, the static pod files,
//! containerd's task events) turned into messages to per-pod workers.
//!
//! The pod watch goes through the informer's reflector, so a pod deleted
//! while the watch was down is stopped when the relist ends (the relist's
//! `Remove`), and a pod recreated under the same name stops the old one.
//! The dispatcher keeps the pods it has given a worker and those it
//! rejected at admission; a pod is validated and admitted once, when it
//! first reaches the node, as the kubelet's `canAdmitPod` does. The
//! decisions that need no I/O ([`steps`], [`needs_admission`]) are
//! functions of their own, tested below.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, runtime::watcher};
use rudder_informer::{Change, Reflector};
use rudder_runtime::{ContainerRuntime, containerd::TaskEvent};
use tokio::sync::mpsc;

use crate::{Shared, ToWorker, admit, record_event, static_pods, static_source, worker};

/// The workers by pod uid; a worker removes itself when it ends.
pub(crate) type Workers = Arc<tokio::sync::Mutex<HashMap<String, mpsc::UnboundedSender<ToWorker>>>>;

/// The dispatcher's state between events.
pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
    workers: Workers,
    /// The pods the apiserver's watch has delivered.
    pods: Reflector<Pod>,
    /// The pods given a worker, as last seen.
    known: HashMap<String, Pod>,
    /// Pods rejected at admission (their `Failed` status is on its way).
    rejected: HashSet<String>,
    /// Pods that run from the static pod files.
    static_uids: HashSet<String>,
}

impl Dispatcher {
    pub(crate) fn new(shared: Arc<Shared>, workers: Workers) -> Self {
        Self {
            shared,
            workers,
            pods: Reflector::new(),
            known: HashMap::new(),
            rejected: HashSet::new(),
            static_uids: HashSet::new(),
        }
    }

    /// A static pod file appeared, changed or went away.
    pub(crate) async fn on_static(&mut self, ev: static_source::Event) {
        let mut w = self.workers.lock().await;
        match ev {
            static_source::Event::Upsert(pod) => {
                let Some(uid) = pod.metadata.uid.clone() else {
                    return;
                };
                self.static_uids.insert(uid.clone());
                self.known.insert(uid.clone(), (*pod).clone());
                let tx = worker_for(&mut w, &uid, &self.shared, &self.workers);
                let _ = tx.send(ToWorker::Pod(pod));
            }
            static_source::Event::Remove(uid) => {
                self.static_uids.remove(&uid);
                self.known.remove(&uid);
                if let Some(tx) = w.get(&uid) {
                    let _ = tx.send(ToWorker::Gone);
                }
            }
        }
    }

    /// An event of the apiserver's pod watch.
    pub(crate) async fn on_watch(&mut self, ev: watcher::Event<Pod>) {
        for c in self.pods.apply(ev).changes {
            for step in steps(&c) {
                match step {
                    Step::Gone(uid) => self.on_gone(&uid).await,
                    Step::Pod(p) => self.on_pod(Pod::clone(&p)).await,
                }
            }
        }
    }

    async fn on_gone(&mut self, uid: &str) {
        self.known.remove(uid);
        self.rejected.remove(uid);
        if let Some(tx) = self.workers.lock().await.get(uid) {
            let _ = tx.send(ToWorker::Gone);
        }
    }

    /// A pod bound to this node, new or changed: to its worker, once
    /// admitted.
    async fn on_pod(&mut self, pod: Pod) {
        // Mirror pods are the apiserver's view of static pods, which run
        // from their files.
        if static_pods::is_mirror(&pod) {
            return;
        }
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let workers = Arc::clone(&self.workers);
        let mut w = workers.lock().await;
        if !w.contains_key(&uid)
            && !rudder_k8s::pod::is_terminal(&pod)
            && !self.admit(&uid, &pod, &w).await
        {
            return;
        }
        self.known.insert(uid.clone(), pod.clone());
        let tx = worker_for(&mut w, &uid, &self.shared, &self.workers);
        let _ = tx.send(ToWorker::Pod(Box::new(pod)));
    }

    /// Validates and admits a pod new to the node; a rejected one is
    /// marked `Failed` and remembered.
    async fn admit(
        &mut self,
        uid: &str,
        pod: &Pod,
        w: &HashMap<String, mpsc::UnboundedSender<ToWorker>>,
    ) -> bool {
        if self.rejected.contains(uid) {
            // The rejection's status is on its way.
            return false;
        }
        let verdict = match admit::validate(pod, "api") {
            Err(r) => Err(r),
            Ok(()) if !needs_admission(pod) => Ok(()),
            Ok(()) => {
                let admitted: Vec<&Pod> = self
                    .known
                    .iter()
                    .filter(|(u, p)| w.contains_key(*u) && !rudder_k8s::pod::is_terminal(p))
                    .map(|(_, p)| p)
                    .collect();
                check_admission(&self.shared, pod, &admitted).await
            }
        };
        match verdict {
            Ok(()) => true,
            Err(r) => {
                self.rejected.insert(uid.to_string());
                reject(&self.shared, pod, &r).await;
                false
            }
        }
    }
}

/// What the dispatcher does about one change of the pod watch.
#[derive(Debug, PartialEq)]
enum Step {
    /// The pod with this uid is gone: stop its worker.
    Gone(String),
    /// The pod is new or changed: to its worker, once admitted.
    Pod(Arc<Pod>),
}

/// The steps of one change: a removed pod is gone (mirror pods, the
/// apiserver's view of static pods, are not: those run from their files);
/// a pod whose uid changed under the same name (deleted and recreated
/// while the watch was down) stops the old one before the new one starts.
fn steps(c: &Change<Pod>) -> Vec<Step> {
    let mut out = Vec::new();
    let old_uid = c
        .before()
        .filter(|o| !static_pods::is_mirror(o))
        .and_then(|o| o.metadata.uid.clone());
    let new = c.after().cloned();
    if let Some(uid) = old_uid
        && new
            .as_ref()
            .is_none_or(|n| n.metadata.uid.as_ref() != Some(&uid))
    {
        out.push(Step::Gone(uid));
    }
    out.extend(new.map(Step::Pod));
    out
}

/// Whether a pod still has to pass admission against the Node: one that
/// already has container statuses was admitted here before an agent
/// restart.
fn needs_admission(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .is_none_or(|s| s.container_statuses.as_ref().is_none_or(Vec::is_empty))
}

/// Forwards containerd's task events, for as long as the kubelet runs, to
/// the worker of the pod whose container it is (container ids start with
/// the pod uid); the subscription is made again a second after it ends.
pub(crate) async fn forward_task_events(containerd: Arc<dyn ContainerRuntime>, workers: Workers) {
    loop {
        match containerd.subscribe_task_events().await {
            Ok(stream) => {
                let mut stream = Box::pin(stream);
                while let Some(ev) = stream.next().await {
                    let Some(ev) = ev else { continue };
                    let id = match &ev {
                        TaskEvent::Exit { container_id } | TaskEvent::Oom { container_id } => {
                            container_id.clone()
                        }
                    };
                    let w = workers.lock().await;
                    for (uid, tx) in w.iter() {
                        if id.starts_with(&worker::id_prefix(uid)) {
                            let _ = tx.send(ToWorker::Task(ev.clone()));
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "task events"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// The worker of pod `uid`, started if there is none.
pub(crate) fn worker_for(
    w: &mut HashMap<String, mpsc::UnboundedSender<ToWorker>>,
    uid: &str,
    shared: &Arc<Shared>,
    workers: &Workers,
) -> mpsc::UnboundedSender<ToWorker> {
    w.entry(uid.to_string())
        .or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let shared = Arc::clone(shared);
            let workers = Arc::clone(workers);
            let uid = uid.to_string();
            let own = tx.clone();
            tokio::spawn(async move {
                worker::run(shared, uid.clone(), own, rx).await;
                workers.lock().await.remove(&uid);
            });
            tx
        })
        .clone()
}

/// Admission against this node's Node object as the apiserver has it (its
/// labels and allocatable); a node that cannot be read admits.
async fn check_admission(
    shared: &Shared,
    pod: &Pod,
    admitted: &[&Pod],
) -> Result<(), admit::Rejection> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(shared.client.clone());
    match nodes.get(&shared.cfg.node_name).await {
        Ok(node) => admit::admit(pod, &node, admitted),
        Err(e) => {
            tracing::warn!(node = %shared.cfg.node_name, error = %e, "reading the Node for admission; admitting");
            Ok(())
        }
    }
}

/// A pod the node does not run: `Failed` with the reason, and an event.
async fn reject(shared: &Shared, pod: &Pod, r: &admit::Rejection) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    tracing::info!(pod = %format!("{ns}/{name}"), reason = %r.reason, message = %r.message, "pod rejected at admission");
    record_event(shared, pod, "Warning", &r.reason, &r.message);
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), ns);
    let body = serde_json::json!({"status": {
        "phase": "Failed",
        "reason": r.reason,
        "message": r.message,
        "startTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    }});
    if let Err(e) = api
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&body),
        )
        .await
    {
        tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "writing the rejection");
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus};

    use super::*;

    fn pod(uid: &str, mirror: bool) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.name = Some("p".into());
        p.metadata.uid = Some(uid.into());
        if mirror {
            p.metadata.annotations =
                Some([(static_pods::MIRROR_ANNOTATION.to_owned(), "x".to_owned())].into());
        }
        Arc::new(p)
    }

    fn uids(steps: Vec<Step>) -> Vec<String> {
        steps
            .into_iter()
            .map(|s| match s {
                Step::Gone(u) => format!("gone {u}"),
                Step::Pod(p) => format!("pod {}", p.metadata.uid.clone().unwrap()),
            })
            .collect()
    }

    #[test]
    fn removed_pods_stop_but_mirror_pods_do_not() {
        let key = rudder_informer::ObjectKey::new("", "p");
        let gone = Change::Remove {
            key: key.clone(),
            old: pod("a", false),
        };
        assert_eq!(uids(steps(&gone)), ["gone a"]);
        let mirror = Change::Remove {
            key,
            old: pod("m", true),
        };
        assert!(steps(&mirror).is_empty());
    }

    #[test]
    fn a_pod_recreated_under_its_name_stops_the_old_one_first() {
        let key = rudder_informer::ObjectKey::new("", "p");
        let same = Change::Upsert {
            key: key.clone(),
            old: Some(pod("a", false)),
            new: pod("a", false),
        };
        assert_eq!(uids(steps(&same)), ["pod a"]);
        let new = Change::Upsert {
            key: key.clone(),
            old: None,
            new: pod("a", false),
        };
        assert_eq!(uids(steps(&new)), ["pod a"]);
        let again = Change::Upsert {
            key,
            old: Some(pod("a", false)),
            new: pod("b", false),
        };
        assert_eq!(uids(steps(&again)), ["gone a", "pod b"]);
    }

    #[test]
    fn a_pod_already_started_here_is_not_admitted_again() {
        let mut pod = Pod::default();
        assert!(needs_admission(&pod));
        pod.status = Some(PodStatus {
            container_statuses: Some(vec![]),
            ..PodStatus::default()
        });
        assert!(needs_admission(&pod));
        pod.status = Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus::default()]),
            ..PodStatus::default()
        });
        assert!(!needs_admission(&pod));
    }
}
