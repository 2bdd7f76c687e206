//! Query parameters as kube-apiserver reads them: booleans are Go's
//! `strconv.ParseBool` (`1`, `t`, `T`, `TRUE`, `true`, `True` and their
//! false forms), which clients rely on (the Python client sends
//! `watch=True`).

/// A boolean as `strconv.ParseBool` reads it; `None` for anything else.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Whether the parameter is present and true.
pub fn is_true(value: Option<&str>) -> bool {
    value.and_then(parse_bool).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_booleans() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for x in ["", "yes", "tRue", "2"] {
            assert_eq!(parse_bool(x), None, "{x}");
        }
        assert!(is_true(Some("True")));
        assert!(!is_true(None));
    }
}
