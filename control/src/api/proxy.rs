//! The proxy subresources: `pods/proxy`, `services/proxy` and
//! `nodes/proxy` (`kubectl proxy` users, dashboards, `kubectl get --raw
//! /api/v1/namespaces/x/services/web:80/proxy/…`). Authorized as
//! kube-apiserver does, with the HTTP method's verb on the `proxy`
//! subresource and the name as written (`web:8080`). The name is
//! `name`, `name:port` or `scheme:name:port`; only `http` is carried.
//!
//! Where kube-apiserver dials the pod's IP itself, Rudder's apiserver asks
//! the pod's kubelet (`/podProxy/…`, see the agent's `kubelet::pod_proxy`),
//! so it needs no route to the pod network; a Service picks one ready
//! endpoint backed by a pod (selectorless Services' bare addresses are not
//! reached), a node is its kubelet's own API; a hostNetwork pod (whose
//! ports are the node's) needs `nodes/proxy` too. The caller's credentials and
//! hop-by-hop headers are not passed on; redirects and links in answers are
//! not rewritten, and upgrades are not carried.

use axum::response::Response;
use http_body_util::BodyExt as _;
use hyper::{HeaderMap, Method};
use rand::seq::IndexedRandom as _;
use rudder_k8s::proxy::{DROPPED_HEADERS as DROPPED, KUBELET_ERROR_HEADER as KUBELET_ERROR};
use serde_json::Value;

use super::{
    ApiState,
    auth::User,
    handlers::{Target, get_object, list_objects},
    kubelet, rbac, resources,
    status::ApiError,
};

/// A proxy request: the kind (plural), namespace, name as written, and the
/// path after `proxy` (with its leading `/`, or empty).
#[derive(Debug, PartialEq, Eq)]
pub struct ProxyPath<'a> {
    pub plural: &'static str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub rest: &'a str,
}

/// Recognizes `/api/v1/namespaces/{ns}/{pods|services}/{name}/proxy[/…]`
/// and `/api/v1/nodes/{name}/proxy[/…]`.
pub fn parse(path: &str) -> Option<ProxyPath<'_>> {
    let after = path.strip_prefix("/api/v1/")?;
    let (plural, namespace, tail) = if let Some(t) = after.strip_prefix("nodes/") {
        ("nodes", "", t)
    } else {
        let t = after.strip_prefix("namespaces/")?;
        let (ns, t) = t.split_once('/')?;
        let (plural, t) = t.split_once('/')?;
        let plural = match plural {
            "pods" => "pods",
            "services" => "services",
            _ => return None,
        };
        (plural, ns, t)
    };
    let (name, t) = tail.split_once('/')?;
    let rest = t.strip_prefix("proxy")?;
    if namespace.contains('/') || name.is_empty() || !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    Some(ProxyPath {
        plural,
        namespace,
        name,
        rest,
    })
}

/// `name`, `name:port`, `scheme:name:port` (upstream's
/// SplitSchemeNamePort).
fn split_name(s: &str) -> Result<(&str, &str, &str), ApiError> {
    let parts: Vec<&str> = s.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [n] => ("", *n, ""),
        [n, p] => ("", *n, *p),
        [s, n, p] => (*s, *n, *p),
        _ => return Err(ApiError::bad_request(format!("invalid name {s:?}"))),
    };
    if name.is_empty() || !matches!(scheme, "" | "http" | "https") {
        return Err(ApiError::bad_request(format!("invalid name {s:?}")));
    }
    if scheme == "https" {
        return Err(ApiError::bad_request(
            "this apiserver's proxy carries http only, not https",
        ));
    }
    Ok((scheme, name, port))
}

pub fn verb(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    }
}

fn target(kind: &str, ns: &str) -> Result<Target, ApiError> {
    Ok(Target {
        resource: resources::by_kind("", kind).ok_or_else(|| ApiError::internal("no such kind"))?,
        namespace: ns.to_owned(),
        name: None,
        subresource: None,
    })
}

async fn object(st: &ApiState, kind: &str, ns: &str, name: &str) -> Result<Value, ApiError> {
    let mut t = target(kind, ns)?;
    t.name = Some(name.to_owned());
    Ok(get_object(st, &t, name).await?.0)
}

fn kubelet_base(node: &Value) -> Result<String, ApiError> {
    let (address, port) = kubelet::node_endpoint(node)?;
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address
    };
    Ok(format!("https://{host}:{port}"))
}

/// The pod and port a Service's proxy request goes to: a ready endpoint of
/// the Service port named (by name or number), chosen at random.
async fn service_backend(
    st: &ApiState,
    ns: &str,
    name: &str,
    port: &str,
) -> Result<(String, u16), ApiError> {
    let svc = object(st, "Service", ns, name).await?;
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let sp = ports
        .iter()
        .find(|p| {
            if port.is_empty() {
                p["name"].as_str().unwrap_or_default().is_empty() || ports.len() == 1
            } else {
                p["name"].as_str() == Some(port)
                    || p["port"].as_u64().is_some_and(|n| n.to_string() == port)
            }
        })
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "no service port {port:?} found for service {name:?}"
            ))
        })?;
    let port_name = sp["name"].as_str().unwrap_or_default();
    let t = Target {
        resource: resources::by_kind("discovery.k8s.io", "EndpointSlice")
            .ok_or_else(|| ApiError::internal("no EndpointSlice"))?,
        namespace: ns.to_owned(),
        name: None,
        subresource: None,
    };
    let slices = list_objects(st, &t, &Default::default()).await?.0;
    let mut choices: Vec<(String, u16)> = Vec::new();
    for s in slices.iter().filter(|s| {
        s.pointer("/metadata/labels/kubernetes.io~1service-name")
            .and_then(Value::as_str)
            == Some(name)
    }) {
        let Some(number) = s["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str().unwrap_or_default() == port_name)
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for e in s["endpoints"].as_array().into_iter().flatten() {
            let ready = e.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false);
            if ready
                && e.pointer("/targetRef/kind").and_then(Value::as_str) == Some("Pod")
                && let Some(pod) = e.pointer("/targetRef/name").and_then(Value::as_str)
            {
                choices.push((pod.to_owned(), number));
            }
        }
    }
    choices.choose(&mut rand::rng()).cloned().ok_or_else(|| {
        ApiError::unavailable(format!("no endpoints available for service {name:?}"))
    })
}

/// Where on which kubelet the request goes: `https://node:port/path`.
async fn resolve(st: &ApiState, user: &User, p: &ProxyPath<'_>) -> Result<String, ApiError> {
    let (_, name, port) = split_name(p.name)?;
    let rest = if p.rest.is_empty() { "/" } else { p.rest };
    if p.plural == "nodes" {
        let node = object(st, "Node", "", name).await?;
        return Ok(format!("{}{rest}", kubelet_base(&node)?));
    }
    let (pod_name, port) = if p.plural == "services" {
        service_backend(st, p.namespace, name, port).await?
    } else {
        let port = if port.is_empty() {
            80
        } else {
            port.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| ApiError::bad_request(format!("invalid port {port:?}")))?
        };
        (name.to_owned(), port)
    };
    let pod = object(st, "Pod", p.namespace, &pod_name).await?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if node_name.is_empty()
        || pod
            .pointer("/status/podIP")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return Err(ApiError::unavailable(format!(
            "pod {pod_name:?} is not running"
        )));
    }
    // A hostNetwork pod's ports are the node's own (the kubelet's, the
    // store's peer port, anything on its loopback): reaching them is access
    // to the node, as for port-forward.
    if pod.pointer("/spec/hostNetwork") == Some(&Value::Bool(true)) {
        let attrs = rbac::Attributes::resource("get", "", "nodes", "proxy", "", node_name);
        if let Err(why) = st.authz.authorize(st.store.as_ref(), user, &attrs).await {
            return Err(ApiError::forbidden(format!(
                "pod {pod_name} uses the host network: proxying into it reaches node {node_name}'s own ports, which needs nodes/proxy: {why}"
            )));
        }
    }
    let node = object(st, "Node", "", node_name).await?;
    Ok(format!(
        "{}/podProxy/{}/{pod_name}/{port}{rest}",
        kubelet_base(&node)?,
        p.namespace
    ))
}

/// Serves one proxy request.
pub async fn serve(
    st: &ApiState,
    user: &User,
    method: Method,
    p: &ProxyPath<'_>,
    query: Option<&str>,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let attrs =
        rbac::Attributes::resource(verb(&method), "", p.plural, "proxy", p.namespace, p.name);
    if let Err(why) = st.authz.authorize(st.store.as_ref(), user, &attrs).await {
        return Err(ApiError::forbidden(format!(
            "{} {:?} is forbidden: {why}",
            p.plural, p.name
        )));
    }
    let mut uri = resolve(st, user, p).await?;
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        uri.push('?');
        uri.push_str(q);
    }
    let mut out = HeaderMap::new();
    for (k, v) in headers {
        let k_str = k.as_str();
        if !DROPPED.contains(&k_str) && !k_str.starts_with("impersonate-") {
            out.append(k, v.clone());
        }
    }
    let answer = kubelet::forward(st, method, &uri, out, body).await?;
    let (mut parts, body) = answer.into_parts();
    if parts.headers.contains_key(KUBELET_ERROR) {
        // The kubelet could not reach the pod: a Status, as kube-apiserver
        // answers a failed dial.
        let text = http_body_util::Limited::new(body, 64 * 1024)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(if parts.status == hyper::StatusCode::BAD_REQUEST {
            ApiError::bad_request(text)
        } else {
            ApiError::unavailable(text)
        });
    }
    for h in DROPPED {
        parts.headers.remove(h);
    }
    Ok(Response::from_parts(parts, axum::body::Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_paths_and_names_parse_as_upstream_spells_them() {
        let p = parse("/api/v1/namespaces/default/services/web:80/proxy/a/b/").unwrap();
        assert_eq!(
            (p.plural, p.namespace, p.name, p.rest),
            ("services", "default", "web:80", "/a/b/")
        );
        let p = parse("/api/v1/nodes/n1/proxy").unwrap();
        assert_eq!((p.plural, p.name, p.rest), ("nodes", "n1", ""));
        assert!(parse("/api/v1/namespaces/default/pods/web/proxyx").is_none());
        assert!(parse("/api/v1/namespaces/default/configmaps/x/proxy").is_none());
        assert!(parse("/api/v1/namespaces/default/pods/web/log").is_none());
        assert_eq!(split_name("web").unwrap(), ("", "web", ""));
        assert_eq!(split_name("web:8080").unwrap(), ("", "web", "8080"));
        assert_eq!(
            split_name("http:web:http").unwrap(),
            ("http", "web", "http")
        );
        assert!(split_name("https:web:443").is_err());
        assert!(split_name("ftp:web:21").is_err());
        assert!(split_name("a:b:c:d").is_err());
        assert!(split_name(":80").is_err());
    }
}
