//! Runs one part of the agent (the kubelet, the service proxy, the network
//! daemon) in a task of its own, so that `rudder agent run` keeps the
//! others serving when one fails: an error or a panic after start-up is
//! logged and the part is started again with back-off (1 s doubling to
//! 60 s, from 1 s again once it has run for 5 minutes). A failure of the
//! first start within [`STARTUP`] is a start-up error (bad configuration,
//! a kernel that cannot load the dataplane) and is returned, so that the
//! process exits with it rather than retrying something that cannot work.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// How long a first start may take to fail and still count as a start-up
/// error.
pub const STARTUP: Duration = Duration::from_secs(10);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run this long resets the back-off.
const HEALTHY: Duration = Duration::from_secs(300);

/// A task that belongs to one run of a part (a listener, a renewal loop):
/// aborted when the guard is dropped, so that a part restarted after a
/// failure does not find its previous run's listeners still holding their
/// ports.
#[derive(Debug)]
pub struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Spawns `task` for as long as the returned guard lives.
pub fn spawn_scoped(task: impl Future<Output = ()> + Send + 'static) -> TaskGuard {
    TaskGuard(tokio::spawn(task))
}

/// A part that could not start.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {message}")]
pub struct StartError {
    pub name: &'static str,
    pub message: String,
}

/// Runs `start()` until it returns `Ok`, restarting it after failures as
/// the module doc says.
pub async fn supervise<F, Fut, E>(name: &'static str, mut start: F) -> Result<(), StartError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let mut backoff = BACKOFF_FIRST;
    let mut first = true;
    loop {
        let began = Instant::now();
        let outcome = tokio::spawn(start()).await;
        let message = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("{e:#}"),
            Err(join) if join.is_panic() => format!("panicked: {}", panic_text(join)),
            Err(join) => format!("stopped: {join}"),
        };
        let ran = began.elapsed();
        if first && ran < STARTUP {
            return Err(StartError { name, message });
        }
        first = false;
        if ran >= HEALTHY {
            backoff = BACKOFF_FIRST;
        }
        tracing::error!(part = name, error = %message, retry_in = ?backoff, "agent part failed; the others keep running");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn panic_text(join: tokio::task::JoinError) -> String {
    let payload = join.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_start_up_failure_is_returned() {
        let e = supervise("proxy", || async { Err::<(), _>("no BPF") })
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "proxy: no BPF");
    }

    #[tokio::test(start_paused = true)]
    async fn later_failures_and_panics_restart_the_part() {
        let runs = Arc::new(AtomicU32::new(0));
        let r = Arc::clone(&runs);
        let done = supervise("kubelet", move || {
            let r = Arc::clone(&r);
            async move {
                let n = r.fetch_add(1, Ordering::SeqCst);
                // Each run lasts past start-up, then fails in turn: an
                // error, a panic, then a clean end.
                tokio::time::sleep(STARTUP * 2).await;
                match n {
                    0 => Err("watch broke".to_string()),
                    1 => panic!("a bad object"),
                    _ => Ok(()),
                }
            }
        })
        .await;
        assert!(done.is_ok());
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}
