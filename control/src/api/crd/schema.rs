//! Structural schemas: the OpenAPI v3 subset a CRD's version declares,
//! compiled once when the CRD is installed, then applied to every custom
//! object written: unknown fields pruned, defaults filled in, values
//! validated.
//!
//! Written here rather than taken from a JSON Schema crate because what
//! clients see is kube-apiserver's own dialect: OpenAPI's `nullable`, the
//! `x-kubernetes-*` extensions, pruning by the structural skeleton only
//! (`properties`, `additionalProperties`, `items`, never inside `allOf` and
//! friends), and the exact messages go-openapi and apiextensions write into
//! a `422 Invalid` (`spec.replicas in body should be greater than or equal
//! to 1`). Patterns use the `regex` crate, whose RE2 syntax is the one
//! kube-apiserver's Go `regexp` accepts.

use std::{collections::BTreeMap, sync::Arc};

use regex::Regex;
use rudder_k8s::field::Path;
use serde_json::{Map, Value};

use crate::api::status::Cause;

/// How deep a schema may nest: far beyond any real CRD, and bounded so that
/// a hostile one cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

impl Type {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "object" => Self::Object,
            "array" => Self::Array,
            "string" => Self::String,
            "integer" => Self::Integer,
            "number" => Self::Number,
            "boolean" => Self::Boolean,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Object => "object",
            Self::Array => "array",
            Self::String => "string",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
        }
    }

    fn holds(self, v: &Value) -> bool {
        match self {
            Self::Object => v.is_object(),
            Self::Array => v.is_array(),
            Self::String => v.is_string(),
            Self::Integer => is_integer(v),
            Self::Number => v.is_number(),
            Self::Boolean => v.is_boolean(),
        }
    }
}

/// An integer in JSON: `3` or `3.0`, as Go's decoder sees both as whole.
fn is_integer(v: &Value) -> bool {
    v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0)
}

/// The JSON type name of a value, as go-openapi names it in messages.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) if is_integer(v) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[derive(Clone, Debug)]
pub enum Additional {
    Allowed(bool),
    Schema(Box<Schema>),
}

/// One node of a compiled schema.
#[derive(Clone, Debug, Default)]
pub struct Schema {
    pub ty: Option<Type>,
    pub nullable: bool,
    pub format: Option<String>,
    pub enum_values: Option<Vec<Value>>,
    pattern: Option<(String, Regex)>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: bool,
    exclusive_maximum: bool,
    multiple_of: Option<f64>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    unique_items: bool,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    pub required: Vec<String>,
    pub properties: BTreeMap<String, Schema>,
    pub additional: Option<Additional>,
    pub items: Option<Box<Schema>>,
    all_of: Vec<Schema>,
    any_of: Vec<Schema>,
    one_of: Vec<Schema>,
    not: Option<Box<Schema>>,
    pub default: Option<Value>,
    pub preserve_unknown: bool,
    pub int_or_string: bool,
    pub embedded: bool,
    pub list_type: Option<String>,
    pub list_map_keys: Vec<String>,
    pub map_type: Option<String>,
    /// `x-kubernetes-validations`, compiled.
    rules: Vec<Arc<super::cel::Rule>>,
    /// Whether this node or one below has rules.
    any_rules: bool,
}

fn u(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

impl Schema {
    /// Compiles an `openAPIV3Schema`. Errors name what cannot be compiled
    /// (a pattern the regex engine refuses, nesting too deep).
    pub fn compile(v: &Value) -> Result<Self, String> {
        Self::compile_at(v, 0)
    }

    fn compile_at(v: &Value, depth: usize) -> Result<Self, String> {
        if depth > MAX_DEPTH {
            return Err(format!("the schema nests more than {MAX_DEPTH} levels"));
        }
        let Some(m) = v.as_object() else {
            return Err("a schema must be an object".into());
        };
        let sub = |x: &Value| Self::compile_at(x, depth + 1);
        let subs = |k: &str| -> Result<Vec<Self>, String> {
            m.get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(sub)
                .collect()
        };
        let pattern = match m.get("pattern").and_then(Value::as_str) {
            Some(p) => Some((
                p.to_owned(),
                Regex::new(p).map_err(|e| format!("pattern {p:?} does not compile: {e}"))?,
            )),
            None => None,
        };
        let additional = match m.get("additionalProperties") {
            Some(Value::Bool(b)) => Some(Additional::Allowed(*b)),
            Some(s @ Value::Object(_)) => Some(Additional::Schema(Box::new(sub(s)?))),
            _ => None,
        };
        let flag = |k: &str| m.get(k).and_then(Value::as_bool).unwrap_or(false);
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
        Ok(Self {
            ty: m.get("type").and_then(Value::as_str).and_then(Type::parse),
            nullable: flag("nullable"),
            format: text("format"),
            enum_values: m.get("enum").and_then(Value::as_array).cloned(),
            pattern,
            min_length: u(v, "minLength"),
            max_length: u(v, "maxLength"),
            minimum: m.get("minimum").and_then(Value::as_f64),
            maximum: m.get("maximum").and_then(Value::as_f64),
            exclusive_minimum: flag("exclusiveMinimum"),
            exclusive_maximum: flag("exclusiveMaximum"),
            multiple_of: m.get("multipleOf").and_then(Value::as_f64),
            min_items: u(v, "minItems"),
            max_items: u(v, "maxItems"),
            unique_items: flag("uniqueItems"),
            min_properties: u(v, "minProperties"),
            max_properties: u(v, "maxProperties"),
            required: crate::api::object::strings(&v["required"]),
            properties: m
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, s)| Ok((k.clone(), sub(s)?)))
                .collect::<Result<_, String>>()?,
            additional,
            items: match m.get("items") {
                Some(s @ Value::Object(_)) => Some(Box::new(sub(s)?)),
                _ => None,
            },
            all_of: subs("allOf")?,
            any_of: subs("anyOf")?,
            one_of: subs("oneOf")?,
            not: match m.get("not") {
                Some(s) => Some(Box::new(sub(s)?)),
                None => None,
            },
            default: m.get("default").cloned(),
            preserve_unknown: flag("x-kubernetes-preserve-unknown-fields"),
            int_or_string: flag("x-kubernetes-int-or-string"),
            embedded: flag("x-kubernetes-embedded-resource"),
            list_type: text("x-kubernetes-list-type"),
            list_map_keys: crate::api::object::strings(&v["x-kubernetes-list-map-keys"]),
            map_type: text("x-kubernetes-map-type"),
            rules: match m.get("x-kubernetes-validations").and_then(Value::as_array) {
                Some(rules) => super::cel::compile(rules).map_err(|(i, field, e)| {
                    format!("x-kubernetes-validations[{i}].{field}: {e}")
                })?,
                None => Vec::new(),
            },
            any_rules: false,
        }
        .mark_rules())
    }

    /// Whether this node or one below has CEL rules.
    pub fn has_rules(&self) -> bool {
        self.any_rules
    }

    fn mark_rules(mut self) -> Self {
        self.any_rules = !self.rules.is_empty()
            || self.properties.values().any(Self::has_rules)
            || self.items.as_ref().is_some_and(|s| s.has_rules())
            || matches!(&self.additional, Some(Additional::Schema(s)) if s.has_rules());
        self
    }

    /// Evaluates every CEL rule of the schema over a custom object, with
    /// the object before an update when there is one.
    pub fn validate_rules_root(&self, new: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut out = Vec::new();
        if self.any_rules {
            self.rules_at(
                new,
                old,
                &Path::new(""),
                &mut super::cel::Budget::default(),
                &mut out,
            );
        }
        out
    }

    fn rules_at(
        &self,
        new: &Value,
        old: Option<&Value>,
        path: &Path,
        budget: &mut super::cel::Budget,
        out: &mut Vec<Cause>,
    ) {
        if !self.rules.is_empty() {
            super::cel::evaluate(&self.rules, new, old, path, budget, out);
        }
        match new {
            Value::Object(m) => {
                for (k, v) in m {
                    let s = self.properties.get(k).or(match &self.additional {
                        Some(Additional::Schema(s)) => Some(s),
                        _ => None,
                    });
                    if let Some(s) = s.filter(|s| s.any_rules) {
                        s.rules_at(v, old.and_then(|o| o.get(k)), &path.child(k), budget, out);
                    }
                }
            }
            Value::Array(items) => {
                let Some(s) = self.items.as_ref().filter(|s| s.any_rules) else {
                    return;
                };
                let olds = old.and_then(Value::as_array);
                for (i, item) in items.iter().enumerate() {
                    let o = olds.and_then(|olds| self.correlate(olds, item));
                    s.rules_at(item, o, &path.index(i), budget, out);
                }
            }
            _ => {}
        }
    }

    /// The old item a new list item is the same as: by its keys in a
    /// list-map, by value in a set; none in an atomic list.
    fn correlate<'a>(&self, olds: &'a [Value], item: &Value) -> Option<&'a Value> {
        match self.list_type.as_deref() {
            Some("map") => olds
                .iter()
                .find(|o| self.list_map_keys.iter().all(|k| o.get(k) == item.get(k))),
            Some("set") => olds.iter().find(|o| *o == item),
            _ => None,
        }
    }

    /// Drops the fields the schema does not know (the root's `apiVersion`,
    /// `kind` and `metadata` always stay). Returns their paths, for the
    /// `unknown field` warnings or a strict refusal.
    pub fn prune_root(&self, obj: &mut Value) -> Vec<String> {
        let mut unknown = Vec::new();
        self.prune(obj, &Path::new(""), true, &mut unknown);
        unknown
    }

    fn prune(&self, v: &mut Value, path: &Path, keep_meta: bool, unknown: &mut Vec<String>) {
        match v {
            Value::Object(m) => self.prune_object(m, path, keep_meta || self.embedded, unknown),
            Value::Array(items) => {
                if let Some(s) = &self.items {
                    for (i, item) in items.iter_mut().enumerate() {
                        s.prune(item, &path.index(i), false, unknown);
                    }
                }
            }
            _ => {}
        }
    }

    fn prune_object(
        &self,
        m: &mut Map<String, Value>,
        path: &Path,
        keep_meta: bool,
        unknown: &mut Vec<String>,
    ) {
        let keys: Vec<String> = m.keys().cloned().collect();
        for k in keys {
            if keep_meta && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            let child = path.child(&k);
            let schema = self.properties.get(&k).or(match &self.additional {
                Some(Additional::Schema(s)) => Some(s),
                _ => None,
            });
            match schema {
                Some(s) => {
                    if let Some(v) = m.get_mut(&k) {
                        s.prune(v, &child, false, unknown);
                    }
                }
                None if self.preserve_unknown
                    || matches!(self.additional, Some(Additional::Allowed(true))) => {}
                None => {
                    m.remove(&k);
                    unknown.push(child.to_string());
                }
            }
        }
    }

    /// Fills in defaults where a field is absent (or null and not
    /// nullable), then descends.
    pub fn apply_defaults(&self, v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, s) in &self.properties {
                    if let Some(d) = &s.default {
                        match m.get(k) {
                            None => {
                                m.insert(k.clone(), d.clone());
                            }
                            Some(Value::Null) if !s.nullable => {
                                m.insert(k.clone(), d.clone());
                            }
                            Some(_) => {}
                        }
                    }
                }
                for (k, child) in m.iter_mut() {
                    if let Some(s) = self.properties.get(k) {
                        s.apply_defaults(child);
                    } else if let Some(Additional::Schema(s)) = &self.additional {
                        s.apply_defaults(child);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(s) = &self.items {
                    items.iter_mut().for_each(|i| s.apply_defaults(i));
                }
            }
            _ => {}
        }
    }

    /// Validates a whole custom object (its `metadata`, `apiVersion` and
    /// `kind` are checked elsewhere).
    pub fn validate_root(&self, obj: &Value) -> Vec<Cause> {
        let mut out = Vec::new();
        let Some(m) = obj.as_object() else {
            return out;
        };
        let mut rest = m.clone();
        for k in ["apiVersion", "kind", "metadata"] {
            rest.remove(k);
        }
        let mut root = self.clone();
        root.required
            .retain(|r| !matches!(r.as_str(), "apiVersion" | "kind" | "metadata"));
        for k in ["apiVersion", "kind", "metadata"] {
            root.properties.remove(k);
        }
        root.validate(&Value::Object(rest), &Path::new(""), &mut out);
        out
    }

    /// Appends the causes `v` breaks at `path`.
    pub fn validate(&self, v: &Value, path: &Path, out: &mut Vec<Cause>) {
        let name = path.as_str();
        let body = |what: String| {
            if name.is_empty() {
                format!("in body {what}")
            } else {
                format!("{name} in body {what}")
            }
        };
        if v.is_null() && (self.nullable || (self.ty.is_none() && !self.int_or_string)) {
            return;
        }
        if self.int_or_string {
            if !(is_integer(v) || v.is_string()) {
                let t = type_name(v);
                out.push(Cause::type_invalid(
                    name,
                    &Value::from(t),
                    body(format!("must be of type integer,string: {t:?}")),
                ));
                return;
            }
        } else if let Some(ty) = self.ty
            && !ty.holds(v)
        {
            let t = type_name(v);
            out.push(Cause::type_invalid(
                name,
                &Value::from(t),
                body(format!("must be of type {}: {t:?}", ty.name())),
            ));
            return;
        }
        if let Some(values) = &self.enum_values
            && !values.contains(v)
        {
            let shown: Vec<String> = values
                .iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                .collect();
            let refs: Vec<&str> = shown.iter().map(String::as_str).collect();
            out.push(Cause::not_supported(name, v, &refs));
        }
        match v {
            Value::String(s) => self.check_string(s, v, name, &body, out),
            Value::Number(_) => self.check_number(v, name, &body, out),
            Value::Array(items) => self.check_array(items, v, path, &body, out),
            Value::Object(m) => self.check_object(m, v, path, &body, out),
            _ => {}
        }
        self.check_combinators(v, path, &body, out);
    }

    fn check_string(
        &self,
        s: &str,
        v: &Value,
        name: &str,
        body: &dyn Fn(String) -> String,
        out: &mut Vec<Cause>,
    ) {
        let len = s.chars().count() as u64;
        if let Some(max) = self.max_length
            && len > max
        {
            out.push(Cause::too_long(
                name,
                format!("may not be more than {max} bytes"),
            ));
        }
        if let Some(min) = self.min_length
            && len < min
        {
            out.push(Cause::invalid(
                name,
                v,
                body(format!("should be at least {min} chars long")),
            ));
        }
        if let Some((src, re)) = &self.pattern
            && !re.is_match(s)
        {
            out.push(Cause::invalid(
                name,
                v,
                body(format!("should match '{src}'")),
            ));
        }
        if let Some(f) = &self.format
            && !format_ok(f, s)
        {
            out.push(Cause::type_invalid(
                name,
                v,
                body(format!("must be of type {f}: {s:?}")),
            ));
        }
    }

    fn check_number(
        &self,
        v: &Value,
        name: &str,
        body: &dyn Fn(String) -> String,
        out: &mut Vec<Cause>,
    ) {
        let Some(n) = v.as_f64() else { return };
        if let Some(min) = self.minimum {
            if self.exclusive_minimum && n <= min {
                out.push(Cause::invalid(
                    name,
                    v,
                    body(format!("should be greater than {min}")),
                ));
            } else if n < min {
                out.push(Cause::invalid(
                    name,
                    v,
                    body(format!("should be greater than or equal to {min}")),
                ));
            }
        }
        if let Some(max) = self.maximum {
            if self.exclusive_maximum && n >= max {
                out.push(Cause::invalid(
                    name,
                    v,
                    body(format!("should be less than {max}")),
                ));
            } else if n > max {
                out.push(Cause::invalid(
                    name,
                    v,
                    body(format!("should be less than or equal to {max}")),
                ));
            }
        }
        if let Some(m) = self.multiple_of
            && m > 0.0
            && ((n / m) - (n / m).round()).abs() > 1e-9
        {
            out.push(Cause::invalid(
                name,
                v,
                body(format!("should be a multiple of {m}")),
            ));
        }
        if let Some(f) = self.format.as_deref()
            && is_integer(v)
        {
            let fits = match f {
                "int32" => v.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
                "int64" => v.as_i64().is_some(),
                _ => true,
            };
            if !fits {
                out.push(Cause::type_invalid(
                    name,
                    v,
                    body(format!("must be of type {f}: {v}")),
                ));
            }
        }
    }

    fn check_array(
        &self,
        items: &[Value],
        v: &Value,
        path: &Path,
        body: &dyn Fn(String) -> String,
        out: &mut Vec<Cause>,
    ) {
        let name = path.as_str();
        count_bounds(
            items.len(),
            self.min_items,
            self.max_items,
            "items",
            name,
            body,
            out,
        );
        if self.unique_items && has_duplicates(items) {
            out.push(Cause::invalid(
                name,
                &Value::from(""),
                body("shouldn't contain duplicates".into()),
            ));
        }
        match self.list_type.as_deref() {
            Some("set") => {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        out.push(Cause::duplicate(path.index(i), item));
                    }
                }
            }
            Some("map") => {
                let key = |item: &Value| -> Vec<Value> {
                    self.list_map_keys
                        .iter()
                        .map(|k| item.get(k).cloned().unwrap_or(Value::Null))
                        .collect()
                };
                for (i, item) in items.iter().enumerate() {
                    let k = key(item);
                    if items[..i].iter().any(|o| key(o) == k) {
                        let shown: Map<String, Value> = self
                            .list_map_keys
                            .iter()
                            .filter_map(|k| item.get(k).map(|x| (k.clone(), x.clone())))
                            .collect();
                        out.push(Cause::duplicate(path.index(i), &Value::Object(shown)));
                    }
                }
            }
            _ => {}
        }
        let _ = v;
        if let Some(s) = &self.items {
            for (i, item) in items.iter().enumerate() {
                s.validate(item, &path.index(i), out);
            }
        }
    }

    fn check_object(
        &self,
        m: &Map<String, Value>,
        v: &Value,
        path: &Path,
        body: &dyn Fn(String) -> String,
        out: &mut Vec<Cause>,
    ) {
        let name = path.as_str();
        for r in &self.required {
            if !m.contains_key(r) {
                out.push(Cause::required(path.child(r)));
            }
        }
        count_bounds(
            m.len(),
            self.min_properties,
            self.max_properties,
            "properties",
            name,
            body,
            out,
        );
        if self.embedded {
            for k in ["apiVersion", "kind"] {
                if m.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
                    out.push(Cause::required_because(path.child(k), "must not be empty"));
                }
            }
        }
        let _ = v;
        for (k, child) in m {
            let p = path.child(k);
            if let Some(s) = self.properties.get(k) {
                s.validate(child, &p, out);
            } else {
                match &self.additional {
                    Some(Additional::Schema(s)) => s.validate(child, &p, out),
                    Some(Additional::Allowed(false)) if !self.properties.is_empty() => {
                        out.push(Cause::invalid(
                            p.as_str(),
                            &Value::from(""),
                            format!("{p} in body is a forbidden property"),
                        ));
                    }
                    _ => {}
                }
            }
        }
    }

    fn check_combinators(
        &self,
        v: &Value,
        path: &Path,
        body: &dyn Fn(String) -> String,
        out: &mut Vec<Cause>,
    ) {
        let name = path.as_str();
        let passes = |s: &Schema| {
            let mut errs = Vec::new();
            s.validate(v, path, &mut errs);
            errs.is_empty()
        };
        if !self.all_of.is_empty() {
            let before = out.len();
            for s in &self.all_of {
                s.validate(v, path, out);
            }
            if out.len() > before {
                out.push(Cause::invalid(
                    name,
                    &Value::from(""),
                    body("must validate all the schemas (allOf)".into()),
                ));
            }
        }
        if !self.any_of.is_empty() && !self.any_of.iter().any(passes) {
            out.push(Cause::invalid(
                name,
                &Value::from(""),
                body("must validate at least one schema (anyOf)".into()),
            ));
        }
        if !self.one_of.is_empty() && self.one_of.iter().filter(|s| passes(s)).count() != 1 {
            out.push(Cause::invalid(
                name,
                &Value::from(""),
                body("must validate one and only one schema (oneOf)".into()),
            ));
        }
        if let Some(not) = &self.not
            && passes(not)
        {
            out.push(Cause::invalid(
                name,
                &Value::from(""),
                body("must not validate the schema (not)".into()),
            ));
        }
    }
}

/// `minItems`/`maxItems` or `minProperties`/`maxProperties`.
fn count_bounds(
    n: usize,
    min: Option<u64>,
    max: Option<u64>,
    what: &str,
    name: &str,
    body: &dyn Fn(String) -> String,
    out: &mut Vec<Cause>,
) {
    let count = n as u64;
    if let Some(max) = max
        && count > max
    {
        out.push(Cause::too_many(name, n, max as usize));
    }
    if let Some(min) = min
        && count < min
    {
        out.push(Cause::invalid(
            name,
            &Value::from(count),
            body(format!("should have at least {min} {what}")),
        ));
    }
}

fn has_duplicates(items: &[Value]) -> bool {
    items
        .iter()
        .enumerate()
        .any(|(i, x)| items[..i].contains(x))
}

/// Whether `s` is in `format` (the formats kube-apiserver checks; others
/// are documentation only and pass).
pub fn format_ok(format: &str, s: &str) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match format {
        "int-or-string" | "password" | "" => true,
        "byte" => base64_ok(s),
        "date" => date_ok(s),
        "date-time" | "datetime" => {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
        }
        "uuid" => uuid::Uuid::try_parse(s).is_ok(),
        "ipv4" => s.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(a, m)| {
            let max = match a.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            m.parse::<u8>().is_ok_and(|m| m <= max)
        }),
        "mac" => {
            let parts: Vec<&str> = s.split([':', '-']).collect();
            matches!(parts.len(), 6 | 8 | 20)
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        }
        "hostname" => {
            !s.is_empty()
                && s.len() <= 253
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        }
        "duration" => duration_ok(s),
        _ => true,
    }
}

fn base64_ok(s: &str) -> bool {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).is_ok()
}

/// `YYYY-MM-DD`, a real day.
fn date_ok(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return false;
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<i32>(), m.parse::<u8>(), d.parse::<u8>()) else {
        return false;
    };
    time::Month::try_from(m)
        .ok()
        .and_then(|m| time::Date::from_calendar_date(y, m, d).ok())
        .is_some()
}

/// A Go duration (`1h30m`, `250ms`, `-1.5s`, `0`) or one with days and
/// weeks, as the `duration` format of kube-openapi's strfmt accepts.
fn duration_ok(s: &str) -> bool {
    static RE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"^[-+]?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h|d|w))+)$")
            .expect("a valid pattern")
    });
    RE.is_match(s.trim())
}

#[cfg(test)]
mod tests;
