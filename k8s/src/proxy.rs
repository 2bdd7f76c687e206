//! What the apiserver's proxy subresources (`pods/proxy`,
//! `services/proxy`) and the kubelet side that carries them agree on: the
//! headers neither passes on (those of one connection, RFC 9110 §7.6.1,
//! and the caller's credentials, which the pod must not see), and the
//! header a kubelet marks its own errors with (the pod could not be
//! reached), so the apiserver answers those with a `Status`.

/// Headers dropped from proxied requests and answers.
pub const DROPPED_HEADERS: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "authorization",
    "host",
];

/// Marks an answer as the kubelet's own, not the pod's.
pub const KUBELET_ERROR_HEADER: &str = "x-rudder-proxy-error";
