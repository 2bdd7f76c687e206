//! Times as Kubernetes writes them, once for the kubelet, the controllers
//! and the apiserver: `metav1.Time` is RFC 3339 in UTC to the whole second,
//! `metav1.MicroTime` to the microsecond, both *truncated* (Go's
//! `Time.Truncate`, what `metav1.Time.MarshalJSON` and the protobuf
//! encoding do), never rounded: a rounded time can lie up to half a second
//! in the future, before the event it records.
//!
//! One timestamp type, `jiff::Timestamp`; the functions below are the only
//! place a Kubernetes time is formatted.

pub use jiff::Timestamp;

/// `metav1.Time`: `2006-01-02T15:04:05Z`, truncated to the second.
pub fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `metav1.MicroTime`: `2006-01-02T15:04:05.000000Z`, truncated to the
/// microsecond.
pub fn rfc3339_micro(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// Now, as a `metav1.Time`.
pub fn now_rfc3339() -> String {
    rfc3339(Timestamp::now())
}

/// Seconds since the epoch (a clock's reading) as a `metav1.Time`; the
/// epoch itself for a reading out of range.
pub fn rfc3339_of_secs(secs: f64) -> String {
    rfc3339(from_secs(secs))
}

/// Seconds since the epoch as a timestamp, to the nanosecond; the epoch for
/// a reading that is not a time (NaN, out of range).
pub fn from_secs(secs: f64) -> Timestamp {
    let whole = secs.floor();
    let nanos = ((secs - whole) * 1e9) as i32;
    Timestamp::new(whole as i64, nanos.clamp(0, 999_999_999)).unwrap_or(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_truncated_as_kubernetes_writes_them() {
        let t: Timestamp = "2026-12-07T05:16:10.999999999Z".parse().unwrap();
        assert_eq!(rfc3339(t), "2026-12-07T05:16:10Z");
        assert_eq!(rfc3339_micro(t), "2026-12-07T05:16:10.999999Z");
        let whole: Timestamp = "2026-12-07T05:16:10Z".parse().unwrap();
        assert_eq!(rfc3339_micro(whole), "2026-12-07T05:16:10.000000Z");
        let small: Timestamp = "2026-12-07T05:16:10.000123789Z".parse().unwrap();
        assert_eq!(rfc3339_micro(small), "2026-12-07T05:16:10.000123Z");
        assert_eq!(rfc3339_of_secs(1_796_000_000.9), "2026-11-30T00:53:20Z");
        assert_eq!(rfc3339_of_secs(f64::NAN), "1970-01-01T00:00:00Z");
        // Before the epoch, still truncated towards the earlier second.
        assert_eq!(rfc3339_of_secs(-0.5), "1969-12-31T23:59:59Z");
    }
}
