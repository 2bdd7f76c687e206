//! CertificateSigningRequests (`certificates.k8s.io/v1`), as kube-apiserver
//! and kube-controller-manager's signers handle them: the requester's
//! identity written into `spec` at create whatever the client sent,
//! validation (a PEM request whose signature verifies, a signer name,
//! known usages, at least 600 s), the `CertificateSubjectRestriction`
//! admission (no `system:masters` through the client signer), the
//! `approval` subresource (only `Approved`/`Denied` conditions, which stay
//! once set; approving needs the `approve` verb on the signer, as the
//! `CertificateApproval` admission checks), and the built-in signers
//! (`kubernetes.io/kube-apiserver-client`, `-client-kubelet`,
//! `kubelet-serving`) issuing approved requests from the cluster CA, or
//! marking them `Failed` when the request does not fit the signer.

use std::time::Duration;

use base64::Engine as _;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, DnValue, ExtendedKeyUsagePurpose,
    KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};

use super::{
    ApiState,
    auth::User,
    handlers::{Target, encode_as, list_objects},
    pki::Pki,
    rbac,
    resources::{Resource, by_kind},
    status::{ApiError, Cause},
};
use crate::store::StoreError;

pub const CLIENT: &str = "kubernetes.io/kube-apiserver-client";
pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
const LEGACY: &str = "kubernetes.io/legacy-unknown";

/// The key usages `spec.usages` may name (`KeyUsage` in the API).
const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// kube-controller-manager's `--cluster-signing-duration` default.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn resource() -> &'static Resource {
    by_kind("certificates.k8s.io", "CertificateSigningRequest").expect("served")
}

fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The PEM text of `spec.request` (base64 in JSON, as `[]byte` fields are).
fn request_pem(obj: &Value) -> Result<String, String> {
    let b64 = obj
        .pointer("/spec/request")
        .and_then(Value::as_str)
        .ok_or("a PEM certificate request is required")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("not base64: {e}"))?;
    let text =
        String::from_utf8(bytes).map_err(|_| "PEM block type must be CERTIFICATE REQUEST")?;
    if !text.contains("-----BEGIN CERTIFICATE REQUEST-----") {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    Ok(text)
}

/// Parses and verifies the request.
fn parse(obj: &Value) -> Result<CertificateSigningRequestParams, String> {
    let pem = request_pem(obj)?;
    CertificateSigningRequestParams::from_pem(&pem)
        .map_err(|e| format!("cannot parse the certificate request: {e}"))
}

/// The subject's common name and organizations.
fn subject(csr: &CertificateSigningRequestParams) -> (String, Vec<String>) {
    let text = |v: &DnValue| match v {
        DnValue::Utf8String(s) => s.clone(),
        DnValue::PrintableString(p) => p.as_str().to_string(),
        DnValue::Ia5String(i) => i.as_str().to_string(),
        other => format!("{other:?}"),
    };
    let mut cn = String::new();
    let mut orgs = Vec::new();
    for (t, v) in csr.params.distinguished_name.iter() {
        match t {
            DnType::CommonName => cn = text(v),
            DnType::OrganizationName => orgs.push(text(v)),
            _ => {}
        }
    }
    (cn, orgs)
}

fn usages_of(obj: &Value) -> Vec<String> {
    obj.pointer("/spec/usages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// The field errors of a new request.
fn validate(obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    if let Err(why) = parse(obj) {
        errs.push(Cause::invalid(
            "spec.request",
            &json!("<certificate request>"),
            why,
        ));
    }
    match obj.pointer("/spec/signerName").and_then(Value::as_str) {
        None | Some("") => errs.push(Cause::required("spec.signerName")),
        Some(LEGACY) => errs.push(Cause::invalid(
            "spec.signerName",
            &json!(LEGACY),
            "the legacy signerName is not allowed via this API version",
        )),
        Some(s) => {
            let (domain, path) = s.split_once('/').unwrap_or((s, ""));
            if path.is_empty() || !rudder_k8s::names::is_dns_subdomain(domain) {
                errs.push(Cause::invalid(
                    "spec.signerName",
                    &json!(s),
                    "must be a fully qualified domain and path of the form 'example.com/signer-name'",
                ));
            }
        }
    }
    if let Some(secs) = obj.pointer("/spec/expirationSeconds")
        && secs.as_i64().is_none_or(|s| s < 600)
    {
        errs.push(Cause::invalid(
            "spec.expirationSeconds",
            secs,
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
    let usages = usages_of(obj);
    if usages.is_empty() {
        errs.push(Cause::required("spec.usages"));
    }
    for (i, u) in usages.iter().enumerate() {
        let at = format!("spec.usages[{i}]");
        if !USAGES.contains(&u.as_str()) {
            errs.push(Cause::not_supported(at, &json!(u), USAGES));
        } else if usages[..i].contains(u) {
            errs.push(Cause::duplicate(at, &json!(u)));
        }
    }
    errs
}

/// A new request: the requester's identity in `spec`, no status,
/// validation, and the `CertificateSubjectRestriction` admission.
pub fn on_create(user: &User, obj: &mut Value) -> Result<(), ApiError> {
    let r = resource();
    let name = name_of(obj).to_string();
    obj["spec"]["username"] = json!(user.name);
    obj["spec"]["groups"] = json!(user.groups);
    if let Some(spec) = obj["spec"].as_object_mut() {
        spec.remove("uid");
        spec.remove("extra");
    }
    obj["status"] = json!({});
    let errs = validate(obj);
    if !errs.is_empty() {
        return Err(ApiError::invalid(r, &name, errs));
    }
    if obj.pointer("/spec/signerName").and_then(Value::as_str) == Some(CLIENT)
        && let Ok(csr) = parse(obj)
        && subject(&csr).1.iter().any(|o| o == "system:masters")
    {
        return Err(ApiError::forbidden(format!(
            "{} {name:?} is forbidden: use of {CLIENT} signer with system:masters group is not allowed",
            r.qualified()
        )));
    }
    Ok(())
}

fn conditions(obj: &Value) -> Vec<Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn is_decision(c: &Value) -> bool {
    matches!(c["type"].as_str(), Some("Approved" | "Denied"))
}

/// An update through `approval`: the current object with the client's
/// `Approved`/`Denied` conditions, which may not be removed once set nor
/// both be there.
pub fn merge_approval(cur: &Value, new: &Value) -> Result<Value, ApiError> {
    let name = name_of(cur);
    let decided: Vec<Value> = conditions(new).into_iter().filter(is_decision).collect();
    let mut errs = Vec::new();
    for old in conditions(cur).iter().filter(|c| is_decision(c)) {
        if !decided.iter().any(|c| c["type"] == old["type"]) {
            errs.push(Cause::forbidden(
                "status.conditions",
                format!(
                    "updates may not remove a condition of type {:?}",
                    old["type"].as_str().unwrap_or_default()
                ),
            ));
        }
    }
    let has = |t: &str| decided.iter().any(|c| c["type"] == t);
    if has("Approved") && has("Denied") {
        errs.push(Cause::invalid(
            "status.conditions",
            &json!("Denied"),
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    for (i, c) in decided.iter().enumerate() {
        if c["status"].as_str().is_some_and(|s| s != "True") {
            errs.push(Cause::not_supported(
                format!("status.conditions[{i}].status"),
                &c["status"],
                &["True"],
            ));
        }
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(resource(), name, errs));
    }
    let mut out = cur.clone();
    let mut all: Vec<Value> = conditions(cur)
        .into_iter()
        .filter(|c| !is_decision(c))
        .collect();
    all.extend(decided);
    out["status"]["conditions"] = json!(all);
    Ok(out)
}

/// The `CertificateApproval` admission: whether `user` may approve or
/// deny requests for `signer` (the `approve` verb on `signers`, by the
/// signer's name or its domain with `/*`).
pub async fn may_approve(st: &ApiState, user: &User, signer: &str) -> bool {
    let domain_wildcard = format!("{}/*", signer.split('/').next().unwrap_or_default());
    for name in [signer, domain_wildcard.as_str()] {
        let attrs =
            rbac::Attributes::resource("approve", "certificates.k8s.io", "signers", "", "", name);
        if st
            .authz
            .authorize(st.store.as_ref(), user, &attrs)
            .await
            .is_ok()
        {
            return true;
        }
    }
    false
}

/// What a built-in signer issues for an approved request: the PEM
/// certificate, or why the request does not fit the signer.
pub fn sign(pki: &Pki, obj: &Value) -> Result<String, String> {
    let signer = obj
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let csr = parse(obj)?;
    let (cn, orgs) = subject(&csr);
    let usages = usages_of(obj);
    let allowed = |extra: &[&str]| {
        usages.iter().all(|u| {
            ["digital signature", "key encipherment"].contains(&u.as_str())
                || extra.contains(&u.as_str())
        })
    };
    let sans = &csr.params.subject_alt_names;
    match signer {
        CLIENT => {
            if !usages.iter().any(|u| u == "client auth") || !allowed(&["client auth"]) {
                return Err("usages must be client auth, optionally with digital signature and key encipherment".into());
            }
        }
        KUBELET_CLIENT => {
            if !cn.starts_with("system:node:") || orgs != ["system:nodes"] || !sans.is_empty() {
                return Err("a kubelet client certificate is for CN system:node:<name>, O system:nodes, without subject alternative names".into());
            }
            if !usages.iter().any(|u| u == "client auth") || !allowed(&["client auth"]) {
                return Err("usages must be client auth, optionally with digital signature and key encipherment".into());
            }
        }
        KUBELET_SERVING => {
            if !cn.starts_with("system:node:") || orgs != ["system:nodes"] {
                return Err(
                    "a kubelet serving certificate is for CN system:node:<name>, O system:nodes"
                        .into(),
                );
            }
            let names_only = sans
                .iter()
                .all(|s| matches!(s, SanType::DnsName(_) | SanType::IpAddress(_)));
            if sans.is_empty() || !names_only {
                return Err("a kubelet serving certificate needs DNS names or IP addresses, and nothing else".into());
            }
            if !usages.iter().any(|u| u == "server auth") || !allowed(&["server auth"]) {
                return Err("usages must be server auth, optionally with digital signature and key encipherment".into());
            }
        }
        _ => return Err(format!("{signer} is not a built-in signer")),
    }
    let mut p = CertificateParams::default();
    p.distinguished_name = csr.params.distinguished_name.clone();
    if signer == KUBELET_SERVING {
        p.subject_alt_names = sans.clone();
    }
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = if signer == KUBELET_SERVING {
        vec![ExtendedKeyUsagePurpose::ServerAuth]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    let asked = obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_u64)
        .map_or(MAX_DURATION, Duration::from_secs);
    let now = time::OffsetDateTime::now_utc();
    // Backdated as kube-controller-manager does, for skewed clocks.
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + asked.min(MAX_DURATION);
    pki.sign_for(&p, &csr.public_key).map_err(|e| e.to_string())
}

/// One pass of the signers over every request.
pub async fn sign_all(st: &ApiState, pki: &Pki) -> Result<i64, ApiError> {
    let r = resource();
    let t = Target {
        resource: r,
        namespace: String::new(),
        name: None,
        subresource: None,
    };
    let (csrs, revision, _) = list_objects(st, &t, &Default::default()).await?;
    for csr in csrs {
        let signer = csr
            .pointer("/spec/signerName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let conds = conditions(&csr);
        let has = |ty: &str| conds.iter().any(|c| c["type"] == ty);
        if ![CLIENT, KUBELET_CLIENT, KUBELET_SERVING].contains(&signer)
            || !has("Approved")
            || has("Denied")
            || has("Failed")
            || csr
                .pointer("/status/certificate")
                .is_some_and(|c| !c.is_null())
        {
            continue;
        }
        let name = name_of(&csr).to_string();
        let mut next = csr.clone();
        match sign(pki, &csr) {
            Ok(pem) => {
                next["status"]["certificate"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(pem));
            }
            Err(why) => {
                tracing::info!(csr = %name, %signer, reason = %why, "certificate request not signed");
                let mut all = conds.clone();
                all.push(
                    json!({"type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                    "message": why, "lastUpdateTime": super::handlers::now_rfc3339(),
                    "lastTransitionTime": super::handlers::now_rfc3339()}),
                );
                next["status"]["conditions"] = json!(all);
            }
        }
        let rv: i64 = csr
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        match st
            .store
            .update(t.key(&name), encode_as(r, &next), Some(rv))
            .await
        {
            Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
            Err(e) => return Err(ApiError::from_store(e, r, &name)),
        }
    }
    Ok(revision)
}

/// Until `stop` turns true (nothing borrowed from it is held).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The signing controller, until `stop`: signs what is approved at start,
/// then again whenever a request changes (a watch on the requests, not a
/// poll), and lists everything again every `resync` and after a watch
/// ends (compaction, a lagging watcher).
pub async fn run(
    st: std::sync::Arc<ApiState>,
    pki: std::sync::Arc<Pki>,
    resync: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let prefix = super::handlers::key(resource(), "", "");
    loop {
        let watch = match sign_all(&st, &pki).await {
            Ok(revision) => st.store.watch(prefix.clone(), revision + 1).await.ok(),
            Err(e) => {
                tracing::warn!(error = %e.message, "certificate signing");
                None
            }
        };
        let Some(mut events) = watch else {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                _ = stop.wait_for(|s| *s) => return,
            }
        };
        let resynced = tokio::time::sleep(resync);
        tokio::pin!(resynced);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(Ok(_)) => {
                        // A burst of changes is one pass.
                        while let Ok(Ok(_)) = events.try_recv() {}
                        if let Err(e) = sign_all(&st, &pki).await {
                            tracing::warn!(error = %e.message, "certificate signing");
                        }
                    }
                    _ => break,
                },
                () = &mut resynced => break,
                () = stopped(&mut stop) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{DistinguishedName, KeyPair};

    use super::*;

    fn request(cn: &str, orgs: &[&str], sans: &[&str]) -> String {
        let mut p =
            CertificateParams::new(sans.iter().map(|s| (*s).to_string()).collect::<Vec<_>>())
                .unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        for o in orgs {
            dn.push(DnType::OrganizationName, *o);
        }
        p.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        base64::engine::general_purpose::STANDARD.encode(pem)
    }

    fn csr(req: &str, signer: &str, usages: &[&str]) -> Value {
        json!({"metadata": {"name": "c"}, "spec": {"request": req, "signerName": signer, "usages": usages}})
    }

    #[test]
    fn validation_as_kube_apiserver() {
        let good = csr(&request("amy", &["dev"], &[]), CLIENT, &["client auth"]);
        assert!(validate(&good).is_empty(), "{:?}", validate(&good));
        let bad = csr(
            "bm90IGEgcmVxdWVzdA==",
            "nodomain",
            &["client auth", "client auth", "fly"],
        );
        let errs: Vec<String> = validate(&bad).iter().map(ToString::to_string).collect();
        assert!(
            errs.iter()
                .any(|e| e.contains("spec.request") && e.contains("CERTIFICATE REQUEST")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("spec.signerName")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("spec.usages[1]") && e.contains("Duplicate")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("spec.usages[2]") && e.contains("Unsupported")),
            "{errs:?}"
        );
        let mut short = good.clone();
        short["spec"]["expirationSeconds"] = json!(599);
        assert_eq!(validate(&short).len(), 1);
    }

    #[test]
    fn masters_are_refused_and_the_requester_is_the_caller() {
        let user = User {
            name: "amy".into(),
            groups: vec!["dev".into(), "system:authenticated".into()],
        };
        let mut c = csr(
            &request("root", &["system:masters"], &[]),
            CLIENT,
            &["client auth"],
        );
        c["spec"]["username"] = json!("admin");
        let e = on_create(&user, &mut c).unwrap_err();
        assert!(
            e.message.contains("system:masters group is not allowed"),
            "{}",
            e.message
        );
        let mut c = csr(&request("amy", &["dev"], &[]), CLIENT, &["client auth"]);
        c["spec"]["username"] = json!("admin");
        on_create(&user, &mut c).unwrap();
        assert_eq!(c["spec"]["username"], "amy");
        assert_eq!(c["spec"]["groups"], json!(["dev", "system:authenticated"]));
    }

    #[test]
    fn approval_keeps_decisions() {
        let approved = json!({"type": "Approved", "status": "True", "reason": "KubectlApprove"});
        let cur = json!({"metadata": {"name": "c"}, "status": {"conditions": [approved]}});
        let denied = json!({"type": "Denied", "status": "True"});
        assert!(merge_approval(&cur, &json!({"status": {"conditions": [denied]}})).is_err());
        assert!(
            merge_approval(&cur, &json!({"status": {"conditions": [approved, denied]}})).is_err()
        );
        let ok = merge_approval(
            &json!({"metadata": {"name": "c"}}),
            &json!({"status": {"conditions": [approved]}}),
        )
        .unwrap();
        assert_eq!(ok["status"]["conditions"][0]["type"], "Approved");
    }
}
