//! Kubernetes' list library (`k8s.io/apiserver/pkg/cel/library/lists.go`)
//! and cel-go's sets library (`ext.Sets`), both in kube-apiserver's base
//! environment.
//!
//! - `<list>.isSorted()`: whether the elements are in ascending order;
//! - `<list>.sum()`: of ints, uints, doubles or durations (`0` for an empty
//!   list), an error on overflow;
//! - `<list>.min()`, `<list>.max()`: of comparable elements, an error on
//!   an empty list;
//! - `<list>.indexOf(x)`, `<list>.lastIndexOf(x)`: the first or last
//!   position of an element equal to `x`, `-1` when there is none;
//! - `sets.contains(a, b)`: every element of `b` is in `a`;
//!   `sets.equivalent(a, b)`: each contains the other;
//!   `sets.intersects(a, b)`: they share an element.
//!
//! Equality is CEL's (`1 == 1.0`); ordering is the elements' own, and a
//! list mixing types that do not order fails, where upstream's type check
//! refuses the rule before it runs.

#![allow(
    clippy::needless_pass_by_value,
    reason = "the cel crate's `Function` takes its arguments by value"
)]

use std::cmp::Ordering;

use cel::{
    DeclarationError, Env, ExecutionError,
    common::{
        types::{CelBool, CelInt, DYN_TYPE, Kind, LIST_TYPE},
        value::{CowVal, Val},
    },
};

use crate::error;

/// Registers the list and sets overloads.
pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_member_overload("isSorted", "list_is_sorted", LIST_TYPE, vec![], is_sorted)?;
    env.add_member_overload("sum", "list_sum", LIST_TYPE, vec![], sum)?;
    env.add_member_overload("min", "list_min", LIST_TYPE, vec![], min)?;
    env.add_member_overload("max", "list_max", LIST_TYPE, vec![], max)?;
    env.add_member_overload(
        "indexOf",
        "list_index_of",
        LIST_TYPE,
        vec![DYN_TYPE],
        index_of,
    )?;
    env.add_member_overload(
        "lastIndexOf",
        "list_last_index_of",
        LIST_TYPE,
        vec![DYN_TYPE],
        last_index_of,
    )?;
    let two_lists = || vec![LIST_TYPE, LIST_TYPE];
    env.add_overload(
        "sets.contains",
        "list_sets_contains_list",
        two_lists(),
        sets_contains,
    )?;
    env.add_overload(
        "sets.equivalent",
        "list_sets_equivalent_list",
        two_lists(),
        sets_equivalent,
    )?;
    env.add_overload(
        "sets.intersects",
        "list_sets_intersects_list",
        two_lists(),
        sets_intersects,
    )?;
    Ok(())
}

/// A list's elements, borrowed.
type Elements<'a, 'v> = Vec<&'a (dyn Val + 'v)>;

/// The elements of a list argument.
fn elements<'a, 'v>(
    list: &'a (dyn Val + 'v),
    function: &str,
) -> Result<Elements<'a, 'v>, ExecutionError> {
    let list = list.as_iterable().ok_or_else(|| {
        error(
            function,
            format!("{} is not a list", list.get_type().name()),
        )
    })?;
    let mut iter = list.iter();
    let mut out = Vec::new();
    while let Some(v) = iter.next() {
        out.push(v);
    }
    Ok(out)
}

/// The argument at `i`, which the dispatcher guarantees is there.
fn arg<'a, 'b, 'v>(
    args: &'a [CowVal<'b, 'v>],
    i: usize,
    function: &str,
) -> Result<&'a (dyn Val + 'v), ExecutionError> {
    args.get(i)
        .map(AsRef::as_ref)
        .ok_or_else(|| error(function, "missing argument"))
}

/// How `a` orders against `b`, or why they do not.
fn order(a: &dyn Val, b: &dyn Val, function: &str) -> Result<Ordering, ExecutionError> {
    let not_comparable = || {
        error(
            function,
            format!(
                "{} and {} are not comparable",
                a.get_type().name(),
                b.get_type().name()
            ),
        )
    };
    a.as_comparer()
        .ok_or_else(not_comparable)?
        .compare(b)
        .map_err(|_| not_comparable())
}

fn is_sorted<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let items = elements(arg(&args, 0, "isSorted")?, "isSorted")?;
    for pair in items.windows(2) {
        if order(pair[0], pair[1], "isSorted")? == Ordering::Greater {
            return Ok(CowVal::owned(CelBool::from(false)));
        }
    }
    Ok(CowVal::owned(CelBool::from(true)))
}

fn sum<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let items = elements(arg(&args, 0, "sum")?, "sum")?;
    let Some((first, rest)) = items.split_first() else {
        return Ok(CowVal::owned(CelInt::from(0)));
    };
    let summable = |v: &dyn Val| {
        matches!(
            v.get_type().kind(),
            Kind::Int | Kind::UInt | Kind::Double | Kind::Duration
        )
    };
    if !items.iter().all(|v| summable(*v)) {
        return Err(error(
            "sum",
            "sum is defined on lists of int, uint, double or duration",
        ));
    }
    let mut total: Box<dyn Val + 'v> = first.clone_as_boxed();
    for v in rest {
        let adder = total
            .as_adder()
            .ok_or_else(|| error("sum", "elements cannot be added"))?;
        let next = adder.add(*v)?.into_owned();
        total = next;
    }
    Ok(CowVal::Owned(total))
}

/// The least (`want` Less) or greatest (`want` Greater) element.
fn extreme<'b, 'v>(
    args: &[CowVal<'b, 'v>],
    want: Ordering,
    function: &str,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let items = elements(arg(args, 0, function)?, function)?;
    let Some((first, rest)) = items.split_first() else {
        return Err(error(function, format!("{function} called on empty list")));
    };
    let mut best = *first;
    for v in rest {
        if order(*v, best, function)? == want {
            best = *v;
        }
    }
    Ok(CowVal::Owned(best.clone_as_boxed()))
}

fn min<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    extreme(&args, Ordering::Less, "min")
}

fn max<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    extreme(&args, Ordering::Greater, "max")
}

/// The position of the first (or last) element equal to the argument.
fn position<'b, 'v>(
    args: &[CowVal<'b, 'v>],
    last: bool,
    function: &str,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let items = elements(arg(args, 0, function)?, function)?;
    let needle = arg(args, 1, function)?;
    let found = if last {
        items.iter().rposition(|v| v.equals(needle))
    } else {
        items.iter().position(|v| v.equals(needle))
    };
    let at = found.map_or(-1, |i| i64::try_from(i).unwrap_or(i64::MAX));
    Ok(CowVal::owned(CelInt::from(at)))
}

fn index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    position(&args, false, "indexOf")
}

fn last_index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    position(&args, true, "lastIndexOf")
}

/// Whether every element of `sub` equals some element of `of`.
fn contains_all(of: &[&dyn Val], sub: &[&dyn Val]) -> bool {
    sub.iter().all(|x| of.iter().any(|y| y.equals(*x)))
}

/// The two list arguments of a `sets.*` function.
fn two<'a, 'b, 'v>(
    args: &'a [CowVal<'b, 'v>],
    function: &str,
) -> Result<(Elements<'a, 'v>, Elements<'a, 'v>), ExecutionError> {
    Ok((
        elements(arg(args, 0, function)?, function)?,
        elements(arg(args, 1, function)?, function)?,
    ))
}

fn sets_contains<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (a, b) = two(&args, "sets.contains")?;
    Ok(CowVal::owned(CelBool::from(contains_all(&a, &b))))
}

fn sets_equivalent<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (a, b) = two(&args, "sets.equivalent")?;
    Ok(CowVal::owned(CelBool::from(
        contains_all(&a, &b) && contains_all(&b, &a),
    )))
}

fn sets_intersects<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (a, b) = two(&args, "sets.intersects")?;
    let any = a.iter().any(|x| b.iter().any(|y| y.equals(*x)));
    Ok(CowVal::owned(CelBool::from(any)))
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn the_examples_of_the_kubernetes_documentation() {
        holds("['a', 'b', 'c'].isSorted()");
        holds("![2, 1].isSorted()");
        holds("[].isSorted()");
        holds("[{'weight': 0.5}, {'weight': 0.5}].map(x, x.weight).sum() == 1.0");
        holds("[1, 5, 3].map(x, x).max() < [7, 9].min()");
        holds("['a', 'should-be-first', 'b'].indexOf('should-be-first') == 1");
        holds("[1, 2, 1].lastIndexOf(1) == 2");
        holds("[1, 2].indexOf(3) == -1");
        holds("[1, 2, 3].sum() == 6");
        holds("[].sum() == 0");
        holds("[duration('1s'), duration('2s')].sum() == duration('3s')");
        holds("['b', 'a', 'c'].min() == 'a'");
    }

    #[test]
    fn errors_as_upstream_reports_them() {
        fails("[].min()", "min called on empty list");
        fails("[].max()", "max called on empty list");
        fails("['a', 'b'].sum()", "sum is defined on lists of");
        fails("[9223372036854775807, 1].sum()", "");
        fails("[1, 'a'].isSorted()", "not comparable");
    }

    #[test]
    fn sets() {
        holds("sets.contains([1, 2, 3], [3, 1])");
        holds("!sets.contains([1, 2], [4])");
        holds("sets.contains([1], [])");
        holds("sets.equivalent([1, 2, 2], [2, 1])");
        holds("!sets.equivalent([1], [1, 2])");
        holds("sets.intersects([1, 2], [2, 5])");
        holds("!sets.intersects([1], [])");
        holds("sets.contains([1.0], [1])");
    }
}
