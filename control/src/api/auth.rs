//! Authentication: client certificates (CN = user, O = groups) and bearer
//! tokens from a static token file.
//!
//! Not yet done: RBAC and the Node authorizer; every authenticated user is
//! allowed everything for now, and anonymous requests are refused except
//! for the health and version endpoints.

use std::{collections::HashMap, path::Path};

use axum::{
    http::{HeaderMap, StatusCode},
    response::{IntoResponse as _, Response},
};
use serde_json::{Value, json};

use super::{ApiState, status::ApiError};

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

/// `SelfSubjectAccessReview`: what `kubectl auth can-i` asks.
pub async fn self_subject_access_review(
    _st: &ApiState,
    headers: &HeaderMap,
    mut obj: Value,
) -> Result<Response, ApiError> {
    let _ = headers;
    obj["status"] = json!({"allowed": true, "reason": "authenticated users are allowed everything (no RBAC yet)"});
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&obj).expect("serialisable"),
    )
        .into_response())
}
