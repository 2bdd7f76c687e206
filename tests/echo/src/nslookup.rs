//! `nslookup NAME [SERVER]` as busybox 1.28's (the test image
//! `busybox:1.28` has it, as the upstream image does): the name is looked
//! up the way the C library's resolver does — `/etc/resolv.conf`'s
//! nameservers, its search list and `ndots` — and the first answer wins,
//! so `until nslookup myservice; do sleep 2; done` ends once the Service
//! resolves. (Newer busybox nslookups report failure if any search
//! expansion fails.) A records only, over UDP.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

/// What resolv.conf says.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ResolvConf {
    pub(crate) nameservers: Vec<Ipv4Addr>,
    pub(crate) search: Vec<String>,
    pub(crate) ndots: usize,
}

pub(crate) fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut r = ResolvConf {
        ndots: 1,
        ..Default::default()
    };
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => r
                .nameservers
                .extend(f.next().and_then(|a| a.parse::<Ipv4Addr>().ok())),
            Some("search" | "domain") => r.search = f.map(str::to_string).collect(),
            Some("options") => {
                for o in f {
                    if let Some(n) = o.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                        r.ndots = n;
                    }
                }
            }
            _ => {}
        }
    }
    r
}

/// The names to try, in the resolver's order.
pub(crate) fn candidates(name: &str, conf: &ResolvConf) -> Vec<String> {
    if let Some(abs) = name.strip_suffix('.') {
        return vec![abs.to_string()];
    }
    let searched = conf.search.iter().map(|d| format!("{name}.{d}"));
    if name.matches('.').count() >= conf.ndots {
        std::iter::once(name.to_string()).chain(searched).collect()
    } else {
        searched.chain(std::iter::once(name.to_string())).collect()
    }
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn skip_name(m: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *m.get(i)? as usize;
        if len & 0xc0 == 0xc0 {
            return Some(i + 2);
        }
        if len == 0 {
            return Some(i + 1);
        }
        i += 1 + len;
    }
}

/// The A records of an answer, or `None` if it is not a usable answer
/// (error code, wrong id, truncated).
pub(crate) fn answer_addrs(m: &[u8], id: u16) -> Option<Vec<Ipv4Addr>> {
    if m.len() < 12 || m[..2] != id.to_be_bytes() || m[3] & 0x0f != 0 {
        return None;
    }
    let qd = u16::from_be_bytes([m[4], m[5]]);
    let an = u16::from_be_bytes([m[6], m[7]]);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(m, i)? + 4;
    }
    let mut out = vec![];
    for _ in 0..an {
        i = skip_name(m, i)?;
        let t = u16::from_be_bytes([*m.get(i)?, *m.get(i + 1)?]);
        let len = u16::from_be_bytes([*m.get(i + 8)?, *m.get(i + 9)?]) as usize;
        let rd = m.get(i + 10..i + 10 + len)?;
        if t == 1 && len == 4 {
            out.push(Ipv4Addr::new(rd[0], rd[1], rd[2], rd[3]));
        }
        i += 10 + len;
    }
    Some(out)
}

fn ask(server: SocketAddr, name: &str) -> Option<Vec<Ipv4Addr>> {
    let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let q = query(id, name);
    for _ in 0..2 {
        if sock.send_to(&q, server).is_err() {
            return None;
        }
        let mut buf = [0u8; 1500];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return answer_addrs(&buf[..n], id).filter(|a| !a.is_empty());
        }
    }
    None
}

/// Runs `nslookup` with its arguments (after the program name).
pub(crate) fn main(args: &[String]) -> i32 {
    let Some(name) = args.iter().find(|a| !a.starts_with('-')) else {
        eprintln!("Usage: nslookup HOST [DNS_SERVER]");
        return 1;
    };
    let conf = parse_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    let servers: Vec<SocketAddr> = match args.iter().filter(|a| !a.starts_with('-')).nth(1) {
        Some(s) => s
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| {
                s.parse::<Ipv4Addr>()
                    .ok()
                    .map(|a| SocketAddr::from((a, 53)))
            })
            .into_iter()
            .collect(),
        None => conf
            .nameservers
            .iter()
            .map(|a| SocketAddr::from((*a, 53)))
            .collect(),
    };
    let Some(first) = servers.first() else {
        eprintln!("nslookup: no nameserver in /etc/resolv.conf");
        return 1;
    };
    println!("Server:    {}\nAddress 1: {}\n", first.ip(), first.ip());
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        println!("Name:      {name}\nAddress 1: {ip}");
        return 0;
    }
    for candidate in candidates(name, &conf) {
        for s in &servers {
            if let Some(addrs) = ask(*s, &candidate) {
                println!("Name:      {name}");
                for (i, a) in addrs.iter().enumerate() {
                    println!("Address {}: {a} {candidate}", i + 1);
                }
                return 0;
            }
        }
    }
    eprintln!("nslookup: can't resolve '{name}'");
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> ResolvConf {
        parse_resolv_conf(
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
        )
    }

    #[test]
    fn resolv_conf_and_search_order_as_the_c_resolver() {
        let c = conf();
        assert_eq!(c.nameservers, vec![Ipv4Addr::new(10, 96, 0, 10)]);
        assert_eq!(c.ndots, 5);
        assert_eq!(
            candidates("myservice", &c),
            [
                "myservice.default.svc.cluster.local",
                "myservice.svc.cluster.local",
                "myservice.cluster.local",
                "myservice"
            ]
        );
        assert_eq!(candidates("a.b.c.d.e.f", &c)[0], "a.b.c.d.e.f");
        assert_eq!(candidates("example.com.", &c), ["example.com"]);
    }

    #[test]
    fn answers_are_read_and_errors_refused() {
        let id = 7;
        let mut a = query(id, "web.default.svc.cluster.local");
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 20]);
        assert_eq!(
            answer_addrs(&a, id),
            Some(vec![Ipv4Addr::new(10, 96, 0, 20)])
        );
        assert_eq!(answer_addrs(&a, 8), None, "another id");
        a[3] = 0x83;
        assert_eq!(answer_addrs(&a, id), None, "NXDOMAIN");
        assert_eq!(answer_addrs(&a[..20], id), None);
    }
}
