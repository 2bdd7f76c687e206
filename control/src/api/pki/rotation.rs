//! Certificates renewed while the server runs. The apiserver's serving
//! certificate and a store member's peer certificate are held by a
//! [`Rotating`] identity that rustls asks for at every handshake (as a
//! server's and as a client's certificate resolver), so a renewal takes
//! effect on the next connection without a restart; connections already
//! open keep the certificate they began with, as kube-apiserver's
//! dynamic serving certificates do. [`keep_fresh`] checks every hour and
//! issues anew whatever ends within [`super::RENEW_BEFORE_DAYS`], the
//! admin kubeconfig's client certificate included.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use rustls::{
    client::ResolvesClientCert,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use super::{Pki, PkiError, expires_soon, rustls_pemfile_certs};

/// What issues a fresh certificate and key (PEM) for an identity.
pub type Issue = Box<dyn Fn() -> Result<(String, String), PkiError> + Send + Sync>;

/// A certificate and key that can be replaced while in use.
pub struct Rotating {
    what: &'static str,
    current: RwLock<(Arc<CertifiedKey>, String)>,
    issue: Issue,
}

impl std::fmt::Debug for Rotating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotating")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

/// The rustls form of a PEM certificate chain and key.
fn certified(cert_pem: &str, key_pem: &str, what: &str) -> Result<Arc<CertifiedKey>, PkiError> {
    use rustls::pki_types::pem::PemObject as _;
    let certs = rustls_pemfile_certs(cert_pem).map_err(PkiError::Tls)?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| PkiError::Tls(format!("{what} key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| PkiError::Tls(format!("{what} key: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
}

impl Rotating {
    /// Holds `cert_pem`/`key_pem`, renewed through `issue`.
    pub fn new(
        what: &'static str,
        cert_pem: &str,
        key_pem: &str,
        issue: Issue,
    ) -> Result<Arc<Self>, PkiError> {
        let key = certified(cert_pem, key_pem, what)?;
        Ok(Arc::new(Self {
            what,
            current: RwLock::new((key, cert_pem.to_owned())),
            issue,
        }))
    }

    /// The certificate in use (PEM).
    pub fn certificate(&self) -> String {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .clone()
    }

    /// Issues a new certificate if the one in use ends within
    /// [`super::RENEW_BEFORE_DAYS`]; whether it did.
    pub fn renew_if_due(&self) -> Result<bool, PkiError> {
        if !expires_soon(&self.certificate()) {
            return Ok(false);
        }
        let (cert, key) = (self.issue)()?;
        let new = certified(&cert, &key, self.what)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (new, cert);
        tracing::info!(what = self.what, "renewed a certificate in use");
        Ok(true)
    }

    fn key(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .clone()
    }
}

impl ResolvesServerCert for Rotating {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }
}

impl ResolvesClientCert for Rotating {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The admin kubeconfig to keep fresh: its path, and what it names as the
/// server.
#[derive(Clone, Debug)]
pub struct AdminKubeconfig {
    pub path: PathBuf,
    pub server: String,
}

impl AdminKubeconfig {
    /// Writes the file anew when its certificate ends soon, when it
    /// trusts another CA than `pki`'s (a PKI directory made anew), or when
    /// it is missing or unreadable; whether it did.
    pub fn renew_if_due(&self, pki: &Pki) -> Result<bool, PkiError> {
        let due = std::fs::read_to_string(&self.path).ok().is_none_or(|kc| {
            super::kubeconfig_certificate(&kc).is_none_or(|c| expires_soon(&c))
                || super::kubeconfig_ca(&kc).as_deref() != Some(pki.ca_cert_pem.as_str())
        });
        if !due {
            return Ok(false);
        }
        let kc = pki.kubeconfig(&self.server, "kubernetes-admin", &["system:masters"])?;
        super::write_file(&self.path, &kc, true)?;
        tracing::info!(path = %self.path.display(), "wrote the admin kubeconfig");
        Ok(true)
    }
}

/// How often [`keep_fresh`] looks.
pub const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Renews `identities` and the admin kubeconfig as they come due, every
/// [`CHECK_EVERY`], until `stop` turns true. A failure is logged and tried
/// again at the next check.
pub async fn keep_fresh(
    pki: Arc<Pki>,
    identities: Vec<Arc<Rotating>>,
    admin: Option<AdminKubeconfig>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for id in &identities {
            if let Err(e) = id.renew_if_due() {
                tracing::warn!(what = id.what, error = %e, "renewing a certificate; trying again in an hour");
            }
        }
        if let Some(a) = &admin
            && let Err(e) = a.renew_if_due(&pki)
        {
            tracing::warn!(error = %e, "renewing the admin kubeconfig; trying again in an hour");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate of `pki`'s CA lasting `days`.
    fn lasting(pki: &Pki, days: i64) -> (String, String) {
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(days);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &pki.issuer().unwrap()).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_certificate_near_its_end_is_replaced_in_place() {
        let dir = rudder_test_harness::TempDir::new();
        let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
        let (cert, key) = lasting(&pki, 10);
        let issuer = pki.clone();
        let id = Rotating::new(
            "test",
            &cert,
            &key,
            Box::new(move || issuer.issue("test", &[], &["localhost".to_owned()], true)),
        )
        .unwrap();
        let before = ResolvesClientCert::resolve(id.as_ref(), &[], &[]).unwrap();
        assert!(id.renew_if_due().unwrap());
        assert!(!expires_soon(&id.certificate()));
        let after = ResolvesClientCert::resolve(id.as_ref(), &[], &[]).unwrap();
        assert_ne!(
            before.cert, after.cert,
            "the resolver hands out the new one"
        );
        assert!(!id.renew_if_due().unwrap(), "a fresh one is kept");
        // One with a year left is kept too.
        let (cert, key) = lasting(&pki, 365);
        let kept = Rotating::new("test", &cert, &key, Box::new(|| unreachable!())).unwrap();
        assert!(!kept.renew_if_due().unwrap());
    }

    #[test]
    fn the_admin_kubeconfig_is_written_anew_only_when_due() {
        let dir = rudder_test_harness::TempDir::new();
        let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
        let admin = AdminKubeconfig {
            path: dir.path().join("admin.kubeconfig"),
            server: "https://127.0.0.1:6443".into(),
        };
        assert!(admin.renew_if_due(&pki).unwrap(), "missing: written");
        assert!(!admin.renew_if_due(&pki).unwrap(), "fresh: kept");
        let (cert, _) = lasting(&pki, 5);
        let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
        std::fs::write(
            &admin.path,
            format!(
                "clusters:\n- name: c\n  cluster:\n    certificate-authority-data: {}\nusers:\n- name: a\n  user:\n    client-certificate-data: {}\n",
                b64(&pki.ca_cert_pem),
                b64(&cert)
            ),
        )
        .unwrap();
        assert!(admin.renew_if_due(&pki).unwrap(), "ending soon: written");
        let kc = std::fs::read_to_string(&admin.path).unwrap();
        assert!(super::super::kubeconfig_certificate(&kc).is_some_and(|c| !expires_soon(&c)));
    }
}
