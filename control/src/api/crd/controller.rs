//! The CRD controller every server runs: it keeps the served custom kinds
//! ([`super::install`]) in step with the stored CRDs, writes each CRD's
//! `status` (accepted names, `NamesAccepted`, `Established`,
//! `Terminating`, `storedVersions`), and empties a deleted CRD of its
//! objects before letting it go.
//!
//! It follows the CRDs with a store watch and re-plans from a fresh list
//! on every change ([`super::definition::plan`] is pure), so every server
//! of a replicated control plane serves the same kinds within a watch
//! round trip. Status writes compare-and-swap on the revision listed; a
//! write that loses a race is simply planned again. While a CRD is being
//! deleted the controller also wakes every second, because what it waits
//! for (the objects' own finalizers) is not a CRD change.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};

use super::{definition, versions_of};
use crate::{
    api::{
        ApiState,
        handlers::{self, decode_stored, now_rfc3339},
        resources::{self, Resource},
    },
    store::{ListRequest, StoreError},
};

/// Where CRDs are stored.
const PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

/// Objects deleted per pass of a terminating CRD (the rest wait a second).
const DELETE_BATCH: usize = 500;

/// The first pass, before the apiserver serves: the custom kinds stored
/// are served from the first request on.
pub async fn load(st: &ApiState) {
    if let Err(e) = reconcile(st).await {
        tracing::warn!(error = %e, "loading CRDs failed; the controller retries");
    }
}

/// Runs until `stop`.
pub async fn run(st: Arc<ApiState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let (rev, busy) = match reconcile(&st).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "CRD reconcile failed; retrying");
                (0, true)
            }
        };
        let wake = if busy {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(300)
        };
        tokio::select! {
            () = async {
                crate::store::next_change(st.store.as_ref(), PREFIX, rev).await;
                // Let a burst (kubectl apply of many CRDs) settle.
                tokio::time::sleep(Duration::from_millis(20)).await;
            } => {}
            () = tokio::time::sleep(wake) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One pass: install what is served, write statuses, clean up deleted
/// CRDs. Returns the revision listed and whether a CRD is terminating.
async fn reconcile(st: &ApiState) -> Result<(i64, bool), StoreError> {
    let list = st
        .store
        .list(ListRequest {
            prefix: PREFIX.into(),
            after: None,
            limit: 0,
            revision: 0,
        })
        .await?;
    let mut crds = Vec::new();
    for kv in &list.kvs {
        match decode_stored(kv) {
            Ok(v) => crds.push((v, kv.mod_revision, kv.create_revision)),
            Err(e) => tracing::warn!(key = %kv.key, error = %e.message, "unreadable CRD skipped"),
        }
    }
    let objs: Vec<(Value, i64)> = crds.iter().map(|(v, _, c)| (v.clone(), *c)).collect();
    let decisions = definition::plan(&objs, &now_rfc3339());
    let crds: Vec<(Value, i64)> = crds.into_iter().map(|(v, m, _)| (v, m)).collect();
    let mut served = Vec::new();
    let mut terminating = Vec::new();
    for (d, (crd, rev)) in decisions.iter().zip(order(&crds, &decisions)) {
        if let Some(names) = &d.accepted {
            served.extend(versions_of(crd, names, d.terminating));
        }
        let (crd, rev) = if crd.get("status") == Some(&d.status) {
            (crd.clone(), rev)
        } else {
            let mut new = crd.clone();
            new["status"] = d.status.clone();
            let rev = write(st, &d.name, &new, rev).await.unwrap_or(rev);
            (new, rev)
        };
        if d.terminating {
            terminating.push((d.name.clone(), crd, rev));
        }
    }
    let busy = !terminating.is_empty();
    let mut gone = Vec::new();
    for (name, crd, rev) in terminating {
        match clean_up(st, &crd, rev).await {
            Ok(true) => gone.push(name),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(crd = %name, error = %e, "deleting the objects of a CRD failed; retrying");
            }
        }
    }
    // A CRD deleted in this pass stops being served now, not a pass later.
    served.retain(|v| !gone.contains(&v.crd));
    super::install(served);
    Ok((list.revision, busy))
}

/// The (CRD, revision) pairs in the decisions' order.
fn order<'a>(
    crds: &'a [(Value, i64)],
    decisions: &[definition::Decision],
) -> Vec<(&'a Value, i64)> {
    decisions
        .iter()
        .filter_map(|d| {
            crds.iter()
                .find(|(c, _)| c["metadata"]["name"] == d.name.as_str())
                .map(|(c, r)| (c, *r))
        })
        .collect()
}

fn crd_resource() -> &'static Resource {
    resources::find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .expect("the CRD kind is built in")
}

/// Writes a CRD's status; returns the new revision (none when the CRD
/// changed meanwhile: the next pass plans again).
async fn write(st: &ApiState, name: &str, crd: &Value, rev: i64) -> Option<i64> {
    let r = crd_resource();
    let key = handlers::key(r, "", name);
    match st
        .store
        .update(key, handlers::encode_as(r, crd), Some(rev))
        .await
    {
        Ok(kv) => {
            st.metrics.object_written(r);
            Some(kv.mod_revision)
        }
        Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => None,
        Err(e) => {
            tracing::warn!(crd = name, error = %e, "writing a CRD's status failed");
            None
        }
    }
}

/// Deletes a terminating CRD's objects (those with finalizers of their
/// own are marked deleted and waited for); once none is left, drops the
/// clean-up finalizer, which deletes the CRD when it was the last.
/// Returns whether the CRD is gone.
async fn clean_up(st: &ApiState, crd: &Value, rev: i64) -> Result<bool, StoreError> {
    let finalizers: Vec<Value> = crd
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !finalizers.contains(&json!(definition::CLEANUP_FINALIZER)) {
        return Ok(false);
    }
    let group = crd["spec"]["group"].as_str().unwrap_or("");
    let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or("");
    if group.is_empty() || plural.is_empty() {
        return Ok(false);
    }
    let prefix = format!("/registry/{group}/{plural}/");
    let list = st
        .store
        .list(ListRequest {
            prefix,
            after: None,
            limit: DELETE_BATCH,
            revision: 0,
        })
        .await?;
    let mut left = list.more;
    let now = now_rfc3339();
    for kv in &list.kvs {
        let Ok(obj) = decode_stored(kv) else {
            st.store
                .delete(kv.key.clone(), Some(kv.mod_revision))
                .await
                .ok();
            continue;
        };
        let has_finalizers = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if !has_finalizers {
            match st.store.delete(kv.key.clone(), Some(kv.mod_revision)).await {
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(StoreError::Conflict { .. }) => left = true,
                Err(e) => return Err(e),
            }
            continue;
        }
        left = true;
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            let mut marked = obj.clone();
            marked["metadata"]["deletionTimestamp"] = json!(now);
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if let Some(m) = marked["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            let bytes = serde_json::to_vec(&marked).expect("serialisable");
            match st
                .store
                .update(kv.key.clone(), bytes, Some(kv.mod_revision))
                .await
            {
                Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    if left {
        return Ok(false);
    }
    let name = crd["metadata"]["name"].as_str().unwrap_or("");
    let rest: Vec<Value> = finalizers
        .into_iter()
        .filter(|f| f != definition::CLEANUP_FINALIZER)
        .collect();
    let key = handlers::key(crd_resource(), "", name);
    let last = rest.is_empty();
    let result = if last {
        st.store.delete(key, Some(rev)).await.map(drop)
    } else {
        let mut new = crd.clone();
        new["metadata"]["finalizers"] = json!(rest);
        st.store
            .update(key, handlers::encode_as(crd_resource(), &new), Some(rev))
            .await
            .map(drop)
    };
    match result {
        Ok(()) => Ok(last),
        Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}
