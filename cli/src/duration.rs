//! Durations as Kubernetes components spell their flags (Go's
//! `time.ParseDuration`: `40s`, `5m0s`, `1h30m`, `1.5h`, `300ms`), and bare
//! numbers as seconds (Rudder's own spelling, kept). Written here because
//! the crates that parse durations (humantime and the like) take another
//! grammar (`5min`, spaces) and refuse Go's `1h30m0.5s` forms.

use std::time::Duration;

/// Go's units, longest first so that `ms` is not read as `m`.
const UNITS: &[(&str, f64)] = &[
    ("ns", 1e-9),
    ("us", 1e-6),
    ("µs", 1e-6),
    ("μs", 1e-6),
    ("ms", 1e-3),
    ("h", 3600.0),
    ("m", 60.0),
    ("s", 1.0),
];

/// A non-negative Go duration, or a bare number of seconds.
pub(crate) fn parse(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?}: want a duration such as 40s, 5m0s or 1h30m (or seconds)");
    let text = s.strip_prefix('+').unwrap_or(s);
    if let Ok(n) = text.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    if text.is_empty() || text.starts_with('-') {
        return Err(bad());
    }
    let mut rest = text;
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number = &rest[..num_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(bad());
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let (unit, scale) = UNITS
            .iter()
            .find(|(u, _)| rest.starts_with(u))
            .ok_or_else(bad)?;
        total += value * scale;
        rest = &rest[unit.len()..];
    }
    if !total.is_finite() || total > u64::MAX as f64 / 2.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

/// [`parse`], in whole seconds (rounded down).
pub(crate) fn seconds(s: &str) -> Result<u64, String> {
    parse(s).map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_and_bare_seconds() {
        assert_eq!(seconds("40"), Ok(40));
        assert_eq!(seconds("40s"), Ok(40));
        assert_eq!(seconds("5m0s"), Ok(300));
        assert_eq!(seconds("1h30m"), Ok(5400));
        assert_eq!(seconds("1.5h"), Ok(5400));
        assert_eq!(seconds("24h0m0s"), Ok(86_400));
        assert_eq!(parse("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse("1m0.5s"), Ok(Duration::from_millis(60_500)));
        assert_eq!(parse("2us"), Ok(Duration::from_micros(2)));
        for bad in ["", "s", "-5s", "5x", "1..5s", "h1", "5 s", "1e9h", "."] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
