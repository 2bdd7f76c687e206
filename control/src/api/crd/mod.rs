//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`): the kinds users
//! add at run time.
//!
//! A CRD is stored like any object (its rules are in [`definition`]); the
//! [`controller`] running in every server watches them, decides which names
//! each one gets (first come, first served within a group, as
//! kube-apiserver's naming controller does), writes their `status`, and
//! installs the served versions here, in a registry the request path reads
//! through [`super::resources::find`]. A custom object then takes the same
//! handlers as a built-in one, with its per-kind rules taken from the CRD:
//! the structural schema ([`schema`]: validation, pruning, defaulting), the
//! printer columns ([`columns`]), the `status` and `scale` subresources and
//! the selectable fields.
//!
//! The registry hands out `&'static Resource`s, as the built-in table does,
//! so the rest of the apiserver does not care where a kind came from. Each
//! distinct definition is interned once and kept for the life of the
//! process: memory grows with the number of distinct names ever defined
//! (a few hundred bytes each), never with requests.

pub mod cel;
pub mod columns;
pub mod controller;
pub mod conversion;
pub mod definition;
pub mod openapi;
pub mod schema;

use std::{
    collections::HashSet,
    sync::{Arc, LazyLock, Mutex, RwLock},
};

use serde_json::Value;

use super::resources::{self, Resource};

/// What `scale` reads and writes in a custom object (JSON pointers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// The Scale of a custom object, read where its CRD says.
pub fn scale_of(obj: &Value, paths: &ScalePaths) -> Value {
    let mut status = serde_json::json!({"replicas": obj.pointer(&paths.status_replicas).cloned().unwrap_or(serde_json::json!(0))});
    if let Some(sel) = paths
        .label_selector
        .as_deref()
        .and_then(|p| obj.pointer(p))
        .and_then(Value::as_str)
    {
        status["selector"] = serde_json::json!(sel);
    }
    serde_json::json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"],
                     "uid": obj["metadata"]["uid"], "resourceVersion": obj["metadata"]["resourceVersion"],
                     "creationTimestamp": obj["metadata"]["creationTimestamp"]},
        "spec": {"replicas": obj.pointer(&paths.spec_replicas).cloned().unwrap_or(serde_json::json!(0))},
        "status": status,
    })
}

/// Sets the value at a JSON pointer, making the objects on the way.
pub fn set_pointer(obj: &mut Value, pointer: &str, v: Value) {
    let mut cur = obj;
    let parts: Vec<&str> = pointer.split('/').skip(1).collect();
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = serde_json::json!({});
        }
        let m = cur.as_object_mut().expect("made an object");
        if i == parts.len() - 1 {
            m.insert((*part).to_owned(), v);
            return;
        }
        cur = m
            .entry((*part).to_owned())
            .or_insert_with(|| serde_json::json!({}));
    }
}

/// One served version of a CRD.
#[derive(Debug)]
pub struct CrdVersion {
    pub resource: &'static Resource,
    /// The CRD's name (`widgets.example.com`).
    pub crd: String,
    pub list_kind: String,
    pub storage: bool,
    /// The CRD is being deleted: its objects are going, none may be made.
    pub terminating: bool,
    pub schema: Option<schema::Schema>,
    pub columns: Vec<columns::Column>,
    pub scale: Option<ScalePaths>,
    /// `selectableFields`, as dotted paths (`spec.color`).
    pub selectable: Vec<String>,
    /// The warning sent with every request to a deprecated version.
    pub deprecation: Option<String>,
    /// The version's `openAPIV3Schema` as written (for `/openapi/v3`).
    pub source: Option<Value>,
    /// The CRD's conversion webhook, if it has one (or why it cannot be
    /// called: every conversion then fails).
    pub conversion: Option<Arc<Result<conversion::Webhook, String>>>,
}

type Served = Arc<Vec<Arc<CrdVersion>>>;

static REGISTRY: LazyLock<RwLock<Served>> = LazyLock::new(RwLock::default);

/// The versions served now.
pub fn served() -> Served {
    REGISTRY.read().expect("crd registry").clone()
}

/// Replaces the served versions.
pub fn install(versions: Vec<Arc<CrdVersion>>) {
    let custom = versions
        .iter()
        .map(|v| resources::Custom {
            resource: v.resource,
            storage: v.storage,
        })
        .collect();
    *REGISTRY.write().expect("crd registry") = Arc::new(versions);
    // Then the routing table: a kind is found there only once its
    // definition is here.
    resources::install_custom(custom);
}

/// The served version `group`/`version` named `plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<Arc<CrdVersion>> {
    served()
        .iter()
        .find(|v| {
            v.resource.group == group
                && v.resource.version == version
                && v.resource.plural == plural
        })
        .cloned()
}

/// The served version behind a custom resource.
pub fn of(r: &Resource) -> Option<Arc<CrdVersion>> {
    if !r.custom {
        return None;
    }
    find(r.group, r.version, r.plural)
}

static STRINGS: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Mutex::default);
static LISTS: LazyLock<Mutex<Vec<&'static [&'static str]>>> = LazyLock::new(Mutex::default);
static RESOURCES: LazyLock<Mutex<Vec<&'static Resource>>> = LazyLock::new(Mutex::default);

/// `s`, kept for the life of the process (once per distinct string).
pub fn intern(s: &str) -> &'static str {
    let mut set = STRINGS.lock().expect("interned strings");
    if let Some(found) = set.get(s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

fn intern_list(items: &[String]) -> &'static [&'static str] {
    let items: Vec<&'static str> = items.iter().map(|s| intern(s)).collect();
    let mut lists = LISTS.lock().expect("interned lists");
    if let Some(found) = lists.iter().find(|l| **l == items.as_slice()) {
        return found;
    }
    let leaked: &'static [&'static str] = Box::leak(items.into_boxed_slice());
    lists.push(leaked);
    leaked
}

/// The names a CRD is served under (its `status.acceptedNames`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
}

impl Names {
    /// `spec.names` (defaulted) or `status.acceptedNames`.
    pub fn from_json(v: &Value) -> Self {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let list = |k: &str| crate::api::object::strings(&v[k]);
        let kind = s("kind");
        let singular = match s("singular") {
            x if x.is_empty() => kind.to_lowercase(),
            x => x,
        };
        let list_kind = match s("listKind") {
            x if x.is_empty() && !kind.is_empty() => format!("{kind}List"),
            x => x,
        };
        Self {
            plural: s("plural"),
            singular,
            kind,
            list_kind,
            short_names: list("shortNames"),
            categories: list("categories"),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({"plural": self.plural, "singular": self.singular,
            "kind": self.kind, "listKind": self.list_kind});
        if !self.short_names.is_empty() {
            v["shortNames"] = serde_json::json!(self.short_names);
        }
        if !self.categories.is_empty() {
            v["categories"] = serde_json::json!(self.categories);
        }
        v
    }
}

/// The interned resource of one version of a CRD.
pub fn resource(
    group: &str,
    version: &str,
    names: &Names,
    namespaced: bool,
    status: bool,
    scale: bool,
) -> &'static Resource {
    const SUBRESOURCES: [&[&str]; 4] = [&[], &["status"], &["scale"], &["status", "scale"]];
    let r = Resource {
        group: intern(group),
        version: intern(version),
        kind: intern(&names.kind),
        plural: intern(&names.plural),
        singular: intern(&names.singular),
        namespaced,
        short_names: intern_list(&names.short_names),
        categories: intern_list(&names.categories),
        subresources: SUBRESOURCES[usize::from(status) | usize::from(scale) << 1],
        create_only: false,
        read_only: false,
        custom: true,
    };
    let mut all = RESOURCES.lock().expect("interned resources");
    if let Some(found) = all.iter().find(|x| ***x == r) {
        return found;
    }
    let leaked: &'static Resource = Box::leak(Box::new(r));
    all.push(leaked);
    leaked
}

/// The served versions of one CRD under `names`; a version whose schema
/// does not compile is left out (validation refuses such CRDs, so only a
/// CRD stored by an older server can have one).
pub fn versions_of(crd: &Value, names: &Names, terminating: bool) -> Vec<Arc<CrdVersion>> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let crd_name = crd["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let conversion = conversion::Webhook::of(&spec["conversion"]).map(Arc::new);
    let mut out = Vec::new();
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"].as_bool() != Some(true) {
            continue;
        }
        let version = v["name"].as_str().unwrap_or("");
        let subs = &v["subresources"];
        let scale = subs
            .get("scale")
            .filter(|s| s.is_object())
            .map(|s| ScalePaths {
                spec_replicas: pointer(s["specReplicasPath"].as_str().unwrap_or("")),
                status_replicas: pointer(s["statusReplicasPath"].as_str().unwrap_or("")),
                label_selector: s["labelSelectorPath"].as_str().map(pointer),
            });
        let source = v.pointer("/schema/openAPIV3Schema").cloned();
        let schema = match v.pointer("/schema/openAPIV3Schema") {
            Some(s) => match schema::Schema::compile(s) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(crd = %crd_name, version, error = %e, "schema does not compile; version not served");
                    continue;
                }
            },
            None => None,
        };
        let resource = resource(
            group,
            version,
            names,
            namespaced,
            subs.get("status").is_some_and(Value::is_object),
            scale.is_some(),
        );
        out.push(Arc::new(CrdVersion {
            resource,
            crd: crd_name.clone(),
            list_kind: names.list_kind.clone(),
            storage: v["storage"].as_bool() == Some(true),
            terminating,
            schema,
            columns: columns::of_version(v),
            scale,
            selectable: v["selectableFields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["jsonPath"].as_str())
                .map(|p| p.trim_start_matches('.').to_owned())
                .collect(),
            source,
            conversion: conversion.clone(),
            deprecation: (v["deprecated"].as_bool() == Some(true)).then(|| {
                v["deprecationWarning"].as_str().map_or_else(
                    || format!("{group}/{version} {} is deprecated", names.kind),
                    str::to_owned,
                )
            }),
        }));
    }
    out
}

/// A JSON pointer from a `.a.b` path (a CRD's scale paths).
fn pointer(path: &str) -> String {
    path.trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
        .fold(String::new(), |acc, s| format!("{acc}/{s}"))
}
