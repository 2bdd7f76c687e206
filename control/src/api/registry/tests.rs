//! The registry in-process, against a real single-member store in a
//! temporary folder: no HTTP, no client.

use std::{sync::Arc, time::Duration};

use serde_json::json;

use super::*;
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
