//! Kubernetes' regex library (`k8s.io/apiserver/pkg/cel/library/regex.go`):
//! `<string>.find(<pattern>)` is the first match (`''` when there is
//! none), `<string>.findAll(<pattern>)` every match and
//! `<string>.findAll(<pattern>, n)` at most `n` of them (all when `n` is
//! negative), as Go's `FindString` and `FindAllString`.
//!
//! Patterns are RE2 syntax in both; the `regex` crate, like RE2, runs in
//! time linear in the input, and a compiled pattern is held to 1 MiB, so a
//! pattern from a hostile object cannot pin a core or take the memory.

use cel::{
    DeclarationError, Env, ExecutionError,
    common::types::{CelInt, CelList, CelString},
    common::value::Val,
};

use crate::error;

/// The largest compiled pattern accepted.
const PATTERN_LIMIT: usize = 1 << 20;

/// Registers `find` and `findAll`.
pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    cel::add_member_overload!(env, fn find: (CelString<'_>, CelString<'_>) -> Result<CelString<'_>>)?;
    cel::add_member_overload!(env, fn find_all: (CelString<'_>, CelString<'_>) -> Result<CelList<'_>>)?;
    cel::add_member_overload!(env, fn find_all_n: (CelString<'_>, CelString<'_>, CelInt) -> Result<CelList<'_>>,
        name = "findAll")?;
    Ok(())
}

fn compiled(pattern: &str, function: &str) -> Result<regex::Regex, ExecutionError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_LIMIT)
        .build()
        .map_err(|e| error(function, format!("invalid pattern: {e}")))
}

fn find(
    this: &CelString<'_>,
    pattern: &CelString<'_>,
) -> Result<CelString<'static>, ExecutionError> {
    let re = compiled(pattern.inner(), "find")?;
    Ok(re
        .find(this.inner())
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default()
        .into())
}

fn matches_up_to(
    this: &str,
    pattern: &str,
    n: Option<usize>,
) -> Result<CelList<'static>, ExecutionError> {
    let re = compiled(pattern, "findAll")?;
    let found: Vec<Box<dyn Val>> = re
        .find_iter(this)
        .take(n.unwrap_or(usize::MAX))
        .map(|m| Box::new(CelString::from(m.as_str().to_owned())) as Box<dyn Val>)
        .collect();
    Ok(CelList::from(found))
}

fn find_all(
    this: &CelString<'_>,
    pattern: &CelString<'_>,
) -> Result<CelList<'static>, ExecutionError> {
    matches_up_to(this.inner(), pattern.inner(), None)
}

fn find_all_n(
    this: &CelString<'_>,
    pattern: &CelString<'_>,
    n: &CelInt,
) -> Result<CelList<'static>, ExecutionError> {
    let n = usize::try_from(*n.inner()).ok();
    matches_up_to(this.inner(), pattern.inner(), n)
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn as_the_kubernetes_documentation_shows() {
        holds("'abc 123'.find('[0-9]+') == '123'");
        holds("'abc'.find('[0-9]+') == ''");
        holds("'1, 2, 3, 4'.findAll('[0-9]+').map(x, int(x)).sum() < 100");
        holds("'1, 2, 3, 4'.findAll('[0-9]+', 2) == ['1', '2']");
        holds("'1, 2'.findAll('[0-9]+', -1) == ['1', '2']");
        holds("'1, 2'.findAll('[0-9]+', 0) == []");
        holds("'abc 123'.find('[0-9]*') == ''");
    }

    #[test]
    fn bad_and_huge_patterns_are_errors() {
        fails("'a'.find('(')", "invalid pattern");
        fails("'a'.findAll('a{1000}{1000}')", "invalid pattern");
    }
}
