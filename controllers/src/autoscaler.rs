//! The HorizontalPodAutoscaler loop: every sync period, for each HPA in the
//! cache, it reads the target's `scale` subresource and the pods' usage from
//! the resource metrics API (`metrics.k8s.io`), lets [`hpa::decide`] choose,
//! then writes the scale, the HPA's status and events, all through the API.

use std::{collections::HashMap, time::Duration};

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{
    cache::{Kind, Snapshot, in_namespace},
    hpa::{self, History, PodInfo, Scale, Usage},
    ops::{EventRecord, Executor, Involved, Op},
    util,
};
use rudder_k8s::label_selector::LabelSelector;

use rudder_k8s::served as resources;

const COMPONENT: &str = "horizontal-pod-autoscaler";

/// kube-controller-manager's `--horizontal-pod-autoscaler-sync-period`.
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(15);

fn metrics_resource() -> ApiResource {
    ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    }
}

/// Runs the autoscaler until `stop` turns true (acting only while leading).
pub async fn run(
    exec: Executor,
    period: Duration,
    leader: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let period = if period.is_zero() {
        DEFAULT_SYNC_PERIOD
    } else {
        period
    };
    let mut histories: HashMap<String, History> = HashMap::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if !*leader.borrow() || !exec.cache.synced() {
            continue;
        }
        let snap = exec.cache.snapshot();
        histories.retain(|uid, _| snap.hpas.values().any(|h| util::uid(&h.metadata) == uid));
        for h in snap.hpas.values() {
            if h.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let history = histories
                .entry(util::uid(&h.metadata).to_owned())
                .or_default();
            sync_one(&exec, &snap, h, history).await;
        }
    }
}

/// What went wrong reading the target: (reason, message).
type Failure = (&'static str, String);

async fn read_scale(
    client: &Client,
    ns: &str,
    target: &k8s_openapi::api::autoscaling::v2::CrossVersionObjectReference,
) -> Result<(Api<DynamicObject>, Scale), Failure> {
    let api_version = target.api_version.as_deref().unwrap_or("apps/v1");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let r = resources::by_kind(group, &target.kind)
        .filter(|r| r.has_scale())
        .ok_or_else(|| {
            (
                "FailedGetScale",
                format!(
                    "the HPA controller was unable to get the target's current scale: no scale subresource for {}/{}",
                    api_version, target.kind
                ),
            )
        })?;
    let ar = ApiResource {
        group: r.group.into(),
        version: r.version.into(),
        api_version: r.api_version(),
        kind: r.kind.into(),
        plural: r.plural.into(),
    };
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar);
    let s = api
        .get_subresource("scale", &target.name)
        .await
        .map_err(|e| {
            (
                "FailedGetScale",
                format!(
                    "the HPA controller was unable to get the target's current scale: {} {ns}/{}: {e}",
                    r.qualified(),
                    target.name
                ),
            )
        })?;
    let int = |p: &str| {
        s.data
            .pointer(p)
            .and_then(Value::as_i64)
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or(0)
    };
    Ok((
        api,
        Scale {
            spec_replicas: int("/spec/replicas"),
            status_replicas: int("/status/replicas"),
            selector: s
                .data
                .pointer("/status/selector")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        },
    ))
}

fn pods_of(snap: &Snapshot, ns: &str, selector: &LabelSelector) -> Vec<PodInfo> {
    in_namespace(&snap.pods, ns)
        .filter(|p| selector.matches(util::labels(&p.metadata)))
        .map(|p| {
            let status = p.status.as_ref();
            let ready = status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
            let mut requests = std::collections::BTreeMap::new();
            for c in p.spec.iter().flat_map(|s| s.containers.iter()) {
                let mut per = std::collections::BTreeMap::new();
                for (k, v) in c
                    .resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .into_iter()
                    .flatten()
                {
                    if let Some(m) = util::quantity_milli(&v.0) {
                        per.insert(k.clone(), m);
                    }
                }
                requests.insert(c.name.clone(), per);
            }
            PodInfo {
                name: util::name(&p.metadata).to_owned(),
                phase: util::phase(p).to_owned(),
                deleting: util::is_terminating(p),
                ready: ready.map(|c| c.status == "True"),
                ready_transition: ready.and_then(|c| c.last_transition_time.as_ref().map(|t| t.0)),
                start: status.and_then(|s| s.start_time.as_ref().map(|t| t.0)),
                requests,
            }
        })
        .collect()
}

async fn read_usage(client: &Client, ns: &str, selector: &str) -> Result<Usage, String> {
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &metrics_resource());
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| format!("unable to fetch metrics from resource metrics API: {e}"))?;
    let mut out = Usage::new();
    for m in list.items {
        let Some(name) = m.metadata.name.clone() else {
            continue;
        };
        let at = m
            .data
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(jiff::Timestamp::now);
        let mut containers = std::collections::BTreeMap::new();
        for c in m
            .data
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mut per = std::collections::BTreeMap::new();
            for (k, v) in c["usage"].as_object().into_iter().flatten() {
                if let Some(q) = v.as_str().and_then(util::quantity_milli) {
                    per.insert(k.clone(), q);
                }
            }
            containers.insert(c["name"].as_str().unwrap_or("").to_owned(), per);
        }
        out.insert(name, (at, containers));
    }
    Ok(out)
}

async fn sync_one(
    exec: &Executor,
    snap: &Snapshot,
    h: &k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
    history: &mut History,
) {
    let ns = util::namespace(&h.metadata).to_owned();
    let involved = Involved::of(Kind::HorizontalPodAutoscaler, &h.metadata);
    let Some(spec) = &h.spec else { return };
    let now = exec.clock.now();
    let fail = |reason: &str, message: String| -> Vec<Op> {
        let status = json!({
            "currentReplicas": h.status.as_ref().and_then(|s| s.current_replicas).unwrap_or(0),
            "desiredReplicas": h.status.as_ref().map_or(0, |s| s.desired_replicas),
            "conditions": [{"type": "AbleToScale", "status": "False", "reason": reason,
                            "message": message, "lastTransitionTime": util::rfc3339(now)}],
        });
        vec![
            Op::status(Kind::HorizontalPodAutoscaler, &h.metadata, status),
            Op::Event(EventRecord::warning(
                COMPONENT,
                involved.clone(),
                reason,
                message.clone(),
            )),
        ]
    };
    let (scale_api, scale) = match read_scale(&exec.client, &ns, &spec.scale_target_ref).await {
        Ok(x) => x,
        Err((reason, message)) => {
            exec.run(fail(reason, message)).await;
            return;
        }
    };
    let selector = match LabelSelector::parse(&scale.selector) {
        Ok(s) if !scale.selector.is_empty() => s,
        _ => {
            exec.run(fail(
                "InvalidSelector",
                format!(
                    "the HPA target's scale is missing a selector (or it is invalid: {:?})",
                    scale.selector
                ),
            ))
            .await;
            return;
        }
    };
    let pods = pods_of(snap, &ns, &selector);
    let usage = match read_usage(&exec.client, &ns, &scale.selector).await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(hpa = %util::name(&h.metadata), error = %e, "no pod metrics");
            Usage::new()
        }
    };
    let mut d = hpa::decide(h, &scale, &pods, &usage, history, now);
    let mut ops = Vec::new();
    if let Some(n) = d.rescale {
        let patch = json!({"spec": {"replicas": n}});
        if let Err(e) = scale_api
            .patch_subresource(
                "scale",
                &spec.scale_target_ref.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            // Not done: forget the event and report why.
            history.scale_events.pop();
            d.events.retain(|e| e.1 != "SuccessfulRescale");
            d.events.push((
                true,
                "FailedRescale".into(),
                format!("New size: {n}; error: {e}"),
            ));
            if let Some(c) = d.status["conditions"]
                .as_array_mut()
                .and_then(|c| c.iter_mut().find(|c| c["type"] == "AbleToScale"))
            {
                *c = json!({"type": "AbleToScale", "status": "False", "reason": "FailedUpdateScale",
                            "message": format!("the HPA controller was unable to update the target scale: {e}"),
                            "lastTransitionTime": util::rfc3339(now)});
            }
            d.status["desiredReplicas"] = json!(scale.spec_replicas);
        } else {
            tracing::info!(hpa = %format!("{ns}/{}", util::name(&h.metadata)), from = scale.spec_replicas, to = n, "rescaled");
        }
    }
    ops.push(Op::status(
        Kind::HorizontalPodAutoscaler,
        &h.metadata,
        d.status,
    ));
    for (warning, reason, message) in d.events {
        ops.push(Op::Event(if warning {
            EventRecord::warning(COMPONENT, involved.clone(), &reason, message)
        } else {
            EventRecord::normal(COMPONENT, involved.clone(), &reason, message)
        }));
    }
    exec.run(ops).await;
}
