//! Kubernetes resource quantities (`250m`, `1.5`, `64Mi`, `1G`, `1e3`) as
//! the kubelet uses them: millicores for cpu, bytes for memory (parsed by
//! [`rudder_k8s::quantity`], the one parser both sides share).

/// A quantity in thousandths (`250m` → 250, `2` → 2000), rounded up;
/// `None` when malformed, negative or too large.
pub fn parse_millis(q: &str) -> Option<i64> {
    let m = rudder_k8s::quantity::parse_milli(q.trim()).ok()?;
    i64::try_from(m).ok().filter(|m| *m >= 0)
}

/// A quantity in units (`64Mi` → 67108864, `500m` → 1), rounded up.
pub fn parse_bytes(q: &str) -> Option<i64> {
    let m = rudder_k8s::quantity::parse_milli(q.trim()).ok()?;
    i64::try_from((m + 999).div_euclid(1000))
        .ok()
        .filter(|b| *b >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory() {
        assert_eq!(parse_millis("250m"), Some(250));
        assert_eq!(parse_millis("2"), Some(2000));
        assert_eq!(parse_millis("0.5"), Some(500));
        assert_eq!(parse_millis("1.0001"), Some(1001));
        assert_eq!(parse_bytes("64Mi"), Some(64 << 20));
        assert_eq!(parse_bytes("1G"), Some(1_000_000_000));
        assert_eq!(parse_bytes("1e3"), Some(1000));
        assert_eq!(parse_bytes("128974848"), Some(128_974_848));
        assert_eq!(parse_bytes("500m"), Some(1));
        assert_eq!(parse_bytes("x"), None);
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes(""), None);
    }
}
