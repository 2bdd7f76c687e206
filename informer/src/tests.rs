//! The relist protocol, tested once for every consumer.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;

use super::*;

fn cm(ns: &str, name: &str, rv: &str, group: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{ns}-{name}")),
            resource_version: Some(rv.into()),
            labels: Some([("group".to_owned(), group.to_owned())].into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn group_of(c: &ConfigMap) -> Vec<String> {
    c.metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| *k == "group")
        .map(|(_, v)| v.clone())
        .collect()
}

/// What a delta did, as (verb, key, resourceVersion after or before).
fn summary(d: &Delta<ConfigMap>) -> Vec<(&'static str, String, String)> {
    d.changes
        .iter()
        .map(|c| match c {
            Change::Upsert { key, new, .. } => (
                "upsert",
                key.to_string(),
                new.metadata.resource_version.clone().unwrap_or_default(),
            ),
            Change::Remove { key, old } => (
                "remove",
                key.to_string(),
                old.metadata.resource_version.clone().unwrap_or_default(),
            ),
        })
        .collect()
}

fn s(v: &str, k: &str, rv: &str) -> (&'static str, String, String) {
    let verb = if v == "upsert" { "upsert" } else { "remove" };
    (verb, k.to_owned(), rv.to_owned())
}

fn listed(r: &mut Reflector<ConfigMap>, objs: Vec<ConfigMap>) -> Delta<ConfigMap> {
    assert!(r.apply(Event::Init).changes.is_empty());
    for o in objs {
        assert!(r.apply(Event::InitApply(o)).changes.is_empty());
    }
    r.apply(Event::InitDone)
}

#[test]
fn first_list_reports_every_object_and_syncs() {
    let mut r = Reflector::new();
    assert!(!r.synced());
    let d = listed(&mut r, vec![cm("a", "x", "1", "g"), cm("b", "y", "2", "g")]);
    assert!(d.relisted);
    assert_eq!(
        summary(&d),
        vec![s("upsert", "a/x", "1"), s("upsert", "b/y", "2")]
    );
    assert!(r.synced());
    assert_eq!(r.len(), 2);
}

#[test]
fn relist_keeps_old_state_until_done_then_reports_the_difference() {
    let mut r = Reflector::new();
    listed(
        &mut r,
        vec![
            cm("a", "keep", "1", "g"),
            cm("a", "moved", "1", "g"),
            cm("a", "gone", "1", "g"),
        ],
    );
    r.apply(Event::Init);
    r.apply(Event::InitApply(cm("a", "keep", "1", "g")));
    r.apply(Event::InitApply(cm("a", "moved", "5", "g")));
    r.apply(Event::InitApply(cm("a", "new", "6", "g")));
    // Mid-relist, the old picture is still what readers see.
    assert!(r.get(&ObjectKey::new("a", "gone")).is_some());
    assert!(r.get(&ObjectKey::new("a", "new")).is_none());
    let d = r.apply(Event::InitDone);
    assert_eq!(
        summary(&d),
        vec![
            s("remove", "a/gone", "1"),
            s("upsert", "a/moved", "5"),
            s("upsert", "a/new", "6")
        ]
    );
    let Change::Upsert { old, .. } = &d.changes[1] else {
        panic!()
    };
    assert_eq!(
        old.as_ref().unwrap().metadata.resource_version.as_deref(),
        Some("1")
    );
    assert_eq!(
        r.objects()
            .keys()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["a/keep", "a/moved", "a/new"]
    );
}

#[test]
fn a_relist_that_never_completes_changes_nothing() {
    let mut r = Reflector::new();
    listed(&mut r, vec![cm("a", "x", "1", "g")]);
    r.apply(Event::Init);
    r.apply(Event::InitApply(cm("a", "y", "2", "g")));
    // The watch failed and restarted its list: the partial one is dropped.
    r.apply(Event::Init);
    r.apply(Event::InitApply(cm("a", "x", "1", "g")));
    let d = r.apply(Event::InitDone);
    assert!(d.relisted && d.changes.is_empty());
    assert_eq!(r.len(), 1);
}

#[test]
fn apply_of_the_same_version_is_not_a_change() {
    let mut r = Reflector::new();
    listed(&mut r, vec![cm("a", "x", "1", "g")]);
    assert!(
        r.apply(Event::Apply(cm("a", "x", "1", "g")))
            .changes
            .is_empty()
    );
    let d = r.apply(Event::Apply(cm("a", "x", "2", "g")));
    assert_eq!(summary(&d), vec![s("upsert", "a/x", "2")]);
    assert!(!d.relisted);
}

#[test]
fn a_recreated_object_with_a_new_uid_is_a_change() {
    let mut r = Reflector::new();
    listed(&mut r, vec![cm("a", "x", "1", "g")]);
    let mut again = cm("a", "x", "1", "g");
    again.metadata.uid = Some("other".into());
    assert_eq!(r.apply(Event::Apply(again)).changes.len(), 1);
}

#[test]
fn delete_reports_the_stored_state_or_the_events_own() {
    let mut r = Reflector::new();
    listed(&mut r, vec![cm("a", "x", "3", "g")]);
    let d = r.apply(Event::Delete(cm("a", "x", "4", "g")));
    // The last version seen, as client-go hands to OnDelete.
    assert_eq!(summary(&d), vec![s("remove", "a/x", "3")]);
    let d = r.apply(Event::Delete(cm("a", "never", "9", "g")));
    assert_eq!(summary(&d), vec![s("remove", "a/never", "9")]);
    assert!(r.is_empty());
}

#[test]
fn indexes_follow_upserts_moves_removals_and_relists() {
    let mut r = Reflector::new().with_index("group", group_of);
    listed(
        &mut r,
        vec![cm("a", "x", "1", "red"), cm("a", "y", "1", "red")],
    );
    let names = |r: &Reflector<ConfigMap>, g: &str| {
        r.by_index("group", g)
            .map(|(k, _)| k.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&r, "red"), ["x", "y"]);
    r.apply(Event::Apply(cm("a", "y", "2", "blue")));
    assert_eq!(names(&r, "red"), ["x"]);
    assert_eq!(names(&r, "blue"), ["y"]);
    r.apply(Event::Delete(cm("a", "x", "1", "red")));
    assert!(names(&r, "red").is_empty());
    listed(&mut r, vec![cm("a", "z", "3", "red")]);
    assert_eq!(names(&r, "red"), ["z"]);
    assert!(names(&r, "blue").is_empty());
    assert!(r.by_index("nope", "red").next().is_none());
}

#[test]
fn an_index_added_late_covers_what_is_stored() {
    let mut r = Reflector::new();
    listed(&mut r, vec![cm("a", "x", "1", "red")]);
    let r = r.with_index("group", group_of);
    assert_eq!(r.by_index("group", "red").count(), 1);
}

#[test]
fn cluster_scoped_keys_have_no_namespace() {
    let mut o = cm("", "node-1", "1", "g");
    o.metadata.namespace = None;
    assert_eq!(ObjectKey::of(&o.metadata).to_string(), "node-1");
}

#[tokio::test]
async fn shared_readers_see_what_the_feeder_applied_once_synced() {
    let shared = Shared::new(Reflector::new().with_index("group", group_of));
    let reader = shared.clone();
    let wait = tokio::spawn(async move {
        reader.synced().await;
        reader.read(|r| r.by_index("group", "red").count())
    });
    let events = futures_util::stream::iter([
        Event::Init,
        Event::InitApply(cm("a", "x", "1", "red")),
        Event::InitApply(cm("a", "y", "1", "red")),
        Event::InitDone,
    ]);
    shared.follow(events).await;
    assert_eq!(wait.await.unwrap(), 2);
}

#[test]
fn trim_drops_managed_fields_and_nothing_else() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    let mut c = cm("ns", "a", "5", "g");
    c.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
        manager: Some("kubectl".into()),
        ..ManagedFieldsEntry::default()
    }]);
    let mut expected = c.clone();
    expected.metadata.managed_fields = None;
    trim(&mut c);
    assert_eq!(c, expected);
    assert_eq!(group_of(&c), vec!["g".to_owned()]);
}
