//! The static-pod source: reads the manifest directory every few seconds,
//! tells the kubelet's loop which static pods to run or stop, and keeps
//! their mirror pods in the apiserver (made again when deleted, replaced
//! when the file changes, removed with the file). The pure parts are in
//! [`super::static_pods`].

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api,
    api::{DeleteParams, PostParams, Preconditions},
};
use tokio::sync::mpsc;

use super::{
    Shared,
    static_pods::{self, MIRROR_ANNOTATION},
};

/// How often the directory is read (the kubelet's `fileCheckFrequency` is
/// 20 s; shorter here, the reading is cheap).
const PERIOD: Duration = Duration::from_secs(3);

/// What the kubelet's loop is told.
#[derive(Debug)]
pub(crate) enum Event {
    Upsert(Box<Pod>),
    Remove(String),
}

fn seen_now() -> String {
    jiff::Timestamp::now().to_string()
}

/// The static pods of the manifests in `dir`, by file; files that are not
/// pods are left out (and logged once per content by [`run`]).
pub(crate) fn parse_all(dir: &Path, node: &str) -> BTreeMap<PathBuf, Pod> {
    static_pods::read_dir(dir)
        .into_iter()
        .filter_map(|(p, text)| parse(&text, node).ok().map(|pod| (p, pod)))
        .collect()
}

/// The pod of a manifest. Nobody validated the file: its pod is checked as
/// the apiserver would check it, and an invalid one never runs (nor is
/// mirrored).
fn parse(text: &str, node: &str) -> Result<Pod, String> {
    let pod = static_pods::from_manifest(text, node, &seen_now())?;
    super::admit::validate(&pod, "file").map_err(|r| r.message)?;
    Ok(pod)
}

pub(crate) async fn run(shared: Arc<Shared>, dir: PathBuf, tx: mpsc::UnboundedSender<Event>) {
    let node = shared.cfg.node_name.clone();
    let mut running: BTreeMap<PathBuf, Pod> = BTreeMap::new();
    let mut complained: HashSet<(PathBuf, String)> = HashSet::new();
    let mut node_uid: Option<String> = None;
    loop {
        let mut now = BTreeMap::new();
        for (path, text) in static_pods::read_dir(&dir) {
            match parse(&text, &node) {
                Ok(pod) => {
                    // Unchanged files keep the pod first read (and its
                    // `config.seen`).
                    let pod = match running.get(&path) {
                        Some(old) if old.metadata.uid == pod.metadata.uid => old.clone(),
                        _ => pod,
                    };
                    now.insert(path, pod);
                }
                Err(e) => {
                    if complained.insert((path.clone(), text)) {
                        tracing::warn!(file = %path.display(), error = %e, "static pod manifest skipped");
                    }
                }
            }
        }
        let d = static_pods::diff(&running, &now);
        for p in &d.remove {
            tracing::info!(pod = %key(p), "static pod removed");
            if let Some(uid) = p.metadata.uid.clone() {
                let _ = tx.send(Event::Remove(uid));
            }
            delete_mirror(&shared, p).await;
        }
        for p in d.upsert {
            tracing::info!(pod = %key(&p), "static pod from a manifest");
            if tx.send(Event::Upsert(Box::new(p))).is_err() {
                return;
            }
        }
        running = now;
        if node_uid.is_none() {
            let nodes: Api<Node> = Api::all(shared.client.clone());
            node_uid = nodes
                .get_opt(&node)
                .await
                .ok()
                .flatten()
                .and_then(|n| n.metadata.uid);
        }
        for p in running.values() {
            sync_mirror(&shared, p, node_uid.as_deref()).await;
        }
        tokio::time::sleep(PERIOD).await;
    }
}

fn key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

fn api(shared: &Shared, p: &Pod) -> Api<Pod> {
    Api::namespaced(
        shared.client.clone(),
        p.metadata.namespace.as_deref().unwrap_or("default"),
    )
}

fn hash(p: &Pod) -> Option<&String> {
    p.metadata.uid.as_ref()
}

fn mirror_hash(m: &Pod) -> Option<&String> {
    m.metadata.annotations.as_ref()?.get(MIRROR_ANNOTATION)
}

/// Deletes a mirror pod at once (the kubelet's own deletion: grace 0).
async fn force_delete(api: &Api<Pod>, m: &Pod) {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: m.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    if let Err(e) = api
        .delete(m.metadata.name.as_deref().unwrap_or_default(), &dp)
        .await
    {
        tracing::debug!(pod = %key(m), error = %e, "deleting a mirror pod");
    }
}

/// Makes the apiserver's mirror of `p` current.
async fn sync_mirror(shared: &Shared, p: &Pod, node_uid: Option<&str>) {
    let api = api(shared, p);
    let name = p.metadata.name.as_deref().unwrap_or_default();
    match api.get_opt(name).await {
        Ok(None) => {
            let Ok(mirror) = serde_json::from_value::<Pod>(static_pods::mirror_of(p, node_uid))
            else {
                return;
            };
            match api.create(&PostParams::default(), &mirror).await {
                Ok(_) => tracing::info!(pod = %key(p), "mirror pod created"),
                Err(e) => tracing::debug!(pod = %key(p), error = %e, "creating the mirror pod"),
            }
        }
        Ok(Some(m)) if !static_pods::is_mirror(&m) => {
            tracing::debug!(pod = %key(p), "a pod that is not a mirror holds the static pod's name");
        }
        // Deleted by a user (terminating) or from an older manifest: gone
        // now, made again on the next round.
        Ok(Some(m)) if m.metadata.deletion_timestamp.is_some() || mirror_hash(&m) != hash(p) => {
            force_delete(&api, &m).await;
        }
        Ok(Some(_)) => {}
        Err(e) => tracing::debug!(pod = %key(p), error = %e, "reading the mirror pod"),
    }
}

async fn delete_mirror(shared: &Shared, p: &Pod) {
    let api = api(shared, p);
    if let Ok(Some(m)) = api
        .get_opt(p.metadata.name.as_deref().unwrap_or_default())
        .await
        && static_pods::is_mirror(&m)
        && mirror_hash(&m) == hash(p)
    {
        force_delete(&api, &m).await;
    }
}
