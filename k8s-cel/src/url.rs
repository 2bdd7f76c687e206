//! Kubernetes' URL library (`k8s.io/apiserver/pkg/cel/library/urls.go`):
//! `url(<string>)` parses as Go's `url.ParseRequestURI` (an absolute URL,
//! or an absolute path), `isURL(<string>)` says whether it would, and a
//! URL answers `getScheme()`, `getHost()` (with the port, IPv6 in
//! brackets), `getHostname()` (without either), `getPort()`,
//! `getEscapedPath()` and `getQuery()` (a map of lists, as Go's
//! `url.Values`).
//!
//! Go's parser is followed rather than a WHATWG one (the `url` crate):
//! what `isURL` accepts and what each accessor returns are visible to
//! rules, and upstream's are Go's. Written here, as small as the subset
//! `ParseRequestURI` needs: no fragments (a `#` stays in the path, as in
//! Go), no relative references.

use std::collections::HashMap;

use cel::{
    DeclarationError, Env, ExecutionError,
    common::{
        types::{CelBool, CelList, CelMap, CelMapKey, CelString, Kind, Type},
        value::Val,
    },
};

use crate::error;

/// The CEL type of a parsed URL.
pub static URL_TYPE: Type = Type::simple_type(Kind::Opaque, "kubernetes.URL");

/// A URL as `ParseRequestURI` leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub opaque: String,
    /// `userinfo@host:port` as given (the host part validated).
    pub host: String,
    /// The decoded path.
    pub path: String,
    /// The path as written, when it differs from `path`'s own encoding.
    pub raw_path: String,
    pub raw_query: String,
}

crate::opaque_val!(Url, URL_TYPE);

/// Registers the URL functions.
pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    cel::add_overload!(env, fn url: (CelString<'_>) -> Result<Url>)?;
    cel::add_overload!(env, fn is_url: (CelString<'_>) -> CelBool, name = "isURL")?;
    cel::add_member_overload!(env, fn get_scheme: (Url) -> CelString<'_>)?;
    cel::add_member_overload!(env, fn get_host: (Url) -> CelString<'_>)?;
    cel::add_member_overload!(env, fn get_hostname: (Url) -> CelString<'_>)?;
    cel::add_member_overload!(env, fn get_port: (Url) -> CelString<'_>)?;
    cel::add_member_overload!(env, fn get_escaped_path: (Url) -> CelString<'_>)?;
    cel::add_member_overload!(env, fn get_query: (Url) -> CelMap<'_>)?;
    Ok(())
}

fn url(s: &CelString<'_>) -> Result<Url, ExecutionError> {
    parse_request_uri(s.inner()).map_err(|e| {
        error(
            "url",
            format!("URL parse error during conversion from string: {e}"),
        )
    })
}

fn is_url(s: &CelString<'_>) -> CelBool {
    parse_request_uri(s.inner()).is_ok().into()
}

fn get_scheme(u: &Url) -> CelString<'static> {
    u.scheme.clone().into()
}

fn get_host(u: &Url) -> CelString<'static> {
    host_port(&u.host).0.to_owned().into()
}

fn get_hostname(u: &Url) -> CelString<'static> {
    let (host, _) = split_port(host_port(&u.host).0);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
        .into()
}

fn get_port(u: &Url) -> CelString<'static> {
    split_port(host_port(&u.host).0).1.to_owned().into()
}

fn get_escaped_path(u: &Url) -> CelString<'static> {
    escaped_path(u).into()
}

fn get_query(u: &Url) -> CelMap<'static> {
    let mut values: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in parse_query(&u.raw_query) {
        match values.iter_mut().find(|(key, _)| *key == k) {
            Some((_, list)) => list.push(v),
            None => values.push((k, vec![v])),
        }
    }
    let map: HashMap<CelMapKey<'static>, Box<dyn Val>> = values
        .into_iter()
        .map(|(k, vs)| {
            let list: Vec<Box<dyn Val>> = vs
                .into_iter()
                .map(|v| Box::new(CelString::from(v)) as Box<dyn Val>)
                .collect();
            (
                CelMapKey::from(k),
                Box::new(CelList::from(list)) as Box<dyn Val>,
            )
        })
        .collect();
    CelMap::from(map)
}

/// The `host:port` part of an authority, without user information.
fn host_port(authority: &str) -> (&str, &str) {
    match authority.rfind('@') {
        Some(i) => (&authority[i + 1..], &authority[..i]),
        None => (authority, ""),
    }
}

/// `host:port` as (host, port); a port only when it is all digits after
/// the last colon outside IPv6 brackets, as Go's `Hostname`/`Port`.
fn split_port(host: &str) -> (&str, &str) {
    let Some(i) = host.rfind(':') else {
        return (host, "");
    };
    if host[..i].contains('[') && !host[..i].ends_with(']') {
        return (host, "");
    }
    let port = &host[i + 1..];
    if port.bytes().all(|b| b.is_ascii_digit()) {
        (&host[..i], port)
    } else {
        (host, "")
    }
}

/// Why a string is not a request URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail<T>(message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(message.into()))
}

/// Go's `url.ParseRequestURI`.
pub fn parse_request_uri(raw: &str) -> Result<Url, ParseError> {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return fail(format!(
            "parse {raw:?}: net/url: invalid control character in URL"
        ));
    }
    if raw.is_empty() {
        return fail("parse \"\": empty url");
    }
    let mut url = Url {
        scheme: String::new(),
        opaque: String::new(),
        host: String::new(),
        path: String::new(),
        raw_path: String::new(),
        raw_query: String::new(),
    };
    if raw == "*" {
        url.path = "*".into();
        return Ok(url);
    }
    let (scheme, rest) = scheme(raw).map_err(|e| ParseError(format!("parse {raw:?}: {e}")))?;
    url.scheme = scheme.to_ascii_lowercase();
    let rest = if rest.ends_with('?') && rest.matches('?').count() == 1 {
        &rest[..rest.len() - 1]
    } else {
        match rest.split_once('?') {
            Some((before, query)) => {
                url.raw_query = query.to_owned();
                before
            }
            None => rest,
        }
    };
    if !rest.starts_with('/') {
        if !url.scheme.is_empty() {
            url.opaque = rest.to_owned();
            return Ok(url);
        }
        return fail(format!("parse {raw:?}: invalid URI for request"));
    }
    let mut rest = rest;
    if !url.scheme.is_empty() && rest.starts_with("//") {
        let after = &rest[2..];
        let (authority, path) = match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        check_authority(authority).map_err(|e| ParseError(format!("parse {raw:?}: {e}")))?;
        url.host = authority.to_owned();
        rest = path;
    }
    url.path = unescape(rest, Mode::Path).map_err(|e| ParseError(format!("parse {raw:?}: {e}")))?;
    if escape(&url.path) != rest {
        url.raw_path = rest.to_owned();
    }
    Ok(url)
}

/// Go's `getScheme`: the scheme and the rest, or no scheme.
fn scheme(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme".into()),
            b':' => return Ok((&raw[..i], &raw[i + 1..])),
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

/// Go's `parseAuthority` and `parseHost`: user information of allowed
/// characters, a host of allowed characters (or a bracketed IPv6 address)
/// and an optional all-digit port.
fn check_authority(authority: &str) -> Result<(), String> {
    let (host, user) = host_port(authority);
    if authority.contains('@') && !user.bytes().all(valid_userinfo) {
        return Err("net/url: invalid userinfo".into());
    }
    let port_at = if host.starts_with('[') {
        let Some(end) = host.rfind(']') else {
            return Err("missing ']' in host".into());
        };
        end + 1
    } else {
        host.rfind(':').unwrap_or(host.len())
    };
    let port = &host[port_at..];
    if !(port.is_empty()
        || (port.starts_with(':') && port[1..].bytes().all(|b| b.is_ascii_digit())))
    {
        return Err(format!("invalid port {port:?} after host"));
    }
    unescape(host, Mode::Host).map(|_| ())
}

fn valid_userinfo(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&b)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Host,
    Path,
}

/// Whether Go's `shouldEscape` says `b` must be escaped in a path.
fn path_escapes(b: u8) -> bool {
    !(b.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&b))
}

/// Whether `b` may stand unescaped in a host (Go's `shouldEscape` in
/// host mode).
fn host_allows(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"".contains(&b) || b >= 0x80
}

/// Go's `unescape`: `%XX` decoded; a malformed escape is an error, and so
/// is a character a host may not hold.
fn unescape(s: &str, mode: Mode) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(v) = hex else {
                let end = (i + 3).min(s.len());
                return Err(format!(
                    "invalid URL escape {:?}",
                    s.get(i..end).unwrap_or("%")
                ));
            };
            out.push(v);
            i += 3;
            continue;
        }
        if mode == Mode::Host && !host_allows(b) {
            return Err(format!(
                "invalid character {:?} in host name",
                char::from(b)
            ));
        }
        out.push(b);
        i += 1;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Go's `escape` in path mode.
fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if path_escapes(b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// Go's `EscapedPath`: the path as written when that is a valid encoding
/// of it, else the path escaped.
fn escaped_path(u: &Url) -> String {
    let valid = |raw: &str| {
        raw.bytes()
            .all(|b| b"!$&'()*+,;=:@[]%".contains(&b) || !path_escapes(b))
            && unescape(raw, Mode::Path).is_ok_and(|p| p == u.path)
    };
    if !u.raw_path.is_empty() && valid(&u.raw_path) {
        return u.raw_path.clone();
    }
    if u.path == "*" {
        return "*".into();
    }
    escape(&u.path)
}

/// Go's `url.ParseQuery`, keeping what parses: pairs split on `&` (one with
/// a `;` is dropped, as Go does since 1.17), `+` as a space.
fn parse_query(q: &str) -> Vec<(String, String)> {
    let decode = |s: &str| unescape(&s.replace('+', " "), Mode::Path).ok();
    q.split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn as_the_kubernetes_documentation_and_tests_show() {
        holds("url('https://example.com:80/').getHost() == 'example.com:80'");
        holds(
            "url('https://example.com/path with spaces/').getEscapedPath() == '/path%20with%20spaces/'",
        );
        holds("url('https://example.com/').getScheme() == 'https'");
        holds("url('https://[::1]:80/').getHostname() == '::1'");
        holds("url('https://[::1]:80/').getHost() == '[::1]:80'");
        holds("url('https://[::1]/').getPort() == ''");
        holds("url('https://example.com:8443/').getPort() == '8443'");
        holds("url('https://user:pw@example.com/').getHost() == 'example.com'");
        holds("url('/absolute-path').getEscapedPath() == '/absolute-path'");
        holds("url('https://example.com/a%2Fb').getEscapedPath() == '/a%2Fb'");
        holds(
            "url('https://example.com/?k=a&k=b&j=c+d').getQuery() == {'k': ['a', 'b'], 'j': ['c d']}",
        );
        holds("url('https://example.com').getQuery() == {}");
        holds("isURL('https://user:pass@example.com:80/path?query=val#fragment')");
        holds("!isURL('../relative-path')");
        holds("!isURL('not a url')");
        holds("!isURL('')");
        holds("!isURL('https://exa mple.com/')");
        holds("!isURL('https://example.com:8a/')");
        holds("!isURL('https://example.com/%zz')");
        holds("url('https://example.com/') == url('https://example.com/')");
    }

    #[test]
    fn bad_urls_are_errors_naming_the_cause() {
        fails("url('../relative')", "invalid URI for request");
        fails("url(':x')", "missing protocol scheme");
        fails("url('https://[::1/')", "missing ']' in host");
    }

    #[test]
    fn parsing_follows_go() {
        let u = parse_request_uri("HTTPS://h.example/p?x=1").unwrap();
        assert_eq!(
            (
                u.scheme.as_str(),
                u.host.as_str(),
                u.path.as_str(),
                u.raw_query.as_str()
            ),
            ("https", "h.example", "/p", "x=1")
        );
        let opaque = parse_request_uri("mailto:someone@example.com").unwrap();
        assert_eq!(opaque.opaque, "someone@example.com");
        assert!(parse_request_uri("http://x/\u{7f}").is_err());
        let frag = parse_request_uri("https://h/p#f").unwrap();
        assert_eq!(escaped_path(&frag), "/p%23f");
    }
}
