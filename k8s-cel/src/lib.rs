//! Kubernetes' CEL environment, built once and shared by every place the
//! apiserver evaluates CEL: CRD validation rules
//! (`x-kubernetes-validations`), admission webhooks' `matchConditions`, and
//! ValidatingAdmissionPolicies.
//!
//! It is the `cel` crate's standard library and macros (the maintained Rust
//! CEL implementation) plus what kube-apiserver adds to cel-go's in its base
//! environment (`k8s.io/apiserver/pkg/cel/environment`):
//! - cel-go's extended strings (`charAt`, `indexOf`, `lowerAscii`,
//!   `replace`, `split`, `join`, `substring`, `trim`, `format`,
//!   `strings.quote`), which the `cel` crate ships as
//!   [`cel::extensions::strings`];
//! - cel-go's sets (`sets.contains`, `sets.equivalent`, `sets.intersects`),
//!   [`lists`];
//! - Kubernetes' list library (`isSorted`, `sum`, `min`, `max`, `indexOf`,
//!   `lastIndexOf`), [`lists`];
//! - its regex library (`find`, `findAll`), [`regex`];
//! - its URL library (`url`, `isURL`, `getScheme`, `getHost`,
//!   `getHostname`, `getPort`, `getEscapedPath`, `getQuery`), [`url`];
//! - its quantity library (`quantity`, `isQuantity`, `sign`, `isInteger`,
//!   `asInteger`, `asApproximateFloat`, `add`, `sub`, `isLessThan`,
//!   `isGreaterThan`, `compareTo`), [`quantity`];
//! - its IP and CIDR libraries (`ip`, `isIP`, `ip.isCanonical`, `family`,
//!   `isLoopback`, …, `cidr`, `isCIDR`, `containsIP`, `containsCIDR`,
//!   `masked`, `prefixLength`), [`net`];
//! - `cel.bind` (cel-go's bindings), [`bind`].
//!
//! The Kubernetes libraries are written here because no crate provides
//! them (upstream's are Go, on cel-go); each module follows the behaviour
//! upstream documents and tests, named in its own doc. Not provided: the
//! authorizer library (only ValidatingAdmissionPolicy has an `authorizer`),
//! the format and semver libraries and two-variable comprehensions. A
//! rule that calls one fails to evaluate, and the write it guards is
//! refused with that error, never let through.

use std::sync::{Arc, LazyLock};

use cel::{Context, Env, ExecutionError, Program};

/// `Val` for an opaque value type of a library (`Quantity`, `Url`, `Ip`,
/// `Cidr`): its CEL type, equality by `PartialEq`, cloning.
#[macro_export]
#[doc(hidden)]
macro_rules! opaque_val {
    ($t:ty, $ty:ident) => {
        impl cel::common::value::Val for $t {
            fn get_type(&self) -> &cel::common::types::Type {
                &$ty
            }

            fn cel_type() -> &'static cel::common::types::Type {
                &$ty
            }

            fn equals(&self, other: &dyn cel::common::value::Val) -> bool {
                other.downcast_ref::<$t>().is_some_and(|o| o == self)
            }

            fn clone_as_boxed<'v>(&self) -> Box<dyn cel::common::value::Val + 'v>
            where
                Self: 'v,
            {
                Box::new(Clone::clone(self))
            }

            fn as_any(&self) -> Option<&dyn std::any::Any> {
                Some(self)
            }
        }

        impl cel::common::value::StaticVal for $t {}
    };
}

pub mod bind;
pub mod lists;
pub mod net;
pub mod quantity;
pub mod regex;
pub mod url;

mod value;

pub use value::to_cel;

/// A library: registers its overloads on an environment.
type Library = fn(&mut Env) -> Result<(), cel::DeclarationError>;

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(build()));

/// The environment: the standard library and every library above.
///
/// # Panics
///
/// Never in a released build: the libraries' overloads are distinct,
/// which the unit tests check by building it.
fn build() -> Env {
    let mut env = Env::stdlib();
    let libraries: [Library; 7] = [
        cel::extensions::strings,
        bind::register,
        lists::register,
        regex::register,
        url::register,
        quantity::register,
        net::register,
    ];
    for library in libraries {
        #[allow(
            clippy::expect_used,
            reason = "a programming error, caught by every test"
        )]
        env.add_extension(library)
            .expect("the Kubernetes CEL libraries declare distinct overloads");
    }
    env
}

/// The shared environment.
pub fn env() -> &'static Arc<Env> {
    &ENV
}

/// Compiles `text` in the Kubernetes environment; the error is the
/// parser's, as a clause for an API cause.
pub fn compile(text: &str) -> Result<Program, String> {
    ENV.compile(text).map_err(|e| e.to_string())
}

/// A context to run a program compiled by [`compile`] in, with no
/// variables yet.
pub fn context<'a, 'v>() -> Context<'a, 'v> {
    Context::with_env(ENV.clone())
}

/// A function's error, as the libraries report them.
pub(crate) fn error(function: &str, message: impl ToString) -> ExecutionError {
    ExecutionError::function_error(function, message)
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Evaluates `expr` with no variables.
    pub(crate) fn eval(expr: &str) -> Result<cel::Value, String> {
        let program = compile(expr)?;
        program.execute(&context()).map_err(|e| e.to_string())
    }

    /// Asserts `expr` evaluates to `true`.
    #[track_caller]
    pub(crate) fn holds(expr: &str) {
        assert_eq!(eval(expr), Ok(cel::Value::Bool(true)), "{expr}");
    }

    /// Asserts `expr` fails, with an error containing `want`.
    #[track_caller]
    pub(crate) fn fails(expr: &str, want: &str) {
        match eval(expr) {
            Err(e) => assert!(e.contains(want), "{expr}: {e}"),
            Ok(v) => panic!("{expr} evaluated to {v:?}, wanted an error with {want:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;

    #[test]
    fn the_environment_builds_and_keeps_the_standard_library() {
        holds("[1, 2, 3].all(x, x > 0)");
        holds("has({'a': 1}.a)");
        holds("'abc'.matches('^a')");
        holds("'TacoCat'.lowerAscii() == 'tacocat'");
        holds("'a,b'.split(',') == ['a', 'b']");
        holds("['x', 'y'].join('-') == 'x-y'");
    }

    #[test]
    fn unknown_functions_fail_rather_than_pass() {
        fails("'x'.noSuchFunction()", "");
        assert!(eval("semver('1.0.0')").is_err());
    }
}
