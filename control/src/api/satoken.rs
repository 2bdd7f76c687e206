//! Service-account tokens: JWTs (ES256) signed with the cluster's
//! service-account key (`sa.key` beside the CA, made on first start), issued
//! by `serviceaccounts/{name}/token` (TokenRequest, what `kubectl create
//! token` and kubelets ask for) and accepted as bearer tokens while the
//! service account (and the pod a token is bound to) still exists.
//!
//! The claims are Kubernetes': `iss`, `sub` = `system:serviceaccount:<ns>:<name>`,
//! `aud`, `exp`/`iat`/`nbf`, and `kubernetes.io` with the namespace, the
//! service account and the bound pod (names and uids).

use std::path::Path;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64URL};
use ring::{
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, KeyPair as _},
};
use serde_json::{Value, json};

/// The issuer and default audience, as kube-apiserver's defaults.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The OpenID provider configuration kube-apiserver serves at
/// `/.well-known/openid-configuration`, the JWKS at the issuer's
/// `/openid/v1/jwks`.
pub fn openid_configuration() -> Value {
    json!({
        "issuer": ISSUER,
        "jwks_uri": format!("{ISSUER}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
}

/// Why a token is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a JWT")]
    Malformed,
    #[error("the token's algorithm or key is not this cluster's")]
    WrongKey,
    #[error("bad signature")]
    BadSignature,
    #[error("the token expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is not for this issuer or audience")]
    WrongAudience,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("service-account key {path}: {reason}")]
    Bad { path: String, reason: String },
}

/// Signs and verifies service-account tokens.
pub struct Signer {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// What a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub namespace: String,
    pub service_account: String,
    pub service_account_uid: String,
    /// The pod the token is bound to: (name, uid).
    pub pod: Option<(String, String)>,
}

impl Signer {
    /// Loads `sa.key` under `dir` (PKCS#8 PEM, ECDSA P-256), creating it if
    /// missing.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join("sa.key");
        let bad = |reason: String| KeyError::Bad {
            path: path.display().to_string(),
            reason,
        };
        let pem = match std::fs::read_to_string(&path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rcgen::KeyPair::generate().map_err(|e| bad(e.to_string()))?;
                let pem = key.serialize_pem();
                super::pki::write_file(&path, &pem, true).map_err(|e| bad(e.to_string()))?;
                tracing::info!(path = %path.display(), "created the service-account signing key");
                pem
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        let der = pkcs8_der(&pem).ok_or_else(|| bad("not a PEM PKCS#8 private key".into()))?;
        Self::from_pkcs8(&der).map_err(bad)
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| format!("not an ECDSA P-256 PKCS#8 key: {e}"))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        let kid = B64URL.encode(digest.as_ref());
        Ok(Self { key, kid, rng })
    }

    /// A token for `claims`, valid from `now` for `seconds`, for `audiences`.
    pub fn issue(&self, claims: &Claims, audiences: &[String], now: i64, seconds: i64) -> String {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let mut k8s = json!({
            "namespace": claims.namespace,
            "serviceaccount": {"name": claims.service_account, "uid": claims.service_account_uid},
        });
        if let Some((name, uid)) = &claims.pod {
            k8s["pod"] = json!({"name": name, "uid": uid});
        }
        let body = json!({
            "iss": ISSUER,
            "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.service_account),
            "aud": audiences,
            "iat": now,
            "nbf": now,
            "exp": now + seconds,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": k8s,
        });
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(body.to_string())
        );
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .expect("ECDSA signing with a valid key does not fail");
        format!("{signing_input}.{}", B64URL.encode(sig.as_ref()))
    }

    /// The public key as a JSON Web Key Set (`/openid/v1/jwks`), so that
    /// anyone may check a token's signature.
    pub fn jwks(&self) -> Value {
        // An uncompressed P-256 point: 0x04, then X and Y, 32 bytes each.
        let point = self.key.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        json!({"keys": [{
            "use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
            "x": B64URL.encode(x), "y": B64URL.encode(y),
        }]})
    }

    /// Checks a token's signature, times and audience (one of `audiences`).
    pub fn verify(&self, token: &str, now: i64, audiences: &[&str]) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(b), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |p: &str| -> Result<Value, TokenError> {
            let raw = B64URL.decode(p).map_err(|_| TokenError::Malformed)?;
            serde_json::from_slice(&raw).map_err(|_| TokenError::Malformed)
        };
        let header = decode(h)?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256")
            || header.get("kid").and_then(Value::as_str) != Some(self.kid.as_str())
        {
            return Err(TokenError::WrongKey);
        }
        let sig = B64URL.decode(s).map_err(|_| TokenError::Malformed)?;
        signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        )
        .verify(format!("{h}.{b}").as_bytes(), &sig)
        .map_err(|_| TokenError::BadSignature)?;
        let body = decode(b)?;
        let int = |k: &str| body.get(k).and_then(Value::as_i64);
        if int("exp").is_none_or(|e| now >= e) {
            return Err(TokenError::Expired);
        }
        if int("nbf").is_some_and(|n| now + 60 < n) {
            return Err(TokenError::NotYetValid);
        }
        let aud_ok = match body.get("aud") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .any(|x| audiences.contains(&x)),
            Some(Value::String(a)) => audiences.contains(&a.as_str()),
            _ => false,
        };
        if body.get("iss").and_then(Value::as_str) != Some(ISSUER) || !aud_ok {
            return Err(TokenError::WrongAudience);
        }
        let k = &body["kubernetes.io"];
        let s = |p: &str| {
            k.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let pod = k.get("pod").map(|_| (s("/pod/name"), s("/pod/uid")));
        let claims = Claims {
            namespace: s("/namespace"),
            service_account: s("/serviceaccount/name"),
            service_account_uid: s("/serviceaccount/uid"),
            pod,
        };
        if claims.namespace.is_empty() || claims.service_account.is_empty() {
            return Err(TokenError::Malformed);
        }
        Ok(claims)
    }
}

fn pkcs8_der(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::{PrivatePkcs8KeyDer, pem::PemObject as _};
    PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|k| k.secret_pkcs8_der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let key = rcgen::KeyPair::generate().unwrap();
        Signer::from_pkcs8(&pkcs8_der(&key.serialize_pem()).unwrap()).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            namespace: "ci".into(),
            service_account: "robot".into(),
            service_account_uid: "u1".into(),
            pod: Some(("p".into(), "u2".into())),
        }
    }

    #[test]
    fn the_jwks_key_checks_issued_signatures() {
        let s = signer();
        let t = s.issue(&claims(), &[ISSUER.to_owned()], 1000, 600);
        let jwks = s.jwks();
        let k = &jwks["keys"][0];
        assert_eq!(
            (k["kty"].as_str(), k["alg"].as_str()),
            (Some("EC"), Some("ES256"))
        );
        let header: Value =
            serde_json::from_slice(&B64URL.decode(t.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["kid"], k["kid"]);
        let mut point = vec![4u8];
        for c in ["x", "y"] {
            point.extend(B64URL.decode(k[c].as_str().unwrap()).unwrap());
        }
        let (input, sig) = t.rsplit_once('.').unwrap();
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
            .verify(input.as_bytes(), &B64URL.decode(sig).unwrap())
            .expect("the published key verifies the token");
        assert_eq!(
            openid_configuration()["jwks_uri"],
            "https://kubernetes.default.svc.cluster.local/openid/v1/jwks"
        );
    }

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let s = signer();
        let t = s.issue(&claims(), &[ISSUER.to_owned()], 1000, 600);
        assert_eq!(s.verify(&t, 1001, &[ISSUER]), Ok(claims()));
        assert_eq!(s.verify(&t, 1600, &[ISSUER]), Err(TokenError::Expired));
        assert_eq!(
            s.verify(&t, 1001, &["vault"]),
            Err(TokenError::WrongAudience)
        );
    }

    #[test]
    fn tampered_foreign_and_malformed_tokens_are_refused() {
        let s = signer();
        let t = s.issue(&claims(), &[ISSUER.to_owned()], 1000, 600);
        let parts: Vec<&str> = t.split('.').collect();
        // Another service account in the body, same signature.
        let mut other = claims();
        other.service_account = "admin".into();
        let forged_body = s.issue(&other, &[ISSUER.to_owned()], 1000, 600);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            forged_body.split('.').nth(1).unwrap(),
            parts[2]
        );
        assert_eq!(
            s.verify(&forged, 1001, &[ISSUER]),
            Err(TokenError::BadSignature)
        );
        // Another cluster's key.
        assert_eq!(
            signer().verify(&t, 1001, &[ISSUER]),
            Err(TokenError::WrongKey)
        );
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.e30"] {
            assert!(s.verify(bad, 1001, &[ISSUER]).is_err(), "{bad}");
        }
    }
}
