//! DNS messages (RFC 1035): parsing the queries the cluster's resolvers
//! send and encoding answers. Only what a stub resolver asks is handled:
//! one question, class IN; EDNS(0) is recognised so that UDP answers may
//! exceed 512 bytes when the client says it can take them.

use std::net::Ipv4Addr;

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("DNS message too short ({0} bytes)")]
    Short(usize),
    #[error("DNS message is not a query")]
    NotQuery,
    #[error("DNS query has {0} questions (want 1)")]
    Questions(u16),
    #[error("bad name in DNS message: {0}")]
    Name(&'static str),
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub opcode: u8,
    pub recursion_desired: bool,
    /// Lower-cased, without the trailing dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The question as sent (echoed in the answer, case preserved).
    pub question: Vec<u8>,
    /// The client's EDNS(0) UDP payload size, if it sent an OPT record.
    pub edns_size: Option<u16>,
}

/// One resource record of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Without the trailing dot.
    pub name: String,
    pub ttl: u32,
    pub data: RData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Cname(String),
    Ptr(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Soa {
        mname: String,
        rname: String,
        serial: u32,
        refresh: u32,
        retry: u32,
        expire: u32,
        minimum: u32,
    },
}

impl RData {
    pub fn rtype(&self) -> u16 {
        match self {
            RData::A(_) => TYPE_A,
            RData::Cname(_) => TYPE_CNAME,
            RData::Ptr(_) => TYPE_PTR,
            RData::Srv { .. } => TYPE_SRV,
            RData::Soa { .. } => TYPE_SOA,
        }
    }
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// Reads a (possibly compressed) name at `start`; returns it and the
/// offset after it in the original position.
fn read_name(msg: &[u8], start: usize) -> Result<(String, usize), MessageError> {
    let mut labels: Vec<String> = vec![];
    let mut i = start;
    let mut end = None;
    let mut jumps = 0;
    let mut total = 0usize;
    loop {
        let len = *msg.get(i).ok_or(MessageError::Name("cut short"))? as usize;
        if len & 0xc0 == 0xc0 {
            let lo = *msg.get(i + 1).ok_or(MessageError::Name("cut short"))? as usize;
            if end.is_none() {
                end = Some(i + 2);
            }
            jumps += 1;
            if jumps > 16 {
                return Err(MessageError::Name("compression loop"));
            }
            i = ((len & 0x3f) << 8) | lo;
            continue;
        }
        if len & 0xc0 != 0 {
            return Err(MessageError::Name("unknown label type"));
        }
        if len == 0 {
            let after = end.unwrap_or(i + 1);
            return Ok((labels.join("."), after));
        }
        let label = msg
            .get(i + 1..i + 1 + len)
            .ok_or(MessageError::Name("cut short"))?;
        total += len + 1;
        if total > 255 {
            return Err(MessageError::Name("longer than 255 bytes"));
        }
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += 1 + len;
    }
}

/// Parses a query: the header, one question, and an OPT record if any.
pub fn parse_query(msg: &[u8]) -> Result<Query, MessageError> {
    if msg.len() < 12 {
        return Err(MessageError::Short(msg.len()));
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    if msg[2] & 0x80 != 0 {
        return Err(MessageError::NotQuery);
    }
    let opcode = (msg[2] >> 3) & 0x0f;
    let recursion_desired = msg[2] & 0x01 != 0;
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    if qd != 1 {
        return Err(MessageError::Questions(qd));
    }
    let arcount = u16::from_be_bytes([msg[10], msg[11]]);
    let (name, after) = read_name(msg, 12)?;
    let qtype = u16_at(msg, after).ok_or(MessageError::Short(msg.len()))?;
    let qclass = u16_at(msg, after + 2).ok_or(MessageError::Short(msg.len()))?;
    let question = msg[12..after + 4].to_vec();
    // Additional records: look for OPT (answers and authority are empty in
    // queries; anything else is skipped).
    let mut edns_size = None;
    let mut i = after + 4;
    for _ in 0..arcount {
        let Ok((_, n)) = read_name(msg, i) else {
            break;
        };
        let (Some(t), Some(class), Some(rdlen)) =
            (u16_at(msg, n), u16_at(msg, n + 2), u16_at(msg, n + 8))
        else {
            break;
        };
        if t == TYPE_OPT {
            edns_size = Some(class.max(512));
        }
        i = n + 10 + rdlen as usize;
    }
    Ok(Query {
        id,
        opcode,
        recursion_desired,
        name,
        qtype,
        qclass,
        question,
        edns_size,
    })
}

/// Writes names with compression against names already written.
struct Writer {
    buf: Vec<u8>,
    names: Vec<(String, u16)>,
}

impl Writer {
    fn name(&mut self, name: &str) {
        let name = name.trim_end_matches('.');
        let mut rest = name;
        loop {
            if rest.is_empty() {
                self.buf.push(0);
                return;
            }
            if let Some((_, off)) = self
                .names
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(rest))
            {
                self.buf.extend_from_slice(&(0xc000 | off).to_be_bytes());
                return;
            }
            if self.buf.len() < 0x3fff {
                self.names.push((rest.to_string(), self.buf.len() as u16));
            }
            let (label, tail) = rest.split_once('.').unwrap_or((rest, ""));
            let label = &label.as_bytes()[..label.len().min(63)];
            self.buf.push(label.len() as u8);
            self.buf.extend_from_slice(label);
            rest = tail;
        }
    }

    fn record(&mut self, r: &Record) {
        self.name(&r.name);
        self.buf.extend_from_slice(&r.data.rtype().to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&r.ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        match &r.data {
            RData::A(ip) => self.buf.extend_from_slice(&ip.octets()),
            RData::Cname(n) | RData::Ptr(n) => self.name(n),
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                for v in [priority, weight, port] {
                    self.buf.extend_from_slice(&v.to_be_bytes());
                }
                self.name(target);
            }
            RData::Soa {
                mname,
                rname,
                serial,
                refresh,
                retry,
                expire,
                minimum,
            } => {
                self.name(mname);
                self.name(rname);
                for v in [serial, refresh, retry, expire, minimum] {
                    self.buf.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
        let len = (self.buf.len() - len_at - 2) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    }
}

/// Encodes the answer to `q`. `max_len`: the most the transport takes (512
/// or the EDNS size for UDP, 65535 for TCP); a longer answer is truncated
/// (the TC bit set, records dropped) so the client retries over TCP.
pub fn encode_response(
    q: &Query,
    rcode: u8,
    authoritative: bool,
    answers: &[Record],
    authority: &[Record],
    max_len: usize,
) -> Vec<u8> {
    let build = |answers: &[Record], authority: &[Record], truncated: bool| -> Vec<u8> {
        let mut w = Writer {
            buf: Vec::with_capacity(512),
            names: vec![],
        };
        w.buf.extend_from_slice(&q.id.to_be_bytes());
        let mut f1 = 0x80 | (q.opcode << 3);
        if authoritative {
            f1 |= 0x04;
        }
        if truncated {
            f1 |= 0x02;
        }
        if q.recursion_desired {
            f1 |= 0x01;
        }
        w.buf.push(f1);
        w.buf.push(0x80 | (rcode & 0x0f)); // RA
        w.buf.extend_from_slice(&1u16.to_be_bytes());
        w.buf
            .extend_from_slice(&(answers.len() as u16).to_be_bytes());
        w.buf
            .extend_from_slice(&(authority.len() as u16).to_be_bytes());
        let opt = q.edns_size.is_some();
        w.buf.extend_from_slice(&u16::from(opt).to_be_bytes());
        // The question as sent; its name is the first compression target.
        w.names.push((q.name.clone(), 12));
        w.buf.extend_from_slice(&q.question);
        for r in answers.iter().chain(authority) {
            w.record(r);
        }
        if opt {
            // OPT: root name, our UDP size 1232, no flags, no options.
            w.buf
                .extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        }
        w.buf
    };
    let full = build(answers, authority, false);
    if full.len() <= max_len {
        return full;
    }
    build(&[], &[], true)
}

/// Encodes a query (for the forwarder's tests and for clients in tests).
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut w = Writer {
        buf: vec![],
        names: vec![],
    };
    w.buf.extend_from_slice(&id.to_be_bytes());
    w.buf
        .extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    w.name(name);
    w.buf.extend_from_slice(&qtype.to_be_bytes());
    w.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
    w.buf
}

/// Answer records as `(name, type, data as text)`.
pub type Answers = Vec<(String, u16, String)>;

/// What a forwarder needs of an upstream's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseInfo {
    pub rcode: u8,
    pub truncated: bool,
    /// The question section as it came back.
    pub question: Vec<u8>,
    /// The smallest TTL of the answer and authority records (OPT aside).
    pub min_ttl: Option<u32>,
    /// Where each of those TTLs is in the message (to count them down).
    pub ttl_offsets: Vec<usize>,
}

/// Reads an answer's header, question and record TTLs.
pub fn parse_response(msg: &[u8]) -> Result<ResponseInfo, MessageError> {
    if msg.len() < 12 {
        return Err(MessageError::Short(msg.len()));
    }
    let count = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd != 1 {
        return Err(MessageError::Questions(qd));
    }
    let (_, after) = read_name(msg, 12)?;
    let question = msg
        .get(12..after + 4)
        .ok_or(MessageError::Short(msg.len()))?
        .to_vec();
    let mut i = after + 4;
    let mut min_ttl: Option<u32> = None;
    let mut ttl_offsets = Vec::new();
    for n in 0..(usize::from(an) + usize::from(ns) + usize::from(ar)) {
        let (_, at) = read_name(msg, i)?;
        let short = || MessageError::Short(msg.len());
        let t = u16_at(msg, at).ok_or_else(short)?;
        let ttl = msg.get(at + 4..at + 8).ok_or_else(short)?;
        let rdlen = usize::from(u16_at(msg, at + 8).ok_or_else(short)?);
        if n < usize::from(an) + usize::from(ns) && t != TYPE_OPT {
            let ttl = u32::from_be_bytes([ttl[0], ttl[1], ttl[2], ttl[3]]);
            min_ttl = Some(min_ttl.map_or(ttl, |m| m.min(ttl)));
            ttl_offsets.push(at + 4);
        }
        i = at + 10 + rdlen;
        if i > msg.len() {
            return Err(short());
        }
    }
    Ok(ResponseInfo {
        rcode: msg[3] & 0x0f,
        truncated: msg[2] & 0x02 != 0,
        question,
        min_ttl,
        ttl_offsets,
    })
}

/// A decoded answer (for tests): rcode, flags byte 2, answer records.
pub fn decode_answer(msg: &[u8]) -> Result<(u8, u8, Answers), MessageError> {
    if msg.len() < 12 {
        return Err(MessageError::Short(msg.len()));
    }
    let rcode = msg[3] & 0x0f;
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    let an = u16::from_be_bytes([msg[6], msg[7]]);
    let mut i = 12;
    for _ in 0..qd {
        let (_, n) = read_name(msg, i)?;
        i = n + 4;
    }
    let mut out = vec![];
    for _ in 0..an {
        let (name, n) = read_name(msg, i)?;
        let t = u16_at(msg, n).ok_or(MessageError::Short(msg.len()))?;
        let rdlen = u16_at(msg, n + 8).ok_or(MessageError::Short(msg.len()))? as usize;
        let rd = n + 10;
        let text = match t {
            TYPE_A if rdlen == 4 => {
                Ipv4Addr::new(msg[rd], msg[rd + 1], msg[rd + 2], msg[rd + 3]).to_string()
            }
            TYPE_CNAME | TYPE_PTR => read_name(msg, rd)?.0,
            TYPE_SRV => {
                let port = u16_at(msg, rd + 4).ok_or(MessageError::Short(msg.len()))?;
                format!("{} {}", port, read_name(msg, rd + 6)?.0)
            }
            _ => String::new(),
        };
        out.push((name, t, text));
        i = rd + rdlen;
    }
    Ok((rcode, msg[2], out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_round_trip_with_case_kept_in_the_echo() {
        let q = encode_query(0x1234, "Web.Default.svc.cluster.local", TYPE_A);
        let p = parse_query(&q).unwrap();
        assert_eq!(p.id, 0x1234);
        assert_eq!(p.name, "web.default.svc.cluster.local");
        assert_eq!((p.qtype, p.qclass), (TYPE_A, 1));
        assert!(p.recursion_desired);
        let a = encode_response(
            &p,
            RCODE_NOERROR,
            true,
            &[Record {
                name: p.name.clone(),
                ttl: 5,
                data: RData::A(Ipv4Addr::new(10, 96, 0, 20)),
            }],
            &[],
            512,
        );
        // The question is echoed as sent.
        assert_eq!(&a[12..12 + q.len() - 12], &q[12..]);
        let (rcode, flags, answers) = decode_answer(&a).unwrap();
        assert_eq!(rcode, 0);
        assert_eq!(flags & 0x84, 0x84, "a response, authoritative");
        assert_eq!(
            answers,
            vec![(
                "web.default.svc.cluster.local".into(),
                TYPE_A,
                "10.96.0.20".into()
            )]
        );
        // The answer's name is a pointer to the question's.
        assert_eq!(&a[q.len()..q.len() + 2], &[0xc0, 0x0c]);
    }

    #[test]
    fn srv_targets_are_compressed_and_decoded() {
        let p = parse_query(&encode_query(
            1,
            "_http._tcp.web.default.svc.cluster.local",
            TYPE_SRV,
        ))
        .unwrap();
        let a = encode_response(
            &p,
            RCODE_NOERROR,
            true,
            &[Record {
                name: p.name.clone(),
                ttl: 5,
                data: RData::Srv {
                    priority: 0,
                    weight: 100,
                    port: 80,
                    target: "web.default.svc.cluster.local".into(),
                },
            }],
            &[],
            512,
        );
        let (_, _, answers) = decode_answer(&a).unwrap();
        assert_eq!(answers[0].2, "80 web.default.svc.cluster.local");
    }

    #[test]
    fn bad_messages_are_errors_not_panics() {
        assert_eq!(parse_query(&[0; 5]), Err(MessageError::Short(5)));
        let mut q = encode_query(1, "a.b", TYPE_A);
        q[2] |= 0x80;
        assert_eq!(parse_query(&q), Err(MessageError::NotQuery));
        let mut q = encode_query(1, "a.b", TYPE_A);
        q[5] = 2;
        assert_eq!(parse_query(&q), Err(MessageError::Questions(2)));
        // A compression pointer to itself.
        let mut q = encode_query(1, "a", TYPE_A);
        q.truncate(12);
        q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(matches!(parse_query(&q), Err(MessageError::Name(_))));
        // Cut short inside a label.
        let mut q = encode_query(1, "abcdef", TYPE_A);
        q.truncate(15);
        assert!(parse_query(&q).is_err());
        for n in 0..40 {
            let q = encode_query(7, "x.y.z", TYPE_A);
            let _ = parse_query(&q[..n.min(q.len())]);
        }
    }

    #[test]
    fn long_udp_answers_are_truncated_and_edns_raises_the_limit() {
        let mut q = encode_query(1, "h.default.svc.cluster.local", TYPE_A);
        let answers: Vec<Record> = (0..60)
            .map(|i| Record {
                name: "h.default.svc.cluster.local".into(),
                ttl: 5,
                data: RData::A(Ipv4Addr::new(10, 244, 0, i)),
            })
            .collect();
        let p = parse_query(&q).unwrap();
        let a = encode_response(&p, 0, true, &answers, &[], 512);
        assert!(a.len() <= 512);
        assert_eq!(a[2] & 0x02, 0x02, "TC set");
        assert_eq!(decode_answer(&a).unwrap().2.len(), 0);
        // With an OPT record of 4096 bytes, everything fits.
        q[11] = 1;
        q.extend_from_slice(&[0, 0, 41, 0x10, 0x00, 0, 0, 0, 0, 0, 0]);
        let p = parse_query(&q).unwrap();
        assert_eq!(p.edns_size, Some(4096));
        let a = encode_response(&p, 0, true, &answers, &[], 4096);
        assert_eq!(decode_answer(&a).unwrap().2.len(), 60);
    }
}
