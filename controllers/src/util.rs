//! Pure helpers shared by the controllers and the scheduler: quantities,
//! pod states, owner references, template hashes; the selector and
//! toleration rules are `rudder_k8s::selectors`, re-exported here.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{Pod, PodTemplateSpec},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
};
use serde_json::Value;

pub use rudder_k8s::selectors::{
    Labels, map_selector_matches, node_selector_matches, node_term_matches, pod_fits_node_affinity,
    selector_is_empty, selector_matches, tolerates, untolerated,
};

/// The labels of an object (empty when none).
pub fn labels(m: &ObjectMeta) -> &Labels {
    static EMPTY: Labels = BTreeMap::new();
    m.labels.as_ref().unwrap_or(&EMPTY)
}

/// A Kubernetes quantity in thousandths of its unit (so `100m` CPU is 100
/// and `1Gi` memory is 1073741824000), rounded up. None when malformed.
pub fn quantity_milli(q: &str) -> Option<i128> {
    rudder_k8s::quantity::parse_milli(q.trim()).ok()
}

/// A pod's requests as the scheduler counts them (each container's
/// requests, or its limits where it states none): `rudder_k8s::resources`.
pub fn pod_requests(pod: &Pod) -> BTreeMap<String, i128> {
    let Some(spec) = &pod.spec else {
        return BTreeMap::new();
    };
    rudder_k8s::resources::pod_total(spec, |r| r.requests.as_ref().or(r.limits.as_ref()))
}

/// Whether the pod has finished (Succeeded or Failed).
pub fn is_terminal(pod: &Pod) -> bool {
    rudder_k8s::pod::is_terminal(pod)
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Whether the pod is being deleted.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Kubernetes' "active" pod: neither finished nor being deleted.
pub fn is_active(pod: &Pod) -> bool {
    !is_terminal(pod) && !is_terminating(pod)
}

/// The time the pod's Ready condition last turned true, when it is true.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| {
        c.last_transition_time
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
    })
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready` seconds at `now`.
pub fn is_available(pod: &Pod, min_ready: i32, now: Timestamp) -> bool {
    ready_since(pod)
        .is_some_and(|t| min_ready <= 0 || now.as_second() - t.as_second() >= i64::from(min_ready))
}

/// The owner reference marked as the controller, if any.
pub fn controller_of(m: &ObjectMeta) -> Option<&OwnerReference> {
    m.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Whether `m` is controlled by the object with `uid`.
pub fn controlled_by(m: &ObjectMeta, uid: &str) -> bool {
    controller_of(m).is_some_and(|r| r.uid == uid)
}

/// A controller owner reference to `owner`.
pub fn owner_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn name(m: &ObjectMeta) -> &str {
    m.name.as_deref().unwrap_or("")
}

pub fn namespace(m: &ObjectMeta) -> &str {
    m.namespace.as_deref().unwrap_or("")
}

pub fn uid(m: &ObjectMeta) -> &str {
    m.uid.as_deref().unwrap_or("")
}

pub fn annotation<'a>(m: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    m.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The alphabet Kubernetes uses for generated suffixes and hashes (no
/// vowels, no look-alike characters).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A short stable hash of any serialisable value (FNV-1a over its canonical
/// JSON, encoded in Kubernetes' safe alphabet), as used for
/// `pod-template-hash` and `controller-revision-hash`.
pub fn stable_hash(v: &impl serde::Serialize, collision: i32) -> String {
    let json = serde_json::to_string(v).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    for b in json.bytes().chain(collision.to_le_bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let mut out = String::new();
    let mut x = h;
    loop {
        out.push(SAFE[(x % 27) as usize] as char);
        x /= 27;
        if x == 0 {
            break;
        }
    }
    out
}

/// The pod template without the label a controller adds for its hash,
/// for comparing templates across revisions.
pub fn template_without(t: &PodTemplateSpec, label: &str) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    if let Some(l) = v
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(label);
        if l.is_empty()
            && let Some(m) = v.pointer_mut("/metadata").and_then(Value::as_object_mut)
        {
            m.remove("labels");
        }
    }
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("creationTimestamp");
        if m.is_empty() {
            v.as_object_mut().map(|o| o.remove("metadata"));
        }
    }
    v
}

/// An integer-or-percent value resolved against `total` (percentages
/// rounded up or down as asked), as Kubernetes' `GetScaledValueFromIntOrPercent`.
pub fn int_or_percent(
    v: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    default: i32,
    total: i32,
    round_up: bool,
) -> i32 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match v {
        None => default,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return default;
            };
            let x = p * i64::from(total);
            let r = if round_up { (x + 99) / 100 } else { x / 100 };
            i32::try_from(r).unwrap_or(default)
        }
    }
}

pub fn time(t: Timestamp) -> Time {
    Time(t)
}

/// A `metav1.Time`, truncated as Kubernetes writes it (this once rounded,
/// putting times up to half a second in the future).
pub use rudder_k8s::time::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity_milli("100m"), Some(100));
        assert_eq!(quantity_milli("2"), Some(2000));
        assert_eq!(quantity_milli("1Gi"), Some(1_073_741_824_000));
        assert_eq!(quantity_milli("1.5k"), Some(1_500_000));
        assert_eq!(quantity_milli("1e3"), Some(1_000_000));
        assert_eq!(quantity_milli("12x"), None);
    }

    #[test]
    fn percentages_round_as_kubernetes() {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let p = IntOrString::String("25%".into());
        assert_eq!(int_or_percent(Some(&p), 0, 10, true), 3);
        assert_eq!(int_or_percent(Some(&p), 0, 10, false), 2);
        assert_eq!(int_or_percent(None, 1, 10, false), 1);
    }

    #[test]
    fn hashes_are_stable_and_safe() {
        let a = stable_hash(&serde_json::json!({"a": 1}), 0);
        assert_eq!(a, stable_hash(&serde_json::json!({"a": 1}), 0));
        assert_ne!(a, stable_hash(&serde_json::json!({"a": 2}), 0));
        assert!(a.bytes().all(|b| SAFE.contains(&b)));
    }
}
