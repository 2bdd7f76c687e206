//! Unit tests of the autoscaler's pure decisions: metrics, tolerance, behaviour.

use super::*;

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn hpa(min: i32, max: i32, cpu: i32, behavior: Option<Value>) -> HorizontalPodAutoscaler {
    let mut v = json!({
        "metadata": {"name": "web", "namespace": "default", "generation": 1},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                 "minReplicas": min, "maxReplicas": max,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": cpu}}}]},
    });
    if let Some(b) = behavior {
        v["spec"]["behavior"] = b;
    }
    serde_json::from_value(v).unwrap()
}

/// Ready, started long ago, requesting 200m.
fn pod(name: &str) -> PodInfo {
    PodInfo {
        name: name.into(),
        phase: "Running".into(),
        ready: Some(true),
        ready_transition: Some(t(-3000)),
        start: Some(t(-3600)),
        requests: BTreeMap::from([("app".to_owned(), BTreeMap::from([("cpu".to_owned(), 200)]))]),
        ..PodInfo::default()
    }
}

fn usage(cpu: &[(&str, i128)]) -> Usage {
    cpu.iter()
        .map(|(p, m)| {
            (
                (*p).to_owned(),
                (
                    t(0),
                    BTreeMap::from([("app".to_owned(), BTreeMap::from([("cpu".to_owned(), *m)]))]),
                ),
            )
        })
        .collect()
}

fn scale(n: i32) -> Scale {
    Scale {
        spec_replicas: n,
        status_replicas: n,
        selector: "app=web".into(),
    }
}

fn cond<'a>(d: &'a Decision, ty: &str) -> &'a Value {
    d.status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == ty)
        .unwrap()
}

#[test]
fn scales_up_by_the_usage_ratio() {
    // 2 pods at 180m of 200m = 90 % against 50 %: ceil(1.8 × 2) = 4.
    let mut h = History::default();
    let d = decide(
        &hpa(1, 10, 50, None),
        &scale(2),
        &[pod("a"), pod("b")],
        &usage(&[("a", 180), ("b", 180)]),
        &mut h,
        t(0),
    );
    assert_eq!(d.rescale, Some(4));
    assert_eq!(d.status["desiredReplicas"], 4);
    assert_eq!(
        d.status["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
        90
    );
    assert_eq!(d.events[0].1, "SuccessfulRescale");
    assert_eq!(
        d.events[0].2,
        "New size: 4; reason: cpu resource utilization (percentage of request) above target"
    );
    assert_eq!(cond(&d, "AbleToScale")["reason"], "SucceededRescale");
    assert_eq!(cond(&d, "ScalingActive")["reason"], "ValidMetricFound");
}

#[test]
fn no_change_within_the_tolerance() {
    let mut h = History::default();
    // 105m/200m = 52.5 % against 50 %: ratio 1.05.
    let d = decide(
        &hpa(1, 10, 50, None),
        &scale(2),
        &[pod("a"), pod("b")],
        &usage(&[("a", 105), ("b", 105)]),
        &mut h,
        t(0),
    );
    assert_eq!(d.rescale, None);
    assert_eq!(cond(&d, "AbleToScale")["reason"], "ReadyForNewScale");
}

#[test]
fn the_maximum_and_the_legacy_rate_limit_bound_a_scale_up() {
    let mut h = History::default();
    // 10× the target: ceil(10 × 1) = 10, limited to max(2 × 1, 4) = 4.
    let d = decide(
        &hpa(1, 10, 10, None),
        &scale(1),
        &[pod("a")],
        &usage(&[("a", 200)]),
        &mut h,
        t(0),
    );
    assert_eq!(d.rescale, Some(4));
    assert_eq!(cond(&d, "ScalingLimited")["reason"], "ScaleUpLimit");
    let d = decide(
        &hpa(1, 3, 10, None),
        &scale(1),
        &[pod("a")],
        &usage(&[("a", 200)]),
        &mut History::default(),
        t(0),
    );
    assert_eq!(d.rescale, Some(3));
    assert_eq!(cond(&d, "ScalingLimited")["reason"], "TooManyReplicas");
}

#[test]
fn scale_down_waits_for_the_stabilization_window() {
    let mut h = History::default();
    let pods = [pod("a"), pod("b"), pod("c"), pod("d")];
    let busy = usage(&[("a", 100), ("b", 100), ("c", 100), ("d", 100)]);
    let idle = usage(&[("a", 10), ("b", 10), ("c", 10), ("d", 10)]);
    let d = decide(&hpa(1, 10, 50, None), &scale(4), &pods, &busy, &mut h, t(0));
    assert_eq!(d.rescale, None);
    // Idle for less than 5 minutes: the window still holds 4.
    let d = decide(
        &hpa(1, 10, 50, None),
        &scale(4),
        &pods,
        &idle,
        &mut h,
        t(120),
    );
    assert_eq!(d.rescale, None);
    assert_eq!(d.status["desiredReplicas"], 4);
    // After the window: 4 × 10 % / 50 % = 0.8 → 1.
    let d = decide(
        &hpa(1, 10, 50, None),
        &scale(4),
        &pods,
        &idle,
        &mut h,
        t(301),
    );
    assert_eq!(d.rescale, Some(1));
    assert_eq!(
        d.events[0].2,
        "New size: 1; reason: All metrics below target"
    );
}

#[test]
fn behavior_policies_limit_the_rate() {
    let b = json!({"scaleDown": {"stabilizationWindowSeconds": 0,
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]},
        "scaleUp": {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]}});
    let h_ = hpa(1, 10, 50, Some(b));
    let mut h = History::default();
    let pods: Vec<PodInfo> = ["a", "b", "c", "d"].iter().map(|n| pod(n)).collect();
    let idle = usage(&[("a", 10), ("b", 10), ("c", 10), ("d", 10)]);
    let d = decide(&h_, &scale(4), &pods, &idle, &mut h, t(0));
    assert_eq!(d.rescale, Some(3), "one pod per minute down");
    assert_eq!(cond(&d, "ScalingLimited")["reason"], "ScaleDownLimit");
    let d = decide(&h_, &scale(3), &pods[..3], &idle, &mut h, t(30));
    assert_eq!(d.rescale, None, "the minute's one pod is used up");
    let d = decide(&h_, &scale(3), &pods[..3], &idle, &mut h, t(61));
    assert_eq!(d.rescale, Some(2));
    // Up: two pods per minute.
    let busy = usage(&[("a", 200), ("b", 200)]);
    let d = decide(&h_, &scale(2), &pods[..2], &busy, &mut h, t(200));
    assert_eq!(d.rescale, Some(4));
}

#[test]
fn pods_without_metrics_or_readiness_damp_the_change() {
    let mut h = History::default();
    // Scale-up with one pod missing metrics: it counts as 0 %.
    // Measured: a at 200m (100 %) vs 50 %: ratio 2; filled: (200+0)/400 = 50 % → 1.0: no change.
    let d = decide(
        &hpa(1, 10, 50, None),
        &scale(2),
        &[pod("a"), pod("b")],
        &usage(&[("a", 200)]),
        &mut h,
        t(0),
    );
    assert_eq!(d.rescale, None);
    // A pod still starting (not ready, within the CPU init period) is
    // left out and counted as 0 on a scale-up.
    let mut young = pod("c");
    young.ready = Some(false);
    young.start = Some(t(-10));
    let d = decide(
        &hpa(1, 10, 50, None),
        &scale(3),
        &[pod("a"), pod("b"), young],
        &usage(&[("a", 200), ("b", 200), ("c", 200)]),
        &mut h,
        t(0),
    );
    // (200+200+0)/600 = 66.7 % vs 50 %: ceil(1.33 × 3) = 4.
    assert_eq!(d.rescale, Some(4));
}

#[test]
fn a_missing_request_or_an_unsupported_metric_is_reported() {
    let mut h = History::default();
    let mut p = pod("a");
    p.requests.clear();
    let d = decide(
        &hpa(1, 10, 50, None),
        &scale(1),
        &[p],
        &usage(&[("a", 100)]),
        &mut h,
        t(0),
    );
    assert_eq!(d.rescale, None);
    let active = cond(&d, "ScalingActive");
    assert_eq!(active["status"], "False");
    assert!(
        active["message"]
            .as_str()
            .unwrap()
            .contains("missing request for cpu in Pod a"),
        "{active}"
    );
    assert!(d.events.iter().any(|e| e.1 == "FailedGetResourceMetric"));
    let mut custom = hpa(1, 10, 50, None);
    custom.spec.as_mut().unwrap().metrics = Some(vec![
        serde_json::from_value(json!({"type": "Pods", "pods": {
            "metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}))
        .unwrap(),
    ]);
    let d = decide(
        &custom,
        &scale(1),
        &[pod("a")],
        &usage(&[("a", 100)]),
        &mut h,
        t(0),
    );
    assert!(
        cond(&d, "ScalingActive")["message"]
            .as_str()
            .unwrap()
            .contains("custom or external metrics API")
    );
}

#[test]
fn bounds_and_a_zero_target_are_honoured() {
    let mut h = History::default();
    let d = decide(
        &hpa(2, 5, 50, None),
        &scale(8),
        &[],
        &Usage::new(),
        &mut h,
        t(0),
    );
    assert_eq!(d.rescale, Some(5));
    assert!(d.events[0].2.contains("above Spec.MaxReplicas"));
    let d = decide(
        &hpa(2, 5, 50, None),
        &scale(1),
        &[],
        &Usage::new(),
        &mut h,
        t(0),
    );
    assert_eq!(d.rescale, Some(2));
    let d = decide(
        &hpa(2, 5, 50, None),
        &scale(0),
        &[],
        &Usage::new(),
        &mut h,
        t(0),
    );
    assert_eq!(d.rescale, None);
    assert_eq!(cond(&d, "ScalingActive")["reason"], "ScalingDisabled");
}

#[test]
fn average_value_targets_use_the_mean_per_pod() {
    let mut h = History::default();
    let mut x = hpa(1, 10, 50, None);
    x.spec.as_mut().unwrap().metrics = Some(vec![
        serde_json::from_value(json!({"type": "Resource", "resource": {"name": "memory",
            "target": {"type": "AverageValue", "averageValue": "100Mi"}}}))
        .unwrap(),
    ]);
    let mib = 1024 * 1024 * 1000;
    let u: Usage = [("a", 300 * mib), ("b", 100 * mib)]
        .iter()
        .map(|(p, v)| {
            (
                (*p).to_owned(),
                (
                    t(0),
                    BTreeMap::from([(
                        "app".to_owned(),
                        BTreeMap::from([("memory".to_owned(), *v)]),
                    )]),
                ),
            )
        })
        .collect();
    // Mean 200Mi vs 100Mi: ratio 2 → 4 pods.
    let d = decide(&x, &scale(2), &[pod("a"), pod("b")], &u, &mut h, t(0));
    assert_eq!(d.rescale, Some(4));
    assert_eq!(
        d.status["currentMetrics"][0]["resource"]["current"]["averageValue"],
        "209715200"
    );
}
