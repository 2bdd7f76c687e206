//! Static pods: pods the kubelet runs from manifest files in a directory
//! (`--pod-manifest-path`, the kubelet's `staticPodPath`), with or without
//! an apiserver, and mirrors into the apiserver so that `kubectl get pods`
//! shows them.
//!
//! As in Kubernetes: one pod per file (YAML or JSON; files starting with a
//! dot are skipped), named `<name>-<node>`, in `default` unless the file
//! says otherwise, its UID the hash of the node and the file's content
//! (`kubernetes.io/config.hash`), tolerating every NoExecute taint. The
//! mirror pod carries `kubernetes.io/config.mirror: <hash>` and is owned by
//! the Node; a mirror deleted by hand is made again, a changed file
//! replaces pod and mirror, a removed file stops the pod and deletes the
//! mirror. The directory is read every few seconds.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use sha2::Digest as _;

pub const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
pub const HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
pub const SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Whether `pod` is a mirror pod (the apiserver's copy of a static pod).
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

/// The static pod a manifest describes, defaulted as the apiserver would
/// default a pod (the kubelet runs it without one).
pub fn from_manifest(text: &str, node: &str, seen: &str) -> Result<Pod, String> {
    let trimmed = text.trim_start();
    let mut v: Value = if trimmed.starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("not a JSON pod: {e}"))?
    } else {
        serde_yaml::from_str(text).map_err(|e| format!("not a YAML pod: {e}"))?
    };
    if v["kind"] != "Pod" || v["apiVersion"] != "v1" {
        return Err(format!(
            "the manifest is a {} {}, not a v1 Pod",
            v["apiVersion"].as_str().unwrap_or("(no apiVersion)"),
            v["kind"].as_str().unwrap_or("(no kind)")
        ));
    }
    let name = v["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or("the pod has no metadata.name")?
        .to_string();
    if v["spec"]["containers"].as_array().is_none_or(Vec::is_empty) {
        return Err(format!("pod {name} has no containers"));
    }
    let hash = {
        let mut h = sha2::Sha256::new();
        h.update(node.as_bytes());
        h.update(b"\0");
        h.update(text.as_bytes());
        hex::encode(&h.finalize()[..16])
    };
    let meta = &mut v["metadata"];
    meta["name"] = json!(format!("{name}-{node}"));
    if meta["namespace"].as_str().is_none_or(str::is_empty) {
        meta["namespace"] = json!("default");
    }
    meta["uid"] = json!(hash);
    for k in ["resourceVersion", "creationTimestamp", "ownerReferences"] {
        if let Some(m) = meta.as_object_mut() {
            m.remove(k);
        }
    }
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    meta["annotations"][SOURCE_ANNOTATION] = json!("file");
    meta["annotations"][HASH_ANNOTATION] = json!(hash);
    meta["annotations"][SEEN_ANNOTATION] = json!(seen);
    let spec = &mut v["spec"];
    spec["nodeName"] = json!(node);
    let defaults = [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("schedulerName", json!("default-scheduler")),
        ("enableServiceLinks", json!(true)),
        ("securityContext", json!({})),
    ];
    for (k, d) in defaults {
        if spec[k].is_null() {
            spec[k] = d;
        }
    }
    let mut tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    tolerations.push(json!({"operator": "Exists", "effect": "NoExecute"}));
    spec["tolerations"] = json!(tolerations);
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            let image = c["image"].as_str().unwrap_or_default().to_string();
            if c["imagePullPolicy"].is_null() {
                let latest = image.ends_with(":latest")
                    || !image.rsplit('/').next().unwrap_or_default().contains(':');
                c["imagePullPolicy"] = json!(if latest && !image.contains('@') {
                    "Always"
                } else {
                    "IfNotPresent"
                });
            }
            if c["terminationMessagePath"].is_null() {
                c["terminationMessagePath"] = json!("/dev/termination-log");
            }
            if c["terminationMessagePolicy"].is_null() {
                c["terminationMessagePolicy"] = json!("File");
            }
        }
    }
    serde_json::from_value(v).map_err(|e| format!("pod {name}: {e}"))
}

/// The mirror pod of a static pod: the same object, marked, owned by the
/// Node, without the UID (the apiserver gives it its own).
pub fn mirror_of(pod: &Pod, node_uid: Option<&str>) -> Value {
    let mut v = serde_json::to_value(pod).unwrap_or_default();
    let hash = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HASH_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("uid");
        m.remove("resourceVersion");
    }
    v["metadata"]["annotations"][MIRROR_ANNOTATION] = json!(hash);
    if let Some(uid) = node_uid {
        v["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "v1", "kind": "Node",
            "name": pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            "uid": uid, "controller": false,
        }]);
    }
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    v
}

/// The manifests in `dir`: file → its content. A directory that does not
/// exist holds none.
pub fn read_dir(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if hidden || !p.is_file() {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(&p) {
            out.insert(p, text);
        }
    }
    out
}

/// What changed between two readings of the directory: the pods to run
/// (new or changed), and the UIDs of those to stop (changed or removed).
#[derive(Debug, Default, PartialEq)]
pub struct Diff {
    pub upsert: Vec<Pod>,
    pub remove: Vec<Pod>,
}

/// Compares the pods now read with those running (by file).
pub fn diff(running: &BTreeMap<PathBuf, Pod>, now: &BTreeMap<PathBuf, Pod>) -> Diff {
    let mut d = Diff::default();
    for (path, pod) in now {
        match running.get(path) {
            Some(old) if old.metadata.uid == pod.metadata.uid => {}
            Some(old) => {
                d.remove.push(old.clone());
                d.upsert.push(pod.clone());
            }
            None => d.upsert.push(pod.clone()),
        }
    }
    for (path, old) in running {
        if !now.contains_key(path) {
            d.remove.push(old.clone());
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.28\n    command: [sleep, '3600']\n";

    #[test]
    fn a_manifest_becomes_a_named_hashed_defaulted_pod() {
        let p = from_manifest(WEB, "n1", "t").unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("web-n1"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        let a = p.metadata.annotations.clone().unwrap();
        assert_eq!(a[SOURCE_ANNOTATION], "file");
        assert_eq!(Some(&a[HASH_ANNOTATION]), p.metadata.uid.as_ref());
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("IfNotPresent")
        );
        let t = &spec.tolerations.as_ref().unwrap()[0];
        assert_eq!(
            (t.operator.as_deref(), t.effect.as_deref()),
            (Some("Exists"), Some("NoExecute"))
        );
        // The same file on another node, or changed, is another pod.
        let other = from_manifest(WEB, "n2", "t").unwrap();
        assert_ne!(other.metadata.uid, p.metadata.uid);
        let changed = from_manifest(&WEB.replace("3600", "60"), "n1", "t").unwrap();
        assert_ne!(changed.metadata.uid, p.metadata.uid);
        // JSON too.
        let j = serde_json::to_string(&serde_yaml::from_str::<Value>(WEB).unwrap()).unwrap();
        assert_eq!(
            from_manifest(&j, "n1", "t")
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("web-n1")
        );
    }

    #[test]
    fn bad_manifests_say_why() {
        assert!(from_manifest("{", "n", "t").unwrap_err().contains("JSON"));
        let e = from_manifest(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
            "n",
            "t",
        )
        .unwrap_err();
        assert!(e.contains("not a v1 Pod"), "{e}");
        let e = from_manifest(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: []}\n",
            "n",
            "t",
        )
        .unwrap_err();
        assert!(e.contains("no containers"), "{e}");
        let e = from_manifest("apiVersion: v1\nkind: Pod\nspec: {}\n", "n", "t").unwrap_err();
        assert!(e.contains("metadata.name"), "{e}");
    }

    #[test]
    fn the_mirror_is_marked_and_owned_by_the_node() {
        let p = from_manifest(WEB, "n1", "t").unwrap();
        let m = mirror_of(&p, Some("node-uid"));
        assert!(m["metadata"]["uid"].is_null());
        assert_eq!(
            m["metadata"]["annotations"][MIRROR_ANNOTATION],
            json!(p.metadata.uid)
        );
        assert_eq!(m["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert_eq!(m["metadata"]["ownerReferences"][0]["name"], "n1");
        let mp: Pod = serde_json::from_value(m).unwrap();
        assert!(is_mirror(&mp));
        assert!(!is_mirror(&p));
    }

    #[test]
    fn diffs_start_replace_and_stop() {
        let a = from_manifest(WEB, "n", "t").unwrap();
        let a2 = from_manifest(&WEB.replace("3600", "60"), "n", "t").unwrap();
        let b = from_manifest(&WEB.replace("name: web", "name: db"), "n", "t").unwrap();
        let m = |v: &[(&str, &Pod)]| -> BTreeMap<PathBuf, Pod> {
            v.iter()
                .map(|(p, pod)| (PathBuf::from(p), (*pod).clone()))
                .collect()
        };
        let d = diff(&m(&[]), &m(&[("a", &a), ("b", &b)]));
        assert_eq!((d.upsert.len(), d.remove.len()), (2, 0));
        let d = diff(&m(&[("a", &a), ("b", &b)]), &m(&[("a", &a2)]));
        assert_eq!(d.upsert, vec![a2.clone()]);
        assert_eq!(d.remove, vec![a.clone(), b.clone()]);
        assert_eq!(diff(&m(&[("a", &a)]), &m(&[("a", &a)])), Diff::default());
    }
}
