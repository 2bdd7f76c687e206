//! Names as apimachinery's `validation` package checks them: RFC 1123
//! labels and subdomains, qualified names (label and annotation keys),
//! label values and configuration keys, with kube-apiserver's messages.

/// The longest DNS label.
pub const DNS_LABEL_MAX: usize = 63;
/// The longest DNS subdomain.
pub const DNS_SUBDOMAIN_MAX: usize = 253;

pub const DNS_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
pub const DNS_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
pub const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";
pub const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
pub const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// An RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 bytes.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DNS_LABEL_MAX
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain: labels joined by dots, at most 253 bytes.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= DNS_SUBDOMAIN_MAX && s.split('.').all(is_dns_label)
}

/// A label value: empty, or up to 63 of `[-A-Za-z0-9_.]` starting and
/// ending with an alphanumeric.
pub fn is_label_value(s: &str) -> bool {
    s.len() <= DNS_LABEL_MAX
        && (s.is_empty()
            || (s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                && s.as_bytes()[0].is_ascii_alphanumeric()
                && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()))
}

/// A qualified name (label and annotation keys): an optional DNS
/// subdomain prefix and `/`, then a non-empty name part.
pub fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if prefix.is_some_and(|p| !is_dns_subdomain(p)) {
        return false;
    }
    is_label_value(name) && !name.is_empty()
}

/// A ConfigMap or Secret key: `[-._a-zA-Z0-9]+`, at most 253 bytes, and
/// neither `.` nor `..` (which would name a directory in a volume).
pub fn is_config_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DNS_SUBDOMAIN_MAX
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A C identifier (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_c_identifier(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        for ok in ["a", "web-1", "0", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "../etc",
            "/etc",
            &"a".repeat(64),
        ] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_dns_subdomain("example.com"));
        assert!(!is_dns_subdomain("example..com"));
        assert!(!is_dns_subdomain("../.."));
    }

    #[test]
    fn keys_and_values() {
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(!is_qualified_name("a/b/c"));
        assert!(!is_qualified_name("x/"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-x"));
        assert!(is_config_key(".dockerconfigjson"));
        assert!(!is_config_key(".."));
        assert!(!is_config_key("a/b"));
        assert!(is_c_identifier("_A1"));
        assert!(!is_c_identifier("1A"));
    }
}
