//! Field ownership for server-side apply, as `metadata.managedFields`
//! records it (the FieldsV1 format: `f:<field>`, `k:<merge key>` for list
//! items with a merge key, `v:<value>` for set items, `.` for the item
//! itself).
//!
//! - An apply by manager M owns exactly the fields of its configuration. A
//!   field it names that another manager owns with a different value is a
//!   conflict (409), unless forced, which takes the field over. Fields M
//!   applied before and no longer names are removed from the object when
//!   nobody else owns them.
//! - Any other write (create, update, patch, scale) gives the fields it
//!   changes to its manager (an `Update` entry) and takes them from the
//!   others: that is how `kubectl scale` then a re-apply of `replicas`
//!   conflicts.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::lists::{ListMerge, Shape, item_key};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum El {
    Field(String),
    /// A list item by its merge key, as the key's JSON object.
    Key(String),
    /// A set item by its value, as JSON.
    Value(String),
}

pub type Path = Vec<El>;
pub type FieldSet = BTreeSet<Path>;

/// metadata fields the server owns.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The leaf fields of an object (a configuration or a live object).
pub fn of_object(v: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    let Some(m) = v.as_object() else {
        return set;
    };
    let custom = super::lists::custom_version(v);
    let shape = Shape::root(custom.as_ref());
    for (k, child) in m {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        let mut path = vec![El::Field(k.clone())];
        if k == "metadata" {
            if let Some(meta) = child.as_object() {
                for (mk, mv) in meta {
                    if SERVER_METADATA.contains(&mk.as_str()) {
                        continue;
                    }
                    path.push(El::Field(mk.clone()));
                    walk(mv, mk, &mut path, &mut set, Shape::Builtin);
                    path.pop();
                }
            }
            continue;
        }
        walk(child, k, &mut path, &mut set, shape.child(k));
    }
    set
}

fn walk(v: &Value, field: &str, path: &mut Path, set: &mut FieldSet, shape: Shape<'_>) {
    match v {
        Value::Object(m) if !m.is_empty() && !shape.atomic_object() => {
            for (k, child) in m {
                path.push(El::Field(k.clone()));
                walk(child, k, path, set, shape.child(k));
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let refs: Vec<&Value> = items.iter().collect();
            match shape.list(field, &refs) {
                ListMerge::Keys(keys) if !keys.is_empty() => {
                    for item in items {
                        let Some(kv) = item_key(item, &keys) else {
                            set.insert(path.clone());
                            return;
                        };
                        path.push(El::Key(kv.to_string()));
                        set.insert(path.clone()); // the item itself (".")
                        walk(item, "", path, set, shape.items());
                        path.pop();
                    }
                }
                ListMerge::Set => {
                    for item in items {
                        path.push(El::Value(item.to_string()));
                        set.insert(path.clone());
                        path.pop();
                    }
                }
                _ => {
                    set.insert(path.clone());
                }
            }
        }
        _ => {
            set.insert(path.clone());
        }
    }
}

/// The value at `path`, if there is one.
pub fn value_at<'a>(v: &'a Value, path: &[El]) -> Option<&'a Value> {
    let mut cur = v;
    for el in path {
        cur = match el {
            El::Field(f) => cur.get(f)?,
            El::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).ok()?;
                let (kn, kv) = key.iter().next()?;
                cur.as_array()?.iter().find(|i| i.get(kn) == Some(kv))?
            }
            El::Value(x) => {
                let want: Value = serde_json::from_str(x).ok()?;
                cur.as_array()?.iter().find(|i| **i == want)?
            }
        };
    }
    Some(cur)
}

/// Removes what is at `path` (a field, a keyed item or a set item).
pub fn remove_at(v: &mut Value, path: &[El]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for el in parent {
        let next = match el {
            El::Field(f) => cur.get_mut(f),
            El::Key(k) => {
                let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) else {
                    return;
                };
                let Some((kn, kv)) = key.into_iter().next() else {
                    return;
                };
                cur.as_array_mut()
                    .and_then(|a| a.iter_mut().find(|i| i.get(&kn) == Some(&kv)))
            }
            El::Value(_) => return,
        };
        let Some(n) = next else { return };
        cur = n;
    }
    match last {
        El::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        El::Key(k) => {
            if let (Ok(key), Some(a)) = (
                serde_json::from_str::<Map<String, Value>>(k),
                cur.as_array_mut(),
            ) && let Some((kn, kv)) = key.into_iter().next()
            {
                a.retain(|i| i.get(&kn) != Some(&kv));
            }
        }
        El::Value(x) => {
            if let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(x), cur.as_array_mut()) {
                a.retain(|i| *i != want);
            }
        }
    }
}

/// `.spec.containers[name="c"].image`, as Kubernetes prints paths.
pub fn path_string(path: &[El]) -> String {
    let mut s = String::new();
    for el in path {
        match el {
            El::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            El::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let inner: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push_str(&format!("[{}]", inner.join(",")));
            }
            El::Value(v) => s.push_str(&format!("[={v}]")),
        }
    }
    s
}

/// FieldsV1 JSON of a set.
pub fn to_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for (i, el) in path.iter().enumerate() {
            let name = match el {
                El::Field(f) => format!("f:{f}"),
                El::Key(k) => format!("k:{k}"),
                El::Value(v) => format!("v:{v}"),
            };
            let entry = cur.entry(name).or_insert_with(|| json!({}));
            let Value::Object(m) = entry else { break };
            cur = m;
            let is_last = i + 1 == path.len();
            if is_last && matches!(el, El::Key(_)) {
                cur.insert(".".into(), json!({}));
            }
        }
    }
    Value::Object(root)
}

/// A set from FieldsV1 JSON.
pub fn from_v1(v: &Value) -> FieldSet {
    fn go(v: &Value, path: &mut Path, set: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if m.is_empty() && !path.is_empty() {
            set.insert(path.clone());
            return;
        }
        for (k, child) in m {
            if k == "." {
                set.insert(path.clone());
                continue;
            }
            let el = if let Some(f) = k.strip_prefix("f:") {
                El::Field(f.to_owned())
            } else if let Some(x) = k.strip_prefix("k:") {
                El::Key(x.to_owned())
            } else if let Some(x) = k.strip_prefix("v:") {
                El::Value(x.to_owned())
            } else {
                continue;
            };
            path.push(el);
            go(child, path, set);
            path.pop();
        }
    }
    let mut set = FieldSet::new();
    go(v, &mut Vec::new(), &mut set);
    set
}

/// The leaf fields whose values differ between two versions of an object
/// (added, changed or removed).
pub fn changed(old: &Value, new: &Value) -> FieldSet {
    let (a, b) = (of_object(old), of_object(new));
    a.union(&b)
        .filter(|p| value_at(old, p) != value_at(new, p))
        .cloned()
        .collect()
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub subresource: String,
    pub time: String,
    pub fields: FieldSet,
}

pub fn entries(obj: &Value) -> Vec<Entry> {
    let s = |e: &Value, k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: s(e, "manager"),
            operation: s(e, "operation"),
            api_version: s(e, "apiVersion"),
            subresource: s(e, "subresource"),
            time: s(e, "time"),
            fields: e.get("fieldsV1").map(from_v1).unwrap_or_default(),
        })
        .collect()
}

pub fn set_entries(obj: &mut Value, list: &[Entry]) {
    let v: Vec<Value> = list
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut o = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_v1(&e.fields)});
            if !e.subresource.is_empty() {
                o["subresource"] = json!(e.subresource);
            }
            o
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if v.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(v));
        }
    }
}

/// Records a non-apply write by `manager`: the fields it changed become its
/// own and stop being anyone else's.
pub fn track_update(old: &Value, new: &mut Value, manager: &str, subresource: &str, now: &str) {
    // A write that sets managedFields itself (kubectl moving fields from
    // client-side to server-side apply) is taken as it is.
    let requested = new.pointer("/metadata/managedFields");
    if requested.is_some() && requested != old.pointer("/metadata/managedFields") {
        return;
    }
    let mut list = entries(old);
    let diff = changed(old, new);
    if diff.is_empty() {
        set_entries(new, &list);
        return;
    }
    for e in &mut list {
        e.fields.retain(|p| {
            !diff
                .iter()
                .any(|d| d == p || p.starts_with(d) || d.starts_with(p))
        });
    }
    let present: FieldSet = diff
        .into_iter()
        .filter(|p| value_at(new, p).is_some())
        .collect();
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match list
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Update" && e.subresource == subresource)
    {
        Some(e) => {
            e.fields.extend(present);
            e.time = now.to_owned();
        }
        None => list.push(Entry {
            manager: manager.to_owned(),
            operation: "Update".into(),
            api_version,
            subresource: subresource.to_owned(),
            time: now.to_owned(),
            fields: present,
        }),
    }
    set_entries(new, &list);
}

/// A field another manager owns with another value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: String,
}

/// Server-side apply of `config` by `manager` onto `merged` (the live
/// object with the configuration already merged in) given the `live`
/// object: conflicts, removal of fields the manager stopped applying, and
/// the new managedFields.
pub fn apply(
    live: &Value,
    config: &Value,
    mut merged: Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let applied = of_object(config);
    let mut list = entries(live);
    let mut conflicts = Vec::new();
    let mut taken: BTreeMap<usize, FieldSet> = BTreeMap::new();
    for (i, e) in list.iter().enumerate() {
        if e.manager == manager && e.operation == "Apply" {
            continue;
        }
        for p in &applied {
            // An item itself (`.`) is a member, not a value: never a conflict.
            if matches!(p.last(), Some(El::Key(_) | El::Value(_))) {
                continue;
            }
            let owned = e
                .fields
                .iter()
                .any(|q| q == p || q.starts_with(p) || p.starts_with(q));
            if owned && value_at(live, p) != value_at(config, p) && value_at(live, p).is_some() {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    path: path_string(p),
                });
                taken.entry(i).or_default().insert(p.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        conflicts.sort_by(|a, b| (&a.manager, &a.path).cmp(&(&b.manager, &b.path)));
        conflicts.dedup();
        return Err(conflicts);
    }
    for (i, paths) in taken {
        list[i].fields.retain(|q| {
            !paths
                .iter()
                .any(|p| q == p || q.starts_with(p) || p.starts_with(q))
        });
    }
    // What this manager applied before and no longer does goes, unless
    // someone else owns it too.
    let before = list
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply")
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for p in before.difference(&applied) {
        let kept = list
            .iter()
            .filter(|e| !(e.manager == manager && e.operation == "Apply"))
            .any(|e| e.fields.iter().any(|q| q == p || q.starts_with(p)));
        if !kept && !applied.iter().any(|a| a.starts_with(p)) {
            remove_at(&mut merged, p);
        }
    }
    let api_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    list.retain(|e| !(e.manager == manager && e.operation == "Apply"));
    list.push(Entry {
        manager: manager.to_owned(),
        operation: "Apply".into(),
        api_version,
        subresource: String::new(),
        time: now.to_owned(),
        fields: applied,
    });
    set_entries(&mut merged, &list);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    /// Followers of the API (the informer) drop managed fields from what
    /// they keep; their updates must not wipe the server's.
    #[test]
    fn an_update_without_managed_fields_keeps_the_live_objects() {
        let mut live = deploy(1, "nginx");
        let empty = json!({"apiVersion": "apps/v1", "metadata": {}});
        track_update(
            &empty,
            &mut live,
            "kubectl-create",
            "",
            "2026-01-01T00:00:00Z",
        );
        let before = entries(&live);
        assert_eq!(before.len(), 1);
        let mut sent = deploy(2, "nginx");
        track_update(
            &live,
            &mut sent,
            "rudder-controller",
            "",
            "2026-01-01T00:00:01Z",
        );
        let after = entries(&sent);
        let managers: Vec<&str> = after.iter().map(|e| e.manager.as_str()).collect();
        assert_eq!(managers, ["kubectl-create", "rudder-controller"]);
        // The field that moved went to the writer; the rest stayed put.
        assert!(
            after[0]
                .fields
                .iter()
                .all(|p| !path_string(p).contains("replicas"))
        );
        assert!(
            after[1]
                .fields
                .iter()
                .any(|p| path_string(p) == ".spec.replicas")
        );
    }

    #[test]
    fn field_sets_round_trip_through_fields_v1() {
        let set = of_object(&deploy(3, "nginx"));
        let v1 = to_v1(&set);
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
        );
        assert_eq!(from_v1(&v1), set);
        let img: Vec<&Path> = set
            .iter()
            .filter(|p| path_string(p).ends_with(".image"))
            .collect();
        assert_eq!(
            path_string(img[0]),
            r#".spec.template.spec.containers[name="c"].image"#
        );
    }

    #[test]
    fn an_update_takes_fields_and_a_reapply_conflicts_unless_forced() {
        let now = "2026-01-01T00:00:00Z";
        let cfg = deploy(3, "nginx");
        let live = apply(&json!({}), &cfg, cfg.clone(), "kubectl", false, now).unwrap();
        // kubectl scale: replicas now belongs to kubectl-scale.
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        track_update(&live, &mut scaled, "kubectl-scale", "scale", now);
        let e = entries(&scaled);
        assert!(
            e.iter()
                .any(|e| e.manager == "kubectl-scale" && e.fields.len() == 1)
        );
        // Re-applying replicas: 3 conflicts; the same value would not.
        let err = apply(&scaled, &cfg, cfg.clone(), "kubectl", false, now).unwrap_err();
        assert_eq!(
            err,
            vec![Conflict {
                manager: "kubectl-scale".into(),
                api_version: "apps/v1".into(),
                path: ".spec.replicas".into()
            }]
        );
        assert!(
            apply(
                &scaled,
                &deploy(5, "nginx"),
                scaled.clone(),
                "kubectl",
                false,
                now
            )
            .is_ok()
        );
        // Forced, the field comes back to kubectl.
        let forced = apply(&scaled, &cfg, cfg.clone(), "kubectl", true, now).unwrap();
        assert!(
            entries(&forced)
                .iter()
                .all(|e| e.manager != "kubectl-scale")
        );
    }

    #[test]
    fn fields_no_longer_applied_are_removed_unless_owned_elsewhere() {
        let now = "t";
        let mut cfg = deploy(3, "nginx");
        cfg["metadata"]["labels"]["tier"] = json!("front");
        let live = apply(&json!({}), &cfg, cfg.clone(), "a", false, now).unwrap();
        let without = deploy(3, "nginx");
        let mut merged = live.clone();
        merged["spec"] = without["spec"].clone();
        let out = apply(&live, &without, merged, "a", false, now).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        // Another manager's label survives the first manager dropping it.
        let mut labelled = out.clone();
        labelled["metadata"]["labels"]["team"] = json!("x");
        track_update(&out, &mut labelled, "kubectl-label", "", now);
        let out2 = apply(&labelled, &without, labelled.clone(), "a", false, now).unwrap();
        assert_eq!(out2["metadata"]["labels"]["team"], "x");
    }
}
