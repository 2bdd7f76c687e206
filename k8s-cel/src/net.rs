//! Kubernetes' IP and CIDR libraries (`k8s.io/apiserver/pkg/cel/library`
//! `ip.go` and `cidr.go`).
//!
//! - `ip(<string>)` parses an address as Go's `netip.ParseAddr` does
//!   (IPv4 octets without leading zeros), refusing a zone and an
//!   IPv4-mapped IPv6 address as upstream does; `isIP(<string>)` says
//!   whether it would; `ip.isCanonical(<string>)` whether the string is
//!   the address's canonical form (RFC 5952 for IPv6). An address answers
//!   `family()`, `isUnspecified()`, `isLoopback()`,
//!   `isLinkLocalMulticast()`, `isLinkLocalUnicast()`,
//!   `isGlobalUnicast()` (Go's meanings: private ranges are global
//!   unicast) and `string()`.
//! - `cidr(<string>)` parses a prefix (its address need not be masked),
//!   `isCIDR(<string>)` says whether it would, and a prefix answers
//!   `containsIP(<ip|string>)`, `containsCIDR(<cidr|string>)`, `ip()`,
//!   `masked()`, `prefixLength()` and `string()`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cel::{
    DeclarationError, Env, ExecutionError,
    common::types::{CelBool, CelInt, CelString, Kind, Type},
};

use crate::error;

/// The CEL type of an address.
pub static IP_TYPE: Type = Type::simple_type(Kind::Opaque, "net.IP");
/// The CEL type of a prefix.
pub static CIDR_TYPE: Type = Type::simple_type(Kind::Opaque, "net.CIDR");

/// An address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ip(pub IpAddr);

/// A prefix: an address and a length, the address as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub bits: u8,
}

crate::opaque_val!(Ip, IP_TYPE);
crate::opaque_val!(Cidr, CIDR_TYPE);

/// Registers the IP and CIDR functions.
pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    cel::add_overload!(env, fn ip: (CelString<'_>) -> Result<Ip>)?;
    cel::add_overload!(env, fn is_ip: (CelString<'_>) -> CelBool, name = "isIP")?;
    cel::add_overload!(env, fn is_canonical: (CelString<'_>) -> Result<CelBool>, name = "ip.isCanonical")?;
    cel::add_overload!(env, fn ip_string: (Ip) -> CelString<'_>, name = "string")?;
    cel::add_member_overload!(env, fn family: (Ip) -> CelInt)?;
    cel::add_member_overload!(env, fn is_unspecified: (Ip) -> CelBool)?;
    cel::add_member_overload!(env, fn is_loopback: (Ip) -> CelBool)?;
    cel::add_member_overload!(env, fn is_link_local_multicast: (Ip) -> CelBool)?;
    cel::add_member_overload!(env, fn is_link_local_unicast: (Ip) -> CelBool)?;
    cel::add_member_overload!(env, fn is_global_unicast: (Ip) -> CelBool)?;
    cel::add_overload!(env, fn cidr: (CelString<'_>) -> Result<Cidr>)?;
    cel::add_overload!(env, fn is_cidr: (CelString<'_>) -> CelBool, name = "isCIDR")?;
    cel::add_overload!(env, fn cidr_string: (Cidr) -> CelString<'_>, name = "string")?;
    cel::add_member_overload!(env, fn contains_ip: (Cidr, Ip) -> CelBool, name = "containsIP")?;
    cel::add_member_overload!(env, fn contains_ip_string: (Cidr, CelString<'_>) -> Result<CelBool>,
        name = "containsIP")?;
    cel::add_member_overload!(env, fn contains_cidr: (Cidr, Cidr) -> CelBool, name = "containsCIDR")?;
    cel::add_member_overload!(env, fn contains_cidr_string: (Cidr, CelString<'_>) -> Result<CelBool>,
        name = "containsCIDR")?;
    cel::add_member_overload!(env, fn cidr_ip: (Cidr) -> Ip, name = "ip")?;
    cel::add_member_overload!(env, fn masked: (Cidr) -> Cidr)?;
    cel::add_member_overload!(env, fn prefix_length: (Cidr) -> CelInt)?;
    Ok(())
}

/// An address as upstream accepts one.
pub fn parse_ip(raw: &str) -> Result<IpAddr, String> {
    if raw.contains('%') {
        return Err(format!("IP address {raw:?} with zone value is not allowed"));
    }
    let addr: IpAddr = raw.parse().map_err(|e| {
        format!("IP Address {raw:?} parse error during conversion from string: {e}")
    })?;
    if let IpAddr::V6(v6) = addr
        && v6.to_ipv4_mapped().is_some()
    {
        return Err(format!("IPv4-mapped IPv6 address {raw:?} is not allowed"));
    }
    Ok(addr)
}

/// A prefix as upstream accepts one.
pub fn parse_cidr(raw: &str) -> Result<Cidr, String> {
    let bad = |why: &str| {
        format!("network address {raw:?} parse error during conversion from string: {why}")
    };
    let (addr, bits) = raw.split_once('/').ok_or_else(|| bad("no '/'"))?;
    let addr = parse_ip(addr).map_err(|e| bad(&e))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    // Go's ParsePrefix: decimal digits, no sign, no leading zero.
    if bits.is_empty()
        || !bits.bytes().all(|b| b.is_ascii_digit())
        || (bits.len() > 1 && bits.starts_with('0'))
    {
        return Err(bad("bad bits"));
    }
    let bits: u8 = bits
        .parse()
        .ok()
        .filter(|b| *b <= max)
        .ok_or_else(|| bad("prefix length out of range"))?;
    Ok(Cidr { addr, bits })
}

fn ip(s: &CelString<'_>) -> Result<Ip, ExecutionError> {
    parse_ip(s.inner()).map(Ip).map_err(|e| error("ip", e))
}

fn is_ip(s: &CelString<'_>) -> CelBool {
    parse_ip(s.inner()).is_ok().into()
}

fn is_canonical(s: &CelString<'_>) -> Result<CelBool, ExecutionError> {
    let addr = parse_ip(s.inner()).map_err(|e| error("ip.isCanonical", e))?;
    Ok((addr.to_string() == s.inner()).into())
}

fn ip_string(ip: &Ip) -> CelString<'static> {
    ip.0.to_string().into()
}

fn family(ip: &Ip) -> CelInt {
    if ip.0.is_ipv4() { 4 } else { 6 }.into()
}

fn is_unspecified(ip: &Ip) -> CelBool {
    ip.0.is_unspecified().into()
}

fn is_loopback(ip: &Ip) -> CelBool {
    ip.0.is_loopback().into()
}

fn link_local_multicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => v6.segments()[0] == 0xff02,
    }
}

fn link_local_unicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

fn is_link_local_multicast(ip: &Ip) -> CelBool {
    link_local_multicast(ip.0).into()
}

fn is_link_local_unicast(ip: &Ip) -> CelBool {
    link_local_unicast(ip.0).into()
}

/// Go's `IsGlobalUnicast`: none of unspecified, limited broadcast,
/// loopback, multicast, link-local unicast.
fn is_global_unicast(ip: &Ip) -> CelBool {
    let a = ip.0;
    let broadcast = a == IpAddr::V4(Ipv4Addr::BROADCAST);
    (!(a.is_unspecified()
        || broadcast
        || a.is_loopback()
        || a.is_multicast()
        || link_local_unicast(a)))
    .into()
}

fn cidr(s: &CelString<'_>) -> Result<Cidr, ExecutionError> {
    parse_cidr(s.inner()).map_err(|e| error("cidr", e))
}

fn is_cidr(s: &CelString<'_>) -> CelBool {
    parse_cidr(s.inner()).is_ok().into()
}

fn cidr_string(c: &Cidr) -> CelString<'static> {
    format!("{}/{}", c.addr, c.bits).into()
}

/// `addr` with every bit past `bits` cleared.
fn mask(addr: IpAddr, bits: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

fn contains(c: &Cidr, addr: IpAddr) -> bool {
    addr.is_ipv4() == c.addr.is_ipv4() && mask(addr, c.bits) == mask(c.addr, c.bits)
}

fn contains_ip(c: &Cidr, ip: &Ip) -> CelBool {
    contains(c, ip.0).into()
}

fn contains_ip_string(c: &Cidr, s: &CelString<'_>) -> Result<CelBool, ExecutionError> {
    let addr = parse_ip(s.inner()).map_err(|e| error("containsIP", e))?;
    Ok(contains(c, addr).into())
}

fn contains_cidr(c: &Cidr, other: &Cidr) -> CelBool {
    (other.bits >= c.bits && contains(c, other.addr)).into()
}

fn contains_cidr_string(c: &Cidr, s: &CelString<'_>) -> Result<CelBool, ExecutionError> {
    let other = parse_cidr(s.inner()).map_err(|e| error("containsCIDR", e))?;
    Ok(contains_cidr(c, &other))
}

fn cidr_ip(c: &Cidr) -> Ip {
    Ip(c.addr)
}

fn masked(c: &Cidr) -> Cidr {
    Cidr {
        addr: mask(c.addr, c.bits),
        bits: c.bits,
    }
}

fn prefix_length(c: &Cidr) -> CelInt {
    i64::from(c.bits).into()
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn addresses_as_upstream_documents_them() {
        holds("isIP('127.0.0.1') && isIP('::1') && !isIP('1.2.3') && !isIP('01.2.3.4')");
        holds("!isIP('fe80::1%eth0') && !isIP('::ffff:1.2.3.4')");
        holds("ip('127.0.0.1').family() == 4 && ip('::1').family() == 6");
        holds("ip('127.0.0.1').isLoopback() && ip('::1').isLoopback()");
        holds("ip('0.0.0.0').isUnspecified() && ip('::').isUnspecified()");
        holds("ip('224.0.0.1').isLinkLocalMulticast() && ip('ff02::1').isLinkLocalMulticast()");
        holds("ip('169.254.169.254').isLinkLocalUnicast() && ip('fe80::1').isLinkLocalUnicast()");
        holds("ip('10.0.0.1').isGlobalUnicast() && ip('2001:db8::1').isGlobalUnicast()");
        holds("!ip('255.255.255.255').isGlobalUnicast() && !ip('ff00::1').isGlobalUnicast()");
        holds("ip.isCanonical('127.0.0.1') && ip.isCanonical('2001:db8::1')");
        holds("!ip.isCanonical('2001:DB8::1') && !ip.isCanonical('2001:db8:0:0:0:0:0:1')");
        holds("string(ip('2001:db8:0::1')) == '2001:db8::1'");
        holds("ip('10.0.0.1') == ip('10.0.0.1') && ip('10.0.0.1') != ip('10.0.0.2')");
    }

    #[test]
    fn prefixes_as_upstream_documents_them() {
        holds(
            "isCIDR('10.0.0.0/8') && !isCIDR('10.0.0.0') && !isCIDR('10.0.0.0/33') && !isCIDR('10.0.0.0/08')",
        );
        holds("cidr('192.168.0.0/24').containsIP(ip('192.168.0.1'))");
        holds("cidr('192.168.0.0/24').containsIP('192.168.0.1')");
        holds("!cidr('192.168.0.0/24').containsIP('192.168.1.1')");
        holds("!cidr('0.0.0.0/0').containsIP('::1')");
        holds("cidr('192.168.0.0/16').containsCIDR(cidr('192.168.10.0/24'))");
        holds("cidr('192.168.0.0/16').containsCIDR('192.168.0.0/16')");
        holds("!cidr('192.168.0.0/24').containsCIDR('192.168.0.0/16')");
        holds("cidr('192.168.0.1/24').ip() == ip('192.168.0.1')");
        holds("cidr('192.168.0.1/24').masked() == cidr('192.168.0.0/24')");
        holds("string(cidr('192.168.0.1/24').masked()) == '192.168.0.0/24'");
        holds("cidr('2001:db8::/32').prefixLength() == 32");
        holds("cidr('2001:db8::/32').containsIP('2001:db8:1::1')");
    }

    #[test]
    fn errors_name_the_input() {
        fails("ip('1.2.3')", "parse error");
        fails("ip('fe80::1%eth0')", "zone value is not allowed");
        fails("ip('::ffff:1.2.3.4')", "IPv4-mapped");
        fails("cidr('1.2.3.4')", "parse error");
        fails("ip.isCanonical('x')", "parse error");
        fails("cidr('10.0.0.0/8').containsIP('nope')", "parse error");
    }
}
