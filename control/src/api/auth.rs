//! Authentication: client certificates (CN = user, O = groups) and bearer
//! tokens from a static token file.
//!
//! Anonymous requests are refused except for the health and version
//! endpoints; what authenticated users may do is decided by
//! [`super::rbac`].

use std::{collections::HashMap, path::Path};

use axum::{
    http::{HeaderMap, StatusCode},
    response::{IntoResponse as _, Response},
};
use serde_json::{Value, json};

use super::{ApiState, rbac::Attributes, status::ApiError};

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

tokio::task_local! {
    /// The name of the user whose request is being served (after
    /// impersonation), for the admission plugins that look at it, as
    /// kube-apiserver carries it in the request's context.
    static CALLER: User;
}

/// Runs `f` as the serving of a request by `user`.
pub async fn as_caller<F: Future>(user: &User, f: F) -> F::Output {
    CALLER.scope(user.clone(), f).await
}

/// The user whose request is being served; `None` for the server's own
/// calls.
pub fn caller() -> Option<String> {
    CALLER.try_with(|u| u.name.clone()).ok()
}

/// The whole user (name and groups) whose request is being served.
pub fn caller_user() -> Option<User> {
    CALLER.try_with(Clone::clone).ok()
}

impl User {
    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }
}

/// The static token file: CSV lines `token,user,uid[,"group1,group2"]`, as
/// kube-apiserver's `--token-auth-file`. Tokens are kept and looked up by
/// their SHA-256, so that how long a lookup takes says nothing about how
/// much of a guess was right.
#[derive(Clone, Debug, Default)]
pub struct Tokens(HashMap<[u8; 32], User>);

/// The SHA-256 of a secret, for comparisons that leak nothing of it.
pub fn digest(secret: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[derive(Debug, thiserror::Error)]
#[error("token file {path}, line {line}: {reason}")]
pub struct TokenFileError {
    pub path: String,
    pub line: usize,
    pub reason: String,
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let err = |line, reason: String| TokenFileError {
            path: path.display().to_string(),
            line,
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(0, e.to_string()))?;
        let mut map = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(4, ',');
            let (Some(token), Some(user), Some(_uid)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(err(i + 1, "want token,user,uid[,\"groups\"]".into()));
            };
            let mut groups: Vec<String> = parts
                .next()
                .map(|g| {
                    g.trim_matches('"')
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            groups.push("system:authenticated".into());
            map.insert(
                digest(token),
                User {
                    name: user.to_owned(),
                    groups,
                },
            );
        }
        Ok(Self(map))
    }

    pub fn insert(&mut self, token: &str, user: User) {
        self.0.insert(digest(token), user);
    }

    pub fn lookup(&self, headers: &HeaderMap) -> Option<User> {
        self.0.get(&digest(bearer_token(headers)?)).cloned()
    }
}

/// The token of an `Authorization: Bearer <token>` header, read as
/// kube-apiserver's `bearertoken` authenticator reads it: the scheme in any
/// case (the official Python client sends `bearer`), one space, the token
/// up to the next space; `None` for another scheme or an empty token.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let h = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let mut parts = h.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `SelfSubjectAccessReview` (what `kubectl auth can-i` asks about the
/// caller) and `SubjectAccessReview` (what a kubelet asks about its own
/// clients: `spec.user` and `spec.groups`), answered by the same
/// authorizer that guards requests. The caller was already authorized to
/// create the review.
pub async fn access_review(
    st: &ApiState,
    caller: &User,
    r: &'static super::resources::Resource,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let ct = super::handlers::content_type(headers, "application/json");
    let mut obj = super::object::decode(body, ct)?;
    super::object::check_kind(r, &mut obj)?;
    super::object::typed_check(r, &obj)?;
    let spec = &obj["spec"];
    let subject = if r.builtin_kind() == "SubjectAccessReview" {
        let name = spec["user"].as_str().unwrap_or_default().to_owned();
        let groups: Vec<String> = spec["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect();
        if name.is_empty() && groups.is_empty() {
            return Err(ApiError::invalid(
                r,
                "",
                vec![super::status::Cause::invalid(
                    "spec.user",
                    &json!(""),
                    "at least one of user or group must be specified",
                )],
            ));
        }
        User { name, groups }
    } else {
        caller.clone()
    };
    let user = &subject;
    let s = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let attrs = if let Some(ra) = spec.get("resourceAttributes") {
        let mut a = Attributes::resource(
            &s(ra, "verb"),
            &s(ra, "group"),
            &s(ra, "resource"),
            &s(ra, "subresource"),
            &s(ra, "namespace"),
            &s(ra, "name"),
        );
        if a.verb.is_empty() {
            return Err(ApiError::invalid(
                r,
                "",
                vec![super::status::Cause::required(
                    "spec.resourceAttributes.verb",
                )],
            ));
        }
        if let Some(res) = a.resource.as_mut()
            && res.resource == "namespaces"
            && res.namespace.is_empty()
        {
            res.namespace.clone_from(&res.name);
        }
        a
    } else if let Some(nra) = spec.get("nonResourceAttributes") {
        Attributes::non_resource(&s(nra, "verb"), &s(nra, "path"))
    } else {
        return Err(ApiError::invalid(
            r,
            "",
            vec![super::status::Cause::required("spec.resourceAttributes")],
        ));
    };
    obj["status"] = match st.authz.authorize(st.store.as_ref(), user, &attrs).await {
        Ok(reason) => json!({"allowed": true, "reason": reason}),
        Err(_) => json!({"allowed": false}),
    };
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&obj).expect("serialisable"),
    )
        .into_response())
}

/// What a caller must be allowed, each with the object a refusal names.
type Checks = Vec<(Attributes, String)>;

/// The `Impersonate-*` headers of a request (`kubectl --as`, `--as-group`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Impersonation {
    users: Vec<String>,
    groups: Vec<String>,
    uids: Vec<String>,
    extras: Vec<(String, String)>,
}

impl Impersonation {
    fn of(headers: &HeaderMap) -> Self {
        let values = |name: &str| -> Vec<String> {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_owned)
                .collect()
        };
        Self {
            users: values("impersonate-user"),
            groups: values("impersonate-group"),
            uids: values("impersonate-uid"),
            extras: headers
                .iter()
                .filter_map(|(k, v)| {
                    let key = k.as_str().strip_prefix("impersonate-extra-")?;
                    Some((key.to_owned(), v.to_str().ok()?.to_owned()))
                })
                .collect(),
        }
    }

    /// What the caller must be allowed to `impersonate`, as
    /// `(resource attributes, the object named in a refusal)`, and who they
    /// become; `None` when nothing is impersonated.
    fn plan(self) -> Result<Option<(Checks, User)>, ApiError> {
        let [name] = &self.users[..] else {
            if self.users.is_empty()
                && (!self.groups.is_empty() || !self.uids.is_empty() || !self.extras.is_empty())
            {
                return Err(ApiError::bad_request(
                    "requested impersonation of groups, a uid or extra fields without impersonating a user",
                ));
            }
            if self.users.is_empty() {
                return Ok(None);
            }
            return Err(ApiError::bad_request(
                "only one Impersonate-User may be given",
            ));
        };
        let imp = |group: &str, resource: &str, sub: &str, ns: &str, obj: &str| {
            Attributes::resource("impersonate", group, resource, sub, ns, obj)
        };
        let mut checks = Vec::new();
        let mut groups = self.groups.clone();
        if let Some((ns, sa)) = name
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
        {
            checks.push((
                imp("", "serviceaccounts", "", ns, sa),
                format!("serviceaccounts {sa:?}"),
            ));
            if self.groups.is_empty() {
                groups.push("system:serviceaccounts".into());
                groups.push(format!("system:serviceaccounts:{ns}"));
            }
        } else {
            checks.push((imp("", "users", "", "", name), format!("users {name:?}")));
        }
        for g in &self.groups {
            checks.push((imp("", "groups", "", "", g), format!("groups {g:?}")));
        }
        for u in &self.uids {
            let a = imp("authentication.k8s.io", "uids", "", "", u);
            checks.push((a, format!("uids.authentication.k8s.io {u:?}")));
        }
        for (k, v) in &self.extras {
            let a = imp("authentication.k8s.io", "userextras", k, "", v);
            checks.push((a, format!("userextras.authentication.k8s.io {v:?}")));
        }
        let (authn, unauthn) = ("system:authenticated", "system:unauthenticated");
        if name == "system:anonymous" {
            if !groups.iter().any(|g| g == unauthn) {
                groups.push(unauthn.into());
            }
        } else if !groups.iter().any(|g| g == authn || g == unauthn) {
            groups.push(authn.into());
        }
        Ok(Some((
            checks,
            User {
                name: name.clone(),
                groups,
            },
        )))
    }
}

/// kube-apiserver's impersonation filter: with `Impersonate-User` (and
/// `-Group`, `-Uid`, `-Extra-*`) the request is served as that user once
/// the caller is allowed to `impersonate` each part; otherwise 403 naming
/// what was refused. Uids and extra fields are checked but not carried
/// (users here have a name and groups).
pub async fn impersonate(
    st: &ApiState,
    caller: User,
    headers: &HeaderMap,
) -> Result<User, ApiError> {
    let Some((checks, user)) = Impersonation::of(headers).plan()? else {
        return Ok(caller);
    };
    for (attrs, what) in checks {
        if let Err(why) = st.authz.authorize(st.store.as_ref(), &caller, &attrs).await {
            let message = format!("{what} is forbidden: {why}");
            return Err(match &attrs.resource {
                Some(r) => ApiError::forbidden_about(&r.group, &r.resource, &r.name, message),
                None => ApiError::forbidden(message),
            });
        }
    }
    tracing::debug!(caller = %caller.name, user = %user.name, "impersonating");
    Ok(user)
}

/// `SelfSubjectReview` (`kubectl auth whoami`): the caller as the
/// apiserver authenticated them, in `status.userInfo`.
pub fn self_review(
    caller: &User,
    r: &'static super::resources::Resource,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let ct = super::handlers::content_type(headers, "application/json");
    let mut obj = super::object::decode(body, ct)?;
    super::object::check_kind(r, &mut obj)?;
    super::object::typed_check(r, &obj)?;
    let out = json!({
        "kind": "SelfSubjectReview",
        "apiVersion": format!("authentication.k8s.io/{}", r.version),
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": {"username": caller.name, "groups": caller.groups}},
    });
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&out).expect("serialisable"),
    )
        .into_response())
}

/// The user behind a bearer token: a static token, or a service-account
/// JWT whose service account (and bound pod) still exist with the uids in it.
pub async fn bearer_user(st: &ApiState, headers: &HeaderMap) -> Option<User> {
    if let Some(u) = st.config.tokens.lookup(headers) {
        return Some(u);
    }
    let token = bearer_token(headers)?;
    if super::join::parse_token(token).is_some() {
        return super::join::bootstrap_user(st, token).await;
    }
    let signer = st.config.service_accounts.as_ref()?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = match signer.verify(token, now, &[super::satoken::ISSUER]) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "bearer token refused");
            return None;
        }
    };
    let exists = |resource: &str, name: &str, uid: &str| {
        let r = super::resources::by_kind("", resource).expect("served");
        let key = super::handlers::key(r, &claims.namespace, name);
        let uid = uid.to_owned();
        async move {
            match st.store.get(&key).await {
                Ok((Some(kv), _)) => serde_json::from_slice::<Value>(&kv.value).is_ok_and(|o| {
                    o.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid.as_str())
                        && o.pointer("/metadata/deletionTimestamp").is_none()
                }),
                _ => false,
            }
        }
    };
    if !exists(
        "ServiceAccount",
        &claims.service_account,
        &claims.service_account_uid,
    )
    .await
    {
        tracing::debug!(sa = %claims.service_account, ns = %claims.namespace, "token of a deleted service account");
        return None;
    }
    if let Some((pod, uid)) = &claims.pod
        && !exists("Pod", pod, uid).await
    {
        tracing::debug!(%pod, ns = %claims.namespace, "token bound to a deleted pod");
        return None;
    }
    Some(User {
        name: format!(
            "system:serviceaccount:{}:{}",
            claims.namespace, claims.service_account
        ),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{}", claims.namespace),
            "system:authenticated".into(),
        ],
    })
}

/// `POST serviceaccounts/{name}/token` (TokenRequest): a token for the
/// service account, optionally bound to a pod, for the asked audiences
/// and lifetime (default 1 h, at least 10 min, at most 48 h).
pub async fn token_request(
    st: &ApiState,
    t: &super::handlers::Target,
    headers: &HeaderMap,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let Some(signer) = st.config.service_accounts.as_ref() else {
        return Err(ApiError::unavailable(
            "this server issues no service-account tokens",
        ));
    };
    let mut req = super::handlers::decode_kind(headers, body, "TokenRequest")?;
    let (sa, _) = super::handlers::get_object(st, t, name).await?;
    let spec = req.get("spec").cloned().unwrap_or_else(|| json!({}));
    let seconds = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if seconds < 600 {
        return Err(ApiError::invalid(
            t.resource,
            name,
            vec![super::status::Cause::invalid(
                "spec.expirationSeconds",
                &json!(seconds),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    let seconds = seconds.min(48 * 3600);
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![super::satoken::ISSUER.to_owned()]);
    let pod = match spec.get("boundObjectRef") {
        Some(b) if b.get("kind").and_then(Value::as_str) == Some("Pod") => {
            let pod_name = b.get("name").and_then(Value::as_str).unwrap_or_default();
            let pods = super::resources::by_kind("", "Pod").expect("served");
            let pt = super::handlers::Target {
                resource: pods,
                namespace: t.namespace.clone(),
                name: None,
                subresource: None,
            };
            let (p, _) = super::handlers::get_object(st, &pt, pod_name).await?;
            let uid = p
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(want) = b
                .get("uid")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
                && want != uid
            {
                return Err(ApiError::conflict_msg(
                    pods,
                    pod_name,
                    "the pod's uid is not the bound object's",
                ));
            }
            Some((pod_name.to_owned(), uid.to_owned()))
        }
        Some(b) if b.get("kind").is_some() => {
            return Err(ApiError::bad_request("tokens can be bound to pods only"));
        }
        _ => None,
    };
    let claims = super::satoken::Claims {
        namespace: t.namespace.clone(),
        service_account: name.to_owned(),
        service_account_uid: sa
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        pod,
    };
    let now = time::OffsetDateTime::now_utc();
    let token = signer.issue(&claims, &audiences, now.unix_timestamp(), seconds);
    let exp = now + time::Duration::seconds(seconds);
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    req["metadata"] = json!({"name": name, "namespace": t.namespace,
        "creationTimestamp": super::handlers::rfc3339(now)});
    req["spec"] = json!({"audiences": audiences, "expirationSeconds": seconds,
        "boundObjectRef": spec.get("boundObjectRef").cloned().unwrap_or(Value::Null)});
    req["status"] = json!({"token": token,
        "expirationTimestamp": super::handlers::rfc3339(exp)});
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&req).expect("serialisable"),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn plan(pairs: &[(&str, &str)]) -> Result<Option<(Vec<String>, User)>, u16> {
        Impersonation::of(&headers(pairs))
            .plan()
            .map(|p| {
                p.map(|(checks, u)| {
                    let named = checks
                        .into_iter()
                        .map(|(a, what)| {
                            let r = a.resource.unwrap();
                            assert_eq!(a.verb, "impersonate");
                            format!("{}/{}/{}: {what}", r.group, r.resource, r.namespace)
                        })
                        .collect();
                    (named, u)
                })
            })
            .map_err(|e| e.code.as_u16())
    }

    #[test]
    fn bearer_tokens_are_read_as_kube_apiserver_reads_them() {
        let token = |v: &str| {
            let h = headers(&[("authorization", v)]);
            bearer_token(&h).map(str::to_owned)
        };
        assert_eq!(token("Bearer abc"), Some("abc".into()));
        assert_eq!(token("bearer abc"), Some("abc".into()));
        assert_eq!(token("BEARER abc extra"), Some("abc".into()));
        assert_eq!(token("  Bearer abc  "), Some("abc".into()));
        assert_eq!(token("Bearer  abc"), None);
        assert_eq!(token("Bearer "), None);
        assert_eq!(token("Bearer"), None);
        assert_eq!(token("Basic abc"), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn impersonation_as_kube_apiserver_plans_it() {
        assert_eq!(plan(&[]), Ok(None));
        let (checks, u) = plan(&[("impersonate-user", "jane")]).unwrap().unwrap();
        assert_eq!(checks, [r#"/users/: users "jane""#]);
        assert_eq!(u.groups, ["system:authenticated"]);
        let (checks, u) = plan(&[
            ("impersonate-user", "jane"),
            ("impersonate-group", "devs"),
            ("impersonate-group", "system:unauthenticated"),
            ("impersonate-uid", "1234"),
            ("impersonate-extra-scopes", "view"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(checks.len(), 5, "{checks:?}");
        assert!(
            checks.contains(
                &r#"authentication.k8s.io/userextras/: userextras.authentication.k8s.io "view""#
                    .to_string()
            )
        );
        assert_eq!(u.groups, ["devs", "system:unauthenticated"]);
        let (checks, u) = plan(&[("impersonate-user", "system:serviceaccount:ci:robot")])
            .unwrap()
            .unwrap();
        assert_eq!(checks, [r#"/serviceaccounts/ci: serviceaccounts "robot""#]);
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ci",
                "system:authenticated"
            ]
        );
        let (_, u) = plan(&[("impersonate-user", "system:anonymous")])
            .unwrap()
            .unwrap();
        assert_eq!(u.groups, ["system:unauthenticated"]);
        // Groups without a user, or two users: refused.
        assert_eq!(plan(&[("impersonate-group", "devs")]), Err(400));
        assert_eq!(
            plan(&[("impersonate-user", "a"), ("impersonate-user", "b")]),
            Err(400)
        );
    }
}
