//! `metrics.k8s.io/v1beta1`, what `kubectl top` (and an HPA) reads: node
//! and pod usage computed, as metrics-server does, from two scrapes of each
//! kubelet's `/metrics/resource` (CPU as the rate of its cumulative time
//! over the window between them, memory as the working set of the later).
//! A node's previous scrape is kept; when there is none recent enough, the
//! request takes a second one a second later.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use axum::response::{IntoResponse as _, Response};
use http_body_util::BodyExt as _;
use rudder_k8s::time::now_rfc3339;
use serde_json::{Value, json};

use super::{
    ApiState,
    auth::User,
    handlers::{Query, Target, list_objects},
    rbac, resources,
    status::ApiError,
};

/// One series' values: cumulative CPU seconds and working-set bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Point {
    pub cpu_seconds: f64,
    pub memory: u64,
}

/// What one scrape of `/metrics/resource` says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub node: Point,
    /// By (namespace, pod, container).
    pub containers: HashMap<(String, String, String), Point>,
}

fn labels_of(s: &str) -> HashMap<&str, &str> {
    s.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim(), v.trim().trim_matches('"')))
        })
        .collect()
}

/// Parses the kubelet's resource metrics (Prometheus text).
pub fn parse(text: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, rest) = match line.split_once('{') {
            Some((name, rest)) => match rest.split_once('}') {
                Some((labels, value)) => ((name, Some(labels)), value),
                None => continue,
            },
            None => match line.split_once(' ') {
                Some((name, value)) => ((name, None), value),
                None => continue,
            },
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        match series {
            ("node_cpu_usage_seconds_total", None) => s.node.cpu_seconds = value,
            ("node_memory_working_set_bytes", None) => s.node.memory = value as u64,
            (
                name @ ("container_cpu_usage_seconds_total" | "container_memory_working_set_bytes"),
                Some(l),
            ) => {
                let l = labels_of(l);
                let (Some(ns), Some(pod), Some(c)) =
                    (l.get("namespace"), l.get("pod"), l.get("container"))
                else {
                    continue;
                };
                let p = s
                    .containers
                    .entry((ns.to_string(), pod.to_string(), c.to_string()))
                    .or_default();
                if name.starts_with("container_cpu") {
                    p.cpu_seconds = value;
                } else {
                    p.memory = value as u64;
                }
            }
            _ => {}
        }
    }
    s
}

/// Usage over a window: nanocores and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub nanocores: u64,
    pub bytes: u64,
}

fn rate(prev: Point, cur: Point, window: Duration) -> Usage {
    let secs = window.as_secs_f64().max(1e-3);
    let cpu = ((cur.cpu_seconds - prev.cpu_seconds).max(0.0) / secs * 1e9) as u64;
    Usage {
        nanocores: cpu,
        bytes: cur.memory,
    }
}

/// Node and container usage between two scrapes; containers that were not
/// in the earlier one (just started) are left out, as metrics-server does.
pub fn usage(
    prev: &Scrape,
    cur: &Scrape,
    window: Duration,
) -> (Usage, HashMap<(String, String, String), Usage>) {
    let node = rate(prev.node, cur.node, window);
    let containers = cur
        .containers
        .iter()
        .filter_map(|(k, c)| {
            prev.containers
                .get(k)
                .map(|p| (k.clone(), rate(*p, *c, window)))
        })
        .collect();
    (node, containers)
}

pub fn cpu_quantity(nanocores: u64) -> String {
    format!("{nanocores}n")
}

pub fn memory_quantity(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

struct Sampled {
    at: Instant,
    scrape: Scrape,
}

fn cache() -> &'static Mutex<HashMap<String, Sampled>> {
    static C: OnceLock<Mutex<HashMap<String, Sampled>>> = OnceLock::new();
    C.get_or_init(Mutex::default)
}

async fn scrape(st: &ApiState, node: &Value) -> Result<Scrape, ApiError> {
    let (address, port) = super::kubelet::node_endpoint(node)?;
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address
    };
    let uri = format!("https://{host}:{port}/metrics/resource");
    let body = super::kubelet::get(st, &uri).await?;
    let resp = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(|e| ApiError::unavailable(format!("reading {uri}: {e}")))?;
    Ok(parse(&String::from_utf8_lossy(&resp)))
}

/// The usage of one node over the latest window.
async fn node_usage(
    st: &ApiState,
    node: &Value,
) -> Result<(Duration, Usage, HashMap<(String, String, String), Usage>), ApiError> {
    let name = node["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let cur = scrape(st, node).await?;
    let now = Instant::now();
    let prev = {
        let mut c = cache()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let prev = c
            .remove(&name)
            .filter(|p| now.duration_since(p.at) >= Duration::from_millis(500))
            .filter(|p| now.duration_since(p.at) <= Duration::from_secs(90));
        if prev.is_none() {
            c.insert(
                name.clone(),
                Sampled {
                    at: now,
                    scrape: cur.clone(),
                },
            );
        }
        prev
    };
    let (prev, cur, window) = match prev {
        Some(p) => {
            let window = now.duration_since(p.at);
            cache()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(
                    name.clone(),
                    Sampled {
                        at: now,
                        scrape: cur.clone(),
                    },
                );
            (p.scrape, cur, window)
        }
        None => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let later = scrape(st, node).await?;
            let at = Instant::now();
            cache()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(
                    name.clone(),
                    Sampled {
                        at,
                        scrape: later.clone(),
                    },
                );
            (cur, later, at.duration_since(now))
        }
    };
    let (n, c) = usage(&prev, &cur, window);
    Ok((window, n, c))
}

fn metrics_not_found(kind: &str, name: &str) -> ApiError {
    match resources::by_kind("metrics.k8s.io", kind) {
        Some(r) => ApiError::not_found(r, name),
        None => ApiError::path_not_found(),
    }
}

fn window_str(w: Duration) -> String {
    format!("{:.3}s", w.as_secs_f64())
}

/// `NodeMetrics` of one node, or the list of the nodes `q` selects.
async fn node_metrics(
    st: &Arc<ApiState>,
    nodes_t: &Target,
    name: Option<&str>,
    q: &Query,
) -> Result<Value, ApiError> {
    let q_nodes = match name {
        Some(n) => {
            let mut q2 = Query::new();
            q2.insert("fieldSelector".into(), format!("metadata.name={n}"));
            q2
        }
        None => q.clone(),
    };
    let (nodes, _, _) = list_objects(st, nodes_t, &q_nodes).await?;
    let mut items = vec![];
    for node in &nodes {
        let Ok((window, u, _)) = node_usage(st, node).await else {
            continue;
        };
        items.push(json!({
            "metadata": {"name": node["metadata"]["name"], "creationTimestamp": now_rfc3339(),
                         "labels": node["metadata"]["labels"]},
            "timestamp": now_rfc3339(),
            "window": window_str(window),
            "usage": {"cpu": cpu_quantity(u.nanocores), "memory": memory_quantity(u.bytes)}
        }));
    }
    Ok(match name {
        Some(n) => items
            .into_iter()
            .next()
            .ok_or_else(|| metrics_not_found("NodeMetrics", n))?
            .as_object()
            .cloned()
            .map(|mut o| {
                o.insert("kind".into(), json!("NodeMetrics"));
                o.insert("apiVersion".into(), json!("metrics.k8s.io/v1beta1"));
                Value::Object(o)
            })
            .unwrap_or_default(),
        None => json!({"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
                       "metadata": {}, "items": items}),
    })
}

/// `PodMetrics` of one pod, or the list of the pods `q` selects in `ns`
/// (every namespace when empty), from their nodes' usage.
async fn pod_metrics(
    st: &Arc<ApiState>,
    nodes_t: &Target,
    ns: &str,
    name: Option<&str>,
    q: &Query,
) -> Result<Value, ApiError> {
    let all_nodes = Query::new();
    let pods_t = Target {
        resource: resources::by_kind("", "Pod").ok_or_else(|| ApiError::internal("no Pod"))?,
        namespace: ns.to_owned(),
        name: None,
        subresource: None,
    };
    let mut q_pods = q.clone();
    if let Some(n) = name {
        q_pods.insert("fieldSelector".into(), format!("metadata.name={n}"));
    }
    let (pods, _, _) = list_objects(st, &pods_t, &q_pods).await?;
    let (nodes, _, _) = list_objects(st, nodes_t, &all_nodes).await?;
    let wanted_nodes: std::collections::BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    let mut per_node = HashMap::new();
    for node in nodes.iter().filter(|n| {
        n["metadata"]["name"]
            .as_str()
            .is_some_and(|n| wanted_nodes.contains(n))
    }) {
        if let Ok(u) = node_usage(st, node).await {
            per_node.insert(
                node["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                u,
            );
        }
    }
    let mut items = vec![];
    for pod in &pods {
        let (Some(pns), Some(pname), Some(node)) = (
            pod["metadata"]["namespace"].as_str(),
            pod["metadata"]["name"].as_str(),
            pod["spec"]["nodeName"].as_str(),
        ) else {
            continue;
        };
        let Some((window, _, containers)) = per_node.get(node) else {
            continue;
        };
        let mut cs: Vec<Value> = containers
            .iter()
            .filter(|((n, p, _), _)| n == pns && p == pname)
            .map(|((_, _, c), u)| {
                json!({"name": c, "usage": {"cpu": cpu_quantity(u.nanocores), "memory": memory_quantity(u.bytes)}})
            })
            .collect();
        if cs.is_empty() {
            continue;
        }
        cs.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        items.push(json!({
            "metadata": {"name": pname, "namespace": pns, "creationTimestamp": now_rfc3339(),
                         "labels": pod["metadata"]["labels"]},
            "timestamp": now_rfc3339(),
            "window": window_str(*window),
            "containers": cs
        }));
    }
    Ok(match name {
        Some(n) => {
            let mut one = items
                .into_iter()
                .next()
                .ok_or_else(|| metrics_not_found("PodMetrics", n))?;
            one["kind"] = json!("PodMetrics");
            one["apiVersion"] = json!("metrics.k8s.io/v1beta1");
            one
        }
        None => json!({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
                       "metadata": {}, "items": items}),
    })
}

/// Serves `/apis/metrics.k8s.io/v1beta1/...` (`rest` after the version).
pub async fn serve(
    st: &Arc<ApiState>,
    user: &User,
    method: &axum::http::Method,
    rest: &[&str],
    q: &Query,
) -> Result<Response, ApiError> {
    if method != axum::http::Method::GET {
        return Err(ApiError::method_not_allowed(
            "the metrics API is read-only (get, list)",
        ));
    }
    let (plural, ns, name) = match rest {
        ["nodes"] => ("nodes", "", None),
        ["nodes", n] => ("nodes", "", Some(*n)),
        ["pods"] => ("pods", "", None),
        ["namespaces", ns, "pods"] => ("pods", *ns, None),
        ["namespaces", ns, "pods", n] => ("pods", *ns, Some(*n)),
        _ => return Err(ApiError::path_not_found()),
    };
    let verb = if name.is_some() { "get" } else { "list" };
    let attrs = rbac::Attributes::resource(
        verb,
        "metrics.k8s.io",
        plural,
        "",
        ns,
        name.unwrap_or_default(),
    );
    if let Err(why) = st.authz.authorize(st.store.as_ref(), user, &attrs).await {
        return Err(ApiError::forbidden(format!("forbidden: {why}")));
    }
    let nodes_t = Target {
        resource: resources::by_kind("", "Node").ok_or_else(|| ApiError::internal("no Node"))?,
        namespace: String::new(),
        name: None,
        subresource: None,
    };
    let body = if plural == "nodes" {
        node_metrics(st, &nodes_t, name, q).await?
    } else {
        pod_metrics(st, &nodes_t, ns, name, q).await?
    };
    Ok(axum::Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "# HELP node_cpu_usage_seconds_total x\n# TYPE node_cpu_usage_seconds_total counter\n\
node_cpu_usage_seconds_total 100 1000\nnode_memory_working_set_bytes 2048000 1000\n\
container_cpu_usage_seconds_total{container=\"c\",namespace=\"default\",pod=\"web\"} 10 1000\n\
container_memory_working_set_bytes{container=\"c\",namespace=\"default\",pod=\"web\"} 4096 1000\n\
pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 10 1000\nscrape_error 0\n";

    #[test]
    fn resource_metrics_are_parsed() {
        let s = parse(A);
        assert_eq!(
            s.node,
            Point {
                cpu_seconds: 100.0,
                memory: 2_048_000
            }
        );
        let c = &s.containers[&("default".into(), "web".into(), "c".into())];
        assert_eq!(
            *c,
            Point {
                cpu_seconds: 10.0,
                memory: 4096
            }
        );
        assert_eq!(s.containers.len(), 1);
    }

    #[test]
    fn cpu_is_the_rate_over_the_window() {
        let prev = parse(A);
        let mut cur = prev.clone();
        cur.node.cpu_seconds = 101.0;
        cur.containers
            .get_mut(&("default".into(), "web".into(), "c".into()))
            .unwrap()
            .cpu_seconds = 10.25;
        cur.containers.insert(
            ("default".into(), "new".into(), "c".into()),
            Point::default(),
        );
        let (node, cs) = usage(&prev, &cur, Duration::from_secs(2));
        assert_eq!(
            node.nanocores, 500_000_000,
            "1 s of CPU over 2 s: half a core"
        );
        assert_eq!(
            cs.len(),
            1,
            "a container not in the earlier scrape is left out"
        );
        let u = cs[&("default".into(), "web".into(), "c".into())];
        assert_eq!((u.nanocores, u.bytes), (125_000_000, 4096));
        assert_eq!(cpu_quantity(u.nanocores), "125000000n");
        assert_eq!(memory_quantity(4096), "4Ki");
        // A counter that went backwards (a restarted container) is no usage.
        let (n, _) = usage(&cur, &prev, Duration::from_secs(1));
        assert_eq!(n.nanocores, 0);
    }
}
