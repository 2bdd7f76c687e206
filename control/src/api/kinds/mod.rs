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

use super::{resources::Resource, status::Cause, table::Table};

/// Decodes an object as its Kubernetes type and encodes it back: what does
/// not survive is an unknown field; an error is a type mismatch.
pub type Typed = fn(&Value) -> Result<Value, String>;
/// Sets the defaults Kubernetes sets on create and update.
pub type Defaults = fn(&mut Value);
/// Adds a cause for every rule the object breaks.
pub type Validate = fn(&Value, &mut Vec<Cause>);

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
}

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
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
