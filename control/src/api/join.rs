//! Joining nodes with bootstrap tokens, as kubeadm does it: a token
//! `<id>.<secret>` lives in a Secret `kube-system/bootstrap-token-<id>` of
//! type `bootstrap.kubernetes.io/token`; presented as a bearer token it
//! authenticates `system:bootstrap:<id>` in `system:bootstrappers`. Such a
//! user may `POST /rudder/v1/join` with a node name, and gets back a
//! kubeconfig with a client certificate for `system:node:<name>` in
//! `system:nodes` (what the Node authorizer knows), signed by the cluster CA.
//! (Kubernetes does the last step through CertificateSigningRequests; Rudder
//! signs directly.) A name whose Node exists already is refused: a
//! bootstrap token must not yield another node's identity.
//!
//! A kubelet then asks `POST /rudder/v1/kubelet-serving` for its serving
//! certificate: signed by the cluster CA for its name and the addresses in
//! its Node's status, with the CN `system:node:<name>`, which is what the
//! apiserver requires of a kubelet it connects to.

use axum::http::HeaderMap;
use base64::Engine as _;
use serde_json::{Value, json};

use super::{ApiState, auth::User, status::ApiError};

/// The path of the join call.
pub const JOIN_PATH: &str = "/rudder/v1/join";
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers";
const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";

/// `<id>.<secret>`: 6 and 16 characters of `[a-z0-9]`.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// A fresh token.
pub fn generate_token() -> String {
    use rand::Rng as _;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
            .collect()
    };
    let id = pick(6);
    format!("{id}.{}", pick(16))
}

/// The Secret that makes `token` valid until `expires` (RFC 3339).
pub fn token_secret(token: &str, expires: &str, description: &str) -> Option<Value> {
    let (id, secret) = parse_token(token)?;
    Some(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "type": SECRET_TYPE,
        "stringData": {
            "description": description,
            "token-id": id,
            "token-secret": secret,
            "expiration": expires,
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
        },
    }))
}

/// Checks a bootstrap token against its Secret (already read): the user it
/// authenticates, or why not.
pub fn check(
    secret_obj: &Value,
    token_secret: &str,
    now: time::OffsetDateTime,
) -> Result<User, String> {
    if secret_obj.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
        return Err("not a bootstrap token secret".into());
    }
    let data = |k: &str| -> Option<String> {
        let v = secret_obj
            .pointer(&format!("/data/{k}"))
            .and_then(Value::as_str)?;
        let raw = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
        String::from_utf8(raw).ok()
    };
    let id = data("token-id").ok_or("no token-id")?;
    // Compared as digests: the time taken tells nothing of the secret.
    let stored = data("token-secret").map(|s| super::auth::digest(&s));
    if stored != Some(super::auth::digest(token_secret)) {
        return Err("wrong secret".into());
    }
    if data("usage-bootstrap-authentication").as_deref() != Some("true") {
        return Err("not usable for authentication".into());
    }
    if let Some(exp) = data("expiration") {
        let exp = time::OffsetDateTime::parse(&exp, &time::format_description::well_known::Rfc3339)
            .map_err(|_| "bad expiration")?;
        if now >= exp {
            return Err("expired".into());
        }
    }
    let mut groups = vec![BOOTSTRAP_GROUP.to_owned()];
    for g in data("auth-extra-groups")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
    {
        if g.starts_with("system:bootstrappers:") {
            groups.push(g.to_owned());
        }
    }
    groups.push("system:authenticated".into());
    Ok(User {
        name: format!("system:bootstrap:{id}"),
        groups,
    })
}

/// The user of a bootstrap token, if `token` is one and its Secret allows it.
pub async fn bootstrap_user(st: &ApiState, token: &str) -> Option<User> {
    let (id, secret) = parse_token(token)?;
    let secrets = super::resources::by_kind("", "Secret")?;
    let key = super::handlers::key(secrets, "kube-system", &format!("bootstrap-token-{id}"));
    let (kv, _) = st.store.get(&key).await.ok()?;
    let obj: Value = serde_json::from_slice(&kv?.value).ok()?;
    match check(&obj, secret, time::OffsetDateTime::now_utc()) {
        Ok(u) => Some(u),
        Err(why) => {
            tracing::info!(token_id = id, reason = %why, "bootstrap token refused");
            None
        }
    }
}

/// The Node object named `node`, if it exists.
async fn node_object(st: &ApiState, node: &str) -> Result<Option<Value>, ApiError> {
    let nodes = super::resources::by_kind("", "Node").expect("nodes are served");
    let (kv, _) = st
        .store
        .get(&super::handlers::key(nodes, "", node))
        .await
        .map_err(|e| ApiError::from_store(e, nodes, node))?;
    kv.map(|kv| {
        serde_json::from_slice(&kv.value)
            .map_err(|e| ApiError::internal(format!("stored node {node}: {e}")))
    })
    .transpose()
}

/// `POST /rudder/v1/join` `{"nodeName": "…"}` by a bootstrap token's user:
/// the node's kubeconfig.
pub async fn join(
    st: &ApiState,
    user: &User,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    if !user
        .groups
        .iter()
        .any(|g| g == BOOTSTRAP_GROUP || g == "system:masters")
    {
        return Err(ApiError::forbidden(format!(
            "User {:?} may not join nodes: use a bootstrap token",
            user.name
        )));
    }
    let ct = super::handlers::content_type(headers, "application/json");
    let req = super::object::decode(body, ct)?;
    let node = req
        .get("nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !rudder_k8s::names::is_dns_subdomain(node) {
        return Err(ApiError::bad_request(format!(
            "nodeName {node:?} is not a valid node name (a lowercase DNS subdomain)"
        )));
    }
    if node_object(st, node).await?.is_some() {
        let nodes = super::resources::by_kind("", "Node").expect("nodes are served");
        return Err(ApiError::conflict_msg(
            nodes,
            node,
            format!(
                "node {node:?} exists already: a joining node may not take another's name (delete the Node first to replace it)"
            ),
        ));
    }
    let out = node_kubeconfig(st, node)?;
    tracing::info!(node, by = %user.name, "issued node credentials");
    Ok(out)
}

/// `{"nodeName", "kubeconfig"}`: a kubeconfig for `system:node:<node>`
/// signed by the cluster CA.
fn node_kubeconfig(st: &ApiState, node: &str) -> Result<Value, ApiError> {
    let Some(pki) = st.config.pki.as_ref() else {
        return Err(ApiError::unavailable(
            "this server cannot sign node credentials",
        ));
    };
    let server = format!("https://{}", st.config.advertise);
    let kubeconfig = pki
        .kubeconfig(&server, &format!("system:node:{node}"), &["system:nodes"])
        .map_err(|e| ApiError::internal(format!("signing the credentials of node {node}: {e}")))?;
    Ok(json!({"nodeName": node, "kubeconfig": kubeconfig}))
}

/// `POST /rudder/v1/renew`: a kubelet (`system:node:<name>`, by its
/// client certificate or token) gets a new kubeconfig for the same
/// identity before its certificate ends, as the kubelet's client
/// certificate rotation does through CSRs upstream.
pub fn renew(st: &ApiState, user: &User) -> Result<Value, ApiError> {
    let Some(node) = super::rbac::node_name(user) else {
        return Err(ApiError::forbidden(format!(
            "User {:?} is not a node: only a node renews its credentials here",
            user.name
        )));
    };
    let out = node_kubeconfig(st, node)?;
    tracing::info!(node, "renewed node credentials");
    Ok(out)
}

/// `POST /rudder/v1/kubelet-serving`: a serving certificate (and its
/// key) for the calling kubelet (`system:node:<name>`; a `system:masters`
/// caller names the node in `{"nodeName": …}`), for the node's name and
/// the addresses in its Node's status.
pub async fn kubelet_serving(
    st: &ApiState,
    user: &User,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    let node = match super::rbac::node_name(user) {
        Some(n) => n.to_owned(),
        None if user.groups.iter().any(|g| g == "system:masters") => {
            let ct = super::handlers::content_type(headers, "application/json");
            let req = super::object::decode(body, ct)?;
            req["nodeName"].as_str().unwrap_or_default().to_owned()
        }
        None => {
            return Err(ApiError::forbidden(format!(
                "User {:?} is not a node: only a kubelet gets a kubelet serving certificate",
                user.name
            )));
        }
    };
    let obj = node_object(st, &node)
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("node {node:?} is not registered")))?;
    let names = serving_names(&node, &obj);
    let Some(pki) = st.config.pki.as_ref() else {
        return Err(ApiError::unavailable(
            "this server cannot sign node credentials",
        ));
    };
    let (certificate, key) = pki
        .issue(
            &format!("system:node:{node}"),
            &["system:nodes"],
            &names,
            true,
        )
        .map_err(|e| {
            ApiError::internal(format!("signing node {node}'s serving certificate: {e}"))
        })?;
    tracing::info!(node, ?names, "issued a kubelet serving certificate");
    Ok(json!({"certificate": certificate, "key": key}))
}

/// The names a kubelet's serving certificate holds: the node's name and
/// the addresses its status lists (IP addresses and DNS names only).
fn serving_names(node: &str, obj: &Value) -> Vec<String> {
    let mut names = vec![node.to_owned()];
    for a in obj["status"]["addresses"].as_array().into_iter().flatten() {
        let Some(addr) = a["address"].as_str() else {
            continue;
        };
        let ok =
            addr.parse::<std::net::IpAddr>().is_ok() || rudder_k8s::names::is_dns_subdomain(addr);
        if ok && !names.iter().any(|n| n == addr) {
            names.push(addr.to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(token: &str, expires: &str) -> Value {
        let mut s = token_secret(token, expires, "test").unwrap();
        let data: serde_json::Map<String, Value> = s["stringData"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    json!(base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap())),
                )
            })
            .collect();
        s["data"] = Value::Object(data);
        s
    }

    #[test]
    fn tokens_have_kubeadms_shape() {
        let t = generate_token();
        assert!(parse_token(&t).is_some(), "{t}");
        for bad in [
            "abcdef",
            "abcdef.0123456789abcde",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcdef.x",
        ] {
            assert!(parse_token(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_token_authenticates_until_it_expires() {
        let now = time::OffsetDateTime::now_utc();
        let s = stored("abcdef.0123456789abcdef", "2999-01-01T00:00:00Z");
        let u = check(&s, "0123456789abcdef", now).unwrap();
        assert_eq!(u.name, "system:bootstrap:abcdef");
        assert!(u.groups.contains(&BOOTSTRAP_GROUP.to_owned()));
        assert_eq!(
            check(&s, "0123456789abcdee", now),
            Err("wrong secret".into())
        );
        let old = stored("abcdef.0123456789abcdef", "2000-01-01T00:00:00Z");
        assert_eq!(check(&old, "0123456789abcdef", now), Err("expired".into()));
        let mut opaque = s.clone();
        opaque["type"] = json!("Opaque");
        assert!(check(&opaque, "0123456789abcdef", now).is_err());
    }
}

/// Client side of joining: what `rudder token create` and `rudder join` do.
pub mod client {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};
    use serde_json::{Value, json};

    #[derive(Debug, thiserror::Error)]
    pub enum JoinError {
        #[error("creating the bootstrap token Secret: {0}")]
        CreateSecret(#[source] kube::Error),
        #[error("the CA file holds no PEM certificate")]
        NoCa,
        #[error("server URL {0:?}: {1}")]
        Url(String, String),
        #[error("connecting to {0}: {1}")]
        Client(String, String),
        #[error("the apiserver refused the join: {0}")]
        Refused(String),
    }

    /// Creates a bootstrap token valid for `ttl`; returns `<id>.<secret>`.
    pub async fn create_token(
        client: kube::Client,
        ttl: std::time::Duration,
        description: &str,
    ) -> Result<String, JoinError> {
        let token = super::generate_token();
        let ttl = time::Duration::try_from(ttl).unwrap_or(time::Duration::DAY);
        let expires = super::super::handlers::rfc3339(time::OffsetDateTime::now_utc() + ttl);
        let secret: Secret = serde_json::from_value(
            super::token_secret(&token, &expires, description).expect("a generated token parses"),
        )
        .expect("a valid Secret");
        Api::<Secret>::namespaced(client, "kube-system")
            .create(&PostParams::default(), &secret)
            .await
            .map_err(JoinError::CreateSecret)?;
        Ok(token)
    }

    /// Asks `server` (verified with `ca_pem`) for node `node`'s kubeconfig
    /// with bootstrap `token`.
    pub async fn request_credentials(
        server: &str,
        ca_pem: &[u8],
        token: &str,
        node: &str,
    ) -> Result<String, JoinError> {
        use rustls::pki_types::{CertificateDer, pem::PemObject as _};
        let cas: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(ca_pem)
            .filter_map(Result::ok)
            .map(|c| c.to_vec())
            .collect();
        if cas.is_empty() {
            return Err(JoinError::NoCa);
        }
        let url: axum::http::Uri = server.parse().map_err(|e: axum::http::uri::InvalidUri| {
            JoinError::Url(server.into(), e.to_string())
        })?;
        let mut cfg = kube::Config::new(url);
        cfg.root_cert = Some(cas);
        cfg.read_timeout = Some(std::time::Duration::from_secs(30));
        let client = kube::Client::try_from(cfg)
            .map_err(|e| JoinError::Client(server.into(), e.to_string()))?;
        let req = axum::http::Request::post(super::JOIN_PATH)
            .header(axum::http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&json!({"nodeName": node})).expect("json"))
            .map_err(|e| JoinError::Url(server.into(), e.to_string()))?;
        let text = client.request_text(req).await.map_err(|e| match e {
            kube::Error::Api(s) => JoinError::Refused(format!("{} ({})", s.message, s.code)),
            other => JoinError::Client(server.into(), other.to_string()),
        })?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| JoinError::Refused(e.to_string()))?;
        v.get("kubeconfig")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| JoinError::Refused("no kubeconfig in the answer".into()))
    }
}
