//! The HorizontalPodAutoscaler controller's decisions, as kube-controller-
//! manager's `podautoscaler` makes them, from what one sync gathered: the
//! target's scale, its pods (from the cache) and their usage (from the
//! resource metrics API).
//!
//! - Metrics: `Resource` and `ContainerResource` (cpu, memory), targets
//!   `Utilization` (percent of the pods' requests) and `AverageValue`.
//!   `Pods`, `Object` and `External` metrics need a custom or external
//!   metrics API, which Rudder does not serve: they are reported invalid.
//! - Replica count: `ceil(ratio × pods with metrics)`, no change within the
//!   0.1 tolerance; pods without metrics count as 100 % of their request on
//!   a scale-down and 0 % on a scale-up; not-yet-ready pods count as 0 %
//!   when scaling up on CPU; terminating and failed pods are ignored. Several
//!   metrics: the largest proposal.
//! - Behaviour: scale-up and scale-down stabilisation windows (highest or
//!   lowest recommendation in the window) and rate policies (`Pods`,
//!   `Percent`, `selectPolicy` Max/Min/Disabled) over the replicas changed
//!   within each policy's period. Without `spec.behavior` the legacy rules
//!   apply: a 5-minute scale-down window and scale-up to at most
//!   `max(2 × current, 4)`.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::{
    HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
};
use serde_json::{Value, json};

use super::util::quantity_milli;

/// The HPA's tolerance: no change while `|ratio - 1| <= 0.1`.
pub const TOLERANCE: f64 = 0.1;
/// Within this long after a pod started, its CPU counts only once Ready.
pub const CPU_INITIALIZATION_PERIOD: SignedDuration = SignedDuration::from_secs(300);
/// A pod that turned Ready within this long of starting is treated as
/// never ready until then.
pub const INITIAL_READINESS_DELAY: SignedDuration = SignedDuration::from_secs(30);
/// The scale-down window when `spec.behavior` is not set.
pub const DEFAULT_DOWNSCALE_WINDOW: SignedDuration = SignedDuration::from_secs(300);

/// The scale subresource of the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scale {
    pub spec_replicas: i32,
    pub status_replicas: i32,
    pub selector: String,
}

/// What the decision needs of one pod matching the target's selector.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodInfo {
    pub name: String,
    pub phase: String,
    pub deleting: bool,
    /// The Ready condition: None when the pod has none.
    pub ready: Option<bool>,
    pub ready_transition: Option<Timestamp>,
    pub start: Option<Timestamp>,
    /// Requests in milli-units, by container, then resource.
    pub requests: BTreeMap<String, BTreeMap<String, i128>>,
}

/// Usage in milli-units (millicores, thousandths of a byte) by pod, then
/// container, then resource, with the sample's end time.
pub type Usage = BTreeMap<String, (Timestamp, BTreeMap<String, BTreeMap<String, i128>>)>;

/// One recommendation or scale change, for the windows and policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamped {
    pub at: Timestamp,
    pub value: i32,
}

/// What a controller remembers of one HPA between syncs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub recommendations: Vec<Stamped>,
    /// Replica changes (+added / -removed) this controller made.
    pub scale_events: Vec<Stamped>,
}

/// The outcome of one sync.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The replica count to write to the target's scale, when it changes.
    pub rescale: Option<i32>,
    /// The HPA's new `status` (v2).
    pub status: Value,
    /// Events: (warning, reason, message).
    pub events: Vec<(bool, String, String)>,
}

#[derive(Clone, Debug, PartialEq)]
struct Proposal {
    replicas: i32,
    /// The metric as `status.currentMetrics` shows it.
    current: Value,
    /// "cpu resource utilization (percentage of request)".
    description: String,
}

fn source(m: &MetricSpec) -> Result<(Option<&str>, &str, &MetricTarget), String> {
    match m.type_.as_str() {
        "Resource" => m
            .resource
            .as_ref()
            .map(|r| (None, r.name.as_str(), &r.target))
            .ok_or_else(|| "a Resource metric without its resource".to_owned()),
        "ContainerResource" => m
            .container_resource
            .as_ref()
            .map(|r| (Some(r.container.as_str()), r.name.as_str(), &r.target))
            .ok_or_else(|| "a ContainerResource metric without its containerResource".to_owned()),
        other => Err(format!(
            "{other} metrics need a custom or external metrics API, which this cluster does not serve"
        )),
    }
}

fn pod_value(
    per_container: &BTreeMap<String, BTreeMap<String, i128>>,
    container: Option<&str>,
    resource: &str,
) -> Option<i128> {
    match container {
        Some(c) => per_container.get(c)?.get(resource).copied(),
        None => {
            let mut any = false;
            let mut sum = 0;
            for r in per_container.values() {
                if let Some(v) = r.get(resource) {
                    any = true;
                    sum += v;
                }
            }
            any.then_some(sum)
        }
    }
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "replica counts are far inside i32's range"
)]
fn ceil_i32(x: f64) -> i32 {
    x.ceil() as i32
}

/// The replicas one Resource/ContainerResource metric asks for.
#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "milli-unit sums and replica counts are far inside f64's exact range"
)]
fn resource_proposal(
    m: &MetricSpec,
    current_replicas: i32,
    pods: &[PodInfo],
    usage: &Usage,
    now: Timestamp,
) -> Result<Proposal, String> {
    let (container, resource, target) = source(m)?;
    let what = match container {
        Some(c) => format!("{resource} container resource ({c})"),
        None => format!("{resource} resource"),
    };
    if pods.is_empty() {
        return Err(format!(
            "failed to get {resource} utilization: unable to get metrics for resource {resource}: no pods returned by selector"
        ));
    }
    let Sorted {
        metrics,
        missing,
        unready,
    } = sort_pods(pods, usage, container, resource, now);
    if metrics.is_empty() && missing.is_empty() {
        return Err(format!(
            "failed to get {resource} utilization: did not receive metrics for targeted pods (pods might be unready)"
        ));
    }
    let request_of = |p: &PodInfo| pod_value(&p.requests, container, resource);
    let utilization = target.type_ == "Utilization";
    let target_value = target_value(target, &what, utilization)?;
    if target_value <= 0.0 {
        return Err(format!("the {what} target is not positive"));
    }
    // (usage ratio, shown value) over `metrics`.
    let measure = |metrics: &BTreeMap<&str, i128>| -> Result<(f64, i128, i128), String> {
        if utilization {
            let (mut used, mut requested) = (0i128, 0i128);
            for (name, v) in metrics {
                let p = pods.iter().find(|p| p.name == *name).expect("a listed pod");
                let Some(r) = request_of(p).filter(|r| *r > 0) else {
                    return Err(format!(
                        "failed to get {resource} utilization: missing request for {resource} in {}",
                        match container {
                            Some(c) => format!("container {c} of Pod {name}"),
                            None => format!("Pod {name}"),
                        }
                    ));
                };
                used += v;
                requested += r;
            }
            let pct = used as f64 * 100.0 / requested as f64;
            Ok((
                pct / target_value,
                pct.floor() as i128,
                used / metrics.len().max(1) as i128,
            ))
        } else {
            let sum: i128 = metrics.values().sum();
            let avg = sum as f64 / metrics.len().max(1) as f64;
            Ok((avg / target_value, 0, avg.ceil() as i128))
        }
    };
    let (ratio, shown_pct, shown_avg) = if metrics.is_empty() {
        (0.0, 0, 0)
    } else {
        measure(&metrics)?
    };
    let current = current_metric(
        m,
        container,
        resource,
        shown_avg,
        utilization.then_some(shown_pct),
    );
    let description = if utilization {
        format!("{what} utilization (percentage of request)")
    } else {
        what.clone()
    };
    let ready_count = metrics.len() as f64;
    let rebalance_unready = !unready.is_empty() && ratio > 1.0;
    if !rebalance_unready && missing.is_empty() {
        let replicas = if (1.0 - ratio).abs() <= TOLERANCE {
            current_replicas
        } else {
            ceil_i32(ratio * ready_count)
        };
        return Ok(Proposal {
            replicas,
            current,
            description,
        });
    }
    // Fill in the pods without metrics, then measure again.
    let mut filled = metrics.clone();
    for p in &missing {
        let v = if ratio < 1.0 {
            // A scale-down: assume the pod uses its whole request (or the
            // target, for averages), so it never makes the HPA shrink more.
            if utilization {
                let r = request_of(p).unwrap_or(0);
                (r as f64 * (target_value.max(100.0) / 100.0)) as i128
            } else {
                target_value as i128
            }
        } else {
            0
        };
        filled.insert(p.name.as_str(), v);
    }
    if rebalance_unready {
        for p in &unready {
            filled.insert(p.name.as_str(), 0);
        }
    }
    let (new_ratio, _, _) = measure(&filled)?;
    let unchanged = (1.0 - new_ratio).abs() <= TOLERANCE
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0);
    let mut replicas = if unchanged {
        current_replicas
    } else {
        ceil_i32(new_ratio * filled.len() as f64)
    };
    if (new_ratio < 1.0 && replicas > current_replicas)
        || (new_ratio > 1.0 && replicas < current_replicas)
    {
        replicas = current_replicas;
    }
    Ok(Proposal {
        replicas,
        current,
        description,
    })
}

/// A metric's pods sorted as upstream's replica calculator sorts them.
struct Sorted<'a> {
    /// Ready pods' values (milli-units).
    metrics: BTreeMap<&'a str, i128>,
    /// Running pods without a value.
    missing: Vec<&'a PodInfo>,
    /// Pending pods, and for CPU pods not yet ready after start.
    unready: Vec<&'a PodInfo>,
}

/// Sorts the pods of one Resource metric: deleted and failed ones are
/// ignored; pending ones, and for CPU those not ready in their
/// initialization period, are unready; the others have a value or are
/// missing one.
fn sort_pods<'a>(
    pods: &'a [PodInfo],
    usage: &Usage,
    container: Option<&str>,
    resource: &str,
    now: Timestamp,
) -> Sorted<'a> {
    let mut sorted = Sorted {
        metrics: BTreeMap::new(),
        missing: Vec::new(),
        unready: Vec::new(),
    };
    for p in pods {
        if p.deleting || p.phase == "Failed" {
            continue;
        }
        if p.phase == "Pending" {
            sorted.unready.push(p);
            continue;
        }
        let Some(v) = usage
            .get(&p.name)
            .and_then(|(_, c)| pod_value(c, container, resource))
        else {
            sorted.missing.push(p);
            continue;
        };
        if resource == "cpu" {
            let not_ready = match (p.ready, p.start) {
                (None, _) | (_, None) => true,
                (Some(ready), Some(start)) if start + CPU_INITIALIZATION_PERIOD > now => !ready,
                (Some(ready), Some(start)) => {
                    !ready
                        && p.ready_transition
                            .is_some_and(|t| start + INITIAL_READINESS_DELAY > t)
                }
            };
            if not_ready {
                sorted.unready.push(p);
                continue;
            }
        }
        sorted.metrics.insert(p.name.as_str(), v);
    }
    sorted
}

/// The target: a percentage of the request (`Utilization`) or an average
/// value in milli-units.
#[expect(
    clippy::cast_precision_loss,
    reason = "milli-unit targets are far inside f64's exact range"
)]
fn target_value(target: &MetricTarget, what: &str, utilization: bool) -> Result<f64, String> {
    if utilization {
        let t = target
            .average_utilization
            .ok_or_else(|| format!("the {what} target has no averageUtilization"))?;
        return Ok(f64::from(t));
    }
    let q = target
        .average_value
        .as_ref()
        .ok_or_else(|| format!("the {what} target has no averageValue"))?;
    let milli =
        quantity_milli(&q.0).ok_or_else(|| format!("the {what} target {:?} is malformed", q.0))?;
    Ok(milli as f64)
}

/// The metric as `status.currentMetrics` shows it.
fn current_metric(
    m: &MetricSpec,
    container: Option<&str>,
    resource: &str,
    average: i128,
    utilization: Option<i128>,
) -> Value {
    let mut c = json!({"averageValue": milli_quantity(resource, average)});
    if let Some(pct) = utilization {
        c["averageUtilization"] = json!(pct);
    }
    let key = if container.is_some() {
        "containerResource"
    } else {
        "resource"
    };
    let mut v = json!({"type": m.type_, key: {"name": resource, "current": c}});
    if let Some(cn) = container {
        v[key]["container"] = json!(cn);
    }
    v
}

/// A milli-unit amount as a quantity: `250m` CPU, `104857600` bytes.
fn milli_quantity(resource: &str, milli: i128) -> String {
    if resource == "cpu" {
        format!("{milli}m")
    } else if milli % 1000 == 0 {
        format!("{}", milli / 1000)
    } else {
        format!("{milli}m")
    }
}

struct Rules {
    window: SignedDuration,
    select: String,
    /// (type, value, period).
    policies: Vec<(String, i32, SignedDuration)>,
}

fn rules(r: Option<&HPAScalingRules>, default_window: SignedDuration, up: bool) -> Rules {
    let default_policies = if up {
        vec![
            ("Pods".to_owned(), 4, SignedDuration::from_secs(15)),
            ("Percent".to_owned(), 100, SignedDuration::from_secs(15)),
        ]
    } else {
        vec![("Percent".to_owned(), 100, SignedDuration::from_secs(15))]
    };
    Rules {
        window: r
            .and_then(|r| r.stabilization_window_seconds)
            .map_or(default_window, |s| SignedDuration::from_secs(i64::from(s))),
        select: r
            .and_then(|r| r.select_policy.clone())
            .unwrap_or_else(|| "Max".into()),
        policies: r
            .and_then(|r| r.policies.as_ref())
            .map(|p| {
                p.iter()
                    .map(|p| {
                        (
                            p.type_.clone(),
                            p.value,
                            SignedDuration::from_secs(i64::from(p.period_seconds)),
                        )
                    })
                    .collect()
            })
            .unwrap_or(default_policies),
    }
}

fn changed_within(events: &[Stamped], period: SignedDuration, now: Timestamp, up: bool) -> i32 {
    events
        .iter()
        .filter(|e| e.at + period > now)
        .map(|e| {
            if up {
                e.value.max(0)
            } else {
                (-e.value).max(0)
            }
        })
        .sum()
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "replica counts are far inside f64's exact range"
)]
fn rate_limit(current: i32, events: &[Stamped], r: &Rules, now: Timestamp, up: bool) -> i32 {
    if r.select == "Disabled" {
        return current;
    }
    let mut best: Option<i32> = None;
    for (ty, value, period) in &r.policies {
        let changed = changed_within(events, *period, now, up);
        let start = if up {
            current - changed
        } else {
            current + changed
        };
        let proposed = match (ty.as_str(), up) {
            ("Pods", true) => start + value,
            ("Pods", false) => start - value,
            (_, true) => (f64::from(start) * (1.0 + f64::from(*value) / 100.0)).ceil() as i32,
            (_, false) => (f64::from(start) * (1.0 - f64::from(*value) / 100.0)).floor() as i32,
        };
        // "Max" picks the policy allowing the biggest change.
        let more_change = |a: i32, b: i32| if up { a.max(b) } else { a.min(b) };
        let less_change = |a: i32, b: i32| if up { a.min(b) } else { a.max(b) };
        best = Some(match best {
            None => proposed,
            Some(b) if r.select == "Min" => less_change(b, proposed),
            Some(b) => more_change(b, proposed),
        });
    }
    best.unwrap_or(current)
}

fn condition(ty: &str, status: bool, reason: &str, message: impl Into<String>) -> Value {
    json!({"type": ty, "status": if status { "True" } else { "False" },
           "reason": reason, "message": message.into()})
}

/// The conditions, keeping each one's transition time while its status is
/// unchanged.
fn with_times(old: &[Value], new: Vec<Value>, now: &str) -> Vec<Value> {
    new.into_iter()
        .map(|mut c| {
            let prev = old.iter().find(|o| o["type"] == c["type"]);
            c["lastTransitionTime"] = match prev {
                Some(p) if p["status"] == c["status"] => p["lastTransitionTime"].clone(),
                _ => json!(now),
            };
            c
        })
        .collect()
}

/// One sync of `hpa` (v2, defaulted): the replica count to set, the new
/// status and the events. `history` is updated.
/// The recommendation stabilised (the highest over the scale-down window,
/// the lowest over the scale-up one), then rate-limited by the behavior's
/// policies (or the legacy doubling), then clamped to min and max; with
/// the `ScalingLimited` condition when a limit applied.
fn stabilize_and_limit(
    spec: &HorizontalPodAutoscalerSpec,
    proposal: i32,
    current: i32,
    history: &mut History,
    now: Timestamp,
) -> (i32, Option<Value>) {
    let (min, max) = (spec.min_replicas.unwrap_or(1), spec.max_replicas);
    let mut limited = None;
    // Stabilise, then rate-limit, then clamp.
    let behavior = spec.behavior.as_ref();
    let legacy = behavior.is_none();
    let up = rules(
        behavior.and_then(|b| b.scale_up.as_ref()),
        SignedDuration::ZERO,
        true,
    );
    let down = rules(
        behavior.and_then(|b| b.scale_down.as_ref()),
        DEFAULT_DOWNSCALE_WINDOW,
        false,
    );
    let longest = up.window.max(down.window);
    history.recommendations.retain(|r| r.at + longest > now);
    let (mut up_rec, mut down_rec) = (proposal, proposal);
    for r in &history.recommendations {
        if r.at + up.window > now {
            up_rec = up_rec.min(r.value);
        }
        if r.at + down.window > now {
            down_rec = down_rec.max(r.value);
        }
    }
    history.recommendations.push(Stamped {
        at: now,
        value: proposal,
    });
    let mut d = current;
    if up_rec > d {
        d = up_rec;
    }
    if down_rec < d {
        d = down_rec;
    }
    if d > current {
        let limit = if legacy {
            (2 * current).max(4)
        } else {
            rate_limit(current, &history.scale_events, &up, now, true)
        };
        let allowed = limit.max(current).min(max);
        if d > allowed {
            limited = Some(if allowed == max {
                condition(
                    "ScalingLimited",
                    true,
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                )
            } else {
                condition(
                    "ScalingLimited",
                    true,
                    "ScaleUpLimit",
                    "the desired replica count is increasing faster than the maximum scale rate",
                )
            });
            d = allowed;
        }
    } else if d < current {
        let limit = if legacy {
            d
        } else {
            rate_limit(current, &history.scale_events, &down, now, false)
        };
        let allowed = limit.min(current).max(min);
        if d < allowed {
            limited = Some(if allowed == min {
                condition(
                    "ScalingLimited",
                    true,
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                )
            } else {
                condition(
                    "ScalingLimited",
                    true,
                    "ScaleDownLimit",
                    "the desired replica count is decreasing faster than the maximum scale rate",
                )
            });
            d = allowed;
        }
    }
    (d, limited)
}

/// The highest proposal of the metrics (each one's current value pushed
/// to `current_metrics`), and the errors of those that could not be
/// computed.
fn best_proposal(
    metrics: &[MetricSpec],
    current: i32,
    pods: &[PodInfo],
    usage: &Usage,
    now: Timestamp,
    current_metrics: &mut Vec<Value>,
) -> (Option<Proposal>, Vec<String>) {
    let mut best: Option<Proposal> = None;
    let mut errors = Vec::new();
    for m in metrics {
        match resource_proposal(m, current, pods, usage, now) {
            Ok(p) => {
                current_metrics.push(p.current.clone());
                if best.as_ref().is_none_or(|b| p.replicas > b.replicas) {
                    best = Some(p);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    (best, errors)
}

pub fn decide(
    hpa: &HorizontalPodAutoscaler,
    scale: &Scale,
    pods: &[PodInfo],
    usage: &Usage,
    history: &mut History,
    now: Timestamp,
) -> Decision {
    let spec = hpa.spec.clone().unwrap_or_default();
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let current = scale.spec_replicas;
    let now_s = super::util::rfc3339(now);
    let old_status = hpa.status.clone().unwrap_or_default();
    let old_conditions: Vec<Value> = old_status
        .conditions
        .iter()
        .flatten()
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    let mut events = Vec::new();
    let mut conditions = Vec::new();
    let mut current_metrics = Vec::new();
    let mut reason = String::new();
    let desired;
    let mut limited = condition(
        "ScalingLimited",
        false,
        "DesiredWithinRange",
        "the desired count is within the acceptable range",
    );
    if current == 0 && min != 0 {
        desired = 0;
        conditions.push(condition(
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        ));
    } else if current > max {
        desired = max;
        reason = "Current number of replicas above Spec.MaxReplicas".into();
    } else if current < min {
        desired = min;
        reason = "Current number of replicas below Spec.MinReplicas".into();
    } else {
        let metrics = spec.metrics.clone().unwrap_or_default();
        let (best, errors) =
            best_proposal(&metrics, current, pods, usage, now, &mut current_metrics);
        let failed_all = best.is_none();
        let proposal = best.as_ref().map_or(current, |b| b.replicas);
        if let Some(first) = errors.first() {
            events.push((true, "FailedGetResourceMetric".to_owned(), first.clone()));
            events.push((
                true,
                "FailedComputeMetricsReplicas".to_owned(),
                format!(
                    "invalid metrics ({} invalid out of {}), first error is: {first}",
                    errors.len(),
                    metrics.len()
                ),
            ));
        }
        // With some metric unknown, never scale down on the others.
        if failed_all || (!errors.is_empty() && proposal < current) {
            let first = errors.first().cloned().unwrap_or_default();
            conditions.push(condition(
                "ScalingActive",
                false,
                "FailedGetResourceMetric",
                format!("the HPA was unable to compute the replica count: {first}"),
            ));
            desired = current;
        } else {
            let b = best.expect("not failed_all");
            conditions.push(condition(
                "ScalingActive",
                true,
                "ValidMetricFound",
                format!(
                    "the HPA was able to successfully calculate a replica count from {}",
                    b.description
                ),
            ));
            reason = if proposal > current {
                format!("{} above target", b.description)
            } else {
                "All metrics below target".into()
            };
            let (d, limit) = stabilize_and_limit(&spec, proposal, current, history, now);
            if let Some(l) = limit {
                limited = l;
            }
            desired = d;
        }
    }
    let rescale = (desired != current && !(current == 0 && min != 0)).then_some(desired);
    let able = match rescale {
        Some(n) => {
            events.push((
                false,
                "SuccessfulRescale".to_owned(),
                format!("New size: {n}; reason: {reason}"),
            ));
            history
                .scale_events
                .retain(|e| e.at + SignedDuration::from_secs(3600) > now);
            history.scale_events.push(Stamped {
                at: now,
                value: n - current,
            });
            condition(
                "AbleToScale",
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {n}"),
            )
        }
        None => condition(
            "AbleToScale",
            true,
            "ReadyForNewScale",
            "recommended size matches current size",
        ),
    };
    let mut all = vec![able];
    all.extend(conditions);
    all.push(limited);
    let last_scale = if rescale.is_some() {
        json!(now_s)
    } else {
        serde_json::to_value(&old_status.last_scale_time).unwrap_or(Value::Null)
    };
    let mut status = json!({
        "observedGeneration": hpa.metadata.generation,
        "currentReplicas": scale.status_replicas,
        "desiredReplicas": desired,
        "currentMetrics": current_metrics,
        "conditions": with_times(&old_conditions, all, &now_s),
    });
    if !last_scale.is_null() {
        status["lastScaleTime"] = last_scale;
    }
    Decision {
        rescale,
        status,
        events,
    }
}

#[cfg(test)]
mod tests;
