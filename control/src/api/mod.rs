//! The Kubernetes-compatible apiserver: REST paths, discovery, tables,
//! watch streams, over HTTPS with client-certificate and token
//! authentication, on any [`Store`].

pub mod admission;
pub mod aggregator;
pub mod apply;
pub mod auth;
pub mod convert;
pub mod crd;
pub mod csr;
pub mod defaults;
pub mod discovery;
pub mod disruption;
pub mod fields;
pub mod handlers;
pub mod join;
pub mod kinds;
pub mod kubelet;
pub mod limits;
pub mod lists;
pub mod metrics_api;
pub mod object;
pub mod openapi;
pub mod patch;
pub mod pb;
pub mod pki;
pub mod pod_security;
pub mod priority;
pub mod proxy;
pub mod quota;
pub mod rbac;
pub mod registry;
pub mod resources;
pub mod satoken;
pub mod selectors;
pub mod startup;
pub mod status;
pub mod table;
pub mod webhook;

#[cfg(test)]
mod router_tests;

pub use startup::{bootstrap, cluster_dns_service};

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{Query as AxQuery, State},
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use self::{
    admission::ServiceRanges,
    auth::{Tokens, User},
    handlers::{Query, Target},
    resources::Resource,
    status::ApiError,
};
use crate::store::Store;

#[derive(Clone, Debug, Default)]
pub struct ApiConfig {
    pub services: ServiceRanges,
    pub tokens: Tokens,
    /// The address clients are told to use (discovery).
    pub advertise: String,
    /// Signs and checks service-account tokens (none: they are refused).
    pub service_accounts: Option<Arc<satoken::Signer>>,
    /// The cluster CA, for node credentials issued to bootstrap tokens
    /// (none: joining is refused).
    pub pki: Option<Arc<pki::Pki>>,
    /// Requests served at once (kube-apiserver's `--max-requests-inflight`
    /// and `--max-mutating-requests-inflight`, 400 and 200); 0: the
    /// defaults. Long-running requests (watches, exec, logs) do not count.
    pub max_inflight: usize,
    pub max_mutating_inflight: usize,
    /// `--min-request-timeout`: a watch that names no `timeoutSeconds`
    /// ends after this times a random factor in [1, 2), as
    /// kube-apiserver spreads its watches' ends; 0: 1800 s.
    pub min_request_timeout: Duration,
    /// The PodSecurity admission plugin's defaults and exemptions.
    pub pod_security: pod_security::PodSecurityConfig,
}

/// Request counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: std::sync::Mutex<BTreeMap<(String, String, u16), u64>>,
    latency_us_sum: AtomicU64,
    latency_count: AtomicU64,
    writes: std::sync::Mutex<BTreeMap<String, u64>>,
    pub watchers: AtomicI64,
}

impl Metrics {
    pub fn object_written(&self, r: &Resource) {
        *self
            .writes
            .lock()
            .expect("metrics lock")
            .entry(r.qualified())
            .or_default() += 1;
    }

    fn request(&self, verb: &str, resource: &str, code: u16, took: Duration) {
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry((verb.to_owned(), resource.to_owned(), code))
            .or_default() += 1;
        self.latency_us_sum
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self) -> String {
        let mut out = String::from(
            "# HELP apiserver_request_total Requests by verb, resource and HTTP code.\n# TYPE apiserver_request_total counter\n",
        );
        for ((verb, res, code), n) in self.requests.lock().expect("metrics lock").iter() {
            out.push_str(&format!(
                "apiserver_request_total{{verb=\"{verb}\",resource=\"{res}\",code=\"{code}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP apiserver_request_duration_seconds Request latency.\n# TYPE apiserver_request_duration_seconds summary\n");
        out.push_str(&format!(
            "apiserver_request_duration_seconds_sum {}\napiserver_request_duration_seconds_count {}\n",
            self.latency_us_sum.load(Ordering::Relaxed) as f64 / 1e6,
            self.latency_count.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP rudder_store_writes_total Objects written by resource.\n# TYPE rudder_store_writes_total counter\n");
        for (res, n) in self.writes.lock().expect("metrics lock").iter() {
            out.push_str(&format!(
                "rudder_store_writes_total{{resource=\"{res}\"}} {n}\n"
            ));
        }
        out.push_str(&format!(
            "# HELP apiserver_registered_watchers Open watches.\n# TYPE apiserver_registered_watchers gauge\napiserver_registered_watchers {}\n",
            self.watchers.load(Ordering::Relaxed)
        ));
        out
    }
}

/// Everything a request handler needs.
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub config: ApiConfig,
    pub metrics: Metrics,
    pub authz: Arc<rbac::Authorizer>,
    pub(crate) alloc_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

impl ApiState {
    pub fn new(store: Arc<dyn Store>, config: ApiConfig) -> Arc<Self> {
        Arc::new(Self {
            store,
            config,
            metrics: Metrics::default(),
            authz: Arc::default(),
            alloc_lock: tokio::sync::Mutex::new(()),
        })
    }
}

/// The verb and resource of a request, for metrics.
fn describe(method: &Method, t: Option<&Target>, q: &Query) -> (String, String) {
    let Some(t) = t else {
        return (method.as_str().to_lowercase(), String::new());
    };
    let verb = request_verb(method, t, q);
    (verb.to_owned(), t.resource.plural.to_owned())
}

/// Parses a resource path after `/api/v1` or `/apis/G/V`.
fn parse_target(group: &str, version: &str, segs: &[&str]) -> Option<Target> {
    let find = |plural: &str| resources::find(group, version, plural);
    match segs {
        ["namespaces", ns, plural, rest @ ..]
            if find(plural).is_some_and(|r| r.namespaced) && rest.len() <= 2 =>
        {
            Some(Target {
                resource: find(plural)?,
                namespace: (*ns).to_owned(),
                name: rest.first().map(|s| (*s).to_owned()),
                subresource: rest.get(1).map(|s| (*s).to_owned()),
            })
        }
        [plural, rest @ ..] if rest.len() <= 2 => {
            let r = find(plural)?;
            if r.namespaced && !rest.is_empty() {
                return None;
            }
            Some(Target {
                resource: r,
                namespace: String::new(),
                name: rest.first().map(|s| (*s).to_owned()),
                subresource: rest.get(1).map(|s| (*s).to_owned()),
            })
        }
        _ => None,
    }
}

/// `/api` or `/apis`: aggregated discovery when the client asks for it,
/// else the legacy documents.
fn discovery_root(st: &ApiState, core: bool, headers: &HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(v) = discovery::aggregated_version(accept) {
        let ct = format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList");
        let body = serde_json::to_vec(&discovery::aggregated(core, v)).expect("json");
        return (
            [(header::CONTENT_TYPE, ct), (header::VARY, "Accept".into())],
            body,
        )
            .into_response();
    }
    json_ok(&if core {
        discovery::api_versions(&st.config.advertise)
    } else {
        discovery::api_group_list()
    })
}

fn json_ok(v: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).expect("json"),
    )
        .into_response()
}

async fn dispatch(
    State(st): State<Arc<ApiState>>,
    user: axum::Extension<User>,
    method: Method,
    uri: Uri,
    AxQuery(q): AxQuery<Query>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let started = std::time::Instant::now();
    let path = uri.path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let public = matches!(
        segs.as_slice(),
        ["healthz" | "livez" | "readyz" | "version", ..]
    );
    if user.is_anonymous() && !public {
        return ApiError::unauthorized().into_response();
    }
    if let Some(p) = proxy::parse(uri.path()) {
        let resp = proxy::serve(&st, &user, method.clone(), &p, uri.query(), &headers, body)
            .await
            .unwrap_or_else(IntoResponse::into_response);
        st.metrics.request(
            proxy::verb(&method),
            p.plural,
            resp.status().as_u16(),
            started.elapsed(),
        );
        return resp;
    }
    if let ["apis", g, v, rest @ ..] = segs.as_slice()
        && let Some(remote) = aggregator::remote_for(g, v)
    {
        let attrs = aggregator::attributes(&method, g, rest, &q);
        let resp = match st.authz.authorize(st.store.as_ref(), &user, &attrs).await {
            Err(why) => ApiError::forbidden(format!("forbidden: {why}")).into_response(),
            Ok(_) => {
                let pq = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
                aggregator::proxy::serve(&st, &remote, &user, method.clone(), pq, &headers, body)
                    .await
            }
        };
        st.metrics
            .request(&attrs.verb, g, resp.status().as_u16(), started.elapsed());
        return resp;
    }
    let call = Call {
        user: &user,
        method: &method,
        q: &q,
        headers: &headers,
        body: &body,
    };
    let (target, result) = route(&st, &call, &segs).await;
    let resp = result.unwrap_or_else(IntoResponse::into_response);
    let (verb, res) = describe(&method, target.as_ref(), &q);
    st.metrics
        .request(&verb, &res, resp.status().as_u16(), started.elapsed());
    tracing::debug!(user = %user.name, %method, path, status = resp.status().as_u16(), "request");
    resp
}

/// NodeRestriction for creates by a kubelet: the object in the body (not
/// named in the path) must be its own Node or Lease, or a mirror pod of one
/// of its static pods (bound to it, owned by its Node if by anything, and
/// referring to no API object: no service account, secret, configMap or
/// claim).
fn node_restriction(
    node: &str,
    t: &Target,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let kind = t.resource.builtin_kind();
    if t.subresource.is_some() || !matches!(kind, "Node" | "Lease" | "Pod") {
        return Ok(());
    }
    let ct = handlers::content_type(headers, "application/json");
    if kind == "Pod" {
        let pod = object::decode(body, ct).unwrap_or_default();
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let refuse = |why: &str| Err(format!("pod {name:?} is forbidden: {why}"));
        if pod
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(admission::MIRROR_ANNOTATION))
            .is_none()
        {
            return refuse(&format!("node {node:?} can only create mirror pods"));
        }
        if pod["spec"]["nodeName"].as_str() != Some(node) {
            return refuse(&format!(
                "node {node:?} can only create pods with spec.nodeName set to itself"
            ));
        }
        let owners = pod["metadata"]["ownerReferences"].as_array();
        if owners.is_some_and(|o| {
            o.iter()
                .any(|r| r["kind"] != "Node" || r["name"].as_str() != Some(node))
        }) {
            return refuse(&format!(
                "node {node:?} can only create pods with an owner reference set to itself"
            ));
        }
        if let Some(why) = rbac::mirror_pod_refusal(&pod) {
            return refuse(&format!("node {node:?} {why}"));
        }
        return Ok(());
    }
    let name = object::decode(body, ct)
        .ok()
        .and_then(|o| {
            o.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default();
    if name == node {
        Ok(())
    } else {
        Err(format!(
            "node {node:?} is not allowed to create {} {name:?}: only its own",
            t.resource.qualified()
        ))
    }
}

/// The verb authorizers see for a request on a resource.
fn request_verb(method: &Method, t: &Target, q: &Query) -> &'static str {
    verb_of(method, t.name.is_some(), q)
}

/// kube-apiserver's RequestInfo verb: by method, whether one object is
/// named, and `watch`.
pub(crate) fn verb_of(method: &Method, named: bool, q: &Query) -> &'static str {
    let watch = rudder_k8s::query::is_true(q.get("watch").map(String::as_str));
    match (method.as_str(), named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "other",
    }
}

fn resource_attributes(method: &Method, t: &Target, q: &Query) -> rbac::Attributes {
    let name = t.name.clone().unwrap_or_default();
    // A namespace is inside itself, for bindings in it.
    let namespace = if t.resource.builtin_kind() == "Namespace" {
        name.clone()
    } else {
        t.namespace.clone()
    };
    rbac::Attributes::resource(
        request_verb(method, t, q),
        t.resource.group,
        t.resource.plural,
        t.subresource.as_deref().unwrap_or_default(),
        &namespace,
        &name,
    )
}

/// The paths that are not a resource: health, version, discovery,
/// OpenAPI, the service-account issuer's documents, metrics, the node
/// joining endpoints and the `metrics.k8s.io` group; `None` for a resource
/// path (or an unknown one, left to the resource router).
async fn serve_fixed(
    st: &Arc<ApiState>,
    c: &Call<'_>,
    segs: &[&str],
) -> Option<Result<Response, ApiError>> {
    let get = c.method == Method::GET;
    let post = c.method == Method::POST;
    let simple = |v: Option<Value>| match v {
        Some(v) => Ok(json_ok(&v)),
        None => Err(ApiError::path_not_found()),
    };
    let res = match segs {
        ["healthz" | "livez" | "readyz"] if get => match st.store.health().await {
            Ok(()) => Ok("ok".into_response()),
            Err(e) => Err(ApiError::unavailable(format!("[-]etcd failed: {e}"))),
        },
        ["version"] if get => simple(Some(discovery::version())),
        [".well-known", "openid-configuration"] if get => simple(
            st.config
                .service_accounts
                .as_ref()
                .map(|_| satoken::openid_configuration()),
        ),
        ["openid", "v1", "jwks"] if get => match st.config.service_accounts.as_ref() {
            Some(signer) => Ok((
                [
                    (header::CONTENT_TYPE, "application/jwk-set+json"),
                    (header::CACHE_CONTROL, "public, max-age=3600"),
                ],
                signer.jwks().to_string(),
            )
                .into_response()),
            None => Err(ApiError::path_not_found()),
        },
        ["rudder", "v1", "join"] if post => join::join(st, c.user, c.headers, c.body)
            .await
            .map(|v| json_ok(&v)),
        ["rudder", "v1", "renew"] if post => join::renew(st, c.user).map(|v| json_ok(&v)),
        ["rudder", "v1", "kubelet-serving"] if post => {
            join::kubelet_serving(st, c.user, c.headers, c.body)
                .await
                .map(|v| json_ok(&v))
        }
        ["metrics"] if get => Ok((
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            st.metrics.render(),
        )
            .into_response()),
        ["api" | "apis"] if get => Ok(discovery_root(st, segs[0] == "api", c.headers)),
        ["openapi", "v2"] | ["swagger-2.0.0.pb-v1"] if get => Ok((
            [(
                header::CONTENT_TYPE,
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            )],
            discovery::openapi_v2_protobuf(),
        )
            .into_response()),
        ["openapi", "v3"] if get => simple(Some(discovery::openapi_v3_root())),
        ["openapi", "v3", "api", v] if get => simple(discovery::openapi_v3_group_version("", v)),
        ["openapi", "v3", "apis", g, v] if get => simple(discovery::openapi_v3_group_version(g, v)),
        ["api", "v1"] if get => simple(discovery::resource_list("", "v1")),
        ["apis", g] if get => simple(discovery::api_group(g)),
        ["apis", g, v] if get => simple(discovery::resource_list(g, v)),
        ["apis", "metrics.k8s.io", "v1beta1", rest @ ..] if !rest.is_empty() => {
            metrics_api::serve(st, c.user, c.method, rest, c.q).await
        }
        _ => return None,
    };
    Some(res)
}

/// Authorizes a resource request: RBAC (and the Node authorizer), the
/// NodeRestriction admission of kubelets' creates, and RBAC's escalation
/// check on roles and bindings.
async fn authorize_target(st: &Arc<ApiState>, c: &Call<'_>, t: &Target) -> Result<(), ApiError> {
    let attrs = resource_attributes(c.method, t, c.q);
    if let Err(why) = st.authz.authorize(st.store.as_ref(), c.user, &attrs).await {
        let name = t.name.as_deref().unwrap_or_default();
        return Err(ApiError::forbidden_on(t.resource, name, why));
    }
    if let Some(node) = rbac::node_name(c.user)
        && attrs.verb == "create"
    {
        node_restriction(node, t, c.headers, c.body).map_err(ApiError::forbidden)?;
    }
    if t.resource.group == "rbac.authorization.k8s.io"
        && matches!(attrs.verb.as_str(), "create" | "update" | "patch")
        && !c.user.groups.iter().any(|g| g == "system:masters")
    {
        let ct = handlers::content_type(c.headers, "application/json");
        let obj = object::decode(c.body, ct).ok();
        let name = obj
            .as_ref()
            .and_then(|o| o.pointer("/metadata/name"))
            .and_then(Value::as_str)
            .or(t.name.as_deref())
            .unwrap_or_default();
        if let Err(why) = rbac::escalation_check(
            &st.authz.snapshot(),
            c.user,
            &attrs.verb,
            t.resource.plural,
            &t.namespace,
            name,
            obj.as_ref().filter(|_| attrs.verb != "patch"),
        ) {
            return Err(ApiError::forbidden_on(t.resource, name, why));
        }
    }
    Ok(())
}

/// One request as the router sees it, authenticated and read.
#[derive(Clone, Copy)]
struct Call<'a> {
    user: &'a User,
    method: &'a Method,
    q: &'a Query,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

async fn route(
    st: &Arc<ApiState>,
    c: &Call<'_>,
    segs: &[&str],
) -> (Option<Target>, Result<Response, ApiError>) {
    let resource_request = matches!(segs, ["api", "v1", _, ..] | ["apis", _, _, _, ..]);
    if !resource_request {
        let path = format!("/{}", segs.join("/"));
        let attrs = rbac::Attributes::non_resource(&c.method.as_str().to_lowercase(), &path);
        if let Err(why) = st.authz.authorize(st.store.as_ref(), c.user, &attrs).await {
            return (None, Err(ApiError::forbidden(format!("forbidden: {why}"))));
        }
    }
    if let Some(res) = serve_fixed(st, c, segs).await {
        return (None, res);
    }
    let (group, version, rest): (&str, &str, &[&str]) = match segs {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return (None, Err(ApiError::path_not_found())),
    };
    let Some(t) = parse_target(group, version, rest) else {
        return (None, Err(ApiError::path_not_found()));
    };
    if let Err(e) = authorize_target(st, c, &t).await {
        return (Some(t), Err(e));
    }
    if t.resource.kind.ends_with("SubjectAccessReview")
        && c.method == Method::POST
        && t.name.is_none()
    {
        let res = auth::access_review(st, c.user, t.resource, c.headers, c.body).await;
        return (Some(t), res);
    }
    if t.resource.builtin_kind() == "CertificateSigningRequest" {
        match certificate_request(st, c, &t).await {
            Ok(Some(res)) => return (Some(t), Ok(res)),
            Ok(None) => {}
            Err(e) => return (Some(t), Err(e)),
        }
    }
    if t.resource.builtin_kind() == "SelfSubjectReview"
        && c.method == Method::POST
        && t.name.is_none()
    {
        let res = auth::self_review(c.user, t.resource, c.headers, c.body);
        return (Some(t), res);
    }
    let res = auth::as_caller(
        c.user,
        serve_target(st, c.method, &t, c.q, c.headers, c.body),
    )
    .await;
    (Some(t), res)
}

/// What only CertificateSigningRequests need of the caller: a create takes
/// the requester's identity (served here), and an approval needs the
/// `approve` verb on the signer (checked here, then served as usual).
async fn certificate_request(
    st: &Arc<ApiState>,
    c: &Call<'_>,
    t: &Target,
) -> Result<Option<Response>, ApiError> {
    if *c.method == Method::POST && t.name.is_none() {
        let ct = handlers::content_type(c.headers, "application/json");
        let mut obj = object::decode(c.body, ct)?;
        csr::on_create(c.user, &mut obj)?;
        let mut json_headers = c.headers.clone();
        json_headers.insert(
            header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
        let body = serde_json::to_vec(&obj).map_err(|e| ApiError::bad_request(e.to_string()))?;
        return handlers::create(st, t, &json_headers, c.q, &body)
            .await
            .map(Some);
    }
    if t.subresource.as_deref() == Some("approval")
        && matches!(*c.method, Method::PUT | Method::PATCH)
        && let Some(name) = &t.name
    {
        let (cur, _) = handlers::get_object(st, t, name).await?;
        let signer = cur
            .pointer("/spec/signerName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !csr::may_approve(st, c.user, signer).await {
            return Err(ApiError::forbidden(format!(
                "{} {name:?} is forbidden: user not permitted to approve requests with signerName {signer:?}",
                t.resource.qualified()
            )));
        }
    }
    Ok(None)
}

async fn serve_target(
    st: &Arc<ApiState>,
    method: &Method,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let r = t.resource;
    if let Some(sub) = &t.subresource
        && !r.subresources.contains(&sub.as_str())
    {
        return Err(ApiError::path_not_found());
    }
    if r.create_only && !(method == Method::POST && t.name.is_none()) {
        return Err(ApiError::method_not_allowed(format!(
            "{} only supports create",
            r.plural
        )));
    }
    let not_allowed = || {
        Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {})",
            r.plural
        )))
    };
    match (&t.name, t.subresource.as_deref()) {
        (None, _) => match *method {
            Method::GET if rudder_k8s::query::is_true(q.get("watch").map(String::as_str)) => {
                handlers::watch(st.clone(), t.clone(), headers.clone(), q.clone()).await
            }
            Method::GET => handlers::list(st, t, headers, q).await,
            Method::POST => {
                if r.namespaced && t.namespace.is_empty() {
                    return Err(ApiError::method_not_allowed(
                        "POST to a namespaced resource needs a namespace in the path",
                    ));
                }
                handlers::create(st, t, headers, q, body).await
            }
            Method::DELETE => handlers::delete_collection(st, t, headers, q, body).await,
            _ => not_allowed(),
        },
        (Some(name), None | Some("status" | "scale" | "approval" | "ephemeralcontainers")) => {
            match *method {
                Method::GET => handlers::get(st, t, headers, q, name).await,
                Method::PUT => handlers::update(st, t, headers, q, name, body).await,
                Method::PATCH => handlers::patch(st, t, headers, q, name, body).await,
                Method::DELETE if t.subresource.is_none() => {
                    handlers::delete(st, t, headers, q, name, body).await
                }
                _ => not_allowed(),
            }
        }
        (Some(name), Some("binding")) if r.builtin_kind() == "Pod" => match *method {
            Method::POST => handlers::bind(st, t, headers, name, body).await,
            _ => not_allowed(),
        },
        (Some(name), Some("exec" | "attach")) if r.builtin_kind() == "Pod" => {
            kubelet::exec_not_upgraded(st, t, q, name).await
        }
        (Some(_), Some("portforward")) if r.builtin_kind() == "Pod" => Err(ApiError::bad_request(
            "port-forward needs an upgrade to SPDY/3.1 or to a WebSocket (SPDY/3.1+portforward.k8s.io)",
        )),
        (Some(name), Some("log")) if r.builtin_kind() == "Pod" => match *method {
            Method::GET => kubelet::pod_log(st, t, q, name).await,
            _ => not_allowed(),
        },
        (Some(name), Some("eviction")) if r.builtin_kind() == "Pod" => match *method {
            Method::POST => handlers::evict(st, t, headers, name, body).await,
            _ => not_allowed(),
        },
        (Some(name), Some("token")) if r.builtin_kind() == "ServiceAccount" => match *method {
            Method::POST => auth::token_request(st, t, headers, name, body).await,
            _ => not_allowed(),
        },
        (Some(name), Some("finalize")) if r.builtin_kind() == "Namespace" => match *method {
            Method::PUT => handlers::update(st, t, headers, q, name, body).await,
            _ => not_allowed(),
        },
        (Some(_), Some(sub)) => Err(ApiError::method_not_allowed(format!(
            "the subresource {sub:?} of {} is not served yet",
            r.plural
        ))),
    }
}

/// The HTTP router (without TLS; [`serve`] adds it).
pub fn router(st: Arc<ApiState>) -> Router {
    Router::new()
        .fallback(dispatch)
        .layer(axum::extract::DefaultBodyLimit::max(object::MAX_BODY + 1))
        .with_state(st)
}

/// Serves HTTPS on `listener` until `shutdown` resolves. The user of each
/// connection comes from its client certificate; requests without one
/// authenticate by bearer token.
pub async fn serve(
    st: Arc<ApiState>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = router(st.clone());
    let limits = Arc::new(Inflight::new(&st.config));
    tokio::pin!(shutdown);
    loop {
        let (sock, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = sock.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let st = st.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(sock)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let cert_user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| pki::identity_from_cert(c))
                .map(|(name, mut groups)| {
                    groups.push("system:authenticated".into());
                    User { name, groups }
                });
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let cert_user = cert_user.clone();
                    let st = st.clone();
                    let app = app.clone();
                    let limits = limits.clone();
                    async move {
                        let user = match cert_user {
                            Some(u) => u,
                            None => auth::bearer_user(&st, req.headers())
                                .await
                                .unwrap_or_else(User::anonymous),
                        };
                        // Who is asking is known before a byte of the body
                        // is read: an anonymous request for anything but
                        // the public paths ends here.
                        if user.is_anonymous() && !is_public(req.uri().path()) {
                            return Ok(ApiError::unauthorized().into_response());
                        }
                        let user = match auth::impersonate(&st, user, req.headers()).await {
                            Ok(u) => u,
                            Err(e) => return Ok(e.into_response()),
                        };
                        if let Some(kind) = kubelet::stream_upgrade(&req) {
                            return Ok(kubelet::pod_stream(&st, &user, kind, req).await);
                        }
                        let _permit = match limits.admit(&req) {
                            Ok(p) => p,
                            Err(e) => return Ok(e.into_response()),
                        };
                        req.extensions_mut().insert(user);
                        app.oneshot(req.map(Body::new)).await
                    }
                },
            );
            let mut conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client gets 32 s to send a request's header (and an idle
            // connection is closed after as long), as kube-apiserver's
            // ReadHeaderTimeout.
            conn.http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            conn.http2()
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(Some(HEADER_TIMEOUT))
                .max_concurrent_streams(250);
            if let Err(e) = conn
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

/// How long a client may take to send a request's header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(32);

/// The paths anonymous clients may ask for.
fn is_public(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    matches!(first, "healthz" | "livez" | "readyz" | "version")
}

/// The in-flight limits: read-only and mutating requests each have a
/// number of slots; a request that finds none is answered `429` with
/// `Retry-After: 1`, as kube-apiserver's max-in-flight filter does.
struct Inflight {
    readonly: Arc<tokio::sync::Semaphore>,
    mutating: Arc<tokio::sync::Semaphore>,
}

impl Inflight {
    fn new(cfg: &ApiConfig) -> Self {
        let n = |v: usize, d: usize| if v == 0 { d } else { v };
        Self {
            readonly: Arc::new(tokio::sync::Semaphore::new(n(cfg.max_inflight, 400))),
            mutating: Arc::new(tokio::sync::Semaphore::new(n(
                cfg.max_mutating_inflight,
                200,
            ))),
        }
    }

    /// A slot for `req`, none for long-running requests.
    fn admit<B>(
        &self,
        req: &hyper::Request<B>,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ApiError> {
        if long_running(req.uri()) {
            return Ok(None);
        }
        let pool = if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
            &self.readonly
        } else {
            &self.mutating
        };
        Arc::clone(pool)
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| ApiError::too_many_requests(1))
    }
}

/// kube-apiserver's `--long-running-request-regexp`: watches, proxies,
/// logs, exec, attach, port-forward.
fn long_running(uri: &Uri) -> bool {
    let path = uri.path();
    let watch = uri.query().unwrap_or_default().split('&').any(|kv| {
        kv.split_once('=')
            .is_some_and(|(k, v)| k == "watch" && rudder_k8s::query::is_true(Some(v)))
    });
    watch
        || path.split('/').any(|s| s == "watch" || s == "proxy")
        || ["/log", "/exec", "/attach", "/portforward"]
            .iter()
            .any(|s| path.trim_end_matches('/').ends_with(s))
}

/// Where the apiserver listens by default.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:6443";

/// Resolves a listen address for messages.
pub fn display_addr(a: SocketAddr) -> String {
    a.to_string()
}
