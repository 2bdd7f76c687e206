//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`)
//! turned into the JSON object the rest of the apiserver works on.
//!
//! The envelope is the 4-byte magic `k8s\0` and a `runtime.Unknown` holding
//! the `apiVersion`/`kind` and the object's own message. Messages are read
//! by the generated [`schema`] table (field numbers, types, JSON names).
//! The Kubernetes types with a JSON form of their own are mapped as the Go
//! apiserver maps them: `Time` and `MicroTime` to RFC 3339, `IntOrString`,
//! `Quantity`, `Duration`, `RawExtension` and `FieldsV1` (embedded JSON),
//! `bytes` to base64, structs embedded with `json:",inline"` flattened.
//!
//! Go's encoder writes every non-pointer field, zero or not, and Go then
//! drops those zeros when it renders JSON (`omitempty`, or defaulting that
//! treats zero as unset). So zero strings, numbers and booleans are left out
//! except for the pointer fields where an explicit zero means something
//! ([`KEEP_ZERO`]: `replicas: 0`, `runAsUser: 0`, `ready: false`, …).

mod schema;

use base64::Engine as _;
use serde_json::{Map, Value};

use schema::MESSAGES;

/// The 4 bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

/// Nesting beyond this is refused (a hostile body cannot exhaust the stack).
const MAX_DEPTH: usize = 64;

/// Scalar fields whose zero value is meaningful: pointers in the Go types.
const KEEP_ZERO: &[&str] = &[
    "activeDeadlineSeconds",
    "allocateLoadBalancerNodePorts",
    "allowPrivilegeEscalation",
    "automountServiceAccountToken",
    "backoffLimit",
    "backoffLimitPerIndex",
    "completions",
    "defaultMode",
    "enableServiceLinks",
    "expirationSeconds",
    "failedJobsHistoryLimit",
    "fsGroup",
    "gracePeriodSeconds",
    "hostUsers",
    "immutable",
    "maxFailedIndexes",
    "minReplicas",
    "mode",
    "optional",
    "orphanDependents",
    "parallelism",
    "privileged",
    "progressDeadlineSeconds",
    "readOnlyRootFilesystem",
    "ready",
    "replicas",
    "revisionHistoryLimit",
    "runAsGroup",
    "runAsNonRoot",
    "runAsUser",
    "serving",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "startingDeadlineSeconds",
    "storageClassName",
    "successfulJobsHistoryLimit",
    "suspend",
    "terminating",
    "terminationGracePeriodSeconds",
    "ttlSecondsAfterFinished",
];

/// Seconds of Go's zero `time.Time` (0001-01-01T00:00:00Z) since the epoch.
const GO_ZERO_TIME: i64 = -62_135_596_800;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Ty {
    Str,
    Bytes,
    Bool,
    I32,
    I64,
    /// An index into [`MESSAGES`].
    Msg(usize),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Card {
    One,
    Many,
    /// `map<string, Ty>`.
    Map(Ty),
    /// A Go struct embedded with `json:",inline"`: its fields go in the parent.
    Inline,
}

#[derive(Debug)]
pub(crate) struct Field {
    tag: u32,
    json: &'static str,
    ty: Ty,
    card: Card,
}

#[derive(Debug)]
pub(crate) struct Message {
    name: &'static str,
    fields: &'static [Field],
}

pub(crate) const fn f(tag: u32, json: &'static str, ty: Ty, card: Card) -> Field {
    Field {
        tag,
        json,
        ty,
        card,
    }
}

/// Why a protobuf body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PbError {
    #[error("the body does not start with the Kubernetes protobuf magic k8s\\0")]
    NoMagic,
    #[error("truncated protobuf at byte {0}")]
    Truncated(usize),
    #[error("malformed varint at byte {0}")]
    BadVarint(usize),
    #[error("field {field} of {message} has wire type {wire}, expected {expected}")]
    WireType {
        message: &'static str,
        field: &'static str,
        wire: u8,
        expected: u8,
    },
    #[error("unsupported wire type {wire} at byte {at}")]
    UnsupportedWireType { wire: u8, at: usize },
    #[error("field {0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error("field {0} does not hold valid JSON")]
    Json(&'static str),
    #[error("no type {kind} in {api_version} is known in protobuf")]
    UnknownKind { api_version: String, kind: String },
    #[error("the object has no apiVersion/kind")]
    NoTypeMeta,
    #[error("content encoding {0:?} is not supported")]
    ContentEncoding(String),
    #[error("the object nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Decodes a `k8s\0`-prefixed body into the JSON object it stands for,
/// with `apiVersion` and `kind` set.
pub fn decode(body: &[u8]) -> Result<Value, PbError> {
    let rest = body.strip_prefix(MAGIC).ok_or(PbError::NoMagic)?;
    // runtime.Unknown: 1 typeMeta {1 apiVersion, 2 kind}, 2 raw, 3 contentEncoding.
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    let mut r = Reader {
        buf: rest,
        pos: 0,
        base: MAGIC.len(),
    };
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, 2) => {
                let mut tm = r.sub()?;
                while let Some((t, w)) = tm.key()? {
                    match (t, w) {
                        (1, 2) => api_version = tm.string("apiVersion")?,
                        (2, 2) => kind = tm.string("kind")?,
                        _ => tm.skip(w)?,
                    }
                }
            }
            (2, 2) => raw = r.bytes()?,
            (3, 2) => {
                let enc = r.string("contentEncoding")?;
                if !enc.is_empty() {
                    return Err(PbError::ContentEncoding(enc));
                }
            }
            _ => r.skip(wire)?,
        }
    }
    if api_version.is_empty() || kind.is_empty() {
        return Err(PbError::NoTypeMeta);
    }
    let msg = message_for(&api_version, &kind).ok_or_else(|| PbError::UnknownKind {
        api_version: api_version.clone(),
        kind: kind.clone(),
    })?;
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), Value::String(api_version));
    obj.insert("kind".into(), Value::String(kind));
    let mut r = Reader {
        buf: raw,
        pos: 0,
        base: 0,
    };
    read_fields(&mut r, msg, &mut obj, 0)?;
    Ok(Value::Object(obj))
}

/// The message of a kind: `apps/v1` `Deployment` → `api.apps.v1.Deployment`.
fn message_for(api_version: &str, kind: &str) -> Option<usize> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    // The proto package is the group's first label (`rbac.authorization.k8s.io` → rbac).
    let package = if group.is_empty() {
        "core"
    } else {
        group.split('.').next()?
    };
    let name = format!("api.{package}.{version}.{kind}");
    let find = |name: &str| MESSAGES.binary_search_by(|m| m.name.cmp(name)).ok();
    // Options (DeleteOptions, …) are meta/v1 types sent under any version.
    find(&name).or_else(|| find(&format!("apimachinery.pkg.apis.meta.v1.{kind}")))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` in the body, for error positions.
    base: usize,
}

impl<'a> Reader<'a> {
    fn at(&self) -> usize {
        self.base + self.pos
    }

    fn varint(&mut self) -> Result<u64, PbError> {
        let start = self.at();
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(PbError::Truncated(start));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(PbError::BadVarint(start))
    }

    /// The next field's number and wire type, or `None` at the end.
    fn key(&mut self) -> Result<Option<(u32, u8)>, PbError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let k = self.varint()?;
        let tag = u32::try_from(k >> 3).map_err(|_| PbError::BadVarint(self.at()))?;
        let wire = (k & 7) as u8;
        Ok(Some((tag, wire)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PbError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(PbError::Truncated(self.at()));
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn bytes(&mut self) -> Result<&'a [u8], PbError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| PbError::Truncated(self.at()))?;
        self.take(n)
    }

    fn sub(&mut self) -> Result<Reader<'a>, PbError> {
        let base = self.at();
        let buf = self.bytes()?;
        let len_prefix = self.at() - base - buf.len();
        Ok(Reader {
            buf,
            pos: 0,
            base: base + len_prefix,
        })
    }

    fn string(&mut self, field: &'static str) -> Result<String, PbError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| PbError::Utf8(field))
    }

    fn skip(&mut self, wire: u8) -> Result<(), PbError> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.bytes().map(drop),
            5 => self.take(4).map(drop),
            w => Err(PbError::UnsupportedWireType {
                wire: w,
                at: self.at(),
            }),
        }
    }
}

fn expect_wire(m: &Message, f: &Field, wire: u8, expected: u8) -> Result<(), PbError> {
    if wire == expected {
        Ok(())
    } else {
        Err(PbError::WireType {
            message: m.name,
            field: f.json,
            wire,
            expected,
        })
    }
}

/// Reads every field of one message into `obj`.
fn read_fields(
    r: &mut Reader<'_>,
    msg: usize,
    obj: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), PbError> {
    if depth > MAX_DEPTH {
        return Err(PbError::TooDeep);
    }
    let m = &MESSAGES[msg];
    while let Some((tag, wire)) = r.key()? {
        let Some(f) = m.fields.iter().find(|f| f.tag == tag) else {
            // A field this table does not know (a newer Kubernetes): dropped,
            // as the Go apiserver drops what its types do not have.
            r.skip(wire)?;
            continue;
        };
        match f.card {
            Card::One => {
                let v = read_value(r, m, f, f.ty, wire, depth)?;
                if let Some(v) = v.filter(|v| keep(f, v)) {
                    obj.insert(f.json.to_string(), v);
                }
            }
            Card::Inline => {
                let Ty::Msg(inner) = f.ty else {
                    r.skip(wire)?;
                    continue;
                };
                expect_wire(m, f, wire, 2)?;
                let mut sub = r.sub()?;
                read_fields(&mut sub, inner, obj, depth + 1)?;
            }
            Card::Many => {
                let entry = obj
                    .entry(f.json.to_string())
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(items) = entry else { continue };
                let packable = matches!(f.ty, Ty::Bool | Ty::I32 | Ty::I64);
                if packable && wire == 2 {
                    let mut packed = r.sub()?;
                    while packed.pos < packed.buf.len() {
                        if let Some(v) = read_value(&mut packed, m, f, f.ty, 0, depth)? {
                            items.push(v);
                        }
                    }
                } else if let Some(v) = read_value(r, m, f, f.ty, wire, depth)? {
                    items.push(v);
                }
            }
            Card::Map(value_ty) => {
                expect_wire(m, f, wire, 2)?;
                let mut entry = r.sub()?;
                let (mut key, mut value) = (String::new(), None);
                while let Some((t, w)) = entry.key()? {
                    match t {
                        1 => {
                            expect_wire(m, f, w, 2)?;
                            key = entry.string(f.json)?;
                        }
                        2 => value = read_value(&mut entry, m, f, value_ty, w, depth)?,
                        _ => entry.skip(w)?,
                    }
                }
                let value = value.unwrap_or_else(|| zero(value_ty));
                let map = obj
                    .entry(f.json.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, value);
                }
            }
        }
    }
    Ok(())
}

/// The JSON value of a map entry without a value (a zero in Go).
fn zero(ty: Ty) -> Value {
    match ty {
        Ty::Str | Ty::Bytes => Value::String(String::new()),
        Ty::Bool => Value::Bool(false),
        Ty::I32 | Ty::I64 => Value::from(0),
        Ty::Msg(_) => Value::Object(Map::new()),
    }
}

/// Whether a decoded singular field belongs in the JSON (see the module docs).
fn keep(f: &Field, v: &Value) -> bool {
    if let Ty::Msg(_) = f.ty {
        // Messages are kept, even empty (`resources: {}`), as Go renders
        // them; only the non-pointer IntOrString `targetPort` has a zero
        // that means "unset" (`maxSurge: 0` does not).
        return !(f.json == "targetPort" && v.as_i64() == Some(0));
    }
    let is_zero = match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    };
    !is_zero || KEEP_ZERO.contains(&f.json)
}

/// Reads one value of type `ty`; `None` for a value that stands for "unset"
/// (Go's zero time).
fn read_value(
    r: &mut Reader<'_>,
    m: &Message,
    f: &Field,
    ty: Ty,
    wire: u8,
    depth: usize,
) -> Result<Option<Value>, PbError> {
    let v = match ty {
        Ty::Str => {
            expect_wire(m, f, wire, 2)?;
            Value::String(r.string(f.json)?)
        }
        Ty::Bytes => {
            expect_wire(m, f, wire, 2)?;
            Value::String(base64::engine::general_purpose::STANDARD.encode(r.bytes()?))
        }
        Ty::Bool => {
            expect_wire(m, f, wire, 0)?;
            Value::Bool(r.varint()? != 0)
        }
        Ty::I32 => {
            expect_wire(m, f, wire, 0)?;
            // Negative int32s are sign-extended to 64 bits on the wire.
            #[expect(clippy::cast_possible_truncation, reason = "int32 wire semantics")]
            let v = r.varint()? as i64 as i32;
            Value::from(v)
        }
        Ty::I64 => {
            expect_wire(m, f, wire, 0)?;
            #[expect(clippy::cast_possible_wrap, reason = "int64 wire semantics")]
            let v = r.varint()? as i64;
            Value::from(v)
        }
        Ty::Msg(inner) => {
            expect_wire(m, f, wire, 2)?;
            let mut sub = r.sub()?;
            let mut obj = Map::new();
            read_fields(&mut sub, inner, &mut obj, depth + 1)?;
            return special(inner, obj, f.json);
        }
    };
    Ok(Some(v))
}

/// The JSON form of the Kubernetes types that are not plain objects.
fn special(
    msg: usize,
    mut obj: Map<String, Value>,
    field: &'static str,
) -> Result<Option<Value>, PbError> {
    let name = MESSAGES[msg].name;
    let int = |o: &Map<String, Value>, k: &str| o.get(k).and_then(Value::as_i64).unwrap_or(0);
    Ok(Some(match name {
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            let secs = int(&obj, "seconds");
            if secs == GO_ZERO_TIME || obj.is_empty() {
                return Ok(None);
            }
            let nanos = int(&obj, "nanos");
            Value::String(rfc3339(secs, nanos, name.ends_with("MicroTime")))
        }
        "apimachinery.pkg.apis.meta.v1.Duration" => {
            Value::String(go_duration(int(&obj, "duration")))
        }
        "apimachinery.pkg.util.intstr.IntOrString" => {
            if int(&obj, "type") == 1 {
                obj.remove("strVal")
                    .unwrap_or_else(|| Value::String(String::new()))
            } else {
                Value::from(int(&obj, "intVal"))
            }
        }
        "apimachinery.pkg.api.resource.Quantity" => obj
            .remove("string")
            .unwrap_or_else(|| Value::String("0".into())),
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            let Some(Value::String(b64)) = obj.get("raw") else {
                return Ok(None);
            };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| PbError::Json(field))?;
            serde_json::from_slice(&raw).map_err(|_| PbError::Json(field))?
        }
        _ => Value::Object(obj),
    }))
}

/// RFC 3339 in UTC as Kubernetes writes it: seconds for `Time`, microseconds
/// for `MicroTime`.
fn rfc3339(secs: i64, nanos: i64, micro: bool) -> String {
    use rudder_k8s::time::{Timestamp, rfc3339, rfc3339_micro};
    let nanos = i32::try_from(nanos.clamp(0, 999_999_999)).unwrap_or(0);
    let t = Timestamp::new(secs, nanos).unwrap_or(Timestamp::UNIX_EPOCH);
    if micro { rfc3339_micro(t) } else { rfc3339(t) }
}

/// Go's `time.Duration.String()` for whole units (`1h2m3s`, `1.5s`, `0s`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let (h, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let (s, frac) = (rest / 1_000_000_000, rest % 1_000_000_000);
    let mut out = String::from(sign);
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if frac == 0 {
        out.push_str(&format!("{s}s"));
    } else {
        let f = format!("{frac:09}");
        out.push_str(&format!("{s}.{}s", f.trim_end_matches('0')));
    }
    out
}

#[cfg(test)]
mod tests;
