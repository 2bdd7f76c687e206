//! `ValidatingWebhookConfiguration` and `MutatingWebhookConfiguration`
//! (`admissionregistration.k8s.io/v1`): defaults and validation as
//! kube-apiserver words them, and the compiled form the dispatcher uses.

use std::{sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use rudder_k8s::field::Path;
use serde_json::{Value, json};

use super::call::Client;
use crate::api::status::Cause;

/// One webhook, ready to be matched and called.
#[derive(Debug)]
pub struct Hook {
    /// The configuration it comes from.
    pub config: String,
    pub name: String,
    pub mutating: bool,
    /// Where it is and how long a call may take.
    pub client: Client,
    pub rules: Vec<Rule>,
    pub fail_closed: bool,
    pub side_effects: String,
    pub namespace_selector: LabelSelector,
    pub object_selector: LabelSelector,
    pub match_conditions: Vec<(String, cel::Program)>,
    pub reinvoke: bool,
    /// `matchPolicy: Equivalent` (the default): other versions of a named
    /// resource match too ([`super::equivalent`]).
    pub equivalent: bool,
}

/// One entry of `rules`.
#[derive(Clone, Debug, Default)]
pub struct Rule {
    pub operations: Vec<String>,
    pub groups: Vec<String>,
    pub versions: Vec<String>,
    pub resources: Vec<String>,
    pub scope: String,
}

pub(crate) use crate::api::object::strings;

/// `SetDefaults_ValidatingWebhook` and its mutating twin.
pub fn apply_defaults(obj: &mut Value, mutating: bool) {
    for w in obj["webhooks"].as_array_mut().into_iter().flatten() {
        let Some(m) = w.as_object_mut() else { continue };
        m.entry("failurePolicy").or_insert_with(|| json!("Fail"));
        m.entry("matchPolicy")
            .or_insert_with(|| json!("Equivalent"));
        m.entry("namespaceSelector").or_insert_with(|| json!({}));
        m.entry("objectSelector").or_insert_with(|| json!({}));
        m.entry("timeoutSeconds").or_insert_with(|| json!(10));
        if mutating {
            m.entry("reinvocationPolicy")
                .or_insert_with(|| json!("Never"));
        }
        if let Some(svc) = m
            .get_mut("clientConfig")
            .and_then(|c| c.get_mut("service"))
            .and_then(Value::as_object_mut)
        {
            svc.entry("port").or_insert_with(|| json!(443));
        }
        for r in m
            .get_mut("rules")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(r) = r.as_object_mut() {
                r.entry("scope").or_insert_with(|| json!("*"));
            }
        }
    }
}

const OPERATIONS: &[&str] = &["*", "CREATE", "UPDATE", "DELETE", "CONNECT"];

/// Validates a webhook configuration.
pub fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, w) in obj["webhooks"].as_array().into_iter().flatten().enumerate() {
        let p = Path::new("webhooks").index(i);
        let name = w["name"].as_str().unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(p.child("name")));
        } else if name.split('.').count() < 3 || !rudder_k8s::names::is_dns_subdomain(name) {
            causes.push(Cause::invalid(
                p.child("name"),
                &json!(name),
                "should be a domain with at least three segments separated by dots",
            ));
        } else if !seen.insert(name) {
            causes.push(Cause::duplicate(p.child("name"), &json!(name)));
        }
        validate_client(&w["clientConfig"], &p.child("clientConfig"), causes);
        match w["sideEffects"].as_str() {
            Some("None" | "NoneOnDryRun") => {}
            None => causes.push(Cause::required(p.child("sideEffects"))),
            Some(s) => causes.push(Cause::not_supported(
                p.child("sideEffects"),
                &json!(s),
                &["None", "NoneOnDryRun"],
            )),
        }
        let versions = strings(&w["admissionReviewVersions"]);
        if versions.is_empty() {
            causes.push(Cause::required(p.child("admissionReviewVersions")));
        } else if !versions.iter().any(|v| v == "v1") {
            causes.push(Cause::invalid(
                p.child("admissionReviewVersions"),
                &json!(versions),
                "must include at least one of v1 (this server speaks AdmissionReview v1 only)",
            ));
        }
        match w["failurePolicy"].as_str() {
            None | Some("Fail" | "Ignore") => {}
            Some(f) => causes.push(Cause::not_supported(
                p.child("failurePolicy"),
                &json!(f),
                &["Fail", "Ignore"],
            )),
        }
        if let Some(t) = w["timeoutSeconds"].as_i64()
            && !(1..=30).contains(&t)
        {
            causes.push(Cause::invalid(
                p.child("timeoutSeconds"),
                &json!(t),
                "the timeout value must be between 1 and 30 seconds",
            ));
        }
        for (j, r) in w["rules"].as_array().into_iter().flatten().enumerate() {
            let rp = p.child("rules").index(j);
            for op in strings(&r["operations"]) {
                if !OPERATIONS.contains(&op.as_str()) {
                    causes.push(Cause::not_supported(
                        rp.child("operations"),
                        &json!(op),
                        OPERATIONS,
                    ));
                }
            }
            if let Some(s) = r["scope"].as_str()
                && !matches!(s, "*" | "Cluster" | "Namespaced")
            {
                causes.push(Cause::not_supported(
                    rp.child("scope"),
                    &json!(s),
                    &["*", "Cluster", "Namespaced"],
                ));
            }
        }
        for (j, c) in w["matchConditions"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cp = p.child("matchConditions").index(j);
            let expr = c["expression"].as_str().unwrap_or("");
            if expr.is_empty() {
                causes.push(Cause::required(cp.child("expression")));
            } else if let Err(e) = rudder_cel::compile(expr) {
                causes.push(Cause::invalid(
                    cp.child("expression"),
                    &json!(expr),
                    format!("compilation failed: {e}"),
                ));
            }
        }
    }
}

pub(crate) fn validate_client(c: &Value, p: &Path, causes: &mut Vec<Cause>) {
    match (
        c.get("url").and_then(Value::as_str),
        c.get("service").filter(|s| s.is_object()),
    ) {
        (Some(_), Some(_)) | (None, None) => causes.push(Cause::required_because(
            p.as_str(),
            "exactly one of url or service is required",
        )),
        (Some(url), None) => match url.parse::<hyper::Uri>() {
            Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => {}
            Ok(u) if u.scheme_str() != Some("https") => causes.push(Cause::invalid(
                p.child("url"),
                &json!(url),
                "'https' is the only allowed URL scheme",
            )),
            _ => causes.push(Cause::invalid(
                p.child("url"),
                &json!(url),
                "host must be specified",
            )),
        },
        (None, Some(s)) => {
            for k in ["namespace", "name"] {
                if s[k].as_str().is_none_or(str::is_empty) {
                    causes.push(Cause::required(p.child("service").child(k)));
                }
            }
            if let Some(port) = s["port"].as_i64()
                && !(1..=65535).contains(&port)
            {
                causes.push(Cause::invalid(
                    p.child("service").child("port"),
                    &json!(port),
                    "port is not valid: must be between 1 and 65535, inclusive",
                ));
            }
        }
    }
    if let Some(ca) = c.get("caBundle").and_then(Value::as_str)
        && tls_for(Some(ca)).is_err()
    {
        causes.push(Cause::invalid(
            p.child("caBundle"),
            &json!("<bytes>"),
            "must be base64-encoded PEM certificates",
        ));
    }
}

/// The machine's trusted roots (`/etc/ssl/certs` and the like), for hooks
/// at a URL with no `caBundle`, as kube-apiserver trusts its system roots.
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(ignored, errors = ?found.errors, "no system root certificates found");
    }
    roots
}

/// The TLS client configuration trusting `ca_bundle` (base64 PEM, as the
/// API carries it), or the system roots when there is none.
pub fn tls_for(ca_bundle: Option<&str>) -> Result<rustls::ClientConfig, String> {
    use base64::Engine as _;
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    if ca_bundle.is_none_or(str::is_empty) {
        roots = system_roots();
    }
    if let Some(b64) = ca_bundle.filter(|b| !b.is_empty()) {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("caBundle is not base64: {e}"))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
            roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
        }
        if roots.is_empty() {
            return Err("caBundle holds no certificate".into());
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The hooks of one stored configuration, in order.
pub fn hooks_of(obj: &Value, mutating: bool) -> Vec<Hook> {
    let config = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let mut out = Vec::new();
    for w in obj["webhooks"].as_array().into_iter().flatten() {
        let timeout = Duration::from_secs(w["timeoutSeconds"].as_u64().unwrap_or(10).clamp(1, 30));
        let client = match Client::of(&w["clientConfig"], timeout) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(config = %config, error = %e, "webhook skipped");
                continue;
            }
        };
        let selector =
            |k: &str| -> LabelSelector { serde_json::from_value(w[k].clone()).unwrap_or_default() };
        out.push(Hook {
            config: config.clone(),
            name: w["name"].as_str().unwrap_or("").to_owned(),
            mutating,
            client,
            rules: w["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(Rule::of)
                .collect(),
            fail_closed: w["failurePolicy"].as_str() != Some("Ignore"),
            side_effects: w["sideEffects"].as_str().unwrap_or("Unknown").to_owned(),
            namespace_selector: selector("namespaceSelector"),
            object_selector: selector("objectSelector"),
            match_conditions: w["matchConditions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    let expr = c["expression"].as_str()?;
                    Some((
                        c["name"].as_str().unwrap_or("").to_owned(),
                        rudder_cel::compile(expr).ok()?,
                    ))
                })
                .collect(),
            reinvoke: w["reinvocationPolicy"].as_str() == Some("IfNeeded"),
            equivalent: w["matchPolicy"].as_str() != Some("Exact"),
        });
    }
    out
}

impl Rule {
    /// Whether it names the request as made to the resource `r` (the
    /// requested one, or an equivalent version of it).
    pub fn matches_at(
        &self,
        req: &super::Request<'_>,
        r: &crate::api::resources::Resource,
    ) -> bool {
        self.matches(
            req.operation,
            r.group,
            r.version,
            r.plural,
            req.subresource,
            r.namespaced,
        )
    }

    /// A `rules[]` (or `resourceRules[]`) entry.
    pub fn of(r: &Value) -> Self {
        Self {
            operations: strings(&r["operations"]),
            groups: strings(&r["apiGroups"]),
            versions: strings(&r["apiVersions"]),
            resources: strings(&r["resources"]),
            scope: r["scope"].as_str().unwrap_or("*").to_owned(),
        }
    }

    /// Whether the rule covers this request.
    pub fn matches(
        &self,
        op: &str,
        group: &str,
        version: &str,
        resource: &str,
        sub: &str,
        namespaced: bool,
    ) -> bool {
        let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        let scope_ok = match self.scope.as_str() {
            "Cluster" => !namespaced,
            "Namespaced" => namespaced,
            _ => true,
        };
        let res_ok = self.resources.iter().any(|r| {
            let (rr, rs) = r.split_once('/').unwrap_or((r.as_str(), ""));
            (rr == "*" || rr == resource)
                && match rs {
                    "" => sub.is_empty(),
                    // `pods/*`: every subresource; `*/*`: everything.
                    "*" => !sub.is_empty() || rr == "*",
                    s => s == sub,
                }
        });
        any(&self.operations, op)
            && any(&self.groups, group)
            && any(&self.versions, version)
            && res_ok
            && scope_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_without_a_ca_bundle_trust_the_system_roots() {
        assert!(
            !system_roots().is_empty(),
            "this machine has CA certificates"
        );
        assert!(tls_for(None).is_ok());
        assert!(tls_for(Some("bm90IGEgY2VydA==")).is_err());
    }

    #[test]
    fn rules_match_as_upstream_spells_them() {
        let r = |res: &[&str], scope: &str| Rule {
            operations: vec!["CREATE".into()],
            groups: vec!["*".into()],
            versions: vec!["*".into()],
            resources: res.iter().map(|s| (*s).to_owned()).collect(),
            scope: scope.into(),
        };
        assert!(r(&["pods"], "*").matches("CREATE", "", "v1", "pods", "", true));
        assert!(!r(&["pods"], "*").matches("CREATE", "", "v1", "pods", "status", true));
        assert!(r(&["pods/status"], "*").matches("CREATE", "", "v1", "pods", "status", true));
        assert!(r(&["pods/*"], "*").matches("CREATE", "", "v1", "pods", "status", true));
        assert!(r(&["*"], "*").matches("CREATE", "x.io", "v1", "widgets", "", true));
        assert!(!r(&["*"], "*").matches("CREATE", "x.io", "v1", "widgets", "status", true));
        assert!(r(&["*/*"], "*").matches("CREATE", "x.io", "v1", "widgets", "status", true));
        assert!(r(&["*/*"], "*").matches("CREATE", "x.io", "v1", "widgets", "", true));
        assert!(!r(&["pods/*"], "*").matches("CREATE", "", "v1", "pods", "", true));
        assert!(!r(&["pods"], "Cluster").matches("CREATE", "", "v1", "pods", "", true));
        assert!(!r(&["pods"], "*").matches("UPDATE", "", "v1", "pods", "", true));
    }

    #[test]
    fn configurations_get_defaults_and_causes() {
        let mut c = json!({"webhooks": [
            {"name": "v.example.com", "clientConfig": {"service": {"namespace": "ns", "name": "svc"}},
             "sideEffects": "None", "admissionReviewVersions": ["v1"], "rules": [{"operations": ["CREATE"]}]},
            {"name": "bad", "clientConfig": {"url": "http://x"}, "sideEffects": "Some",
             "admissionReviewVersions": ["v1beta1"], "timeoutSeconds": 31,
             "matchConditions": [{"name": "m", "expression": "object.x +"}]}]});
        apply_defaults(&mut c, true);
        assert_eq!(c["webhooks"][0]["failurePolicy"], "Fail");
        assert_eq!(c["webhooks"][0]["timeoutSeconds"], 10);
        assert_eq!(c["webhooks"][0]["clientConfig"]["service"]["port"], 443);
        assert_eq!(c["webhooks"][0]["reinvocationPolicy"], "Never");
        let mut causes = Vec::new();
        validate(&c, &mut causes);
        let text: Vec<String> = causes.iter().map(ToString::to_string).collect();
        for want in [
            "webhooks[1].name: Invalid value: \"bad\": should be a domain with at least three segments",
            "webhooks[1].clientConfig.url: Invalid value: \"http://x\": 'https' is the only allowed URL scheme",
            "webhooks[1].sideEffects: Unsupported value: \"Some\"",
            "webhooks[1].admissionReviewVersions: Invalid value",
            "webhooks[1].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
            "webhooks[1].matchConditions[0].expression: Invalid value: \"object.x +\": compilation failed",
        ] {
            assert!(
                text.iter().any(|t| t.starts_with(want)),
                "{want:?} not in {text:?}"
            );
        }
        assert_eq!(causes.len(), 6, "{text:?}");
    }
}
