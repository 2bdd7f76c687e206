//! The APIService controller every server runs: the local APIServices of
//! the built-in group-versions and the front-proxy ConfigMap made at
//! start; the remote ones followed by a watch, their discovery document
//! probed (at every change and every [`PROBE_EVERY`]), their `Available`
//! condition written as kube-aggregator words it, and the proxy's registry
//! installed.

use std::{sync::Arc, time::Duration};

use axum::http::{HeaderMap, Method};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use super::{Remote, install, proxy};
use crate::{
    api::{
        ApiState,
        handlers::{self, Target, decode_stored, now_rfc3339},
        registry, resources,
    },
    store::{ListRequest, StoreError},
};

const PREFIX: &str = "/registry/apiregistration.k8s.io/apiservices/";

/// How often remote APIServices are probed when nothing changes.
pub const PROBE_EVERY: Duration = Duration::from_secs(10);

fn apiservices() -> &'static resources::Resource {
    resources::find("apiregistration.k8s.io", "v1", "apiservices").expect("built in")
}

/// The ConfigMap extension servers read (the local APIServices are made
/// by [`crate::api::startup`]; remote ones are probed by [`run`], not
/// before the server serves).
pub async fn start(st: &ApiState) {
    publish_authentication(st).await;
}

/// `kube-system/extension-apiserver-authentication`: whom an extension
/// server trusts for clients and for the front proxy's request headers.
async fn publish_authentication(st: &ApiState) {
    let Some(pki) = st.config.pki.as_ref() else {
        return;
    };
    let t = Target {
        resource: resources::by_kind("", "ConfigMap").expect("configmaps"),
        namespace: "kube-system".into(),
        name: None,
        subresource: None,
    };
    let data = json!({
        "client-ca-file": pki.ca_cert_pem,
        "requestheader-client-ca-file": pki.ca_cert_pem,
        "requestheader-allowed-names": json!([proxy::FRONT_PROXY_CN]).to_string(),
        "requestheader-username-headers": "[\"X-Remote-User\"]",
        "requestheader-group-headers": "[\"X-Remote-Group\"]",
        "requestheader-extra-headers-prefix": "[\"X-Remote-Extra-\"]",
    });
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
        "data": data});
    let opts = registry::WriteOptions::internal();
    match registry::create_if_absent(st, &t, obj.clone(), &opts).await {
        Ok(true) => {}
        Ok(false) => {
            if let Ok((cur, kv)) =
                handlers::get_object(st, &t, "extension-apiserver-authentication").await
                && cur["data"] != obj["data"]
            {
                let mut new = cur.clone();
                new["data"] = obj["data"].clone();
                let _ = handlers::write_update(
                    st,
                    &t,
                    "extension-apiserver-authentication",
                    &cur,
                    kv.mod_revision,
                    new,
                    &opts,
                )
                .await;
            }
        }
        Err(e) => tracing::warn!(error = %e.message, "publishing the front-proxy ConfigMap failed"),
    }
}

/// Runs until `stop`.
pub async fn run(st: Arc<ApiState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let rev = match reconcile(&st).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "APIService reconcile failed; retrying");
                0
            }
        };
        let changed = crate::store::next_change(st.store.as_ref(), PREFIX, rev);
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep(PROBE_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// What a probe found: (available, reason, message), and the discovery
/// document when there is one.
async fn probe(st: &ApiState, r: &Remote) -> ((bool, &'static str, String), Value) {
    let (ns, name, _) = &r.service;
    let path = format!("/apis/{}/{}", r.group, r.version);
    let sent = tokio::time::timeout(
        Duration::from_secs(5),
        proxy::send(
            st,
            r,
            Method::GET,
            &path,
            &HeaderMap::new(),
            None,
            bytes::Bytes::new(),
        ),
    )
    .await;
    let url = format!("https://{name}.{ns}.svc:{}{path}", r.service.2);
    let failed = |reason: &'static str, message: String| ((false, reason, message), Value::Null);
    let resp = match sent {
        Err(_) => {
            return failed(
                "FailedDiscoveryCheck",
                format!("failing or missing response from {url}: timeout"),
            );
        }
        Ok(Err(e)) if e.contains("not found") => {
            return failed(
                "ServiceNotFound",
                format!("service/{name} in {ns:?} is not present"),
            );
        }
        Ok(Err(e)) if e.contains("no endpoints") => {
            return failed(
                "MissingEndpoints",
                format!("endpoints for service/{name} in {ns:?} have no addresses"),
            );
        }
        Ok(Err(e)) => {
            return failed(
                "FailedDiscoveryCheck",
                format!("failing or missing response from {url}: {e}"),
            );
        }
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    match serde_json::from_slice::<Value>(&body) {
        Ok(list) if status.is_success() && list["kind"] == "APIResourceList" => {
            ((true, "Passed", "all checks passed".into()), list)
        }
        _ => failed(
            "FailedDiscoveryCheck",
            format!(
                "failing or missing response from {url}: bad status from {url}: {}",
                status.as_u16()
            ),
        ),
    }
}

async fn reconcile(st: &ApiState) -> Result<i64, StoreError> {
    let list = st
        .store
        .list(ListRequest {
            prefix: PREFIX.into(),
            after: None,
            limit: 0,
            revision: 0,
        })
        .await?;
    let mut found: Vec<(Value, i64, Option<Remote>)> = Vec::new();
    for kv in &list.kvs {
        let Ok(obj) = decode_stored(kv) else { continue };
        let spec = &obj["spec"];
        let remote = match spec.get("service").filter(|s| s.is_object()) {
            None => None,
            Some(svc) => match proxy::tls_for(st, spec) {
                Ok(tls) => Some(Remote {
                    name: obj["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                    group: spec["group"].as_str().unwrap_or("").to_owned(),
                    version: spec["version"].as_str().unwrap_or("").to_owned(),
                    service: (
                        svc["namespace"].as_str().unwrap_or("").to_owned(),
                        svc["name"].as_str().unwrap_or("").to_owned(),
                        u16::try_from(svc["port"].as_u64().unwrap_or(443)).unwrap_or(443),
                    ),
                    tls: Arc::new(tls),
                    available: false,
                    resources: Value::Null,
                    priority: spec["groupPriorityMinimum"].as_i64().unwrap_or(0),
                }),
                Err(e) => {
                    tracing::warn!(apiservice = ?obj["metadata"]["name"], error = %e, "APIService skipped");
                    continue;
                }
            },
        };
        found.push((obj, kv.mod_revision, remote));
    }
    // Every remote probed at once: one slow backend does not hold the
    // others' availability back.
    let probes = found.iter().map(|(_, _, r)| async move {
        match r {
            Some(r) => Some(probe(st, r).await),
            None => None,
        }
    });
    let results = futures_util::future::join_all(probes).await;
    let mut remotes = Vec::new();
    let mut writes = Vec::new();
    for ((obj, rev, remote), result) in found.into_iter().zip(results) {
        let cond = match (remote, result) {
            (Some(mut remote), Some(((ok, reason, message), list))) => {
                remote.available = ok;
                remote.resources = list;
                remotes.push(Arc::new(remote));
                (ok, reason, message)
            }
            _ => (
                true,
                "Local",
                "Local APIServices are always available".to_owned(),
            ),
        };
        writes.push((obj, rev, cond));
    }
    install(remotes);
    for (obj, rev, (ok, reason, message)) in writes {
        let status = if ok { "True" } else { "False" };
        let prev = obj
            .pointer("/status/conditions/0")
            .cloned()
            .unwrap_or(Value::Null);
        if prev["status"] == status
            && prev["reason"] == reason
            && prev["message"] == message.as_str()
        {
            continue;
        }
        let since = if prev["status"] == status {
            prev["lastTransitionTime"].clone()
        } else {
            json!(now_rfc3339())
        };
        let mut new = obj.clone();
        new["status"] = json!({"conditions": [{"type": "Available", "status": status,
            "lastTransitionTime": since, "reason": reason, "message": message}]});
        let r = apiservices();
        let key = handlers::key(r, "", obj["metadata"]["name"].as_str().unwrap_or(""));
        match st
            .store
            .update(key, handlers::encode_as(r, &new), Some(rev))
            .await
        {
            Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {}
            Err(e) => tracing::warn!(error = %e, "writing an APIService's status failed"),
        }
    }
    Ok(list.revision)
}
