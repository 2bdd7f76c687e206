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
/// kube-apiserver's `--token-auth-file`.
#[derive(Clone, Debug, Default)]
pub struct Tokens(HashMap<String, User>);

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
                token.to_owned(),
                User {
                    name: user.to_owned(),
                    groups,
                },
            );
        }
        Ok(Self(map))
    }

    pub fn insert(&mut self, token: String, user: User) {
        self.0.insert(token, user);
    }

    pub fn lookup(&self, headers: &HeaderMap) -> Option<User> {
        let h = headers
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let token = h.strip_prefix("Bearer ")?.trim();
        self.0.get(token).cloned()
    }
}

/// `SelfSubjectAccessReview`: what `kubectl auth can-i` asks, answered by
/// the same authorizer that guards requests.
pub async fn self_subject_access_review(
    st: &ApiState,
    user: &User,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let r = super::resources::by_kind("authorization.k8s.io", "SelfSubjectAccessReview")
        .expect("served");
    let ct = super::handlers::content_type(headers, "application/json");
    let mut obj = super::object::decode(body, ct)?;
    super::handlers::check_kind(r, &mut obj)?;
    let spec = &obj["spec"];
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
