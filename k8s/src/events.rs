//! What client-go's `EventCorrelator` decides for each Event a component
//! wants to record, so that a crash-looping pod, a failing probe or a busy
//! controller does not write a new Event object every time:
//!
//! - **aggregation**: after 10 events of the same source, object, type and
//!   reason with different messages within 10 minutes, further ones carry
//!   the message `(combined from similar events): <message>`;
//! - **deduplication**: an event identical to one already recorded (same
//!   source, object, type, reason and message) bumps that Event's `count`
//!   and `lastTimestamp` instead of making another;
//! - **spam filter**: each source and object has a token bucket of 25
//!   events, refilled at one per 5 minutes; past it, events are dropped.
//!
//! Pure: the caller passes the time in and does the writes; the kubelet
//! and the controllers both record through it.

use std::collections::{HashMap, HashSet};

/// Upstream's `defaultAggregateMaxEvents` and `defaultAggregateIntervalInSeconds`.
const SIMILAR_MAX: usize = 10;
const SIMILAR_WINDOW_SECS: f64 = 600.0;
/// Upstream's `defaultSpamBurst` and `defaultSpamQPS` (1/300).
const SPAM_BURST: f64 = 25.0;
const SPAM_REFILL_SECS: f64 = 300.0;
/// Upstream's `maxLruCacheEntries`; past it, the oldest knowledge goes.
const MAX_ENTRIES: usize = 4096;
const COMBINED: &str = "(combined from similar events): ";

/// What identifies an event for correlation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventKey {
    /// The reporting component and host (`kubelet node-1`).
    pub source: String,
    /// The involved object: kind, namespace, name and uid.
    pub object: String,
    pub type_: String,
    pub reason: String,
    pub message: String,
}

/// What to do with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Make a new Event with this message (then tell [`Correlator::created`]).
    Create { key: EventKey },
    /// Set `count` (and `lastTimestamp`) of the existing Event `name`.
    Bump {
        key: EventKey,
        name: String,
        count: i32,
    },
    /// Over the object's budget: record nothing.
    Drop,
}

#[derive(Debug, Default)]
struct Similar {
    messages: HashSet<String>,
    since: f64,
}

/// The correlator's memory (one per recording component).
#[derive(Debug, Default)]
pub struct Correlator {
    buckets: HashMap<(String, String), (f64, f64)>,
    similar: HashMap<(String, String, String, String), Similar>,
    recorded: HashMap<EventKey, (String, i32)>,
}

impl Correlator {
    /// The decision for `key` at `now` (seconds).
    pub fn decide(&mut self, key: EventKey, now: f64) -> Decision {
        if !self.take_token(&key, now) {
            return Decision::Drop;
        }
        let key = self.aggregate(key, now);
        match self.recorded.get(&key) {
            Some((name, count)) => Decision::Bump {
                name: name.clone(),
                count: count + 1,
                key,
            },
            None => Decision::Create { key },
        }
    }

    /// Remembers the Event made (`count` 1) or bumped for `key`.
    pub fn recorded(&mut self, key: EventKey, name: String, count: i32) {
        if self.recorded.len() >= MAX_ENTRIES {
            self.recorded.clear();
        }
        self.recorded.insert(key, (name, count));
    }

    /// Forgets the Event of `key` (it was deleted; the next one is new).
    pub fn forget(&mut self, key: &EventKey) {
        self.recorded.remove(key);
    }

    fn take_token(&mut self, key: &EventKey, now: f64) -> bool {
        if self.buckets.len() >= MAX_ENTRIES {
            self.buckets.clear();
        }
        let (tokens, last) = self
            .buckets
            .entry((key.source.clone(), key.object.clone()))
            .or_insert((SPAM_BURST, now));
        *tokens = (*tokens + (now - *last).max(0.0) / SPAM_REFILL_SECS).min(SPAM_BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn aggregate(&mut self, mut key: EventKey, now: f64) -> EventKey {
        if self.similar.len() >= MAX_ENTRIES {
            self.similar.clear();
        }
        let s = self
            .similar
            .entry((
                key.source.clone(),
                key.object.clone(),
                key.type_.clone(),
                key.reason.clone(),
            ))
            .or_insert_with(|| Similar {
                messages: HashSet::new(),
                since: now,
            });
        if now - s.since > SIMILAR_WINDOW_SECS {
            s.messages.clear();
            s.since = now;
        }
        s.messages.insert(key.message.clone());
        if s.messages.len() >= SIMILAR_MAX {
            key.message = format!("{COMBINED}{}", key.message);
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str, message: &str) -> EventKey {
        EventKey {
            source: "kubelet n1".into(),
            object: "Pod/default/p/u1".into(),
            type_: "Warning".into(),
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn create(c: &mut Correlator, k: EventKey, now: f64, name: &str) -> EventKey {
        match c.decide(k, now) {
            Decision::Create { key } => {
                c.recorded(key.clone(), name.into(), 1);
                key
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn repeats_bump_one_event() {
        let mut c = Correlator::default();
        create(&mut c, key("Unhealthy", "probe failed"), 0.0, "e1");
        for n in 2..=5 {
            match c.decide(key("Unhealthy", "probe failed"), f64::from(n)) {
                Decision::Bump { name, count, key } => {
                    assert_eq!((name.as_str(), count), ("e1", n));
                    c.recorded(key, name, count);
                }
                other => panic!("{other:?}"),
            }
        }
        // Another message is another event.
        create(&mut c, key("Unhealthy", "other"), 6.0, "e2");
    }

    #[test]
    fn many_messages_of_one_reason_are_combined() {
        let mut c = Correlator::default();
        for i in 0..9 {
            create(
                &mut c,
                key("Failed", &format!("m{i}")),
                f64::from(i),
                &format!("e{i}"),
            );
        }
        let k = create(&mut c, key("Failed", "m9"), 9.0, "e9");
        assert_eq!(k.message, "(combined from similar events): m9");
        // …and the combined one is bumped from then on.
        assert!(matches!(
            c.decide(key("Failed", "m9"), 10.0),
            Decision::Bump { count: 2, .. }
        ));
        // After the window, messages stand alone again.
        let k = create(&mut c, key("Failed", "m10"), 700.0, "e10");
        assert_eq!(k.message, "m10");
    }

    #[test]
    fn an_object_gets_25_then_one_per_five_minutes() {
        let mut c = Correlator::default();
        let mut passed = 0;
        for i in 0..40 {
            if c.decide(key("R", &format!("x{}", i % 3)), 0.0) != Decision::Drop {
                passed += 1;
            }
        }
        assert_eq!(passed, 25);
        assert_eq!(c.decide(key("R", "x"), 299.0), Decision::Drop);
        assert_ne!(c.decide(key("R", "x"), 300.0), Decision::Drop);
        // Other objects have their own budget.
        let mut other = key("R", "x");
        other.object = "Pod/default/q/u2".into();
        assert_ne!(c.decide(other, 300.0), Decision::Drop);
    }
}
