//! Resource quantities (`250m`, `1.5`, `64Mi`, `1G`, `1e3`) with
//! apimachinery's grammar, parsed exactly into thousandths of their unit
//! (millicores for cpu, millibytes for memory) and rounded up as
//! `Quantity.MilliValue` does, so that a request, a limit and a quota sum
//! compare the same everywhere.
//!
//! ```text
//! quantity ::= [+-] number suffix
//! number   ::= digits | digits . digits | digits . | . digits
//! suffix   ::= Ki | Mi | Gi | Ti | Pi | Ei | n | u | m | "" | k | M | G | T | P | E
//!            | (e | E) [+-] digits
//! ```

/// Why a quantity does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Syntax,
    #[error("quantity too large")]
    TooLarge,
}

/// The largest magnitude kept, in thousandths (about 1.7e35, far past any
/// real resource).
const LIMIT: i128 = i128::MAX / 1_000_000;

fn suffix_multiplier(s: &str) -> Option<(i128, i32)> {
    // (binary multiplier, decimal exponent)
    Some(match s {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        _ => {
            let exp = s.strip_prefix(['e', 'E'])?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (1, exp.parse().ok()?)
        }
    })
}

/// A quantity taken apart: its sign, its digits (leading zeros gone), how
/// many of them are after the point, and its suffix's binary multiplier and
/// decimal exponent.
struct Parts {
    negative: bool,
    digits: String,
    frac_len: i32,
    binary: i128,
    exponent: i32,
}

fn parts(q: &str) -> Result<Parts, QuantityError> {
    let (negative, rest) = match q.as_bytes().first() {
        Some(b'-') => (true, &q[1..]),
        Some(b'+') => (false, &q[1..]),
        _ => (false, q),
    };
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(QuantityError::Syntax);
    }
    let (binary, exponent) = suffix_multiplier(suffix).ok_or(QuantityError::Syntax)?;
    let digits = format!("{int}{frac}").trim_start_matches('0').to_owned();
    Ok(Parts {
        negative,
        digits,
        frac_len: i32::try_from(frac.len()).map_err(|_| QuantityError::TooLarge)?,
        binary,
        exponent,
    })
}

/// `q` in thousandths of its unit, rounded up (away from zero for positive
/// values, as `MilliValue`).
pub fn parse_milli(q: &str) -> Result<i128, QuantityError> {
    let Parts {
        negative,
        digits,
        frac_len,
        binary,
        exponent,
        ..
    } = parts(q)?;
    // mantissa × 10^(exponent − frac digits + 3) × binary, exactly.
    let mut mantissa: i128 = 0;
    for b in digits.bytes() {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(b - b'0')))
            .filter(|m| *m <= LIMIT)
            .ok_or(QuantityError::TooLarge)?;
    }
    let scale = exponent + 3 - frac_len;
    let mut v = mantissa
        .checked_mul(binary)
        .filter(|v| *v <= LIMIT)
        .ok_or(QuantityError::TooLarge)?;
    if scale >= 0 {
        for _ in 0..scale {
            v = v
                .checked_mul(10)
                .filter(|v| *v <= LIMIT)
                .ok_or(QuantityError::TooLarge)?;
            if v == 0 {
                break;
            }
        }
    } else {
        let down = (-scale).min(40);
        let div = 10i128.pow(u32::try_from(down).unwrap_or(40));
        v = if v == 0 { 0 } else { (v + div - 1) / div };
    }
    Ok(if negative { -v } else { v })
}

/// A quantity as it stands in a JSON object: a string (`"500m"`, `"1Gi"`)
/// or a bare number, in thousandths; `None` when it is neither.
pub fn value_milli(v: &serde_json::Value) -> Option<i128> {
    v.as_str()
        .and_then(|q| parse_milli(q).ok())
        .or_else(|| v.as_i64().map(|n| i128::from(n) * 1000))
        .or_else(|| v.as_f64().map(|f| (f * 1000.0).round() as i128))
}

/// Whether a resource is counted in bytes (rendered with binary suffixes).
fn is_bytes(resource: &str) -> bool {
    ["memory", "storage", "ephemeral-storage", "hugepages-"]
        .iter()
        .any(|k| resource.contains(k))
}

/// A quantity of `resource` in thousandths, as kube-apiserver would print
/// it: `500m`, `2`, `128Mi` (binary suffixes for byte-counted resources
/// when exact).
pub fn format_milli(resource: &str, milli: i128) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let units = milli / 1000;
    if is_bytes(resource) && units != 0 {
        for (suffix, shift) in [
            ("Ei", 60),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ] {
            let m = 1i128 << shift;
            if units % m == 0 {
                return format!("{}{suffix}", units / m);
            }
        }
    }
    units.to_string()
}

mod exact;
pub use exact::{Exact, Overflow};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_values_rounded_up() {
        for (q, want) in [
            ("250m", 250),
            ("2", 2000),
            ("0.5", 500),
            (".5", 500),
            ("1.", 1000),
            ("1.0001", 1001),
            ("1n", 1),
            ("0", 0),
            ("64Mi", (64i128 << 20) * 1000),
            ("1Gi", 1_073_741_824_000),
            ("1G", 1_000_000_000_000),
            ("1.5k", 1_500_000),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("+3", 3000),
            ("-250m", -250),
            ("100000000000000000000", 100_000_000_000_000_000_000_000),
        ] {
            assert_eq!(parse_milli(q), Ok(want), "{q}");
        }
    }

    #[test]
    fn malformed_ones_are_refused() {
        for q in [
            "", "x", "12x", "1..2", ".", "1Mb", "1e", "1e+", "m", "1 m", "--1",
        ] {
            assert_eq!(parse_milli(q), Err(QuantityError::Syntax), "{q:?}");
        }
        assert_eq!(parse_milli(&"9".repeat(60)), Err(QuantityError::TooLarge));
        assert_eq!(parse_milli("1e300"), Err(QuantityError::TooLarge));
    }

    #[test]
    fn printed_as_kubernetes_prints_them() {
        assert_eq!(format_milli("cpu", 500), "500m");
        assert_eq!(format_milli("requests.cpu", 2000), "2");
        assert_eq!(format_milli("memory", (128i128 << 20) * 1000), "128Mi");
        assert_eq!(
            format_milli("limits.memory", 1_000_000_000_000),
            "1000000000"
        );
        assert_eq!(format_milli("pods", 3000), "3");
        assert_eq!(format_milli("memory", 0), "0");
    }
}
