//! API errors as Kubernetes `Status` objects: the reason, code, message and
//! details (with per-field causes for `422 Invalid`) that clients switch on.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::resources::Resource;
use crate::store::StoreError;

/// One field-level cause of an `Invalid` error (shared with the kubelet,
/// which checks pods by the same rules).
pub use rudder_k8s::field::FieldError as Cause;

/// Kubernetes' `metav1.StatusReason`s: the machine-readable `reason` of a
/// `Status`, which clients branch on (`IsAlreadyExists`, `IsConflict` …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Unauthorized,
    Forbidden,
    NotFound,
    AlreadyExists,
    Conflict,
    Gone,
    Invalid,
    ServerTimeout,
    Timeout,
    TooManyRequests,
    BadRequest,
    MethodNotAllowed,
    NotAcceptable,
    RequestEntityTooLarge,
    UnsupportedMediaType,
    InternalError,
    Expired,
    ServiceUnavailable,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 18] = [
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::AlreadyExists,
        Self::Conflict,
        Self::Gone,
        Self::Invalid,
        Self::ServerTimeout,
        Self::Timeout,
        Self::TooManyRequests,
        Self::BadRequest,
        Self::MethodNotAllowed,
        Self::NotAcceptable,
        Self::RequestEntityTooLarge,
        Self::UnsupportedMediaType,
        Self::InternalError,
        Self::Expired,
        Self::ServiceUnavailable,
    ];

    /// The reason as a `Status` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "NotFound",
            Self::AlreadyExists => "AlreadyExists",
            Self::Conflict => "Conflict",
            Self::Gone => "Gone",
            Self::Invalid => "Invalid",
            Self::ServerTimeout => "ServerTimeout",
            Self::Timeout => "Timeout",
            Self::TooManyRequests => "TooManyRequests",
            Self::BadRequest => "BadRequest",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::NotAcceptable => "NotAcceptable",
            Self::RequestEntityTooLarge => "RequestEntityTooLarge",
            Self::UnsupportedMediaType => "UnsupportedMediaType",
            Self::InternalError => "InternalError",
            Self::Expired => "Expired",
            Self::ServiceUnavailable => "ServiceUnavailable",
        }
    }

    /// The reason a `Status` (or an admission response) names, if it is
    /// one of Kubernetes'.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API error.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: Reason,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds to wait before retrying (`Retry-After`).
    pub retry_after: Option<u64>,
}

/// A `Status`'s details about one object (its collection when `name` is
/// empty): `{"name", "group", "kind"}`, empty fields left out.
fn details(group: &str, kind: &str, name: &str) -> Value {
    let mut d = json!({ "kind": kind });
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    if !name.is_empty() {
        d["name"] = json!(name);
    }
    d
}

impl ApiError {
    fn new(code: StatusCode, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, r: &Resource, name: &str) -> Self {
        self.details = Some(details(r.group, r.plural, name));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Reason::BadRequest, message)
    }

    pub fn not_found(r: &Resource, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            Reason::NotFound,
            format!("{} {name:?} not found", r.qualified()),
        )
        .with_details(r, name)
    }

    pub fn namespace_not_found(ns: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            Reason::NotFound,
            format!("namespaces {ns:?} not found"),
        )
        .with_details(
            super::resources::by_kind("", "Namespace").expect("namespaces"),
            ns,
        )
    }

    /// What kube-apiserver answers for a path it does not serve
    /// (apimachinery's generic 404, whose details are written empty).
    pub fn path_not_found() -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            Reason::NotFound,
            "the server could not find the requested resource",
        );
        e.details = Some(json!({}));
        e
    }

    pub fn already_exists(r: &Resource, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            Reason::AlreadyExists,
            format!("{} {name:?} already exists", r.qualified()),
        )
        .with_details(r, name)
    }

    pub fn conflict(r: &Resource, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            Reason::Conflict,
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; \
                 please apply your changes to the latest version and try again",
                r.qualified()
            ),
        )
        .with_details(r, name)
    }

    pub fn conflict_msg(r: &Resource, name: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, Reason::Conflict, message).with_details(r, name)
    }

    #[allow(
        clippy::needless_pass_by_value,
        reason = "callers build the causes for this call"
    )]
    pub fn invalid(r: &Resource, name: &str, causes: Vec<Cause>) -> Self {
        Self::invalid_of(r.group, r.kind, name, &causes)
    }

    /// An invalid object of kind `kind` in API group `group` (which need
    /// not be a served resource: `DeleteOptions.meta.k8s.io`), as
    /// `errors.NewInvalid` renders it.
    pub fn invalid_of(group: &str, kind: &str, name: &str, causes: &[Cause]) -> Self {
        let rendered: Vec<String> = causes.iter().map(ToString::to_string).collect();
        let message = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let what = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let mut d = json!({ "kind": kind });
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        if !name.is_empty() {
            d["name"] = json!(name);
        }
        d["causes"] = causes
            .iter()
            .map(|c| json!({ "reason": c.reason(), "message": c.message, "field": c.field }))
            .collect();
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            Reason::Invalid,
            format!("{what} {name:?} is invalid: {message}"),
        );
        e.details = Some(d);
        e
    }

    pub fn new_unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, Reason::Invalid, message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Reason::MethodNotAllowed,
            message,
        )
    }

    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reason::UnsupportedMediaType,
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {ct:?})"
            ),
        )
    }

    /// A refusal by an admission webhook: its code (400 when it gave none)
    /// and reason, with upstream's `admission webhook "…" denied the
    /// request` message.
    pub fn denied(code: u16, reason: &str, message: String) -> Self {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
        // Kubernetes' reasons (`metav1.StatusReason`); another is shown
        // as the code's own.
        let reason = Reason::from_name(reason).unwrap_or(match status {
            StatusCode::FORBIDDEN => Reason::Forbidden,
            StatusCode::UNPROCESSABLE_ENTITY => Reason::Invalid,
            StatusCode::CONFLICT => Reason::Conflict,
            StatusCode::NOT_FOUND => Reason::NotFound,
            StatusCode::INTERNAL_SERVER_ERROR => Reason::InternalError,
            _ => Reason::BadRequest,
        });
        Self::new(status, reason, message)
    }

    /// A strategic merge patch of a custom kind, which has no patch
    /// strategies to go by (kube-apiserver's words).
    pub fn no_strategic_merge() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reason::UnsupportedMediaType,
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::RequestEntityTooLarge,
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// `413` with kube-apiserver's message for the limit that was hit.
    pub fn too_large_message(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::RequestEntityTooLarge,
            message,
        )
    }

    /// An object the store will not hold (over 1.5 MiB encoded).
    pub fn too_large_object(size: usize, limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::RequestEntityTooLarge,
            format!(
                "Request entity too large: the object is {size} bytes encoded, the limit is {limit}"
            ),
        )
    }

    /// `429 TooManyRequests`, to retry after `seconds`.
    pub fn too_many_requests(seconds: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            Reason::TooManyRequests,
            "Too many requests, please try again later.",
        );
        e.details = Some(json!({"retryAfterSeconds": seconds}));
        e.retry_after = Some(seconds);
        e
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, Reason::Expired, message)
    }

    /// Forbidden, not about one resource (a path, a namespace's state):
    /// apimachinery's `NewForbidden` with an empty resource, whose details
    /// are written empty (`"details":{}`).
    pub fn forbidden(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::FORBIDDEN, Reason::Forbidden, message);
        e.details = Some(json!({}));
        e
    }

    /// Forbidden on an object outside the registry (what impersonation
    /// names: `users`, `groups`, `uids`, `userextras`), its details as
    /// `NewForbidden` writes them from the request's attributes.
    pub fn forbidden_about(group: &str, resource: &str, name: &str, message: String) -> Self {
        let mut e = Self::new(StatusCode::FORBIDDEN, Reason::Forbidden, message);
        e.details = Some(details(group, resource, name));
        e
    }

    /// Forbidden on `r` (its collection when `name` is empty), as
    /// apimachinery's `NewForbidden` words it and names it in the details.
    pub fn forbidden_on(r: &Resource, name: &str, why: impl std::fmt::Display) -> Self {
        let what = r.qualified();
        let message = if name.is_empty() {
            format!("{what} is forbidden: {why}")
        } else {
            format!("{what} {name:?} is forbidden: {why}")
        };
        Self::new(StatusCode::FORBIDDEN, Reason::Forbidden, message).with_details(r, name)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            Reason::Unauthorized,
            "Unauthorized",
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Reason::InternalError,
            message,
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::ServiceUnavailable,
            message,
        );
        e.retry_after = Some(1);
        e
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::GATEWAY_TIMEOUT, Reason::Timeout, message);
        e.retry_after = Some(1);
        e
    }

    /// A store error about object `name` of `r`.
    pub fn from_store(e: StoreError, r: &Resource, name: &str) -> Self {
        match e {
            StoreError::TooLarge { size, limit } => Self::too_large_object(size, limit),
            e @ StoreError::NoSpace { .. } => Self::internal(e.to_string()),
            StoreError::AlreadyExists(_) => Self::already_exists(r, name),
            StoreError::NotFound(_) => Self::not_found(r, name),
            StoreError::Conflict { .. } => Self::conflict(r, name),
            StoreError::Compacted { requested, oldest } => Self::gone(format!(
                "too old resource version: {requested} ({})",
                oldest - 1
            )),
            StoreError::FutureRevision { requested, .. } => {
                Self::timeout(format!("Too large resource version: {requested}"))
            }
            StoreError::Unavailable(m) => Self::unavailable(format!("storage unavailable: {m}")),
            StoreError::WatchLagged => Self::gone("watch fell behind; relist"),
            StoreError::Internal(m) => Self::internal(format!("storage error: {m}")),
        }
    }

    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason.as_str(),
            "code": self.code.as_u16(),
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// A `Status` with its fields in kube-apiserver's order (some clients
/// compare the text).
#[derive(serde::Serialize)]
struct StatusBody<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: serde_json::Map<String, Value>,
    status: &'static str,
    message: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a Value>,
    code: u16,
}

impl ApiError {
    /// The `Status` as bytes, in kube-apiserver's field order.
    pub fn status_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&StatusBody {
            kind: "Status",
            api_version: "v1",
            metadata: serde_json::Map::new(),
            status: "Failure",
            message: &self.message,
            reason: self.reason.as_str(),
            details: self.details.as_ref(),
            code: self.code.as_u16(),
        })
        .expect("serialisable")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.status_bytes();
        let mut resp = (
            self.code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bodies_keep_kube_apiservers_field_order() {
        let e = ApiError::bad_request("no");
        assert_eq!(
            String::from_utf8(e.status_bytes()).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"no","reason":"BadRequest","code":400}"#
        );
    }
}

#[cfg(test)]
mod reason_tests {
    use super::*;

    #[test]
    fn reasons_spell_as_kubernetes_and_parse_back() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_name(r.as_str()), Some(r));
        }
        assert_eq!(Reason::from_name("Bogus"), None);
        let e = ApiError::denied(409, "Bogus", "no".into());
        assert_eq!((e.code.as_u16(), e.reason), (409, Reason::Conflict));
        assert_eq!(
            ApiError::denied(403, "Forbidden", "no".into()).to_status()["reason"],
            "Forbidden"
        );
    }
}
