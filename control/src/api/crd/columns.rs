//! `additionalPrinterColumns`: the `kubectl get` columns of a custom kind.
//!
//! Each column is a JSONPath into the object. kube-apiserver evaluates it
//! with client-go's `jsonpath`; the subset CRDs use is written here: fields
//! (`.spec.replicas`, `['a.b']`), indices (`[0]`, `[-1]`), wildcards
//! (`[*]`, `.*`) and filters on a field (`[?(@.type=="Ready")]`). Date
//! columns are printed as ages, as kube-apiserver's table convertor does.

use serde_json::{Value, json};

/// One printer column of a version.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// The columns of one `spec.versions[]` entry.
pub fn of_version(v: &Value) -> Vec<Column> {
    v["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("").to_owned();
            Column {
                name: s("name"),
                ty: s("type"),
                format: s("format"),
                description: s("description"),
                priority: c["priority"].as_i64().unwrap_or(0),
                json_path: s("jsonPath"),
            }
        })
        .collect()
}

/// The default when a version defines no columns: an age.
fn default_columns() -> Vec<Column> {
    vec![Column {
        name: "Age".into(),
        ty: "date".into(),
        format: String::new(),
        description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    }]
}

fn effective(columns: &[Column]) -> Vec<Column> {
    if columns.is_empty() {
        default_columns()
    } else {
        columns.to_vec()
    }
}

/// The `columnDefinitions` of a custom kind's table.
pub fn definitions(columns: &[Column]) -> Vec<Value> {
    let mut out = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        "priority": 0})];
    for c in effective(columns) {
        out.push(json!({"name": c.name, "type": c.ty, "format": c.format,
            "description": c.description, "priority": c.priority}));
    }
    out
}

/// One row's cells.
pub fn cells(columns: &[Column], obj: &Value, now: i64) -> Vec<Value> {
    let mut out = vec![obj["metadata"]["name"].clone()];
    for c in effective(columns) {
        let found = eval(&c.json_path, obj);
        let cell = match found.as_slice() {
            [] => Value::Null,
            [one] => one.clone(),
            many => json!(
                many.iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        out.push(match (c.ty.as_str(), &cell) {
            ("date", Value::String(t)) => {
                match time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                {
                    Ok(t) => json!(crate::api::table::human_duration(now - t.unix_timestamp())),
                    Err(_) => cell,
                }
            }
            ("string", Value::Object(_) | Value::Array(_)) => json!(cell.to_string()),
            _ => cell,
        });
    }
    out
}

/// The values `path` selects in `obj`, in order.
pub fn eval(path: &str, obj: &Value) -> Vec<Value> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut cur: Vec<&Value> = vec![obj];
    for step in steps(path) {
        let mut next = Vec::new();
        for v in cur {
            apply(&step, v, &mut next);
        }
        cur = next;
        if cur.is_empty() {
            break;
        }
    }
    cur.into_iter().cloned().collect()
}

#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    All,
    Index(i64),
    Filter {
        field: Vec<String>,
        value: Option<Value>,
    },
}

fn apply<'a>(step: &Step, v: &'a Value, out: &mut Vec<&'a Value>) {
    match step {
        Step::Field(f) => out.extend(v.get(f)),
        Step::All => match v {
            Value::Array(a) => out.extend(a.iter()),
            Value::Object(m) => out.extend(m.values()),
            _ => {}
        },
        Step::Index(i) => {
            if let Some(a) = v.as_array() {
                let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                if let Ok(idx) = usize::try_from(idx) {
                    out.extend(a.get(idx));
                }
            }
        }
        Step::Filter { field, value } => {
            for item in v.as_array().into_iter().flatten() {
                let got = field.iter().try_fold(item, |acc, f| acc.get(f));
                let keep = match (got, value) {
                    (Some(g), Some(want)) => g == want,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if keep {
                    out.push(item);
                }
            }
        }
    }
}

/// Splits a JSONPath into steps; what is not understood selects nothing.
fn steps(path: &str) -> Vec<Step> {
    let mut out = Vec::new();
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'.' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'.' && b[j] != b'[' {
                    j += 1;
                }
                match &path[start..j] {
                    "" => {}
                    "*" => out.push(Step::All),
                    f => out.push(Step::Field(f.to_owned())),
                }
                i = j;
            }
            b'[' => {
                let Some(end) = bracket_end(path, i) else {
                    return vec![Step::Field("\u{0}unparsable".into())];
                };
                out.push(bracket(&path[i + 1..end]));
                i = end + 1;
            }
            _ => {
                // A path without a leading dot (`spec.x`).
                let mut j = i;
                while j < b.len() && b[j] != b'.' && b[j] != b'[' {
                    j += 1;
                }
                out.push(Step::Field(path[i..j].to_owned()));
                i = j;
            }
        }
    }
    out
}

/// The index of the `]` closing the `[` at `open`, outside quotes.
fn bracket_end(path: &str, open: usize) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (k, c) in path[open + 1..].char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ']') => return Some(open + 1 + k),
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    s.strip_prefix('\'')
        .and_then(|x| x.strip_suffix('\''))
        .or_else(|| s.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
}

fn bracket(inner: &str) -> Step {
    let inner = inner.trim();
    if inner == "*" {
        return Step::All;
    }
    if let Ok(i) = inner.parse::<i64>() {
        return Step::Index(i);
    }
    if let Some(f) = unquote(inner) {
        return Step::Field(f.to_owned());
    }
    if let Some(expr) = inner
        .strip_prefix("?(")
        .and_then(|e| e.strip_suffix(')'))
        .and_then(|e| e.trim().strip_prefix("@."))
    {
        let (lhs, rhs) = match expr.split_once("==") {
            Some((l, r)) => (l.trim(), Some(r.trim())),
            None => (expr.trim(), None),
        };
        let value = rhs.map(|r| {
            unquote(r).map_or_else(
                || serde_json::from_str(r).unwrap_or(Value::String(r.to_owned())),
                |s| Value::String(s.to_owned()),
            )
        });
        return Step::Filter {
            field: lhs.split('.').map(str::to_owned).collect(),
            value,
        };
    }
    Step::Field(format!("\u{0}{inner}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_select_as_kubectl_columns_do() {
        let o = json!({"metadata": {"name": "w", "labels": {"app.kubernetes.io/name": "x"}},
            "spec": {"replicas": 3, "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "False"}]}});
        for (path, want) in [
            (".spec.replicas", vec![json!(3)]),
            (".spec.ports[1].port", vec![json!(81)]),
            (".spec.ports[-1].name", vec![json!("b")]),
            (".spec.ports[*].port", vec![json!(80), json!(81)]),
            (
                ".status.conditions[?(@.type==\"Ready\")].status",
                vec![json!("True")],
            ),
            (
                ".status.conditions[?(@.type=='Synced')].status",
                vec![json!("False")],
            ),
            (
                ".metadata.labels['app.kubernetes.io/name']",
                vec![json!("x")],
            ),
            ("{.spec.replicas}", vec![json!(3)]),
            (".spec.missing", vec![]),
            (".spec.ports[", vec![]),
        ] {
            assert_eq!(eval(path, &o), want, "{path}");
        }
    }

    #[test]
    fn rows_have_the_name_then_the_columns_with_dates_as_ages() {
        let cols = of_version(&json!({"additionalPrinterColumns": [
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Ports", "type": "string", "jsonPath": ".spec.ports[*].port"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]}));
        let o = json!({"metadata": {"name": "w", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"replicas": 2, "ports": [{"port": 80}, {"port": 81}]}});
        let now = 1_767_225_600 + 150;
        assert_eq!(
            cells(&cols, &o, now),
            vec![json!("w"), json!(2), json!("80,81"), json!("2m30s")]
        );
        let defs = definitions(&cols);
        assert_eq!(defs.len(), 4);
        assert_eq!(defs[0]["format"], "name");
        // No columns: the name and an age.
        assert_eq!(cells(&[], &o, now), vec![json!("w"), json!("2m30s")]);
    }
}
