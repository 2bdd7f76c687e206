//! Kubernetes' quantity library
//! (`k8s.io/apiserver/pkg/cel/library/quantity.go`): `quantity(<string>)`
//! parses a resource quantity (`1.5G`, `512Ki`, `250m`) in apimachinery's
//! grammar, `isQuantity(<string>)` says whether it would, and a quantity
//! answers `sign()`, `isInteger()`, `asInteger()`, `asApproximateFloat()`,
//! `add(<quantity|int>)`, `sub(<quantity|int>)`, `isLessThan(<quantity>)`,
//! `isGreaterThan(<quantity>)` and `compareTo(<quantity>)`.
//!
//! Values are exact ([`rudder_k8s::quantity::Exact`]): `quantity('200M')`
//! equals `quantity('0.2G')`. Where apimachinery would grow a big decimal
//! past 38 significant digits, the operation fails instead.

use std::cmp::Ordering;

use cel::{
    DeclarationError, Env, ExecutionError,
    common::types::{CelBool, CelDouble, CelInt, CelString, Kind, Type},
};
use rudder_k8s::quantity::Exact;

use crate::error;

/// The CEL type of a quantity.
pub static QUANTITY_TYPE: Type = Type::simple_type(Kind::Opaque, "kubernetes.Quantity");

/// A parsed quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity(pub Exact);

crate::opaque_val!(Quantity, QUANTITY_TYPE);

/// Registers the quantity functions.
pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    cel::add_overload!(env, fn quantity: (CelString<'_>) -> Result<Quantity>)?;
    cel::add_overload!(env, fn is_quantity: (CelString<'_>) -> CelBool)?;
    cel::add_member_overload!(env, fn sign: (Quantity) -> CelInt)?;
    cel::add_member_overload!(env, fn is_integer: (Quantity) -> CelBool)?;
    cel::add_member_overload!(env, fn as_integer: (Quantity) -> Result<CelInt>)?;
    cel::add_member_overload!(env, fn as_approximate_float: (Quantity) -> CelDouble)?;
    cel::add_member_overload!(env, fn add: (Quantity, Quantity) -> Result<Quantity>)?;
    cel::add_member_overload!(env, fn add_int: (Quantity, CelInt) -> Result<Quantity>, name = "add")?;
    cel::add_member_overload!(env, fn sub: (Quantity, Quantity) -> Result<Quantity>)?;
    cel::add_member_overload!(env, fn sub_int: (Quantity, CelInt) -> Result<Quantity>, name = "sub")?;
    cel::add_member_overload!(env, fn is_less_than: (Quantity, Quantity) -> CelBool)?;
    cel::add_member_overload!(env, fn is_greater_than: (Quantity, Quantity) -> CelBool)?;
    cel::add_member_overload!(env, fn compare_to: (Quantity, Quantity) -> CelInt)?;
    Ok(())
}

fn quantity(s: &CelString<'_>) -> Result<Quantity, ExecutionError> {
    Exact::parse(s.inner())
        .map(Quantity)
        .map_err(|e| error("quantity", e))
}

fn is_quantity(s: &CelString<'_>) -> CelBool {
    Exact::parse(s.inner()).is_ok().into()
}

fn sign(q: &Quantity) -> CelInt {
    q.0.signum().into()
}

fn is_integer(q: &Quantity) -> CelBool {
    q.0.to_i64().is_some().into()
}

fn as_integer(q: &Quantity) -> Result<CelInt, ExecutionError> {
    q.0.to_i64().map(CelInt::from).ok_or_else(|| {
        error(
            "asInteger",
            "cannot convert value to integer: it is fractional or out of the range of int",
        )
    })
}

fn as_approximate_float(q: &Quantity) -> CelDouble {
    q.0.to_f64().into()
}

fn add(a: &Quantity, b: &Quantity) -> Result<Quantity, ExecutionError> {
    a.0.checked_add(b.0)
        .map(Quantity)
        .map_err(|e| error("add", e))
}

fn add_int(a: &Quantity, b: &CelInt) -> Result<Quantity, ExecutionError> {
    add(a, &Quantity(Exact::from_i64(*b.inner())))
}

fn sub(a: &Quantity, b: &Quantity) -> Result<Quantity, ExecutionError> {
    a.0.checked_sub(b.0)
        .map(Quantity)
        .map_err(|e| error("sub", e))
}

fn sub_int(a: &Quantity, b: &CelInt) -> Result<Quantity, ExecutionError> {
    sub(a, &Quantity(Exact::from_i64(*b.inner())))
}

fn is_less_than(a: &Quantity, b: &Quantity) -> CelBool {
    (a.0 < b.0).into()
}

fn is_greater_than(a: &Quantity, b: &Quantity) -> CelBool {
    (a.0 > b.0).into()
}

fn compare_to(a: &Quantity, b: &Quantity) -> CelInt {
    match a.0.cmp(&b.0) {
        Ordering::Less => -1,
        Ordering::Equal => 0,
        Ordering::Greater => 1,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn the_examples_of_the_kubernetes_documentation() {
        holds("quantity('500000G').isInteger()");
        holds("quantity('50k').asInteger() == 50000");
        holds("quantity('9999999999999999999999999999999999999G').asApproximateFloat() > 1e45");
        holds("quantity('50k').add(quantity('20k')) == quantity('70k')");
        holds("quantity('50k').sub(20000) == quantity('30k')");
        holds("quantity('50k').add(20).sub(quantity('100k')).sub(-50000) == quantity('20')");
        holds("quantity('200M').compareTo(quantity('0.2G')) == 0");
        holds("quantity('150Mi').isGreaterThan(quantity('100Mi'))");
        holds("quantity('50M').isLessThan(quantity('100M'))");
        holds(
            "quantity('-1').sign() == -1 && quantity('0').sign() == 0 && quantity('1m').sign() == 1",
        );
        holds("!quantity('1.5').isInteger()");
        holds("isQuantity('1.5Gi') && !isQuantity('1.5GB') && !isQuantity('')");
        holds("quantity('1Mi').compareTo(quantity('1M')) == 1");
    }

    #[test]
    fn errors() {
        fails("quantity('1GB')", "quantities must match");
        fails(
            "quantity('1.5').asInteger()",
            "cannot convert value to integer",
        );
        fails(
            "quantity('1e38').add(quantity('1e-38'))",
            "quantity overflow",
        );
        fails("quantity('1').isLessThan(1)", "");
    }
}
