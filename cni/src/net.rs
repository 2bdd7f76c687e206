//! IPv4 prefixes (`10.244.1.0/24`), as the subnet file, the IPAM ranges and
//! the network daemon's routes use them.

use std::{fmt, net::Ipv4Addr, str::FromStr};

/// An IPv4 address with a prefix length. `addr` may have host bits set
/// (`10.244.1.1/24` names the gateway of `10.244.1.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// Why a prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv4 prefix {input:?}: {why}")]
pub struct NetParseError {
    pub input: String,
    pub why: &'static str,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Self { addr, prefix })
    }

    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The network address (host bits cleared).
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The same prefix with host bits cleared.
    pub fn trunc(self) -> Self {
        Self {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    /// The broadcast address.
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Whether `other` lies entirely inside this prefix.
    pub fn contains_net(self, other: Self) -> bool {
        other.prefix >= self.prefix && self.contains(other.network())
    }

    pub fn overlaps(self, other: Self) -> bool {
        self.contains_net(other) || other.contains_net(self)
    }

    /// The `n`th address from the network address (0 = network).
    pub fn nth(self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.network()) + n))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| NetParseError {
            input: s.to_string(),
            why,
        };
        let (a, p) = s.split_once('/').ok_or_else(|| err("no /prefix"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| err("not an IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| err("prefix is not a number"))?;
        Self::new(addr, prefix).ok_or_else(|| err("prefix is longer than 32"))
    }
}

impl serde::Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        let n: Ipv4Net = "10.244.1.1/24".parse().unwrap();
        assert_eq!(n.network(), Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 244, 1, 255));
        assert!(n.contains(Ipv4Addr::new(10, 244, 1, 77)));
        assert!(!n.contains(Ipv4Addr::new(10, 244, 2, 1)));
        let cluster: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        assert!(cluster.contains_net(n));
        assert!(!n.contains_net(cluster));
        assert!(n.overlaps(cluster));
        assert_eq!(n.nth(255), Some(Ipv4Addr::new(10, 244, 1, 255)));
        assert_eq!(n.nth(256), None);
        let all: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
    }

    #[test]
    fn parse_errors_say_why() {
        for bad in ["10.0.0.0", "10.0.0/8", "10.0.0.0/33", "10.0.0.0/x"] {
            let e = bad.parse::<Ipv4Net>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
