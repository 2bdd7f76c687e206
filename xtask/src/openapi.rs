//! `cargo xtask openapi`: regenerates the Kubernetes API schemas the
//! apiserver serves under `/openapi/v3` (`control/src/api/openapi/`).
//!
//! The schemas are Kubernetes' own (from its OpenAPI specification, with
//! the `x-kubernetes-*` extensions that kubectl's strategic merge patches
//! and `kubectl explain` read), as the PyPI package `kubernetes-validate`
//! ships them per release in JSON Schema form. This turns one release's
//! into OpenAPI 3.0 component schemas, as kube-apiserver writes them:
//! references under `#/components/schemas/`, a reference with a
//! description as `allOf`, no `null` in `type`, `IntOrString` as
//! `int-or-string`. The output is data, checked in and marked generated;
//! nothing at build time or run time reaches the registry.

use std::{io::Write as _, path::Path, process::Command};

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};

use crate::util;

/// The package release and the Kubernetes release whose schemas are used
/// (the version the apiserver reports).
const PACKAGE: &str = "kubernetes-validate==1.37.0";
const KUBERNETES: &str = "v1.33.0";
/// Where the apiserver embeds the result from.
pub(crate) const OUT: &str = "control/src/api/openapi/kubernetes-v1.33.json.gz";

/// Downloads the package with pip, converts its schemas, writes [`OUT`].
pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    let work = util::target_dir(root).join("rudder/openapi");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    util::step(&format!("pip download {PACKAGE}"));
    util::run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                PACKAGE,
                "-d",
            ])
            .arg(&work),
    )?;
    let wheel = std::fs::read_dir(&work)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip downloaded no wheel")?;
    let member =
        format!("kubernetes_validate/kubernetes-json-schema/{KUBERNETES}-local/_definitions.json");
    util::run(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&work),
    )?;
    let text = std::fs::read_to_string(work.join(&member))
        .with_context(|| format!("{member} in {}", wheel.display()))?;
    let defs: Value = serde_json::from_str(&text)?;
    let Some(defs) = defs.get("$defs").and_then(Value::as_object) else {
        bail!("{member} has no $defs");
    };
    let schemas: Map<String, Value> = defs
        .iter()
        .map(|(name, schema)| (name.clone(), convert(name, schema)))
        .collect();
    let doc = json!({
        "source": format!("{PACKAGE}, {KUBERNETES}-local (Kubernetes' OpenAPI specification, Apache-2.0)"),
        "generated": "by `cargo xtask openapi`; do not edit",
        "schemas": schemas,
    });
    let out = root.join(OUT);
    std::fs::create_dir_all(out.parent().context("no parent")?)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(serde_json::to_string(&doc)?.as_bytes())?;
    std::fs::write(&out, gz.finish()?)?;
    println!("{} schemas written to {}", schemas_len(&doc), out.display());
    Ok(())
}

fn schemas_len(doc: &Value) -> usize {
    doc["schemas"].as_object().map_or(0, Map::len)
}

/// One JSON Schema definition as an OpenAPI 3.0 component schema.
fn convert(name: &str, schema: &Value) -> Value {
    if name == "io.k8s.apimachinery.pkg.util.intstr.IntOrString" {
        return json!({
            "description": "IntOrString is a type that can hold an int32 or a string.",
            "type": "string",
            "format": "int-or-string",
            "x-kubernetes-int-or-string": true,
        });
    }
    walk(schema)
}

fn walk(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        let r = r.replace("#/$defs/", "#/components/schemas/");
                        out.insert(k.clone(), Value::String(r));
                    }
                    ("type", Value::Array(types)) => {
                        let kept: Vec<&Value> = types
                            .iter()
                            .filter(|t| t.as_str() != Some("null"))
                            .collect();
                        match kept.as_slice() {
                            [one] => out.insert(k.clone(), (*one).clone()),
                            _ => out.insert(k.clone(), Value::Array(types.clone())),
                        };
                    }
                    ("properties", Value::Object(props)) => {
                        let props = props.iter().map(|(p, s)| (p.clone(), walk(s))).collect();
                        out.insert(k.clone(), Value::Object(props));
                    }
                    _ => {
                        out.insert(k.clone(), walk(v));
                    }
                }
            }
            // A reference beside other keywords is wrapped, as kube-apiserver
            // writes it (OpenAPI 3.0 ignores a $ref's siblings).
            if out.len() > 1
                && let Some(r) = out.remove("$ref")
            {
                out.insert("allOf".into(), json!([{"$ref": r}]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(walk).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_types_and_int_or_string_become_openapi_3() {
        let s = json!({"properties": {
            "affinity": {"$ref": "#/$defs/io.k8s.api.core.v1.Affinity", "description": "d"},
            "spec": {"$ref": "#/$defs/io.k8s.api.core.v1.PodSpec"},
            "ports": {"type": ["array", "null"], "items": {"$ref": "#/$defs/P"},
                      "x-kubernetes-patch-merge-key": "port"},
            "$ref": {"type": "string"},
        }});
        let c = convert("X", &s);
        assert_eq!(
            c["properties"]["affinity"],
            json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.Affinity"}], "description": "d"})
        );
        assert_eq!(
            c["properties"]["spec"],
            json!({"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"})
        );
        assert_eq!(c["properties"]["ports"]["type"], "array");
        assert_eq!(
            c["properties"]["ports"]["x-kubernetes-patch-merge-key"],
            "port"
        );
        // A property named like a keyword stays a property.
        assert_eq!(c["properties"]["$ref"], json!({"type": "string"}));
        let ios = convert(
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
            &json!({}),
        );
        assert_eq!(ios["format"], "int-or-string");
    }
}
