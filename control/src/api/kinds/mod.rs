//! The per-kind rules of the built-in kinds, declared as data: for each
//! kind (by group, and version where versions differ), its typed schema
//! check, its defaults, its semantic validation, the fields a field
//! selector may name and its table (`kubectl get`'s columns), one file per
//! API group family. The handlers look a kind up here ([`of`]) instead of
//! matching on its name, so adding a built-in kind is one entry in its
//! group's file plus its row in the served-resources table
//! (`rudder_k8s::served`). Custom kinds have no entry: a
//! CustomResourceDefinition carries its own rules (`super::crd`).
//!
//! Admission is data too: a kind's built-in admission plugins on create and
//! on update (allocations, generated fields, the plugins that read other
//! objects: priority classes, limit ranges, quotas, ingress classes) are
//! the [`AdmitCreate`] and [`AdmitUpdate`] hooks of its entry, and how
//! ResourceQuota charges it is its `quota` evaluator.
//!
//! The rules' bodies live with their subject (`super::object` for
//! validation, `super::defaults`, `super::webhook`, `super::crd`, …); the
//! tables here only say which applies to which kind.

mod cluster;
mod core;
mod extension;
mod networking;
mod workloads;

use std::{collections::HashMap, sync::LazyLock};

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use futures_util::future::BoxFuture;

use super::{
    ApiState,
    resources::Resource,
    status::{ApiError, Cause},
    table::Table,
};

/// Decodes an object as its Kubernetes type and encodes it back: what does
/// not survive is an unknown field; an error is a type mismatch.
pub type Typed = fn(&Value) -> Result<Value, String>;
/// Sets the defaults Kubernetes sets on create and update.
pub type Defaults = fn(&mut Value);
/// Adds a cause for every rule the object breaks.
pub type Validate = fn(&Value, &mut Vec<Cause>);

/// The kind's built-in admission on create: may change the object (an
/// allocated ClusterIP, a generated selector, a default class) or refuse
/// it. Runs after defaults and validation, before the webhooks.
pub type AdmitCreate =
    for<'a> fn(&'a ApiState, &'a Resource, &'a mut Value) -> BoxFuture<'a, Result<(), ApiError>>;
/// The same on update, with the stored object beside the new one.
pub type AdmitUpdate = for<'a> fn(
    &'a ApiState,
    &'a Resource,
    &'a Value,
    &'a mut Value,
) -> BoxFuture<'a, Result<(), ApiError>>;

/// The rules of one built-in kind.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub group: &'static str,
    /// `None`: the same rules at every version the kind is served at.
    pub version: Option<&'static str>,
    pub kind: &'static str,
    /// `None`: not checked against a type.
    pub typed: Option<Typed>,
    pub defaults: Option<Defaults>,
    pub validate: Option<Validate>,
    /// What `fieldSelector=` may name beyond `metadata.name` and
    /// `metadata.namespace` (kube-apiserver's field label conversions).
    pub fields: &'static [&'static str],
    /// The columns and cells `kubectl get` prints; `None`: Name and
    /// Created At.
    pub table: Option<&'static Table>,
    pub on_create: Option<AdmitCreate>,
    pub on_update: Option<AdmitUpdate>,
    /// Where the kind keeps a pod spec (a JSON pointer: a Pod's own, a
    /// workload's template's), for the rules that look into the pods a
    /// kind makes (Pod Security's warnings on workloads).
    pub pod_spec: Option<&'static str>,
    /// How ResourceQuota charges the kind beyond its object count.
    pub quota: Option<&'static super::quota::Evaluator>,
}

impl Rules {
    /// A kind checked against its type `T`, with no defaults or validation
    /// beyond the metadata's.
    pub const fn typed<T: DeserializeOwned + Serialize>(
        group: &'static str,
        kind: &'static str,
    ) -> Self {
        Rules {
            typed: Some(roundtrip::<T>),
            ..Self::untyped(group, kind)
        }
    }

    /// A kind with no type to check against.
    pub const fn untyped(group: &'static str, kind: &'static str) -> Self {
        Rules {
            group,
            version: None,
            kind,
            typed: None,
            defaults: None,
            validate: None,
            fields: &[],
            table: None,
            on_create: None,
            on_update: None,
            pod_spec: None,
            quota: None,
        }
    }

    /// Only at `version`.
    pub const fn at(self, version: &'static str) -> Self {
        Rules {
            version: Some(version),
            ..self
        }
    }

    pub const fn defaults(self, f: Defaults) -> Self {
        Rules {
            defaults: Some(f),
            ..self
        }
    }

    pub const fn validate(self, f: Validate) -> Self {
        Rules {
            validate: Some(f),
            ..self
        }
    }

    pub const fn fields(self, fields: &'static [&'static str]) -> Self {
        Rules { fields, ..self }
    }

    pub const fn table(self, table: &'static Table) -> Self {
        Rules {
            table: Some(table),
            ..self
        }
    }

    pub const fn pod_spec(self, pointer: &'static str) -> Self {
        Rules {
            pod_spec: Some(pointer),
            ..self
        }
    }

    pub const fn quota(self, e: &'static super::quota::Evaluator) -> Self {
        Rules {
            quota: Some(e),
            ..self
        }
    }

    pub const fn on_create(self, f: AdmitCreate) -> Self {
        Rules {
            on_create: Some(f),
            ..self
        }
    }

    pub const fn on_update(self, f: AdmitUpdate) -> Self {
        Rules {
            on_update: Some(f),
            ..self
        }
    }
}

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    // From the borrowed value: no copy of the object first.
    let t = T::deserialize(v).map_err(|e| e.to_string())?;
    serde_json::to_value(&t).map_err(|e| e.to_string())
}

/// Every group family's table.
const TABLES: &[&[Rules]] = &[
    core::KINDS,
    workloads::KINDS,
    networking::KINDS,
    cluster::KINDS,
    extension::KINDS,
];

/// (group, kind) → the entries for it (more than one where versions
/// differ).
static INDEX: LazyLock<HashMap<(&'static str, &'static str), Vec<&'static Rules>>> =
    LazyLock::new(|| {
        let mut m: HashMap<_, Vec<&'static Rules>> = HashMap::new();
        for rules in TABLES.iter().flat_map(|t| t.iter()) {
            m.entry((rules.group, rules.kind)).or_default().push(rules);
        }
        m
    });

/// The rules for objects of `r`; `None` for a custom kind or a built-in
/// kind with no rules of its own.
pub fn of(r: &Resource) -> Option<&'static Rules> {
    if r.custom {
        return None;
    }
    INDEX
        .get(&(r.group, r.kind))?
        .iter()
        .copied()
        .find(|rules| rules.version.is_none_or(|v| v == r.version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::RESOURCES;

    #[test]
    fn every_stored_builtin_kind_has_exactly_one_entry() {
        for r in RESOURCES.iter() {
            let matching = TABLES
                .iter()
                .flat_map(|t| t.iter())
                .filter(|k| {
                    k.group == r.group
                        && k.kind == r.kind
                        && k.version.is_none_or(|v| v == r.version)
                })
                .count();
            // Computed kinds have none.
            let none = r.read_only || (r.kind == "SelfSubjectReview" && r.version != "v1");
            let want = if none { 0 } else { 1 };
            assert_eq!(matching, want, "{}/{} {}", r.group, r.version, r.kind);
        }
    }

    #[test]
    fn admission_hooks_are_declared_on_their_kinds_at_every_version() {
        let kinds = |hook: fn(&Rules) -> bool| -> Vec<String> {
            let mut v: Vec<String> = RESOURCES
                .iter()
                .filter(|r| of(r).is_some_and(hook))
                .map(|r| format!("{}/{} {}", r.group, r.version, r.kind))
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            kinds(|k| k.on_create.is_some()),
            [
                "/v1 PersistentVolumeClaim",
                "/v1 Pod",
                "/v1 ResourceQuota",
                "/v1 Service",
                "apiextensions.k8s.io/v1 CustomResourceDefinition",
                "batch/v1 Job",
                "networking.k8s.io/v1 Ingress",
                "scheduling.k8s.io/v1 PriorityClass",
            ]
        );
        assert_eq!(
            kinds(|k| k.on_update.is_some()),
            [
                "/v1 Pod",
                "/v1 Service",
                "apiextensions.k8s.io/v1 CustomResourceDefinition",
                "scheduling.k8s.io/v1 PriorityClass",
            ]
        );
        // Quota charges these beyond their object counts (upstream's pod,
        // service and claim evaluators).
        assert_eq!(
            kinds(|k| k.quota.is_some()),
            ["/v1 PersistentVolumeClaim", "/v1 Pod", "/v1 Service"]
        );
    }

    #[test]
    fn pod_specs_are_found_where_each_kind_keeps_them() {
        let spec = serde_json::json!({"containers": [{"name": "c", "image": "i"}]});
        let template = serde_json::json!({"spec": {"template": {"spec": spec}}});
        let by = |group: &str, kind: &str| {
            of(RESOURCES
                .iter()
                .find(|r| r.group == group && r.kind == kind)
                .unwrap())
            .and_then(|k| k.pod_spec)
        };
        for (group, kind) in [
            ("apps", "Deployment"),
            ("apps", "ReplicaSet"),
            ("apps", "StatefulSet"),
            ("apps", "DaemonSet"),
            ("batch", "Job"),
            ("", "ReplicationController"),
        ] {
            let at = by(group, kind).unwrap_or_else(|| panic!("{kind}"));
            assert_eq!(template.pointer(at), Some(&spec), "{kind}");
        }
        let cron = serde_json::json!({"spec": {"jobTemplate": template}});
        assert_eq!(cron.pointer(by("batch", "CronJob").unwrap()), Some(&spec));
        assert_eq!(by("", "Pod"), Some("/spec"));
        assert_eq!(by("", "ConfigMap"), None);
    }

    #[test]
    fn every_entry_is_served() {
        for k in TABLES.iter().flat_map(|t| t.iter()) {
            assert!(
                RESOURCES.iter().any(|r| r.group == k.group
                    && r.kind == k.kind
                    && k.version.is_none_or(|v| v == r.version)),
                "{} {} is not served",
                k.group,
                k.kind
            );
        }
    }

    #[test]
    fn a_custom_kind_named_like_a_builtin_one_gets_no_builtin_rules() {
        let pod = RESOURCES.iter().find(|r| r.kind == "Pod").unwrap();
        assert!(of(pod).is_some());
        let custom = Resource {
            custom: true,
            ..*pod
        };
        assert!(of(&custom).is_none());
    }

    #[test]
    fn the_version_picks_the_rules() {
        let hpa = |v: &str| {
            RESOURCES
                .iter()
                .find(|r| r.kind == "HorizontalPodAutoscaler" && r.version == v)
                .unwrap()
        };
        let v1 = of(hpa("v1")).unwrap();
        let v2 = of(hpa("v2")).unwrap();
        assert_eq!((v1.version, v2.version), (Some("v1"), Some("v2")));
        // v1's typed check refuses v2's metrics list.
        let obj = serde_json::json!({"spec": {"metrics": [{"type": "Resource"}],
            "scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 1}});
        let back = v1.typed.unwrap()(&obj).unwrap();
        assert!(back["spec"].get("metrics").is_none());
        assert!(
            v2.typed.unwrap()(&obj).unwrap()["spec"]
                .get("metrics")
                .is_some()
        );
    }
}
