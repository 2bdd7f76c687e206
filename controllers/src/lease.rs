//! Leader election on a coordination.k8s.io Lease, as client-go's
//! leaderelection does: the holder renews every [`RETRY`]; another
//! candidate takes over once `renewTime + leaseDurationSeconds` has passed,
//! or at once when the holder released it on its way out.
//! Wall-clock time is used here (never the controllers' test clock).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::watch;

pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "rudder-controller-manager";
pub const DURATION_SECONDS: i32 = 15;
const RETRY: Duration = Duration::from_secs(2);

/// What to do with the Lease as it is now.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Create,
    Renew,
    TakeOver,
    Follow,
}

/// The pure decision of one election round.
pub fn decide(lease: Option<&Lease>, me: &str, now: Timestamp) -> Step {
    let Some(l) = lease else { return Step::Create };
    let spec = l.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() == Some(me) {
        return Step::Renew;
    }
    let expired = match (spec.renew_time, spec.lease_duration_seconds) {
        (Some(t), Some(d)) => now.as_second() > t.0.as_second() + i64::from(d),
        _ => true,
    };
    if expired || spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        Step::TakeOver
    } else {
        Step::Follow
    }
}

fn spec(me: &str, now: Timestamp, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(me.into()),
        lease_duration_seconds: Some(DURATION_SECONDS),
        acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// Campaigns for and keeps the Lease; `leader` says whether this process
/// holds it.
pub async fn lead(
    client: Client,
    me: String,
    leader: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, NAMESPACE);
    let mut last_renewed: Option<std::time::Instant> = None;
    loop {
        let now = Timestamp::now();
        let cur = api.get_opt(NAME).await;
        let mut other_holds = false;
        let ok = match cur {
            Err(e) => {
                tracing::debug!(error = %e, "reading the leader lease failed");
                false
            }
            Ok(cur) => match decide(cur.as_ref(), &me, now) {
                Step::Create => {
                    let l = Lease {
                        metadata: ObjectMeta {
                            name: Some(NAME.into()),
                            namespace: Some(NAMESPACE.into()),
                            ..ObjectMeta::default()
                        },
                        spec: Some(spec(&me, now, 0, None)),
                    };
                    api.create(&PostParams::default(), &l).await.is_ok()
                }
                Step::Renew | Step::TakeOver => {
                    let mut l = cur.expect("decided on an existing lease");
                    let old = l.spec.clone().unwrap_or_default();
                    let taking = old.holder_identity.as_deref() != Some(me.as_str());
                    let transitions = old.lease_transitions.unwrap_or(0) + i32::from(taking);
                    let acquired = if taking { None } else { old.acquire_time };
                    l.spec = Some(spec(&me, now, transitions, acquired));
                    // The resourceVersion in `l` makes this a compare-and-swap.
                    let r = api.replace(NAME, &PostParams::default(), &l).await;
                    if taking && r.is_ok() {
                        tracing::info!(identity = %me, "became the controller leader");
                    }
                    r.is_ok()
                }
                Step::Follow => {
                    other_holds = true;
                    false
                }
            },
        };
        if ok {
            last_renewed = Some(std::time::Instant::now());
        }
        if other_holds {
            last_renewed = None;
        }
        // Leadership holds while the last renewal is recent enough that no
        // one else can have taken over (two thirds of the duration).
        let holding = last_renewed.is_some_and(|t| {
            t.elapsed() < Duration::from_secs(u64::try_from(DURATION_SECONDS * 2 / 3).unwrap_or(10))
        });
        if *leader.borrow() != holding {
            if !holding {
                tracing::warn!(identity = %me, "lost the controller lease");
            }
            let _ = leader.send(holding);
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    let held = *leader.borrow();
    let _ = leader.send(false);
    if held {
        release(&api, &me).await;
    }
}

/// Gives the Lease up on the way out (client-go's `ReleaseOnCancel`): no
/// holder, a one-second duration, so the next server leads at once rather
/// than after [`DURATION_SECONDS`]. Best effort, bounded.
async fn release(api: &Api<Lease>, me: &str) {
    let attempt = async {
        let mut l = api.get(NAME).await.ok()?;
        let old = l.spec.clone().unwrap_or_default();
        if old.holder_identity.as_deref() != Some(me) {
            return None;
        }
        let now = MicroTime(Timestamp::now());
        l.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: old.lease_transitions,
            ..LeaseSpec::default()
        });
        api.replace(NAME, &PostParams::default(), &l).await.ok()
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Some(_)) => tracing::info!(identity = %me, "released the controller lease"),
        _ => tracing::debug!(identity = %me, "could not release the controller lease"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renew: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(spec(holder, renew, 0, None)),
        }
    }

    #[test]
    fn election_steps() {
        let t: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        assert_eq!(decide(None, "a", t), Step::Create);
        assert_eq!(decide(Some(&lease("a", t)), "a", t), Step::Renew);
        assert_eq!(
            decide(
                Some(&lease("b", t)),
                "a",
                t + jiff::SignedDuration::from_secs(10)
            ),
            Step::Follow
        );
        assert_eq!(
            decide(
                Some(&lease("b", t)),
                "a",
                t + jiff::SignedDuration::from_secs(16)
            ),
            Step::TakeOver
        );
    }
}
