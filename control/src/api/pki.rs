//! The cluster's certificates: a CA made on first start, the apiserver's
//! serving certificate, client certificates (CN = user, O = groups) and the
//! admin kubeconfig. Keys are written 0600 and never logged.

use std::{
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad certificate or key in {path}: {reason}")]
    Bad { path: PathBuf, reason: String },
    #[error("making a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// The CA and the serving pair, as PEM.
#[derive(Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert_pem: String,
    ca_key_pem: String,
    pub server_cert_pem: String,
    server_key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `data` to `path`, readable by the owner only when `secret`.
pub fn write_file(path: &Path, data: &str, secret: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(io)?;
    let mode = if secret { 0o600 } else { 0o644 };
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "rudder-ca");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(3650);
    Ok(p)
}

impl Pki {
    /// Loads the PKI under `dir`, making what is missing. The serving
    /// certificate covers `hosts` (names and addresses) plus the usual
    /// in-cluster names.
    pub fn load_or_create(dir: &Path, hosts: &[String]) -> Result<Self, PkiError> {
        let ca_cert_path = dir.join("ca.crt");
        let ca_key_path = dir.join("ca.key");
        let (ca_cert_pem, ca_key_pem) = match (read(&ca_cert_path)?, read(&ca_key_path)?) {
            (Some(c), Some(k)) => (c, k),
            (None, None) => {
                let key = KeyPair::generate()?;
                let cert = ca_params()?.self_signed(&key)?;
                let (c, k) = (cert.pem(), key.serialize_pem());
                write_file(&ca_key_path, &k, true)?;
                write_file(&ca_cert_path, &c, false)?;
                tracing::info!(path = %ca_cert_path.display(), "created the cluster CA");
                (c, k)
            }
            _ => {
                return Err(PkiError::Bad {
                    path: dir.to_owned(),
                    reason: "one of ca.crt and ca.key is missing: restore both or remove both"
                        .into(),
                });
            }
        };
        let mut pki = Self {
            dir: dir.to_owned(),
            ca_cert_pem,
            ca_key_pem,
            server_cert_pem: String::new(),
            server_key_pem: String::new(),
        };
        // Check the CA parses before anything is signed with it.
        pki.issuer()?;
        let server_cert_path = dir.join("apiserver.crt");
        let server_key_path = dir.join("apiserver.key");
        let hosts_path = dir.join("apiserver.hosts");
        let want_hosts = hosts.join(",");
        let (c, k) = match (
            read(&server_cert_path)?,
            read(&server_key_path)?,
            read(&hosts_path)?,
        ) {
            (Some(c), Some(k), Some(h)) if h == want_hosts => (c, k),
            _ => {
                let mut names: Vec<String> = vec![
                    "localhost".into(),
                    "kubernetes".into(),
                    "kubernetes.default".into(),
                    "kubernetes.default.svc".into(),
                    "kubernetes.default.svc.cluster.local".into(),
                ];
                names.extend(hosts.iter().cloned());
                let (c, k) = pki.issue("kube-apiserver", &[], &names, true)?;
                write_file(&server_key_path, &k, true)?;
                write_file(&server_cert_path, &c, false)?;
                write_file(&hosts_path, &want_hosts, false)?;
                (c, k)
            }
        };
        pki.server_cert_pem = c;
        pki.server_key_pem = k;
        Ok(pki)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let bad = |reason: String| PkiError::Bad {
            path: self.dir.join("ca.crt"),
            reason,
        };
        let key = KeyPair::from_pem(&self.ca_key_pem).map_err(|e| bad(e.to_string()))?;
        Issuer::from_ca_cert_pem(&self.ca_cert_pem, key).map_err(|e| bad(e.to_string()))
    }

    /// Issues a certificate signed by the CA: a client certificate for user
    /// `cn` in `groups`, or (with `server`) a serving one for `names`.
    pub fn issue(
        &self,
        cn: &str,
        groups: &[&str],
        names: &[String],
        server: bool,
    ) -> Result<(String, String), PkiError> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        for g in groups {
            dn.push(DnType::OrganizationName, *g);
        }
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        for n in names {
            p.subject_alt_names.push(match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.clone().try_into()?),
            });
        }
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(365);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer()?)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A kubeconfig for user `cn` (groups `groups`) reaching `server`.
    pub fn kubeconfig(&self, server: &str, cn: &str, groups: &[&str]) -> Result<String, PkiError> {
        let (cert, key) = self.issue(cn, groups, &[], false)?;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        Ok(format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: rudder\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: {cn}@rudder\n  context:\n    cluster: rudder\n    user: {cn}\ncurrent-context: {cn}@rudder\nusers:\n- name: {cn}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
            ca = b64(&self.ca_cert_pem),
            cert = b64(&cert),
            key = b64(&key),
        ))
    }

    /// The rustls server configuration: the serving pair, and client
    /// certificates verified against the CA when presented (requests without
    /// one authenticate by token or are anonymous).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        use rustls::pki_types::pem::PemObject as _;
        let tls = PkiError::Tls;
        let certs = rustls_pemfile_certs(&self.server_cert_pem).map_err(tls)?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes())
            .map_err(|e| tls(format!("serving key: {e}")))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile_certs(&self.ca_cert_pem).map_err(tls)? {
            roots
                .add(c)
                .map_err(|e| tls(format!("CA certificate: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls(format!("client verifier: {e}")))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| tls(format!("serving certificate: {e}")))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

fn rustls_pemfile_certs(
    pem: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))
}

/// The user a client certificate names: CN and the O entries.
pub fn identity_from_cert(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())?
        .to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_owned))
        .collect();
    Some((cn, groups))
}
