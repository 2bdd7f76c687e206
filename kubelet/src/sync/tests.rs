//! Unit tests of the pod sync decider: plans for observed states and memory.

use super::*;

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

fn myapp(policy: &str) -> Pod {
    pod(serde_json::json!({
        "metadata": {"name": "myapp-pod", "namespace": "default", "uid": "u1"},
        "spec": {
            "restartPolicy": policy,
            "initContainers": [
                {"name": "init-myservice", "image": "busybox:1.28"},
                {"name": "init-mydb", "image": "busybox:1.28"}
            ],
            "containers": [{"name": "myapp-container", "image": "busybox:1.28"}]
        }
    }))
}

fn sandbox() -> Observed {
    Observed {
        sandbox: Some(SandboxObs {
            pod_ip: Some("10.244.0.5".into()),
        }),
        containers: HashMap::new(),
    }
}

fn running(obs: &mut Observed, name: &str, attempt: u32, at: Time) {
    obs.containers.insert(
        name.into(),
        (
            Instance {
                id: format!("{name}-{attempt}"),
                attempt,
                state: InstanceState::Running { started_at: at },
            },
            None,
        ),
    );
}

fn exited(obs: &mut Observed, name: &str, attempt: u32, code: i32, started: Time, finished: Time) {
    obs.containers.insert(
        name.into(),
        (
            Instance {
                id: format!("{name}-{attempt}"),
                attempt,
                state: InstanceState::Exited {
                    exit_code: code,
                    reason: TerminatedReason::of_exit(code, false),
                    message: String::new(),
                    started_at: Some(started),
                    finished_at: finished,
                },
            },
            None,
        ),
    );
}

fn starts(p: &Plan) -> Vec<(&str, u32)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { name, attempt } => Some((name.as_str(), *attempt)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_pod_gets_its_sandbox_first() {
    let p = plan(
        &myapp("Always"),
        &Observed::default(),
        &Memory::default(),
        0.0,
    );
    assert_eq!(p.actions, vec![Action::CreateSandbox]);
    assert_eq!(p.status.phase, "Pending");
    assert!(!p.status.initialized && !p.status.ready_to_start);
}

#[test]
fn init_containers_run_one_at_a_time_then_the_app() {
    let pod = myapp("Always");
    let mem = Memory::default();
    let mut obs = sandbox();
    let p = plan(&pod, &obs, &mem, 0.0);
    assert_eq!(starts(&p), [("init-myservice", 0)]);
    assert_eq!(
        p.status.statuses[0].state,
        ViewState::Waiting {
            reason: WaitingReason::PodInitializing,
            message: None
        }
    );

    running(&mut obs, "init-myservice", 0, 1.0);
    assert!(
        starts(&plan(&pod, &obs, &mem, 2.0)).is_empty(),
        "waits for the first"
    );

    exited(&mut obs, "init-myservice", 0, 0, 1.0, 5.0);
    let p = plan(&pod, &obs, &mem, 6.0);
    assert_eq!(starts(&p), [("init-mydb", 0)]);
    assert!(!p.status.initialized);

    exited(&mut obs, "init-mydb", 0, 0, 6.0, 9.0);
    let p = plan(&pod, &obs, &mem, 10.0);
    assert_eq!(starts(&p), [("myapp-container", 0)]);
    assert!(p.status.initialized);

    running(&mut obs, "myapp-container", 0, 10.0);
    let p = plan(&pod, &obs, &mem, 11.0);
    assert!(p.actions.is_empty());
    assert_eq!(p.status.phase, "Running");
    assert!(p.status.ready && p.status.containers_ready);
    assert_eq!(p.status.pod_ip.as_deref(), Some("10.244.0.5"));
}

#[test]
fn a_failing_init_container_backs_off_or_fails_the_pod() {
    let mut obs = sandbox();
    exited(&mut obs, "init-myservice", 0, 1, 1.0, 2.0);
    let mem = Memory::default();

    // Always: retried after the back-off, never the app meanwhile.
    let p = plan(&myapp("Always"), &obs, &mem, 3.0);
    assert!(starts(&p).is_empty());
    assert_eq!(p.requeue_at, Some(12.0));
    assert_eq!(p.status.phase, "Pending");
    let p = plan(&myapp("Always"), &obs, &mem, 12.0);
    assert_eq!(starts(&p), [("init-myservice", 1)]);

    // Never: the pod fails, the app never starts.
    let p = plan(&myapp("Never"), &obs, &mem, 30.0);
    assert!(starts(&p).is_empty());
    assert_eq!(p.status.phase, "Failed");
}

#[test]
fn crash_loop_back_off_doubles_to_the_cap_and_resets() {
    let b = next_backoff(None, Some(0.0), 1.0);
    assert_eq!((b.delay_secs, b.not_before), (10, 11.0));
    let mut d = b;
    let mut seen = vec![d.delay_secs];
    for _ in 0..7 {
        d = next_backoff(Some(d), Some(100.0), 101.0);
        seen.push(d.delay_secs);
    }
    assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300, 300]);
    // Ten minutes of running resets it.
    let r = next_backoff(Some(d), Some(0.0), 601.0);
    assert_eq!(r.delay_secs, 10);
}

#[test]
fn a_crashing_app_container_shows_crash_loop_back_off() {
    let pod = pod(serde_json::json!({
        "metadata": {"name": "crash", "namespace": "default", "uid": "u2"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }));
    let mut obs = sandbox();
    exited(&mut obs, "c", 3, 1, 100.0, 101.0);
    let mut mem = Memory::default();
    mem.backoff.insert(
        "c".into(),
        Backoff {
            delay_secs: 80,
            not_before: 181.0,
        },
    );
    let p = plan(&pod, &obs, &mem, 120.0);
    assert!(starts(&p).is_empty());
    assert_eq!(p.requeue_at, Some(181.0));
    let s = &p.status.statuses[0];
    assert_eq!(s.restart_count, 3);
    match &s.state {
        ViewState::Waiting { reason, message } => {
            assert_eq!(*reason, WaitingReason::CrashLoopBackOff);
            assert!(
                message.as_ref().unwrap().starts_with(
                    "back-off 80s restarting failed container=c pod=crash_default(u2)"
                )
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.last_state,
        Some(ViewState::Terminated { exit_code: 1, .. })
    ));
    assert_eq!(p.status.phase, "Running", "restarting counts as running");
    assert_eq!(starts(&plan(&pod, &obs, &mem, 181.0)), [("c", 4)]);
}

#[test]
fn restart_policies_decide_the_final_phase() {
    let make = |policy: &str| {
        pod(serde_json::json!({
            "metadata": {"name": "j", "namespace": "default", "uid": "u3"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]}
        }))
    };
    let mut obs = sandbox();
    exited(&mut obs, "a", 0, 0, 1.0, 2.0);
    exited(&mut obs, "b", 0, 0, 1.0, 2.0);
    let mem = Memory::default();
    for policy in ["OnFailure", "Never"] {
        let p = plan(&make(policy), &obs, &mem, 3.0);
        assert_eq!(p.status.phase, "Succeeded", "{policy}");
        assert!(starts(&p).is_empty());
    }
    exited(&mut obs, "b", 0, 2, 1.0, 2.0);
    assert_eq!(plan(&make("Never"), &obs, &mem, 3.0).status.phase, "Failed");
    let p = plan(&make("OnFailure"), &obs, &mem, 30.0);
    assert_eq!(starts(&p), [("b", 1)], "only the failed one restarts");
    let p = plan(&make("Always"), &obs, &mem, 30.0);
    assert_eq!(starts(&p).len(), 2);
}

#[test]
fn deletion_kills_then_tears_down_then_finalizes() {
    let mut pod = myapp("Always");
    pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::UNIX_EPOCH,
    ));
    pod.metadata.deletion_grace_period_seconds = Some(7);
    let mut obs = sandbox();
    exited(&mut obs, "init-myservice", 0, 0, 1.0, 2.0);
    running(&mut obs, "myapp-container", 0, 3.0);
    let p = plan(&pod, &obs, &Memory::default(), 4.0);
    assert_eq!(
        p.actions,
        vec![Action::Kill {
            name: "myapp-container".into(),
            id: "myapp-container-0".into(),
            grace_secs: 7,
            reason: KillReason::Killing
        }]
    );
    exited(&mut obs, "myapp-container", 0, 137, 3.0, 5.0);
    assert_eq!(
        plan(&pod, &obs, &Memory::default(), 6.0).actions,
        vec![Action::TeardownSandbox]
    );
    obs.sandbox = None;
    assert_eq!(
        plan(&pod, &obs, &Memory::default(), 6.0).actions,
        vec![Action::Finalize]
    );
}

#[test]
fn sidecars_start_in_order_and_keep_running() {
    let pod = pod(serde_json::json!({
        "metadata": {"name": "s", "namespace": "default", "uid": "u4"},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [
                {"name": "proxy", "image": "busybox", "restartPolicy": "Always"},
                {"name": "setup", "image": "busybox"}
            ],
            "containers": [{"name": "main", "image": "busybox"}]
        }
    }));
    let mem = Memory::default();
    let mut obs = sandbox();
    assert_eq!(starts(&plan(&pod, &obs, &mem, 0.0)), [("proxy", 0)]);
    running(&mut obs, "proxy", 0, 1.0);
    assert_eq!(
        starts(&plan(&pod, &obs, &mem, 2.0)),
        [("setup", 0)],
        "next once the sidecar runs"
    );
    exited(&mut obs, "setup", 0, 0, 2.0, 3.0);
    assert_eq!(starts(&plan(&pod, &obs, &mem, 4.0)), [("main", 0)]);
    // The sidecar crashing later is restarted even under Never.
    running(&mut obs, "main", 0, 4.0);
    exited(&mut obs, "proxy", 0, 1, 1.0, 5.0);
    let p = plan(&pod, &obs, &mem, 20.0);
    assert_eq!(starts(&p), [("proxy", 1)]);
    // The main container finishing ends the pod and stops the sidecar.
    running(&mut obs, "proxy", 1, 20.0);
    exited(&mut obs, "main", 0, 0, 4.0, 21.0);
    let p = plan(&pod, &obs, &mem, 22.0);
    assert_eq!(p.status.phase, "Succeeded");
    assert!(matches!(&p.actions[..], [Action::Kill { name, .. }] if name == "proxy"));
}

#[test]
fn readiness_follows_the_probe_and_image_errors_wait() {
    let pod = pod(serde_json::json!({
        "metadata": {"name": "r", "namespace": "default", "uid": "u5"},
        "spec": {"containers": [
            {"name": "web", "image": "nginx", "readinessProbe": {"tcpSocket": {"port": 80}}},
            {"name": "bad", "image": "nope:1"}
        ]}
    }));
    let mut obs = sandbox();
    running(&mut obs, "web", 0, 1.0);
    let mut mem = Memory::default();
    mem.waiting.insert(
        "bad".into(),
        Waiting {
            reason: WaitingReason::ImagePullBackOff,
            message: "Back-off pulling image \"nope:1\"".into(),
            retry_at: 30.0,
            delay_secs: 20,
        },
    );
    let p = plan(&pod, &obs, &mem, 2.0);
    assert!(starts(&p).is_empty());
    assert_eq!(p.requeue_at, Some(30.0));
    assert!(!p.status.statuses[0].ready, "no probe result yet");
    assert_eq!(
        p.status.statuses[1].state,
        ViewState::Waiting {
            reason: WaitingReason::ImagePullBackOff,
            message: Some("Back-off pulling image \"nope:1\"".into())
        }
    );
    assert_eq!(p.status.phase, "Pending");
    mem.ready.insert("web".into(), true);
    assert!(plan(&pod, &obs, &mem, 3.0).status.statuses[0].ready);
    assert_eq!(starts(&plan(&pod, &obs, &mem, 30.0)), [("bad", 0)]);
}

#[test]
fn the_active_deadline_fails_the_pod() {
    let pod = pod(serde_json::json!({
        "metadata": {"name": "d", "namespace": "default", "uid": "u6"},
        "spec": {"activeDeadlineSeconds": 5, "containers": [{"name": "c", "image": "busybox"}]}
    }));
    let mut obs = sandbox();
    running(&mut obs, "c", 0, 1.0);
    let mem = Memory {
        first_seen: Some(0.0),
        ..Memory::default()
    };
    let p = plan(&pod, &obs, &mem, 6.0);
    assert_eq!(p.status.phase, "Failed");
    assert_eq!(p.status.reason.as_deref(), Some("DeadlineExceeded"));
    assert!(matches!(
        &p.actions[..],
        [Action::Kill { grace_secs: 0, .. }]
    ));
}

#[test]
fn ephemeral_containers_start_once_and_leave_the_phase_alone() {
    let mut p = myapp("Always");
    p.spec.as_mut().unwrap().init_containers = None;
    p.spec.as_mut().unwrap().ephemeral_containers = Some(vec![
        serde_json::from_value(serde_json::json!(
            {"name": "debugger", "image": "busybox:1.28", "targetContainerName": "myapp-container"}))
        .unwrap(),
    ]);
    let mut obs = sandbox();
    running(&mut obs, "myapp-container", 0, 10.0);
    let mem = Memory::default();
    let plan1 = plan(&p, &obs, &mem, 20.0);
    assert_eq!(starts(&plan1), [("debugger", 0)]);
    assert_eq!(plan1.status.phase, "Running");
    let e = &plan1.status.ephemeral_statuses[0];
    assert_eq!(e.name, "debugger");
    assert!(!e.ready);
    // It ran and exited with an error: not restarted, not CrashLoopBackOff,
    // and the pod stays Running and Ready on its app container alone.
    exited(&mut obs, "debugger", 0, 1, 20.0, 30.0);
    let plan2 = plan(&p, &obs, &mem, 400.0);
    assert!(starts(&plan2).is_empty(), "{:?}", plan2.actions);
    assert_eq!(plan2.status.phase, "Running");
    assert!(plan2.status.ready);
    assert!(matches!(
        plan2.status.ephemeral_statuses[0].state,
        ViewState::Terminated { exit_code: 1, .. }
    ));
    assert_eq!(plan2.status.statuses.len(), 1);
}

fn view(state: ViewState, restart_count: u32) -> ContainerView {
    ContainerView {
        name: "c".into(),
        image: "busybox".into(),
        container_id: None,
        restart_count,
        ready: false,
        started: false,
        state,
        last_state: None,
    }
}

fn terminated_view(code: i32) -> ViewState {
    ViewState::Terminated {
        exit_code: code,
        reason: TerminatedReason::of_exit(code, false),
        message: None,
        started_at: Some(1.0),
        finished_at: 2.0,
        container_id: "containerd://x".into(),
    }
}

#[test]
fn the_phase_follows_the_kubelets_get_phase() {
    let waiting = ViewState::Waiting {
        reason: WaitingReason::ContainerCreating,
        message: None,
    };
    let running = ViewState::Running { started_at: 1.0 };
    for (statuses, policy, want) in [
        (vec![], "Always", "Pending"),
        (vec![view(waiting.clone(), 0)], "Always", "Pending"),
        // A container waiting to restart counts as running.
        (vec![view(waiting.clone(), 1)], "Always", "Running"),
        (
            vec![view(running.clone(), 0), view(terminated_view(1), 0)],
            "Never",
            "Running",
        ),
        (
            vec![view(terminated_view(0), 0), view(terminated_view(0), 0)],
            "Never",
            "Succeeded",
        ),
        (
            vec![view(terminated_view(0), 0), view(terminated_view(1), 0)],
            "Never",
            "Failed",
        ),
        // Under OnFailure, the failed one is restarting.
        (
            vec![view(terminated_view(0), 0), view(terminated_view(1), 0)],
            "OnFailure",
            "Running",
        ),
        (
            vec![view(terminated_view(0), 0), view(terminated_view(0), 0)],
            "OnFailure",
            "Succeeded",
        ),
        // Under Always, stopped containers are about to restart, whatever
        // their exit codes.
        (vec![view(terminated_view(1), 0)], "Always", "Running"),
        (vec![view(terminated_view(0), 0)], "Always", "Running"),
        (
            vec![view(running, 0), view(waiting, 0)],
            "Always",
            "Pending",
        ),
    ] {
        assert_eq!(
            phase(&statuses, policy),
            want,
            "{statuses:?} under {policy}"
        );
    }
}

#[test]
fn readiness_gates_hold_a_pod_until_their_conditions_are_true() {
    let mut p = pod(serde_json::json!({
        "metadata": {"name": "g", "namespace": "default", "uid": "u"},
        "spec": {"readinessGates": [{"conditionType": "example.com/ready"}],
                 "containers": [{"name": "c", "image": "busybox"}]},
    }));
    assert!(!readiness_gates_pass(&p));
    p.status = Some(
        serde_json::from_value(serde_json::json!({
            "conditions": [{"type": "example.com/ready", "status": "False"}]
        }))
        .unwrap(),
    );
    assert!(!readiness_gates_pass(&p));
    p.status = Some(
        serde_json::from_value(serde_json::json!({
            "conditions": [{"type": "example.com/ready", "status": "True"}]
        }))
        .unwrap(),
    );
    assert!(readiness_gates_pass(&p));
    assert!(
        readiness_gates_pass(&myapp("Always")),
        "no gates: nothing to wait for"
    );
}

#[test]
fn terminated_reasons_round_trip_through_labels_and_unknown_ones_read_as_error() {
    for r in [
        TerminatedReason::Completed,
        TerminatedReason::Error,
        TerminatedReason::OomKilled,
        TerminatedReason::ContainerCannotRun,
        TerminatedReason::StartError,
    ] {
        assert_eq!(TerminatedReason::from_label(r.as_str()), r);
    }
    assert_eq!(
        TerminatedReason::from_label("rm -rf"),
        TerminatedReason::Error
    );
    assert_eq!(TerminatedReason::of_exit(0, false).as_str(), "Completed");
    assert_eq!(TerminatedReason::of_exit(137, true).as_str(), "OOMKilled");
    assert_eq!(TerminatedReason::of_exit(2, false).as_str(), "Error");
}
