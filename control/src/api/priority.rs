//! PriorityClasses and the Priority admission plugin, as kube-apiserver
//! has them: the two system classes exist from the start; a user class is
//! at most 1,000,000,000 and may not take a `system-` name; its value and
//! preemption policy never change; at most one class is the global
//! default. A new pod gets `spec.priority` (and `preemptionPolicy`) from
//! its `priorityClassName`, or from the global default (whose name it then
//! carries), or 0; a class that does not exist, or a priority the pod
//! states itself that differs, is refused with kube-apiserver's messages.

use serde_json::{Value, json};

use super::{
    ApiState,
    handlers::{Target, list_objects},
    resources::{Resource, by_kind},
    status::{ApiError, Cause},
};

/// The classes every cluster has: (name, value, description).
pub const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The highest value a user-defined class may have.
pub const HIGHEST_USER_DEFINABLE: i64 = 1_000_000_000;

const POLICIES: [&str; 2] = ["PreemptLowerPriority", "Never"];

/// The system classes as objects, for the bootstrap.
pub fn system_classes() -> Vec<Value> {
    SYSTEM_CLASSES
        .iter()
        .map(|(name, value, description)| {
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value, "description": description,
                "preemptionPolicy": "PreemptLowerPriority"})
        })
        .collect()
}

/// A PriorityClass's defaults: `preemptionPolicy: PreemptLowerPriority`.
pub fn default_class(pc: &mut Value) {
    if pc.get("preemptionPolicy").is_none_or(Value::is_null) {
        pc["preemptionPolicy"] = json!("PreemptLowerPriority");
    }
}

/// A pod update keeps what admission computed when the client leaves it
/// out (a full replace built from a manifest).
pub fn keep_on_update(cur: &Value, new: &mut Value) {
    for f in ["priority", "priorityClassName", "preemptionPolicy"] {
        if new
            .pointer(&format!("/spec/{f}"))
            .is_none_or(Value::is_null)
            && let Some(v) = cur.pointer(&format!("/spec/{f}"))
            && new["spec"].is_object()
        {
            new["spec"][f] = v.clone();
        }
    }
}

/// Field validation of a PriorityClass (and of an update, against `old`).
pub fn validate(pc: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let name = pc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let value = pc.get("value").and_then(Value::as_i64);
    let system = SYSTEM_CLASSES.iter().find(|(n, _, _)| *n == name);
    match (value, system) {
        (None, _) => causes.push(Cause::required("value")),
        (Some(v), Some((_, want, _))) if v != *want => causes.push(Cause::invalid(
            "value",
            &json!(v),
            format!("{name} is a system priority class with value {want}"),
        )),
        (Some(v), None) if v > HIGHEST_USER_DEFINABLE => causes.push(Cause::invalid(
            "value",
            &json!(v),
            format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE}"),
        )),
        _ => {}
    }
    if system.is_none() && name.starts_with("system-") {
        causes.push(Cause::forbidden(
            "metadata.name",
            "priority class names with 'system-' prefix are reserved for system use only",
        ));
    }
    if let Some(p) = pc.get("preemptionPolicy").filter(|p| !p.is_null())
        && !p.as_str().is_some_and(|p| POLICIES.contains(&p))
    {
        causes.push(Cause::not_supported("preemptionPolicy", p, &POLICIES));
    }
    if let Some(old) = old {
        for f in ["value", "preemptionPolicy"] {
            if pc.get(f) != old.get(f) {
                causes.push(Cause::invalid(f, &pc[f], "field is immutable"));
            }
        }
    }
}

async fn classes(st: &ApiState) -> Result<Vec<Value>, ApiError> {
    let t = Target {
        resource: by_kind("scheduling.k8s.io", "PriorityClass").expect("served"),
        namespace: String::new(),
        name: None,
        subresource: None,
    };
    Ok(list_objects(st, &t, &Default::default()).await?.0)
}

fn is_default(pc: &Value) -> bool {
    pc.get("globalDefault").and_then(Value::as_bool) == Some(true)
}

fn name_of(v: &Value) -> &str {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// A new (or changed) PriorityClass: at most one global default.
pub async fn admit_class(st: &ApiState, r: &Resource, pc: &Value) -> Result<(), ApiError> {
    if !is_default(pc) {
        return Ok(());
    }
    let name = name_of(pc);
    if let Some(other) = classes(st)
        .await?
        .iter()
        .find(|c| is_default(c) && name_of(c) != name)
    {
        return Err(ApiError::forbidden_on(
            r,
            name,
            format_args!(
                "PriorityClass {} is marked as default. Only one default can exist",
                name_of(other)
            ),
        ));
    }
    Ok(())
}

/// The Priority plugin on a new pod.
pub async fn admit_pod(st: &ApiState, pod: &mut Value) -> Result<(), ApiError> {
    let pod_name = name_of(pod).to_owned();
    let forbidden = |why: String| {
        Err(ApiError::forbidden(format!(
            "pods {pod_name:?} is forbidden: {why}"
        )))
    };
    let asked = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let all = classes(st).await?;
    let (class_name, priority, policy) = if asked.is_empty() {
        // The default with the lowest value, as upstream picks among several.
        match all
            .iter()
            .filter(|c| is_default(c))
            .min_by_key(|c| c["value"].as_i64())
        {
            Some(c) => (
                name_of(c).to_owned(),
                c["value"].as_i64().unwrap_or(0),
                c.get("preemptionPolicy").cloned(),
            ),
            None => (String::new(), 0, Some(json!("PreemptLowerPriority"))),
        }
    } else {
        match all.iter().find(|c| name_of(c) == asked) {
            Some(c) => (
                asked.clone(),
                c["value"].as_i64().unwrap_or(0),
                c.get("preemptionPolicy").cloned(),
            ),
            None => return forbidden(format!("no PriorityClass with name {asked} was found")),
        }
    };
    if let Some(p) = pod.pointer("/spec/priority").and_then(Value::as_i64)
        && p != priority
    {
        return forbidden(format!(
            "the integer value of priority ({p}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
        ));
    }
    let policy = policy.filter(|p| !p.is_null());
    if let (Some(stated), Some(computed)) = (
        pod.pointer("/spec/preemptionPolicy")
            .and_then(Value::as_str),
        policy.as_ref().and_then(Value::as_str),
    ) && stated != computed
    {
        return forbidden(format!(
            "the string value of PreemptionPolicy ({stated}) must not be provided in pod spec; priority admission controller computed {computed} from the given PriorityClass name"
        ));
    }
    let spec = &mut pod["spec"];
    if !class_name.is_empty() {
        spec["priorityClassName"] = json!(class_name);
    }
    spec["priority"] = json!(priority);
    if let Some(p) = policy {
        spec["preemptionPolicy"] = p;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc(name: &str, value: i64) -> Value {
        json!({"metadata": {"name": name}, "value": value})
    }

    fn check(pc: &Value, old: Option<&Value>) -> Vec<String> {
        let mut causes = Vec::new();
        validate(pc, old, &mut causes);
        causes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn classes_validate_as_kube_apiserver_does() {
        assert!(check(&pc("high", 1_000_000_000), None).is_empty());
        assert!(check(&pc("system-node-critical", 2_000_001_000), None).is_empty());
        let e = check(&pc("huge", 1_000_000_001), None);
        assert!(
            e[0].contains("maximum allowed value of a user defined priority is 1000000000"),
            "{e:?}"
        );
        let e = check(&pc("system-mine", 5), None);
        assert!(e[0].contains("reserved for system use only"), "{e:?}");
        let e = check(&pc("system-cluster-critical", 5), None);
        assert!(!e.is_empty());
        let e = check(&json!({"metadata": {"name": "x"}}), None);
        assert!(e[0].contains("value: Required value"), "{e:?}");
        let mut bad = pc("p", 1);
        bad["preemptionPolicy"] = json!("Sometimes");
        assert!(check(&bad, None)[0].contains("Unsupported value"));
        let e = check(&pc("p", 2), Some(&pc("p", 1)));
        assert!(e[0].contains("field is immutable"), "{e:?}");
    }
}
