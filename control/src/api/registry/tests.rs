//! The registry in-process, against a real single-member store in a
//! temporary folder: no HTTP, no client.

use std::{sync::Arc, time::Duration};

use serde_json::json;

use super::*;
use crate::api::patch::PatchType;
use crate::{
    api::{ApiConfig, resources},
    store::raft::{RaftConfig, RaftStore},
};

async fn state(dir: &std::path::Path) -> Arc<ApiState> {
    let cfg = RaftConfig::single(dir.join("store"), "127.0.0.1:0".parse().unwrap());
    let store = RaftStore::open(cfg).await.unwrap();
    store.wait_ready(Duration::from_secs(30)).await.unwrap();
    ApiState::new(Arc::new(store), ApiConfig::default())
}

fn target(group: &str, kind: &str, ns: &str) -> Target {
    Target {
        resource: resources::by_kind(group, kind).unwrap(),
        namespace: ns.into(),
        name: None,
        subresource: None,
    }
}

fn config_map(name: &str, extra: &Value) -> Value {
    let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name}, "data": {"k": "v"}});
    if let (Some(o), Some(e)) = (cm.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    cm
}

async fn with_namespace(st: &ApiState, ns: &str) {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    let t = target("", "Namespace", "");
    assert!(
        create_if_absent(st, &t, body, &WriteOptions::internal())
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn internal_writes_are_defaulted_stored_and_recorded_as_the_apiservers() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    with_namespace(&st, "default").await;
    let t = target("", "ConfigMap", "default");
    let opts = WriteOptions::internal();
    let w = create(&st, &t, config_map("a", &json!({})), &opts)
        .await
        .unwrap();
    assert_eq!(w.object["metadata"]["namespace"], "default");
    assert!(w.object["metadata"]["uid"].is_string());
    assert_eq!(
        w.object["metadata"]["managedFields"][0]["manager"],
        "kube-apiserver"
    );
    assert_eq!(get(&st, &t, "a").await.unwrap()["data"]["k"], "v");
    // A second create of the same name is AlreadyExists, which
    // create_if_absent takes as done.
    let again = create(&st, &t, config_map("a", &json!({})), &opts)
        .await
        .unwrap_err();
    assert_eq!(
        (again.reason, again.code.as_u16()),
        (Reason::AlreadyExists, 409)
    );
    assert!(
        !create_if_absent(&st, &t, config_map("a", &json!({})), &opts)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn dry_runs_and_field_validation_follow_the_options() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    with_namespace(&st, "default").await;
    let t = target("", "ConfigMap", "default");
    let dry = WriteOptions {
        dry_run: true,
        ..WriteOptions::internal()
    };
    create(&st, &t, config_map("dry", &json!({})), &dry)
        .await
        .unwrap();
    assert_eq!(
        get(&st, &t, "dry").await.unwrap_err().reason,
        Reason::NotFound
    );

    let unknown = config_map("u", &json!({"bogus": 1}));
    let strict = WriteOptions {
        field_validation: FieldValidation::Strict,
        ..WriteOptions::internal()
    };
    let e = create(&st, &t, unknown.clone(), &strict).await.unwrap_err();
    assert_eq!(e.reason, Reason::BadRequest);
    assert!(
        e.message.contains("unknown field \"bogus\""),
        "{}",
        e.message
    );
    let w = create(&st, &t, unknown, &WriteOptions::internal())
        .await
        .unwrap();
    assert_eq!(w.warnings, ["unknown field \"bogus\""]);
    assert!(
        w.object.get("bogus").is_none(),
        "unknown fields are never stored"
    );
}

#[tokio::test]
async fn an_update_with_a_stale_resource_version_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    with_namespace(&st, "default").await;
    let t = target("", "ConfigMap", "default");
    let opts = WriteOptions::internal();
    let first = create(&st, &t, config_map("c", &json!({})), &opts)
        .await
        .unwrap()
        .object;
    let mut newer = first.clone();
    newer["data"]["k"] = json!("w");
    let second = update(&st, &t, "c", newer, &opts).await.unwrap().object;
    assert_eq!(second["data"]["k"], "w");
    let mut stale = first;
    stale["data"]["k"] = json!("x");
    let e = update(&st, &t, "c", stale, &opts).await.unwrap_err();
    assert_eq!((e.reason, e.code.as_u16()), (Reason::Conflict, 409));
    let e = update(&st, &t, "other", second, &opts).await.unwrap_err();
    assert_eq!(e.reason, Reason::BadRequest);
}

#[tokio::test]
async fn deletes_honour_their_preconditions_dry_runs_and_finalizers() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    with_namespace(&st, "default").await;
    let t = target("", "ConfigMap", "default");
    let opts = WriteOptions::internal();
    let made = create(&st, &t, config_map("d", &json!({})), &opts)
        .await
        .unwrap()
        .object;
    let wrong = DeleteOptions {
        precondition_uid: Some("not-its-uid".into()),
        ..DeleteOptions::default()
    };
    let e = delete(&st, &t, "d", &wrong).await.unwrap_err();
    assert_eq!((e.reason, e.code.as_u16()), (Reason::Conflict, 409));
    let dry = DeleteOptions {
        dry_run: true,
        ..DeleteOptions::default()
    };
    delete(&st, &t, "d", &dry).await.unwrap();
    assert!(get(&st, &t, "d").await.is_ok(), "a dry run deletes nothing");
    let right = DeleteOptions {
        precondition_uid: made["metadata"]["uid"].as_str().map(str::to_owned),
        propagation: Some(Propagation::Background),
        ..DeleteOptions::default()
    };
    delete(&st, &t, "d", &right).await.unwrap();
    assert_eq!(
        get(&st, &t, "d").await.unwrap_err().reason,
        Reason::NotFound
    );
    // A finalizer keeps the object, marked for deletion.
    let held = config_map(
        "f",
        &json!({"metadata": {"name": "f", "finalizers": ["example.com/hold"]}}),
    );
    create(&st, &t, held, &opts).await.unwrap();
    let out = delete(&st, &t, "f", &DeleteOptions::default())
        .await
        .unwrap();
    assert!(out["metadata"]["deletionTimestamp"].is_string(), "{out}");
    assert!(get(&st, &t, "f").await.is_ok());
    let e = delete(&st, &t, "gone", &DeleteOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::NotFound);
}

#[test]
fn delete_options_are_checked_as_kube_apiserver_checks_them() {
    let ok = DeleteOptions::from_json(&json!({
        "propagationPolicy": "Foreground", "gracePeriodSeconds": 5,
        "preconditions": {"uid": "u1", "resourceVersion": "7"}, "dryRun": ["All"]}))
    .unwrap();
    assert_eq!(ok.propagation, Some(Propagation::Foreground));
    assert_eq!(ok.grace_period_seconds, Some(5));
    assert_eq!(ok.precondition_uid.as_deref(), Some("u1"));
    assert_eq!(ok.precondition_resource_version.as_deref(), Some("7"));
    assert!(ok.dry_run);
    // The deprecated orphanDependents, alone; an empty dryRun is no dry run.
    let orphan =
        DeleteOptions::from_json(&json!({"orphanDependents": true, "dryRun": []})).unwrap();
    assert_eq!(orphan.propagation, Some(Propagation::Orphan));
    assert!(!orphan.dry_run);
    assert_eq!(
        DeleteOptions::from_json(&json!({"orphanDependents": false}))
            .unwrap()
            .propagation,
        None
    );
    for (body, message) in [
        (
            json!({"propagationPolicy": "Sideways"}),
            "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"Sideways\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\"",
        ),
        (
            json!({"propagationPolicy": "Orphan", "orphanDependents": true}),
            "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Invalid value: \"Orphan\": orphanDependents and deletionPropagation cannot be both set",
        ),
        (
            json!({"dryRun": ["Some"]}),
            "DeleteOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: \"Some\": supported values: \"All\"",
        ),
    ] {
        let e = DeleteOptions::from_json(&body).unwrap_err();
        assert_eq!((e.reason, e.code.as_u16()), (Reason::Invalid, 422));
        assert_eq!(e.message, message);
        let d = e.details.unwrap();
        assert_eq!(
            (d["kind"].as_str(), d["group"].as_str()),
            (Some("DeleteOptions"), Some("meta.k8s.io"))
        );
    }
    let e = DeleteOptions::from_json(&json!({"gracePeriodSeconds": "soon"})).unwrap_err();
    assert_eq!(e.reason, Reason::BadRequest);
}

fn patch_opts(manager: &str) -> PatchOptions {
    PatchOptions {
        write: WriteOptions {
            field_manager: manager.into(),
            ..WriteOptions::internal()
        },
        force: false,
    }
}

#[tokio::test]
async fn patches_merge_record_their_manager_and_apply_creates_then_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    with_namespace(&st, "default").await;
    let t = target("", "ConfigMap", "default");
    create(
        &st,
        &t,
        config_map("p", &json!({})),
        &WriteOptions::internal(),
    )
    .await
    .unwrap();
    let merge = br#"{"data": {"extra": "1"}}"#;
    let Patched::Updated(w) = patch(&st, &t, "p", PatchType::Merge, merge, &patch_opts("editor"))
        .await
        .unwrap()
    else {
        panic!("a merge patch of an existing object updates it");
    };
    assert_eq!(w.object["data"], json!({"k": "v", "extra": "1"}));
    let managers: Vec<&str> = w.object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"editor"), "{managers:?}");
    // A JSON patch that fails its test changes nothing.
    let failing = br#"[{"op": "test", "path": "/data/k", "value": "other"}]"#;
    let e = patch(
        &st,
        &t,
        "p",
        PatchType::Json,
        failing,
        &patch_opts("editor"),
    )
    .await
    .unwrap_err();
    assert_ne!(e.code.as_u16(), 200);
    // A patch may not rename, nor carry a stale resourceVersion.
    let rename = br#"{"metadata": {"name": "q"}}"#;
    let e = patch(
        &st,
        &t,
        "p",
        PatchType::Merge,
        rename,
        &patch_opts("editor"),
    )
    .await
    .unwrap_err();
    assert_eq!(e.reason, Reason::BadRequest);
    let stale = br#"{"metadata": {"resourceVersion": "1"}, "data": {"k": "x"}}"#;
    let e = patch(&st, &t, "p", PatchType::Merge, stale, &patch_opts("editor"))
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::Conflict);
    // An apply of an object that is not there creates it, as its manager's.
    let cfg = br#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"owned": "by-one"}}"#;
    let Patched::Created(w) = patch(&st, &t, "a", PatchType::Apply, cfg, &patch_opts("one"))
        .await
        .unwrap()
    else {
        panic!("an apply of a missing object creates it");
    };
    assert_eq!(w.object["metadata"]["managedFields"][0]["manager"], "one");
    // Another manager's apply of the same field conflicts, unless forced.
    let other = br#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"owned": "by-two"}}"#;
    let e = patch(&st, &t, "a", PatchType::Apply, other, &patch_opts("two"))
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::Conflict);
    assert!(
        e.message.starts_with("Apply failed with 1 conflict"),
        "{}",
        e.message
    );
    let forced = PatchOptions {
        force: true,
        ..patch_opts("two")
    };
    let Patched::Updated(w) = patch(&st, &t, "a", PatchType::Apply, other, &forced)
        .await
        .unwrap()
    else {
        panic!("a forced apply updates");
    };
    assert_eq!(w.object["data"]["owned"], "by-two");
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.28"}]}})
}

#[tokio::test]
async fn binding_places_a_pod_once_and_eviction_respects_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    with_namespace(&st, "default").await;
    let pods = target("", "Pod", "default");
    let opts = WriteOptions::internal();
    create(&st, &pods, pod("p1"), &opts).await.unwrap();
    let e = bind(&st, &pods, "p1", "").await.unwrap_err();
    assert_eq!((e.reason, e.code.as_u16()), (Reason::Invalid, 422));
    bind(&st, &pods, "p1", "node-a").await.unwrap();
    let bound = get(&st, &pods, "p1").await.unwrap();
    assert_eq!(bound["spec"]["nodeName"], "node-a");
    let scheduled: Vec<&Value> = bound["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "PodScheduled")
        .collect();
    assert_eq!(scheduled.len(), 1);
    assert_eq!(scheduled[0]["status"], "True");
    let e = bind(&st, &pods, "p1", "node-b").await.unwrap_err();
    assert_eq!(e.reason, Reason::Conflict);
    assert!(
        e.message.contains("already assigned to node \"node-a\""),
        "{}",
        e.message
    );
    let e = bind(&st, &pods, "missing", "node-a").await.unwrap_err();
    assert_eq!(e.reason, Reason::NotFound);

    // A budget that allows no disruption refuses the eviction (429); a
    // pod not bound to a node goes at once when allowed.
    let pdbs = target("policy", "PodDisruptionBudget", "default");
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "web"}}}});
    create(&st, &pdbs, pdb, &opts).await.unwrap();
    let e = evict(&st, &pods, "p1", &DeleteOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.code.as_u16(), 429, "{}", e.message);
    assert!(get(&st, &pods, "p1").await.is_ok());
    delete(&st, &pdbs, "web", &DeleteOptions::default())
        .await
        .unwrap();
    create(&st, &pods, pod("p2"), &opts).await.unwrap();
    evict(&st, &pods, "p2", &DeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(
        get(&st, &pods, "p2").await.unwrap_err().reason,
        Reason::NotFound
    );
}
