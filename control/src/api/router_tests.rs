//! The HTTP router in-process (no TLS, no socket): requests as clients send
//! them, answers as kube-apiserver gives them (status codes and `Status`
//! bodies), against a real single-member store in a temporary folder. Who
//! asks is set as `serve` sets it, after authentication.

use std::{sync::Arc, time::Duration};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::{ApiConfig, ApiState, auth::User, router};
use crate::store::raft::{RaftConfig, RaftStore};

async fn state(dir: &std::path::Path) -> Arc<ApiState> {
    let cfg = RaftConfig::single(dir.join("store"), "127.0.0.1:0".parse().unwrap());
    let store = RaftStore::open(cfg).await.unwrap();
    store.wait_ready(Duration::from_secs(30)).await.unwrap();
    let st = ApiState::new(Arc::new(store), ApiConfig::default());
    // What every cluster has: the default RBAC policy among it.
    super::startup::bootstrap(&st).await.unwrap();
    st.authz.load(st.store.as_ref()).await.unwrap();
    st
}

fn admin() -> User {
    User {
        name: "admin".into(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    }
}

fn bob() -> User {
    User {
        name: "bob".into(),
        groups: vec!["system:authenticated".into()],
    }
}

/// One request through the router: status and body (JSON, or a string).
async fn call(
    st: &Arc<ApiState>,
    user: User,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(Body::from(body)).unwrap();
    req.extensions_mut().insert(user);
    let resp = router(Arc::clone(st)).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

async fn json_call(
    st: &Arc<ApiState>,
    user: User,
    method: &str,
    uri: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let ct = [(header::CONTENT_TYPE.as_str(), "application/json")];
    call(
        st,
        user,
        method,
        uri,
        &ct,
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

/// A `Status` failure as kube-apiserver writes it.
fn failure(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code});
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

/// A GET with no headers.
async fn get(st: &Arc<ApiState>, user: User, uri: &str) -> (StatusCode, Value) {
    call(st, user, "GET", uri, &[], vec![]).await
}

/// Holds an answer to a whole `Status` failure.
#[track_caller]
fn assert_failure(got: &(StatusCode, Value), reason: &str, message: &str, details: Option<Value>) {
    let code = got.0.as_u16();
    assert_eq!(
        got.1,
        failure(code, reason, message, details),
        "HTTP {code}"
    );
}

const CONFIG_MAPS: &str = "/api/v1/namespaces/a/configmaps";

/// A state with namespace `a` and ConfigMap `c` in it.
async fn with_config_map(dir: &std::path::Path) -> Arc<ApiState> {
    let st = state(dir).await;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}});
    let (code, body) = json_call(&st, admin(), "POST", "/api/v1/namespaces", &ns).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert!(body["metadata"]["uid"].is_string() && body["metadata"]["resourceVersion"].is_string());
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
    let (code, _) = json_call(&st, admin(), "POST", CONFIG_MAPS, &cm).await;
    assert_eq!(code, StatusCode::CREATED);
    st
}

#[tokio::test]
async fn anonymous_callers_and_paths_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    // Anonymous: the public paths only.
    let (code, body) = get(&st, User::anonymous(), "/version").await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        body["gitVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with('v')),
        "{body}"
    );
    let got = get(&st, User::anonymous(), "/api/v1/namespaces").await;
    assert_eq!(got.0, StatusCode::UNAUTHORIZED);
    assert_failure(&got, "Unauthorized", "Unauthorized", None);
    // The generic 404, whose details are empty.
    for path in [
        "/api/v1/namespaces/a/widgets",
        "/apis/no.such.group/v1/things",
        "/api/v9/pods",
    ] {
        let got = get(&st, admin(), path).await;
        assert_eq!(got.0, StatusCode::NOT_FOUND, "{path}");
        assert_failure(
            &got,
            "NotFound",
            "the server could not find the requested resource",
            Some(json!({})),
        );
    }
}

#[tokio::test]
async fn creates_reads_and_bad_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let st = with_config_map(dir.path()).await;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    let got = json_call(&st, admin(), "POST", CONFIG_MAPS, &cm).await;
    assert_eq!(got.0, StatusCode::CONFLICT);
    let details = json!({"name": "c", "kind": "configmaps"});
    assert_failure(
        &got,
        "AlreadyExists",
        r#"configmaps "c" already exists"#,
        Some(details),
    );
    let (code, body) = get(&st, admin(), &format!("{CONFIG_MAPS}/c")).await;
    assert_eq!((code, &body["data"]), (StatusCode::OK, &json!({"k": "v"})));
    let got = get(&st, admin(), &format!("{CONFIG_MAPS}/missing")).await;
    assert_eq!(got.0, StatusCode::NOT_FOUND);
    let details = json!({"name": "missing", "kind": "configmaps"});
    assert_failure(
        &got,
        "NotFound",
        r#"configmaps "missing" not found"#,
        Some(details),
    );
    // A body that is not JSON; one over the limit.
    let ct = [(header::CONTENT_TYPE.as_str(), "application/json")];
    let (code, body) = call(
        &st,
        admin(),
        "POST",
        CONFIG_MAPS,
        &ct,
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (StatusCode::BAD_REQUEST, Some("BadRequest")),
        "{body}"
    );
    let big = vec![b' '; super::object::MAX_BODY + 10];
    let (code, body) = call(&st, admin(), "POST", CONFIG_MAPS, &ct, big).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // A table, as kubectl asks for one.
    let accept = [(
        header::ACCEPT.as_str(),
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    )];
    let (code, body) = call(&st, admin(), "GET", CONFIG_MAPS, &accept, vec![]).await;
    assert_eq!(
        (code, body["kind"].as_str()),
        (StatusCode::OK, Some("Table")),
        "{body}"
    );
    assert_eq!(body["columnDefinitions"][0]["name"], "Name");
    assert_eq!(body["rows"][0]["cells"][0], "c");
}

#[tokio::test]
async fn forbidden_names_what_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let st = with_config_map(dir.path()).await;
    let got = get(&st, bob(), CONFIG_MAPS).await;
    assert_eq!(got.0, StatusCode::FORBIDDEN);
    assert_failure(
        &got,
        "Forbidden",
        r#"configmaps is forbidden: User "bob" cannot list resource "configmaps" in API group "" in the namespace "a""#,
        Some(json!({"kind": "configmaps"})),
    );
    let (code, body) = call(
        &st,
        bob(),
        "DELETE",
        &format!("{CONFIG_MAPS}/c"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(body["details"], json!({"name": "c", "kind": "configmaps"}));
    let (code, body) = get(&st, bob(), "/apis/apps/v1/namespaces/a/deployments").await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(
        body["details"],
        json!({"group": "apps", "kind": "deployments"})
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("deployments.apps is forbidden: ")
    );
    // A path that is not a resource: empty details, as NewForbidden leaves them.
    let got = get(&st, bob(), "/logs").await;
    assert_eq!(got.0, StatusCode::FORBIDDEN);
    assert_failure(
        &got,
        "Forbidden",
        r#"forbidden: User "bob" cannot get path "/logs""#,
        Some(json!({})),
    );
}

#[tokio::test]
async fn deletes_and_a_terminating_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let st = with_config_map(dir.path()).await;
    let (code, body) = call(
        &st,
        admin(),
        "DELETE",
        &format!("{CONFIG_MAPS}/c"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, _) = get(&st, admin(), &format!("{CONFIG_MAPS}/c")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    // A namespace being deleted (its finalizer waits for the namespace
    // controller, not running here) takes nothing new.
    let (code, _) = call(&st, admin(), "DELETE", "/api/v1/namespaces/a", &[], vec![]).await;
    assert_eq!(code, StatusCode::OK);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}});
    let got = json_call(&st, admin(), "POST", CONFIG_MAPS, &cm).await;
    assert_eq!(got.0, StatusCode::FORBIDDEN);
    assert_failure(
        &got,
        "Forbidden",
        r#"configmaps "d" is forbidden: unable to create new content in namespace a because it is being terminated"#,
        Some(json!({"name": "d", "kind": "configmaps"})),
    );
}
