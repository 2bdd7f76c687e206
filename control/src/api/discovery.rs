//! Discovery documents: `/api`, `/apis`, the per-group-version resource
//! lists (kubectl resolves kinds, short names and `get all` from them),
//! `/version`, and the OpenAPI v3 index that tells kubectl the server
//! validates fields itself.

use serde_json::{Value, json};

use super::resources::{all, group_versions};

pub fn api_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

/// Every group-version served, the remote ones (APIServices) included.
fn all_group_versions() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = group_versions()
        .into_iter()
        .map(|(g, v)| (g.to_owned(), v.to_owned()))
        .collect();
    for gv in super::aggregator::group_versions() {
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

fn group(g: &str) -> Value {
    let versions: Vec<Value> = all_group_versions()
        .into_iter()
        .filter(|(gg, _)| gg == g)
        .map(|(gg, v)| json!({"groupVersion": format!("{gg}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": g,
           "versions": versions, "preferredVersion": versions.first().cloned().unwrap_or(Value::Null)})
}

pub fn api_group_list() -> Value {
    let mut groups: Vec<String> = Vec::new();
    for (g, _) in all_group_versions() {
        if !g.is_empty() && !groups.contains(&g) {
            groups.push(g);
        }
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1",
           "groups": groups.iter().map(|g| group(g)).collect::<Vec<_>>()})
}

pub fn api_group(g: &str) -> Option<Value> {
    all_group_versions()
        .iter()
        .any(|(gg, _)| gg == g)
        .then(|| group(g))
}

pub fn resource_list(g: &str, v: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in all().into_iter().filter(|r| r.group == g && r.version == v) {
        let mut e = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                           "kind": r.kind, "verbs": r.verbs()});
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        resources.push(e);
        for sub in r.subresources {
            let (kind, verbs): (&str, &[&str]) = match *sub {
                "status" => (r.kind, &["get", "patch", "update"]),
                "ephemeralcontainers" => ("Pod", &["get", "patch", "update"]),
                "scale" => ("Scale", &["get", "patch", "update"]),
                "binding" => ("Binding", &["create"]),
                "eviction" => ("Eviction", &["create"]),
                "token" => ("TokenRequest", &["create"]),
                "log" => ("Pod", &["get"]),
                "exec" | "attach" => ("PodExecOptions", &["create", "get"]),
                "portforward" => ("PodPortForwardOptions", &["create", "get"]),
                "proxy" => (
                    match r.builtin_kind() {
                        "Pod" => "PodProxyOptions",
                        "Service" => "ServiceProxyOptions",
                        _ => "NodeProxyOptions",
                    },
                    &["create", "delete", "get", "patch", "update"],
                ),
                "finalize" => ("Namespace", &["update"]),
                _ => (r.kind, &["get"]),
            };
            let mut s = json!({"name": format!("{}/{sub}", r.plural), "singularName": "",
                               "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            if *sub == "scale" {
                s["group"] = json!("autoscaling");
                s["version"] = json!("v1");
            }
            // kubectl drain evicts (rather than deletes) when discovery
            // says which group serves Evictions.
            if *sub == "eviction" {
                s["group"] = json!("policy");
                s["version"] = json!("v1");
            }
            resources.push(s);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if g.is_empty() {
        v.to_owned()
    } else {
        format!("{g}/{v}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// The aggregated discovery version a client's `Accept` asks for (`v2`
/// before `v2beta1`), if it asks for aggregated discovery at all.
pub fn aggregated_version(accept: &str) -> Option<&'static str> {
    let mut asked = Vec::new();
    for range in accept.split(',') {
        let params: Vec<&str> = range.split(';').map(str::trim).collect();
        let has = |p: &str| params.contains(&p);
        if has("g=apidiscovery.k8s.io") && has("as=APIGroupDiscoveryList") {
            for p in &params {
                if let Some(v) = p.strip_prefix("v=") {
                    asked.push(v.to_owned());
                }
            }
        }
    }
    ["v2", "v2beta1"]
        .into_iter()
        .find(|v| asked.iter().any(|a| a == v))
}

/// One group-version's resources in the aggregated form: subresources
/// under their resource, each with its response kind and scope.
fn aggregated_resources(list: &Value, g: &str, v: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for e in list["resources"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or("");
        let kind = json!({"group": e.get("group").and_then(Value::as_str).unwrap_or(g),
                          "version": e.get("version").and_then(Value::as_str).unwrap_or(v),
                          "kind": e["kind"]});
        if let Some((parent, sub)) = name.split_once('/') {
            if let Some(p) = out.iter_mut().find(|r| r["resource"] == parent) {
                let entry = json!({"subresource": sub, "responseKind": kind, "verbs": e["verbs"]});
                match p["subresources"].as_array_mut() {
                    Some(subs) => subs.push(entry),
                    None => p["subresources"] = json!([entry]),
                }
            }
            continue;
        }
        let singular = match e["singularName"].as_str() {
            Some(s) if !s.is_empty() => s.to_owned(),
            _ => e["kind"].as_str().unwrap_or("").to_lowercase(),
        };
        let mut r = json!({"resource": name, "responseKind": kind,
            "scope": if e["namespaced"].as_bool() == Some(true) { "Namespaced" } else { "Cluster" },
            "singularResource": singular, "verbs": e["verbs"]});
        for k in ["shortNames", "categories"] {
            if let Some(x) = e.get(k) {
                r[k] = x.clone();
            }
        }
        out.push(r);
    }
    out
}

/// `/api` (`core`) or `/apis` as an `APIGroupDiscoveryList`.
pub fn aggregated(core: bool, version: &str) -> Value {
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    for (g, v) in all_group_versions() {
        if g.is_empty() != core {
            continue;
        }
        let list = match super::aggregator::remote_for(&g, &v) {
            Some(remote) if remote.available => remote.resources.clone(),
            Some(_) => continue,
            None => resource_list(&g, &v).unwrap_or(Value::Null),
        };
        let entry = json!({"version": v, "resources": aggregated_resources(&list, &g, &v),
                           "freshness": "Current"});
        match groups.iter_mut().find(|(name, _)| *name == g) {
            Some((_, versions)) => versions.push(entry),
            None => groups.push((g, vec![entry])),
        }
    }
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(g, versions)| {
            let meta = if g.is_empty() {
                json!({"creationTimestamp": null})
            } else {
                json!({"name": g, "creationTimestamp": null})
            };
            json!({"metadata": meta, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"),
           "metadata": {}, "items": items})
}

pub fn version() -> Value {
    json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-rudder",
           "gitCommit": env!("CARGO_PKG_VERSION"), "gitTreeState": "clean",
           "buildDate": "2026-01-01T00:00:00Z", "goVersion": "rust", "compiler": "rustc",
           "platform": format!("linux/{}", std::env::consts::ARCH)})
}

/// The kinds served in one group-version.
fn served_kinds(g: &str, v: &str) -> Vec<&'static str> {
    let mut kinds: Vec<&str> = all()
        .into_iter()
        .filter(|r| r.group == g && r.version == v)
        .map(|r| r.kind)
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds
}

/// `/openapi/v3`: one path per group-version, with a hash of what it holds
/// (kubectl keeps a document as long as its hash is the same).
pub fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in group_versions() {
        let p = if g.is_empty() {
            format!("api/{v}")
        } else {
            format!("apis/{g}/{v}")
        };
        let custom = serde_json::to_vec(&super::crd::openapi::components(g, v)).unwrap_or_default();
        let hash = super::openapi::hash(g, v, &served_kinds(g, v), &custom);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/api/v1` etc.: the schemas of the kinds served (Kubernetes'
/// own, see [`super::openapi`]), and the PATCH operation of every kind with
/// the `fieldValidation` parameter, which is what kubectl looks for before
/// it leaves field validation to the server.
pub fn openapi_v3_group_version(g: &str, v: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for r in all().into_iter().filter(|r| r.group == g && r.version == v) {
        let prefix = if g.is_empty() {
            format!("/api/{v}")
        } else {
            format!("/apis/{g}/{v}")
        };
        let path = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{prefix}/{}/{{name}}", r.plural)
        };
        let gvk = json!({"group": g, "version": v, "kind": r.kind});
        // The patch types every built-in kind takes; kubectl builds
        // strategic merge patches from these schemas only where the
        // operation lists that type.
        let patch = json!({"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}});
        // Custom kinds take no strategic merge patch (kubectl then sends a
        // JSON merge patch, as kube-apiserver wants for them).
        let types: &[&str] = if r.custom {
            &[
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
            ]
        } else {
            &[
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ]
        };
        let patch_bodies: serde_json::Map<String, Value> = types
            .iter()
            .map(|t| (t.to_string(), patch.clone()))
            .collect();
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
        ]);
        paths.insert(
            path,
            json!({
                "parameters": params,
                "patch": {"operationId": format!("patch{}", r.kind),
                          "requestBody": {"content": patch_bodies, "required": true},
                          "x-kubernetes-action": "patch",
                          "x-kubernetes-group-version-kind": gvk,
                          "responses": {"200": {"description": "OK"}}},
            }),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0-rudder"},
                "paths": paths,
                "components": {"schemas": schemas(g, v)}}),
    )
}

/// The component schemas of a group-version: the built-in kinds' and the
/// custom ones'.
fn schemas(g: &str, v: &str) -> serde_json::Map<String, Value> {
    let mut out = super::openapi::components(g, v, &served_kinds(g, v));
    out.extend(super::crd::openapi::components(g, v));
    out
}

/// Appends a length-delimited protobuf field.
fn pb_bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    let varint = |mut v: u64, out: &mut Vec<u8>| {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    };
    varint(u64::from(field << 3 | 2), out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

/// `/openapi/v2` in the protobuf encoding kubectl asks for (a gnostic
/// `openapi_v2.Document`): the document's header with no definitions, so
/// that kubectl falls back to its compiled-in types for patches and leaves
/// field validation to the server (which the OpenAPI v3 index advertises).
pub fn openapi_v2_protobuf() -> Vec<u8> {
    let mut info = Vec::new();
    pb_bytes(&mut info, 1, b"Kubernetes");
    pb_bytes(&mut info, 2, b"v1.33.0-rudder");
    let mut doc = Vec::new();
    pb_bytes(&mut doc, 1, b"2.0");
    pb_bytes(&mut doc, 2, &info);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aggregated_version_is_the_newest_the_client_accepts() {
        let v133 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        let v127 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(v133), Some("v2"));
        assert_eq!(aggregated_version(v127), Some("v2beta1"));
        assert_eq!(aggregated_version("application/json, */*"), None);
    }

    #[test]
    fn aggregated_discovery_nests_subresources_with_their_kinds() {
        let apis = aggregated(false, "v2");
        assert_eq!(apis["apiVersion"], "apidiscovery.k8s.io/v2");
        let apps = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .expect("apps");
        let deployments = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .expect("deployments");
        assert_eq!(deployments["scope"], "Namespaced");
        assert_eq!(deployments["singularResource"], "deployment");
        assert_eq!(
            deployments["responseKind"],
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        let scale = deployments["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "scale")
            .expect("scale");
        assert_eq!(
            scale["responseKind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );
        let core = aggregated(true, "v2beta1");
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        assert!(core["items"][0]["metadata"].get("name").is_none());
        assert!(
            core["items"][0]["versions"][0]["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["resource"] == "pods" && r["shortNames"] == json!(["po"]))
        );
    }
}
