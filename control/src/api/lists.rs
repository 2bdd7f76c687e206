//! How a list merges, in strategic merge patches, server-side apply and
//! `managedFields`: by a key (`containers` by `name`), as a set
//! (`finalizers`), or atomically (replaced whole).
//!
//! Built-in kinds go by the field's name, as their Go types declare it
//! (see [`super::patch::merge_key`]). A custom kind goes by its CRD's
//! schema: `x-kubernetes-list-type: map` with `x-kubernetes-list-map-keys`,
//! `set`, and atomic otherwise, and `x-kubernetes-map-type: atomic` maps
//! replaced whole, as kube-apiserver's structured-merge-diff reads them;
//! its `metadata` is the built-in `ObjectMeta`.

use std::sync::Arc;

use serde_json::Value;

use super::crd::{CrdVersion, schema::Additional, schema::Schema};

/// How one list merges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListMerge {
    /// Items are matched by these fields.
    Keys(Vec<String>),
    /// Scalar items are merged as a set.
    Set,
    /// The list is replaced whole.
    Atomic,
}

/// Where a merge stands in an object's type.
#[derive(Clone, Copy, Debug)]
pub enum Shape<'a> {
    /// A built-in kind, or the metadata of any object.
    Builtin,
    /// A node of a custom kind's schema (none: a field the schema leaves
    /// open, whose lists are atomic).
    Schema(Option<&'a Schema>, bool),
}

/// The served custom version an object belongs to, if it is custom.
pub fn custom_version(obj: &Value) -> Option<Arc<CrdVersion>> {
    let av = obj.get("apiVersion").and_then(Value::as_str)?;
    let kind = obj.get("kind").and_then(Value::as_str)?;
    let (group, version) = av.rsplit_once('/')?;
    super::crd::served()
        .iter()
        .find(|v| {
            v.resource.group == group && v.resource.version == version && v.resource.kind == kind
        })
        .cloned()
}

impl<'a> Shape<'a> {
    /// The shape at an object's root: `v` from [`custom_version`].
    pub fn root(v: Option<&'a Arc<CrdVersion>>) -> Self {
        match v {
            Some(v) => Self::Schema(v.schema.as_ref(), true),
            None => Self::Builtin,
        }
    }

    /// The shape of field `k` of an object here.
    pub fn child(self, k: &str) -> Self {
        match self {
            Self::Builtin => Self::Builtin,
            Self::Schema(_, true) if k == "metadata" => Self::Builtin,
            Self::Schema(node, _) => Self::Schema(
                node.and_then(|n| {
                    n.properties.get(k).or(match &n.additional {
                        Some(Additional::Schema(s)) => Some(&**s),
                        _ => None,
                    })
                }),
                false,
            ),
        }
    }

    /// The shape of the items of a list here.
    pub fn items(self) -> Self {
        match self {
            Self::Builtin => Self::Builtin,
            Self::Schema(node, _) => Self::Schema(node.and_then(|n| n.items.as_deref()), false),
        }
    }

    /// Whether the object here is replaced whole
    /// (`x-kubernetes-map-type: atomic`, or a struct marked so).
    pub fn atomic_object(self) -> bool {
        matches!(self, Self::Schema(Some(n), _) if n.map_type.as_deref() == Some("atomic"))
    }

    /// How the list in `field` (with these items) merges.
    pub fn list(self, field: &str, items: &[&Value]) -> ListMerge {
        match self {
            Self::Builtin => match super::patch::merge_key(field, items) {
                Some(k) => ListMerge::Keys(vec![k.to_owned()]),
                None if super::patch::merges_primitives(field) => ListMerge::Set,
                None => ListMerge::Atomic,
            },
            Self::Schema(node, _) => match node.and_then(|n| n.list_type.as_deref()) {
                Some("map") => {
                    ListMerge::Keys(node.map(|n| n.list_map_keys.clone()).unwrap_or_default())
                }
                Some("set") => ListMerge::Set,
                _ => ListMerge::Atomic,
            },
        }
    }
}

/// The key of a list item under `keys` (`{"name":"a"}`), if it has them.
pub fn item_key(item: &Value, keys: &[String]) -> Option<Value> {
    let mut m = serde_json::Map::new();
    for k in keys {
        m.insert(k.clone(), item.get(k)?.clone());
    }
    (!m.is_empty()).then_some(Value::Object(m))
}
