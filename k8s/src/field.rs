//! Per-field errors as apimachinery's `field.Error`: a type, the field's
//! path (`spec.volumes[0].name`) and a message rendered the way
//! kube-apiserver renders it (`Invalid value: "x": detail`), so that the
//! `Status` causes clients see carry the same text.

use serde_json::Value;

/// The kinds of field error; each is a `Status` cause reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    NotFound,
    Required,
    Duplicate,
    Invalid,
    /// A value of the wrong JSON type (printed as `Invalid value`).
    TypeInvalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
}

impl ErrorType {
    /// The cause's `reason` (`metav1.CauseType`).
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotFound => "FieldValueNotFound",
            Self::Required => "FieldValueRequired",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Invalid => "FieldValueInvalid",
            Self::TypeInvalid => "FieldValueTypeInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
        }
    }
}

/// One field-level error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: ErrorType,
    /// The field's path, e.g. `spec.volumes[0].name`.
    pub field: String,
    /// The message without the field, e.g. `Invalid value: "x": …`.
    pub message: String,
}

/// A value as Go's `%q`/`%v` shows it in a message: strings quoted,
/// everything else as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        v => v.to_string(),
    }
}

impl FieldError {
    pub fn required(field: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Required,
            field: field.into(),
            message: "Required value".into(),
        }
    }

    /// A required value with a detail (`Required value: must specify …`).
    pub fn required_because(field: impl Into<String>, detail: &str) -> Self {
        Self {
            kind: ErrorType::Required,
            field: field.into(),
            message: format!("Required value: {detail}"),
        }
    }

    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl AsRef<str>) -> Self {
        Self {
            kind: ErrorType::Invalid,
            field: field.into(),
            message: format!("Invalid value: {}: {}", shown(value), detail.as_ref()),
        }
    }

    /// A value of the wrong type (`field.TypeInvalid`): printed as
    /// `Invalid value`, with its own cause reason.
    pub fn type_invalid(field: impl Into<String>, value: &Value, detail: impl AsRef<str>) -> Self {
        Self {
            kind: ErrorType::TypeInvalid,
            ..Self::invalid(field, value, detail)
        }
    }

    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self {
            kind: ErrorType::NotSupported,
            field: field.into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                shown(value),
                list.join(", ")
            ),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Self {
            kind: ErrorType::Duplicate,
            field: field.into(),
            message: format!("Duplicate value: {}", shown(value)),
        }
    }

    pub fn not_found(field: impl Into<String>, value: &Value) -> Self {
        Self {
            kind: ErrorType::NotFound,
            field: field.into(),
            message: format!("Not found: {}", shown(value)),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl AsRef<str>) -> Self {
        Self {
            kind: ErrorType::Forbidden,
            field: field.into(),
            message: format!("Forbidden: {}", detail.as_ref()),
        }
    }

    /// `Too long: may not be more than N bytes` and the like.
    pub fn too_long(field: impl Into<String>, detail: impl AsRef<str>) -> Self {
        Self {
            kind: ErrorType::TooLong,
            field: field.into(),
            message: format!("Too long: {}", detail.as_ref()),
        }
    }

    /// `Too many: 1001: must have at most 1000 items`.
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        Self {
            kind: ErrorType::TooMany,
            field: field.into(),
            message: format!("Too many: {actual}: must have at most {max} items"),
        }
    }

    /// The cause's `reason`.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }
}

impl std::fmt::Display for FieldError {
    /// As kube-apiserver prints a cause inside a `Status` message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A field path being built: `spec`, `spec.volumes[2]`, `….name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    pub fn new(root: &str) -> Self {
        Self(root.to_owned())
    }

    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_owned())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    /// A map key (`data[key]`).
    pub fn key(&self, k: &str) -> Self {
        Self(format!("{}[{k}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Path> for String {
    fn from(p: Path) -> Self {
        p.0
    }
}

impl From<&Path> for String {
    fn from(p: &Path) -> Self {
        p.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn messages_read_as_kube_apiservers() {
        let p = Path::new("spec").child("volumes").index(0).child("name");
        assert_eq!(p.as_str(), "spec.volumes[0].name");
        let e = FieldError::invalid(&p, &json!("../etc"), "must not contain '..'");
        assert_eq!(
            e.to_string(),
            "spec.volumes[0].name: Invalid value: \"../etc\": must not contain '..'"
        );
        assert_eq!(e.reason(), "FieldValueInvalid");
        assert_eq!(
            FieldError::not_supported("spec.x", &json!("a"), &["b", "c"]).message,
            "Unsupported value: \"a\": supported values: \"b\", \"c\""
        );
        assert_eq!(
            FieldError::too_many("endpoints", 1001, 1000).message,
            "Too many: 1001: must have at most 1000 items"
        );
        assert_eq!(
            FieldError::invalid("m", &json!(2541), "x").message,
            "Invalid value: 2541: x"
        );
    }
}
