//! CronJob: the five-field schedule (lists, ranges, steps, month and day
//! names, `@hourly`-style macros, Vixie cron's day-of-month OR day-of-week
//! rule), `timeZone`, `startingDeadlineSeconds`, concurrencyPolicy
//! Allow / Forbid / Replace, suspend, and history limits.

use jiff::{Timestamp, ToSpan as _, civil::DateTime, tz::TimeZone};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, CronJobStatus, Job};
use serde_json::json;

use super::{
    cache::{Kind, Snapshot},
    ops::{EventRecord, Involved, Op},
    replicaset::differs,
    util,
};

pub const COMPONENT: &str = "cronjob-controller";
pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// A parsed schedule: the allowed values of each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Day-of-month or day-of-week was `*` (then the other alone decides).
    dom_star: bool,
    dow_star: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid schedule {schedule:?}: {reason}")]
pub struct ScheduleError {
    pub schedule: String,
    pub reason: String,
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn field(
    s: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<(u64, bool), String> {
    let weekday = max == 6;
    // Sunday may also be written 7.
    let top = if weekday { 7 } else { max };
    let value = |v: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            return Ok(u32::try_from(i).unwrap_or(0) + name_base);
        }
        v.parse::<u32>()
            .map_err(|_| format!("{v:?} is not a number"))
    };
    let mut bits = 0u64;
    let star = s == "*" || s == "?";
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => (
                r,
                st.parse::<u32>().map_err(|_| format!("bad step {st:?}"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err("step 0".into());
        }
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > top || lo > hi {
            return Err(format!("{part:?} is outside {min}-{max}"));
        }
        for v in (lo..=hi).step_by(step as usize) {
            bits |= 1 << (if weekday { v % 7 } else { v });
        }
    }
    Ok((bits, star))
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Self, ScheduleError> {
        let err = |reason: String| ScheduleError {
            schedule: s.to_owned(),
            reason,
        };
        let expanded = match s.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        if f.len() != 5 {
            return Err(err(format!("expected exactly 5 fields, found {}", f.len())));
        }
        let (minutes, _) = field(f[0], 0, 59, &[], 0).map_err(err)?;
        let (hours, _) = field(f[1], 0, 23, &[], 0).map_err(err)?;
        let (days, dom_star) = field(f[2], 1, 31, &[], 0).map_err(err)?;
        let (months, _) = field(f[3], 1, 12, MONTHS, 1).map_err(err)?;
        let (weekdays, dow_star) = field(f[4], 0, 6, DAYS, 0).map_err(err)?;
        Ok(Self {
            minutes,
            hours: u32::try_from(hours).unwrap_or(0),
            days: u32::try_from(days).unwrap_or(0),
            months: u16::try_from(months).unwrap_or(0),
            weekdays: u8::try_from(weekdays).unwrap_or(0),
            dom_star,
            dow_star,
        })
    }

    fn day_matches(&self, dt: DateTime) -> bool {
        let dom = self.days & (1 << dt.day()) != 0;
        let dow = self.weekdays & (1 << dt.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    fn matches(&self, dt: DateTime) -> bool {
        self.minutes & (1 << dt.minute()) != 0
            && self.hours & (1 << dt.hour()) != 0
            && self.months & (1 << dt.month()) != 0
            && self.day_matches(dt)
    }

    /// The latest scheduled time in (after, until], and how many were
    /// missed before it (capped at 100, as Kubernetes warns past that).
    pub fn last_between(
        &self,
        after: Timestamp,
        until: Timestamp,
        tz: &TimeZone,
    ) -> (Option<Timestamp>, u32) {
        let mut last = None;
        let mut missed = 0;
        let mut t = after.to_zoned(tz.clone());
        // Start at the next whole minute.
        t = t
            .round(
                jiff::ZonedRound::new()
                    .smallest(jiff::Unit::Minute)
                    .mode(jiff::RoundMode::Floor),
            )
            .unwrap_or(t);
        let mut steps = 0u32;
        loop {
            t = match t.checked_add(1.minute()) {
                Ok(x) => x,
                Err(_) => break,
            };
            if t.timestamp() > until {
                break;
            }
            steps += 1;
            // A year of minutes is the most worth walking.
            if steps > 527_040 {
                break;
            }
            if self.matches(t.datetime()) {
                if last.is_some() {
                    missed += 1;
                }
                last = Some(t.timestamp());
                if missed > 100 {
                    missed = 100;
                }
            }
        }
        (last, missed)
    }
}

fn zone(cj: &CronJob) -> Result<TimeZone, String> {
    match cj.spec.as_ref().and_then(|s| s.time_zone.as_deref()) {
        None | Some("") | Some("UTC" | "Etc/UTC") => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name).map_err(|e| format!("unknown time zone {name:?}: {e}")),
    }
}

fn job_finished(j: &Job) -> Option<bool> {
    let c = j.status.as_ref()?.conditions.as_ref()?;
    if c.iter()
        .any(|c| c.type_ == "Complete" && c.status == "True")
    {
        Some(true)
    } else if c.iter().any(|c| c.type_ == "Failed" && c.status == "True") {
        Some(false)
    } else {
        None
    }
}

/// The ops for one CronJob.
pub fn sync(snap: &Snapshot, cj: &CronJob, now: Timestamp) -> Vec<Op> {
    let mut ops = Vec::new();
    let m = &cj.metadata;
    if m.deletion_timestamp.is_some() {
        return ops;
    }
    let Some(spec) = &cj.spec else { return ops };
    let ns = util::namespace(m);
    let uid = util::uid(m);
    let me = Involved::of(Kind::CronJob, m);
    let mut jobs: Vec<&std::sync::Arc<Job>> = super::cache::in_namespace(&snap.jobs, ns)
        .filter(|j| util::controlled_by(&j.metadata, uid))
        .collect();
    jobs.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let active: Vec<&&std::sync::Arc<Job>> = jobs
        .iter()
        .filter(|j| job_finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
        .collect();
    let status = cj.status.clone().unwrap_or_default();
    let mut last_schedule = status.last_schedule_time.as_ref().map(|t| t.0);
    let mut last_success = status.last_successful_time.as_ref().map(|t| t.0);
    for j in &jobs {
        if job_finished(j) == Some(true)
            && let Some(t) = j.status.as_ref().and_then(|s| s.completion_time.as_ref())
        {
            last_success = Some(last_success.map_or(t.0, |l| l.max(t.0)));
        }
    }
    let mut active_refs: Vec<serde_json::Value> = active
        .iter()
        .map(|j| {
            json!({"kind": "Job", "apiVersion": "batch/v1", "namespace": ns,
                   "name": util::name(&j.metadata), "uid": util::uid(&j.metadata),
                   "resourceVersion": j.metadata.resource_version})
        })
        .collect();
    let schedule = match Schedule::parse(&spec.schedule) {
        Ok(s) => Some(s),
        Err(e) => {
            ops.push(Op::Event(EventRecord::warning(
                COMPONENT,
                me.clone(),
                "UnparseableSchedule",
                e.to_string(),
            )));
            None
        }
    };
    let tz = match zone(cj) {
        Ok(z) => Some(z),
        Err(e) => {
            ops.push(Op::Event(EventRecord::warning(
                COMPONENT,
                me.clone(),
                "UnknownTimeZone",
                e,
            )));
            None
        }
    };
    if let (Some(schedule), Some(tz)) = (schedule, tz)
        && !spec.suspend.unwrap_or(false)
    {
        let since = last_schedule
            .or_else(|| m.creation_timestamp.as_ref().map(|t| t.0))
            .unwrap_or(now);
        let (due, missed) = schedule.last_between(since, now, &tz);
        if missed >= 100 {
            ops.push(Op::Event(EventRecord::warning(COMPONENT, me.clone(), "TooManyMissedTimes",
                "too many missed start times (> 100); check clock skew or set startingDeadlineSeconds")));
        }
        let too_late = |t: Timestamp| {
            spec.starting_deadline_seconds
                .is_some_and(|d| now.as_second() - t.as_second() > d)
        };
        if let Some(t) = due.filter(|t| !too_late(*t)) {
            let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
            let minutes = t.as_second() / 60;
            let name = format!("{}-{minutes}", util::name(m));
            let exists = jobs.iter().any(|j| util::name(&j.metadata) == name);
            if policy == "Forbid" && !active.is_empty() {
                ops.push(Op::Event(EventRecord::normal(COMPONENT, me.clone(), "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid")));
            } else if !exists {
                if policy == "Replace" {
                    for j in &active {
                        ops.push(Op::delete_foreground(Kind::Job, &j.metadata).with_event(
                            EventRecord::normal(
                                COMPONENT,
                                me.clone(),
                                "SuccessfulDelete",
                                format!("Deleted job {}", util::name(&j.metadata)),
                            ),
                        ));
                    }
                    active_refs.clear();
                }
                ops.push(Op::create(Kind::Job, ns, new_job(cj, &name, t)).with_event(
                    EventRecord::normal(
                        COMPONENT,
                        me.clone(),
                        "SuccessfulCreate",
                        format!("Created job {name}"),
                    ),
                ));
                active_refs.push(
                    json!({"kind": "Job", "apiVersion": "batch/v1", "namespace": ns, "name": name}),
                );
            }
            last_schedule = Some(t);
        }
    }
    ops.extend(prune_history(spec, &jobs, &me));
    let new_status = json!({
        "active": if active_refs.is_empty() { serde_json::Value::Null } else { json!(active_refs) },
        "lastScheduleTime": last_schedule.map(util::rfc3339),
        "lastSuccessfulTime": last_success.map(util::rfc3339),
    });
    if status_changed(&status, &new_status) {
        ops.push(Op::status(Kind::CronJob, m, new_status));
    }
    ops
}

/// The Job a CronJob starts for its time `t`: its template, named
/// `<cronjob>-<minutes since the epoch>`, labelled with the CronJob's name
/// and annotated with the scheduled time, owned by the CronJob.
fn new_job(cj: &CronJob, name: &str, t: Timestamp) -> serde_json::Value {
    let m = &cj.metadata;
    let jt = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let mut labels = jt
        .metadata
        .as_ref()
        .and_then(|x| x.labels.clone())
        .unwrap_or_default();
    let mut ann = jt
        .metadata
        .as_ref()
        .and_then(|x| x.annotations.clone())
        .unwrap_or_default();
    ann.insert(
        SCHEDULED_AT.into(),
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    );
    labels
        .entry("batch.kubernetes.io/cronjob-name".into())
        .or_insert_with(|| util::name(m).into());
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": util::namespace(m), "labels": labels, "annotations": ann,
                     "ownerReferences": [util::owner_ref("batch/v1", "CronJob", m)]},
        "spec": jt.spec,
    })
}

/// Deletes the oldest finished Jobs beyond the history limits (3
/// successful, 1 failed by default).
fn prune_history(spec: &CronJobSpec, jobs: &[&std::sync::Arc<Job>], me: &Involved) -> Vec<Op> {
    let mut ops = Vec::new();
    for (ok, limit) in [
        (true, spec.successful_jobs_history_limit.unwrap_or(3)),
        (false, spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let done: Vec<_> = jobs
            .iter()
            .filter(|j| job_finished(j) == Some(ok) && j.metadata.deletion_timestamp.is_none())
            .collect();
        let limit = usize::try_from(limit.max(0)).unwrap_or(0);
        for j in done.iter().take(done.len().saturating_sub(limit)) {
            ops.push(
                Op::delete(Kind::Job, &j.metadata).with_event(EventRecord::normal(
                    COMPONENT,
                    me.clone(),
                    "SuccessfulDelete",
                    format!("Deleted job {}", util::name(&j.metadata)),
                )),
            );
        }
    }
    ops
}

/// Whether the new status says something the stored one does not (active
/// Jobs compared by name).
fn status_changed(status: &CronJobStatus, new_status: &serde_json::Value) -> bool {
    let cur = json!({
        "active": status.active.as_ref().filter(|a| !a.is_empty()).map(|a| a.iter().map(|r| json!(r.name)).collect::<Vec<_>>()),
        "lastScheduleTime": status.last_schedule_time.as_ref().map(|t| util::rfc3339(t.0)),
        "lastSuccessfulTime": status.last_successful_time.as_ref().map(|t| util::rfc3339(t.0)),
    });
    let want = json!({
        "active": new_status["active"].as_array().map(|a| a.iter().map(|r| r["name"].clone()).collect::<Vec<_>>()),
        "lastScheduleTime": new_status["lastScheduleTime"],
        "lastSuccessfulTime": new_status["lastSuccessfulTime"],
    });
    cur != want && differs(Some(&cur), &want)
}

pub fn plan(snap: &Snapshot, now: Timestamp) -> Vec<Op> {
    snap.cronjobs
        .values()
        .flat_map(|c| sync(snap, c, now))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn parses_fields_names_and_macros() {
        let s = Schedule::parse("*/15 9-17 * JAN-MAR mon-fri").unwrap();
        assert!(s.matches("2026-02-02T09:45:00".parse().unwrap())); // a Monday
        assert!(!s.matches("2026-02-01T09:45:00".parse().unwrap())); // a Sunday
        assert!(!s.matches("2026-04-01T09:45:00".parse().unwrap()));
        assert!(!s.matches("2026-02-02T09:40:00".parse().unwrap()));
        assert_eq!(
            Schedule::parse("@hourly").unwrap(),
            Schedule::parse("0 * * * *").unwrap()
        );
        assert_eq!(
            Schedule::parse("0 0 * * 7").unwrap(),
            Schedule::parse("0 0 * * 0").unwrap()
        );
        assert!(Schedule::parse("* * * *").is_err());
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("*/0 * * * *").is_err());
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // Vixie cron: both restricted → either matches.
        let s = Schedule::parse("0 0 13 * 5").unwrap();
        assert!(s.matches("2026-11-13T00:00:00".parse().unwrap())); // the 13th (a Friday)
        assert!(s.matches("2026-11-20T00:00:00".parse().unwrap())); // a Friday
        assert!(s.matches("2026-12-13T00:00:00".parse().unwrap())); // a Sunday, the 13th
        assert!(!s.matches("2026-12-14T00:00:00".parse().unwrap()));
    }

    #[test]
    fn latest_due_time_and_missed_count() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        let (t, missed) = s.last_between(
            ts("2026-11-22T10:00:00Z"),
            ts("2026-11-22T10:17:30Z"),
            &TimeZone::UTC,
        );
        assert_eq!(t, Some(ts("2026-11-22T10:15:00Z")));
        assert_eq!(missed, 2);
        let (t, _) = s.last_between(
            ts("2026-11-22T10:15:00Z"),
            ts("2026-11-22T10:19:59Z"),
            &TimeZone::UTC,
        );
        assert_eq!(t, None);
    }
}
