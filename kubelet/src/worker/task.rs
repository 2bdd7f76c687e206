//! The sequences of runtime calls that stop and remove a container, as the
//! kubelet's `killContainer` and its garbage collection make them: the
//! stop signal, the grace period, then SIGKILL to every process; a
//! container removed as task, container record, then snapshot. They take
//! the runtime seam (`&dyn ContainerRuntime`), so their order and timing
//! are unit-tested against a recording fake, with tokio's clock paused.

use std::{collections::HashMap, time::Duration};

use rudder_runtime::{ContainerRuntime, containerd::TaskState};
use tokio::time::Instant;

use super::L_STOP_SIGNAL;

/// How often a stopping task is looked at.
const POLL: Duration = Duration::from_millis(100);
/// How long a SIGKILLed task is waited for.
const AFTER_KILL: Duration = Duration::from_secs(10);
/// How long a task is waited for before a removal deletes it anyway.
const BEFORE_REMOVE: Duration = Duration::from_secs(5);

/// The signal a container is stopped with: its image's `StopSignal` (kept
/// in a container label at creation), SIGTERM by default.
pub(super) fn stop_signal(labels: &HashMap<String, String>) -> u32 {
    labels
        .get(L_STOP_SIGNAL)
        .filter(|s| !s.is_empty())
        .map_or(15, |s| signal_number(s))
}

/// A signal's number from its name (`SIGTERM`, `TERM` or `15`); unknown
/// names are SIGTERM.
pub(super) fn signal_number(name: &str) -> u32 {
    let n = name.trim().trim_start_matches("SIG");
    if let Ok(v) = n.parse::<u32>() {
        return v;
    }
    match n {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "WINCH" => 28,
        _ => 15,
    }
}

/// Waits until the container's task has stopped (or is gone, or cannot be
/// asked about), looking every 100 ms for at most `within`; whether it
/// stopped.
pub(super) async fn wait_stopped(rt: &dyn ContainerRuntime, id: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let stopped = rt
            .task_get(id)
            .await
            .map(|t| t.is_none_or(|t| t.state == TaskState::Stopped))
            .unwrap_or(true);
        if stopped {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Stops a container's task: `signal` to its main process and `grace` to
/// exit, then SIGKILL to all its processes (at once when `grace` is zero).
pub(super) async fn stop(rt: &dyn ContainerRuntime, id: &str, signal: u32, grace: Duration) {
    if !grace.is_zero() {
        let _ = rt.task_kill(id, signal, false).await;
        if wait_stopped(rt, id, grace).await {
            return;
        }
    }
    let _ = rt.task_kill(id, 9, true).await;
    wait_stopped(rt, id, AFTER_KILL).await;
}

/// Removes a container whatever its state: SIGKILL, a short wait, then
/// the task, the container record and its snapshot (each already gone
/// counts as removed).
pub(super) async fn remove(rt: &dyn ContainerRuntime, id: &str) {
    let _ = rt.task_kill(id, 9, true).await;
    wait_stopped(rt, id, BEFORE_REMOVE).await;
    delete(rt, id).await;
}

/// Deletes what a container that is not running leaves: its task, its
/// record and its snapshot.
pub(super) async fn delete(rt: &dyn ContainerRuntime, id: &str) {
    let _ = rt.task_delete(id).await;
    let _ = rt.container_delete(id).await;
    let _ = rt.snapshot_remove(id).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_runtime::{Fake, Stops};

    #[tokio::test(start_paused = true)]
    async fn a_task_that_exits_on_its_signal_is_not_killed() {
        let rt = Fake::with_task("c1", Stops::On(15));
        let started = Instant::now();
        stop(&rt, "c1", 15, Duration::from_secs(30)).await;
        assert_eq!(rt.calls(), ["task_kill c1 15", "task_get c1"]);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_its_signal_is_killed_when_the_grace_period_ends() {
        let rt = Fake::with_task("c1", Stops::On(9));
        let started = Instant::now();
        stop(&rt, "c1", 15, Duration::from_secs(3)).await;
        let calls = rt.calls();
        assert_eq!(calls.first().map(String::as_str), Some("task_kill c1 15"));
        let kill = calls
            .iter()
            .position(|c| c == "task_kill c1 9 all")
            .unwrap();
        // Looked at every 100 ms through the 3 s, then killed.
        assert!((30..=32).contains(&calls[1..kill].len()), "{calls:?}");
        assert!(calls[1..kill].iter().all(|c| c == "task_get c1"));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(3) && waited < Duration::from_millis(3300));
    }

    #[tokio::test(start_paused = true)]
    async fn no_grace_period_means_sigkill_at_once() {
        let rt = Fake::with_task("c1", Stops::On(9));
        stop(&rt, "c1", 15, Duration::ZERO).await;
        assert_eq!(rt.calls(), ["task_kill c1 9 all", "task_get c1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn removal_kills_then_deletes_task_record_and_snapshot_in_order() {
        let rt = Fake::with_task("c1", Stops::On(9));
        remove(&rt, "c1").await;
        assert_eq!(
            rt.calls(),
            [
                "task_kill c1 9 all",
                "task_get c1",
                "task_delete c1",
                "container_delete c1",
                "snapshot_remove c1"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_never_stops_is_given_up_on_after_a_bounded_wait() {
        let rt = Fake::with_task("c1", Stops::Never);
        let started = Instant::now();
        stop(&rt, "c1", 15, Duration::from_secs(1)).await;
        // 1 s of grace, then 10 s after SIGKILL: never longer.
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(11) && waited < Duration::from_millis(11_400));
    }

    #[test]
    fn the_stop_signal_comes_from_the_image_label() {
        let labels = |v: &str| HashMap::from([(L_STOP_SIGNAL.to_owned(), v.to_owned())]);
        assert_eq!(stop_signal(&HashMap::new()), 15);
        assert_eq!(stop_signal(&labels("")), 15);
        assert_eq!(stop_signal(&labels("SIGQUIT")), 3);
        assert_eq!(stop_signal(&labels("INT")), 2);
        assert_eq!(stop_signal(&labels("28")), 28);
        assert_eq!(stop_signal(&labels("SIGBOGUS")), 15);
    }
}
