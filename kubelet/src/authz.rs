//! Who may use the kubelet's API, decided as upstream's kubelet decides it
//! with `--authorization-mode=Webhook`: each request becomes attributes on
//! the Node (`nodes/proxy` for exec, attach, port-forward, container logs
//! and anything else; `nodes/stats`, `nodes/metrics`, `nodes/log`,
//! `nodes/spec` for their paths; the verb from the HTTP method), and the
//! apiserver is asked with a `SubjectAccessReview` for the client
//! certificate's user and groups. Answers are cached (allowed for 5
//! minutes, denied for 30 seconds, the kubelet's defaults), in a bounded
//! table.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::{Api, Client, api::PostParams};

const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
/// Entries kept before the table is emptied.
const MAX_ENTRIES: usize = 4096;

/// What a request asks of the Node: a verb and a subresource.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: &'static str,
    pub subresource: &'static str,
}

/// The attributes of a request, as the kubelet maps them.
pub fn attributes(method: &hyper::Method, path: &str) -> Attributes {
    let verb = match *method {
        hyper::Method::POST => "create",
        hyper::Method::PUT => "update",
        hyper::Method::PATCH => "patch",
        hyper::Method::DELETE => "delete",
        _ => "get",
    };
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let subresource = match first {
        "stats" => "stats",
        "metrics" => "metrics",
        "logs" => "log",
        "spec" => "spec",
        _ => "proxy",
    };
    Attributes { verb, subresource }
}

type Key = (String, Vec<String>, Attributes);

/// The cached answers.
#[derive(Debug, Default)]
pub struct Authorizer {
    cache: Mutex<HashMap<Key, (bool, Instant)>>,
}

impl Authorizer {
    /// Whether `user` in `groups` may do `a` on node `node`: from the
    /// cache, else from the apiserver. An apiserver that cannot answer
    /// denies (the error says why).
    pub async fn allowed(
        &self,
        client: &Client,
        node: &str,
        user: &str,
        groups: &[String],
        a: &Attributes,
    ) -> Result<bool, kube::Error> {
        let key = (user.to_owned(), groups.to_vec(), a.clone());
        let now = Instant::now();
        if let Some((ok, until)) = self.lock().get(&key)
            && *until > now
        {
            return Ok(*ok);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.to_owned()),
                groups: Some(groups.to_vec()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(a.verb.into()),
                    resource: Some("nodes".into()),
                    subresource: Some(a.subresource.into()),
                    name: Some(node.into()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let ok = answer.status.is_some_and(|s| s.allowed);
        let mut cache = self.lock();
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(key, (ok, now + if ok { ALLOWED_TTL } else { DENIED_TTL }));
        Ok(ok)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (bool, Instant)>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use hyper::Method;

    use super::*;

    #[test]
    fn paths_map_to_node_subresources_as_the_kubelet_maps_them() {
        let a = |m: &Method, p: &str| {
            let a = attributes(m, p);
            (a.verb, a.subresource)
        };
        assert_eq!(a(&Method::POST, "/exec/ns/p/c"), ("create", "proxy"));
        assert_eq!(a(&Method::GET, "/exec/ns/p/c"), ("get", "proxy"));
        assert_eq!(a(&Method::GET, "/containerLogs/ns/p/c"), ("get", "proxy"));
        assert_eq!(a(&Method::POST, "/portForward/ns/p"), ("create", "proxy"));
        assert_eq!(a(&Method::GET, "/metrics/resource"), ("get", "metrics"));
        assert_eq!(a(&Method::GET, "/stats/summary"), ("get", "stats"));
        assert_eq!(a(&Method::GET, "/logs/messages"), ("get", "log"));
        assert_eq!(a(&Method::GET, "/spec/"), ("get", "spec"));
        assert_eq!(a(&Method::DELETE, "/pods"), ("delete", "proxy"));
    }
}
