//! Kubernetes resource quantities (`250m`, `1.5`, `64Mi`, `1G`, `1e3`) as
//! integers: millicores for cpu, bytes for memory.

/// A quantity in thousandths (`250m` → 250, `2` → 2000), rounded up.
pub fn parse_millis(q: &str) -> Option<i64> {
    let (num, mult) = split(q)?;
    let v = num * mult * 1000.0;
    (v.is_finite() && v >= 0.0).then(|| v.ceil() as i64)
}

/// A quantity in units (`64Mi` → 67108864, `500m` → 1), rounded up.
pub fn parse_bytes(q: &str) -> Option<i64> {
    let (num, mult) = split(q)?;
    let v = num * mult;
    (v.is_finite() && v >= 0.0).then(|| v.ceil() as i64)
}

fn split(q: &str) -> Option<(f64, f64)> {
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (s, m) in SUFFIXES {
        if let Some(n) = q.strip_suffix(s) {
            return n.parse::<f64>().ok().map(|n| (n, *m));
        }
    }
    // Plain or exponent form (`1e3`, `128974848`).
    q.parse::<f64>().ok().map(|n| (n, 1.0))
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
