//! Addresses as kube-apiserver validates them (`ValidateNonSpecialIP`):
//! what may be a Service's external IP or an endpoint. The node agent drops
//! the same addresses again before programming anything.

use std::net::IpAddr;

use serde_json::json;

use crate::field::FieldError;

/// Why `ip` may not be used (kube-apiserver's messages), if it may not.
pub fn special_ip(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("may not be unspecified (0.0.0.0, ::)");
    }
    if ip.is_loopback() {
        return Some("may not be in the loopback range (127.0.0.0/8, ::1/128)");
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    if link_local {
        return Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)");
    }
    let link_local_multicast = match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => v6.segments()[0] == 0xff02,
    };
    if link_local_multicast {
        return Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)");
    }
    None
}

/// An address field (`spec.externalIPs[0]`, `endpoints[0].addresses[0]`):
/// a valid IP address that is not special.
pub fn validate_ip(value: &str, field: &str) -> (Option<IpAddr>, Vec<FieldError>) {
    match value.parse::<IpAddr>() {
        Ok(ip) => {
            let errs = special_ip(ip)
                .map(|why| FieldError::invalid(field, &json!(value), why))
                .into_iter()
                .collect();
            (Some(ip), errs)
        }
        Err(_) => (
            None,
            vec![FieldError::invalid(
                field,
                &json!(value),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_named() {
        for (ip, want) in [
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("127.0.0.5", "loopback"),
            ("169.254.169.254", "link-local range"),
            ("fe80::1", "link-local range"),
            ("224.0.0.1", "multicast"),
        ] {
            assert!(
                special_ip(ip.parse().unwrap()).unwrap().contains(want),
                "{ip}"
            );
        }
        assert_eq!(special_ip("192.0.2.1".parse().unwrap()), None);
        let (ip, e) = validate_ip("x", "spec.externalIPs[0]");
        assert!(ip.is_none());
        assert!(e[0].to_string().contains("must be a valid IP address"));
    }
}
