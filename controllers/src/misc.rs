//! Small controllers: the `default` ServiceAccount and the
//! `kube-root-ca.crt` ConfigMap in every namespace, and PersistentVolume
//! binding (claims to the smallest fitting Available volume; released
//! volumes retained or deleted per their reclaim policy).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use serde_json::json;

use super::{
    cache::{Kind, Snapshot},
    ops::{EventRecord, Involved, Op},
    util,
};

pub const ROOT_CA: &str = "kube-root-ca.crt";

/// The default ServiceAccount and root CA ConfigMap per active namespace.
pub fn namespaces(snap: &Snapshot, ca_pem: Option<&str>) -> Vec<Op> {
    let mut ops = Vec::new();
    for ns in snap.namespaces.values() {
        let name = util::name(&ns.metadata);
        let active = ns.metadata.deletion_timestamp.is_none()
            && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating");
        if !active {
            continue;
        }
        if !snap
            .service_accounts
            .contains_key(&(name.to_owned(), "default".to_owned()))
        {
            ops.push(Op::create(
                Kind::ServiceAccount,
                name,
                json!({"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": "default", "namespace": name}}),
            ));
        }
        if let Some(ca) = ca_pem {
            match snap.config_maps.get(&(name.to_owned(), ROOT_CA.to_owned())) {
                None => ops.push(Op::create(
                    Kind::ConfigMap,
                    name,
                    json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": ROOT_CA, "namespace": name,
                                        "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                           "data": {"ca.crt": ca}}),
                )),
                Some(cm) if cm.data.as_ref().and_then(|d| d.get("ca.crt")).map(String::as_str) != Some(ca) => {
                    ops.push(Op::patch(Kind::ConfigMap, &cm.metadata, json!({"data": {"ca.crt": ca}})));
                }
                Some(_) => {}
            }
        }
    }
    ops
}

fn capacity(pv: &PersistentVolume) -> i128 {
    pv.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| util::quantity_milli(&q.0))
        .unwrap_or(0)
}

fn request(pvc: &PersistentVolumeClaim) -> i128 {
    pvc.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| util::quantity_milli(&q.0))
        .unwrap_or(0)
}

fn pv_phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Whether a volume can serve a claim.
pub fn fits(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (&pv.spec, &pvc.spec) else {
        return false;
    };
    if vs.claim_ref.is_some() || pv.metadata.deletion_timestamp.is_some() {
        return false;
    }
    if vs.storage_class_name.as_deref().unwrap_or("")
        != cs.storage_class_name.as_deref().unwrap_or("")
    {
        return false;
    }
    if vs.volume_mode.as_deref().unwrap_or("Filesystem")
        != cs.volume_mode.as_deref().unwrap_or("Filesystem")
    {
        return false;
    }
    let modes = vs.access_modes.clone().unwrap_or_default();
    if !cs.access_modes.iter().flatten().all(|m| modes.contains(m)) {
        return false;
    }
    if let Some(sel) = &cs.selector
        && !util::selector_matches(sel, util::labels(&pv.metadata))
    {
        return false;
    }
    capacity(pv) >= request(pvc)
}

/// PV/PVC binding and release.
pub fn volumes(snap: &Snapshot) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut taken: Vec<String> = Vec::new();
    for pvc in snap.pvcs.values() {
        let m = &pvc.metadata;
        if m.deletion_timestamp.is_some() {
            continue;
        }
        let Some(spec) = &pvc.spec else { continue };
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if bound {
            continue;
        }
        // A claim naming its volume, or the smallest volume that fits.
        let pv: Option<&Arc<PersistentVolume>> = match spec
            .volume_name
            .as_deref()
            .filter(|v| !v.is_empty())
        {
            Some(v) => snap.pvs.get(&(String::new(), v.to_owned())).filter(|pv| {
                pv.spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .is_none_or(|c| c.uid.as_deref() == m.uid.as_deref())
            }),
            // A volume already promised to this claim, else the
            // smallest free one that fits.
            None => snap
                .pvs
                .values()
                .find(|pv| {
                    pv.spec
                        .as_ref()
                        .and_then(|s| s.claim_ref.as_ref())
                        .is_some_and(|c| c.uid.is_some() && c.uid.as_deref() == m.uid.as_deref())
                })
                .or_else(|| {
                    snap.pvs
                        .values()
                        .filter(|pv| {
                            fits(pv, pvc) && !taken.contains(&util::name(&pv.metadata).to_owned())
                        })
                        .filter(|pv| pv_phase(pv) == "Available" || pv_phase(pv) == "Pending")
                        .min_by_key(|pv| capacity(pv))
                }),
        };
        let Some(pv) = pv else { continue };
        let pv_name = util::name(&pv.metadata).to_owned();
        taken.push(pv_name.clone());
        let claim_ref = json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1",
            "namespace": util::namespace(m), "name": util::name(m), "uid": m.uid,
            "resourceVersion": m.resource_version});
        if pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_none()
        {
            ops.push(Op::patch(
                Kind::PersistentVolume,
                &pv.metadata,
                json!({"metadata": {"resourceVersion": pv.metadata.resource_version,
                                    "annotations": {"pv.kubernetes.io/bound-by-controller": "yes"}},
                       "spec": {"claimRef": claim_ref}}),
            ));
            continue;
        }
        if pv_phase(pv) != "Bound" {
            ops.push(Op::status(
                Kind::PersistentVolume,
                &pv.metadata,
                json!({"phase": "Bound"}),
            ));
        }
        if spec.volume_name.as_deref() != Some(pv_name.as_str()) {
            ops.push(Op::patch(
                Kind::PersistentVolumeClaim,
                m,
                json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes",
                                                     "pv.kubernetes.io/bound-by-controller": "yes"}},
                       "spec": {"volumeName": pv_name}}),
            ));
            continue;
        }
        let vs = pv.spec.clone().unwrap_or_default();
        ops.push(
            Op::status(
                Kind::PersistentVolumeClaim,
                m,
                json!({"phase": "Bound", "accessModes": vs.access_modes, "capacity": vs.capacity}),
            )
            .with_event(EventRecord::normal(
                "persistentvolume-controller",
                Involved::of(Kind::PersistentVolumeClaim, m),
                "Bound",
                format!("bound to volume {pv_name}"),
            )),
        );
    }
    // Volumes: Available when free, Released when their claim is gone.
    for pv in snap.pvs.values() {
        let m = &pv.metadata;
        if m.deletion_timestamp.is_some() {
            continue;
        }
        let claim = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        match claim {
            None => {
                if pv_phase(pv) != "Available" && pv_phase(pv) != "Released" {
                    ops.push(Op::status(
                        Kind::PersistentVolume,
                        m,
                        json!({"phase": "Available"}),
                    ));
                }
            }
            Some(c) => {
                let key = (
                    c.namespace.clone().unwrap_or_default(),
                    c.name.clone().unwrap_or_default(),
                );
                let alive = snap
                    .pvcs
                    .get(&key)
                    .is_some_and(|p| c.uid.is_none() || p.metadata.uid == c.uid);
                if alive || pv_phase(pv) == "Released" || c.uid.is_none() {
                    continue;
                }
                let policy = pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
                    .unwrap_or("Retain");
                if policy == "Delete" {
                    ops.push(Op::delete(Kind::PersistentVolume, m));
                } else {
                    ops.push(Op::status(
                        Kind::PersistentVolume,
                        m,
                        json!({"phase": "Released"}),
                    ));
                }
            }
        }
    }
    ops
}
