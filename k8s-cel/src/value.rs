//! JSON values as CEL sees them: integers as `int` (`uint` past `i64`),
//! other numbers as `double`, objects as maps, as kube-apiserver hands an
//! object or a schema node to a rule.

use std::{collections::HashMap, sync::Arc};

use serde_json::Value;

/// `v` as a CEL value.
pub fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => cel::Value::Int(i),
            (None, Some(u), _) => cel::Value::UInt(u),
            (_, _, Some(f)) => cel::Value::Float(f),
            _ => cel::Value::Null,
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => {
            let map: HashMap<String, cel::Value> =
                m.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            cel::Value::Map(map.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_maps_to_cel_types() {
        assert_eq!(to_cel(&json!(1)), cel::Value::Int(1));
        assert_eq!(to_cel(&json!(u64::MAX)), cel::Value::UInt(u64::MAX));
        assert_eq!(to_cel(&json!(1.5)), cel::Value::Float(1.5));
        assert_eq!(to_cel(&json!(null)), cel::Value::Null);
        assert!(matches!(to_cel(&json!({"a": [1]})), cel::Value::Map(_)));
    }
}
