//! A quantity's exact value, as apimachinery's `Quantity` keeps it (an
//! `inf.Dec` behind it) for arithmetic and comparison: a coefficient times
//! a power of ten, never rounded. CEL's quantity library (`quantity()`,
//! `add`, `compareTo`, `asInteger`, …) computes on it.
//!
//! The coefficient is an `i128` (38 significant digits, far past any real
//! quantity); an operation whose exact result would not fit fails rather
//! than rounding, where apimachinery would grow its big decimal. That also
//! bounds the work a hostile `1e999999999` can cause.

use std::cmp::Ordering;

use super::{QuantityError, parts};

/// The furthest decimal exponent accepted, either way.
const MAX_EXPONENT: i32 = 10_000;

/// `coef × 10^exp`, exactly, with no trailing zeros in `coef` (zero is
/// `0 × 10^0`), so equal values have equal fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Exact {
    coef: i128,
    exp: i32,
}

/// Why an exact operation has no exact result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("quantity overflow: the exact result has more than 38 significant digits")]
pub struct Overflow;

impl Exact {
    /// `q` in apimachinery's grammar, exactly.
    pub fn parse(q: &str) -> Result<Self, QuantityError> {
        let p = parts(q)?;
        let kept = p.digits.trim_end_matches('0');
        let dropped =
            i32::try_from(p.digits.len() - kept.len()).map_err(|_| QuantityError::TooLarge)?;
        let mut coef: i128 = 0;
        for b in kept.bytes() {
            coef = coef
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(b - b'0')))
                .ok_or(QuantityError::TooLarge)?;
        }
        let coef = coef.checked_mul(p.binary).ok_or(QuantityError::TooLarge)?;
        let exp = i64::from(p.exponent) - i64::from(p.frac_len) + i64::from(dropped);
        let exp = i32::try_from(exp)
            .ok()
            .filter(|e| e.abs() <= MAX_EXPONENT)
            .ok_or(QuantityError::TooLarge)?;
        Ok(Self::new(if p.negative { -coef } else { coef }, exp))
    }

    /// `coef × 10^exp`, normalised.
    fn new(mut coef: i128, mut exp: i32) -> Self {
        if coef == 0 {
            return Self { coef: 0, exp: 0 };
        }
        while coef % 10 == 0 {
            coef /= 10;
            exp += 1;
        }
        Self { coef, exp }
    }

    /// An integer, exactly.
    pub fn from_i64(n: i64) -> Self {
        Self::new(i128::from(n), 0)
    }

    /// -1, 0 or 1.
    pub fn signum(&self) -> i64 {
        i64::try_from(self.coef.signum()).unwrap_or(0)
    }

    /// The value as an `i64` when it is an integer in range (apimachinery's
    /// `AsInt64`).
    pub fn to_i64(&self) -> Option<i64> {
        if self.exp < 0 {
            return None;
        }
        let scale = 10i128.checked_pow(u32::try_from(self.exp).ok()?)?;
        i64::try_from(self.coef.checked_mul(scale)?).ok()
    }

    /// The nearest `f64` (±inf past its range), as `AsApproximateFloat64`.
    pub fn to_f64(&self) -> f64 {
        // Two steps keep 10^exp from overflowing on its own when the
        // coefficient is small and the exponent large, or the reverse.
        let half = self.exp / 2;
        (self.coef as f64) * 10f64.powi(half) * 10f64.powi(self.exp - half)
    }

    /// Both coefficients at the smaller exponent.
    fn aligned(self, other: Self) -> Result<(i128, i128, i32), Overflow> {
        let exp = self.exp.min(other.exp);
        let up = |x: Self| -> Result<i128, Overflow> {
            let by = u32::try_from(x.exp - exp).map_err(|_| Overflow)?;
            10i128
                .checked_pow(by)
                .and_then(|s| x.coef.checked_mul(s))
                .ok_or(Overflow)
        };
        Ok((up(self)?, up(other)?, exp))
    }

    /// `self + other`, exactly.
    pub fn checked_add(self, other: Self) -> Result<Self, Overflow> {
        if other.coef == 0 {
            return Ok(self);
        }
        if self.coef == 0 {
            return Ok(other);
        }
        let (a, b, exp) = self.aligned(other)?;
        Ok(Self::new(a.checked_add(b).ok_or(Overflow)?, exp))
    }

    /// `self - other`, exactly.
    pub fn checked_sub(self, other: Self) -> Result<Self, Overflow> {
        self.checked_add(Self::new(
            other.coef.checked_neg().ok_or(Overflow)?,
            other.exp,
        ))
    }

    /// The number of decimal digits of the coefficient plus its exponent:
    /// where the value's leading digit sits.
    fn magnitude(&self) -> i64 {
        let digits = self
            .coef
            .unsigned_abs()
            .checked_ilog10()
            .map_or(0, |d| d + 1);
        i64::from(digits) + i64::from(self.exp)
    }
}

impl Ord for Exact {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_sign = self.coef.signum().cmp(&other.coef.signum());
        if by_sign != Ordering::Equal || self.coef == 0 {
            return by_sign;
        }
        // Same sign, neither zero: the leading digit's place first, then
        // the digits at a common exponent (which then fit, as both have
        // the same magnitude).
        let by_magnitude =
            self.magnitude()
                .cmp(&other.magnitude())
                .then_with(|| match self.aligned(*other) {
                    Ok((a, b, _)) => a.unsigned_abs().cmp(&b.unsigned_abs()),
                    Err(Overflow) => self
                        .to_f64()
                        .abs()
                        .partial_cmp(&other.to_f64().abs())
                        .unwrap_or(Ordering::Equal),
                });
        if self.coef < 0 {
            by_magnitude.reverse()
        } else {
            by_magnitude
        }
    }
}

impl PartialOrd for Exact {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Exact {
        Exact::parse(s).unwrap()
    }

    #[test]
    fn equal_values_in_any_spelling_are_equal() {
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("1k"), q("1e3"));
        assert_eq!(q("0.2G"), q("200M"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("0"), q("-0.000"));
        assert_eq!(q("100"), Exact::from_i64(100));
    }

    #[test]
    fn ordering_follows_the_value() {
        assert!(q("150Mi") > q("100Mi"));
        assert!(q("50M") < q("100M"));
        assert!(q("-1") < q("1m"));
        assert!(q("-2") < q("-1"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("999m") < q("1"));
        assert!(q("1e30") > q("9e29"));
        assert_eq!(q("200M").cmp(&q("0.2G")), Ordering::Equal);
    }

    #[test]
    fn arithmetic_is_exact_and_overflow_is_an_error() {
        let sum = q("50k").checked_add(Exact::from_i64(20)).unwrap();
        let out = sum
            .checked_sub(q("100k"))
            .unwrap()
            .checked_sub(Exact::from_i64(-50000))
            .unwrap();
        assert_eq!(out, Exact::from_i64(20));
        assert_eq!(q("1.5").checked_add(q("500m")).unwrap(), q("2"));
        assert_eq!(q("1e38").checked_add(q("1e-38")), Err(Overflow));
    }

    #[test]
    fn integer_and_float_views() {
        assert_eq!(q("50k").to_i64(), Some(50_000));
        assert_eq!(q("1.5").to_i64(), None);
        assert_eq!(q("500000G").to_i64(), Some(500_000_000_000_000));
        assert_eq!(q("10E").to_i64(), None);
        assert_eq!(q("-3").to_i64(), Some(-3));
        assert_eq!(q("-3").signum(), -1);
        assert_eq!(q("0").signum(), 0);
        assert!((q("1.5Ki").to_f64() - 1536.0).abs() < 1e-9);
        let huge = q("9999999999999999999999999999999999999G").to_f64();
        assert!(huge > 9.9e45 && huge.is_finite());
    }

    #[test]
    fn hostile_input_is_refused_not_computed() {
        assert_eq!(Exact::parse("1e999999999"), Err(QuantityError::TooLarge));
        assert_eq!(Exact::parse(&"9".repeat(60)), Err(QuantityError::TooLarge));
        assert_eq!(Exact::parse("1x"), Err(QuantityError::Syntax));
        assert_eq!(q("1e10000").checked_add(q("1")), Err(Overflow));
    }
}
