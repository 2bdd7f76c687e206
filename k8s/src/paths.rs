//! Paths and file modes a pod names inside its volumes (`items[].path`,
//! `subPath`, `subPathExpr`, `defaultMode`), checked as kube-apiserver's
//! `validateLocalDescendingPath`, `ValidateLocalNonReservedPath` and
//! file-mode rules do. The kubelet checks the same again before it touches
//! the node's file system (CVE-2017-1002101, CVE-2017-1002102).

use serde_json::json;

use crate::field::FieldError;

/// The highest mode a volume file may have: no setuid, setgid or sticky bit.
pub const MAX_FILE_MODE: i32 = 0o777;
pub const FILE_MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// Whether `p` is relative and has no `..` element.
pub fn is_local_descending(p: &str) -> bool {
    !p.starts_with('/') && !p.split('/').any(|c| c == "..")
}

/// A relative path with no `..` element (`subPath`, `subPathExpr`).
pub fn validate_local_descending_path(p: &str, field: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    if p.starts_with('/') {
        out.push(FieldError::invalid(
            field,
            &json!(p),
            "must be a relative path",
        ));
    }
    if p.split('/').any(|c| c == "..") {
        out.push(FieldError::invalid(
            field,
            &json!(p),
            "must not contain '..'",
        ));
    }
    out
}

/// A path of a file the kubelet writes into a volume (`items[].path`):
/// relative, no `..` element, and not starting with `..` (the names the
/// atomic writer keeps for itself: `..data`, `..<timestamp>`).
pub fn validate_local_non_reserved_path(p: &str, field: &str) -> Vec<FieldError> {
    let mut out = validate_local_descending_path(p, field);
    if p.starts_with("..") && !p.starts_with("../") {
        out.push(FieldError::invalid(
            field,
            &json!(p),
            "must not start with '..'",
        ));
    }
    out
}

/// A file mode (`mode`, `defaultMode`): 0 to 0777.
pub fn validate_file_mode(mode: i32, field: &str) -> Vec<FieldError> {
    if (0..=MAX_FILE_MODE).contains(&mode) {
        Vec::new()
    } else {
        vec![FieldError::invalid(field, &json!(mode), FILE_MODE_MSG)]
    }
}

/// The components of a relative path the kubelet may follow inside a
/// volume, or `None` if it could leave it: absolute, a `..` element, a
/// NUL byte. Empty and `.` components are dropped.
pub fn descending_components(p: &str) -> Option<Vec<&str>> {
    if p.starts_with('/') || p.contains('\0') {
        return None;
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return None;
    }
    Some(parts)
}

/// Whether `s` can be one component of a path on the node (a volume's
/// name, a pod's uid): non-empty, no `/`, no NUL, not `.` or `..`.
pub fn is_path_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descending_and_reserved_paths() {
        assert!(validate_local_descending_path("a/b", "f").is_empty());
        assert_eq!(validate_local_descending_path("/etc", "f").len(), 1);
        let e = validate_local_descending_path("../../etc", "f");
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].to_string(),
            "f: Invalid value: \"../../etc\": must not contain '..'"
        );
        assert_eq!(validate_local_descending_path("/a/../b", "f").len(), 2);
        assert!(
            validate_local_non_reserved_path("..data", "f")[0]
                .message
                .ends_with("must not start with '..'")
        );
        assert!(validate_local_non_reserved_path("..a/b", "f").len() == 1);
        assert!(validate_local_non_reserved_path(".a", "f").is_empty());
        // `a/..b` has no `..` element and does not start with `..`.
        assert!(validate_local_non_reserved_path("a/..b", "f").is_empty());
    }

    #[test]
    fn modes() {
        assert!(validate_file_mode(0o644, "m").is_empty());
        assert!(validate_file_mode(0, "m").is_empty());
        assert_eq!(
            validate_file_mode(0o4755, "m")[0].to_string(),
            "m: Invalid value: 2541: must be a number between 0 and 0777 (octal), both inclusive"
        );
        assert_eq!(validate_file_mode(-1, "m").len(), 1);
    }

    #[test]
    fn components_the_node_may_follow() {
        assert_eq!(descending_components("a/./b//c"), Some(vec!["a", "b", "c"]));
        assert_eq!(descending_components(""), Some(vec![]));
        assert_eq!(descending_components("a/../b"), None);
        assert_eq!(descending_components("/etc"), None);
        assert_eq!(descending_components("a\0b"), None);
        assert!(is_path_component("web"));
        for bad in ["", ".", "..", "a/b", "/", "a\0"] {
            assert!(!is_path_component(bad), "{bad:?}");
        }
    }
}
