//! The cluster's certificates: a CA made on first start, the apiserver's
//! serving certificate, client certificates (CN = user, O = groups), the
//! admin kubeconfig, and the store members' peer certificates (mutual TLS
//! on the peer port, as etcd's `--peer-client-cert-auth`: only a member
//! certificate of this CA, O = `rudder:store-members`, is let in; an
//! admin's or a node's certificate of the same CA is not). Keys are
//! written 0600 and never logged. Certificates in use are renewed before
//! they end without a restart ([`rotation`]).

pub mod rotation;

use std::{
    net::IpAddr,
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
    /// The names and addresses the serving certificate covers.
    server_names: Vec<String>,
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

/// Writes `data` to `path` (created `0600` when `secret`, else `0644`),
/// durably, in a directory no one else may enter if it is made here.
pub fn write_file(path: &Path, data: &str, secret: bool) -> Result<(), PkiError> {
    let mode = if secret { 0o600 } else { 0o644 };
    rudder_store::files::write_durably(path, data.as_bytes(), mode).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
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
        rudder_store::files::own_private_dir(dir).map_err(|source| PkiError::Io {
            path: dir.to_owned(),
            source,
        })?;
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
        let mut server_names: Vec<String> = vec![
            "localhost".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
        ];
        server_names.extend(hosts.iter().cloned());
        let mut pki = Self {
            dir: dir.to_owned(),
            ca_cert_pem,
            ca_key_pem,
            server_cert_pem: String::new(),
            server_key_pem: String::new(),
            server_names,
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
            (Some(c), Some(k), Some(h)) if h == want_hosts && !expires_soon(&c) => (c, k),
            _ => {
                let (c, k) = pki.issue_serving()?;
                write_file(&hosts_path, &want_hosts, false)?;
                (c, k)
            }
        };
        pki.server_cert_pem = c;
        pki.server_key_pem = k;
        Ok(pki)
    }

    /// A new serving certificate for the apiserver, written to
    /// `apiserver.crt` and `apiserver.key`.
    fn issue_serving(&self) -> Result<(String, String), PkiError> {
        let (c, k) = self.issue("kube-apiserver", &[], &self.server_names, true)?;
        write_file(&self.dir.join("apiserver.key"), &k, true)?;
        write_file(&self.dir.join("apiserver.crt"), &c, false)?;
        Ok((c, k))
    }

    /// The apiserver's serving identity, renewed in place before it ends.
    pub fn serving_identity(&self) -> Result<Arc<rotation::Rotating>, PkiError> {
        let pki = self.clone();
        rotation::Rotating::new(
            "apiserver serving certificate",
            &self.server_cert_pem,
            &self.server_key_pem,
            Box::new(move || pki.issue_serving()),
        )
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
        let usages = if server {
            &[ExtendedKeyUsagePurpose::ServerAuth][..]
        } else {
            &[ExtendedKeyUsagePurpose::ClientAuth][..]
        };
        self.issue_for(cn, groups, names, usages)
    }

    fn issue_for(
        &self,
        cn: &str,
        groups: &[&str],
        names: &[String],
        usages: &[ExtendedKeyUsagePurpose],
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
        p.extended_key_usages = usages.to_vec();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(365);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer()?)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Signs `params` for a key the caller does not hold (a certificate
    /// signing request's); the certificate's PEM.
    pub fn sign_for(
        &self,
        params: &CertificateParams,
        public_key: &impl rcgen::PublicKeyData,
    ) -> Result<String, PkiError> {
        Ok(params.signed_by(public_key, &self.issuer()?)?.pem())
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

    /// The rustls server configuration: the serving identity (asked at
    /// each handshake, so renewals apply to new connections), and client
    /// certificates verified against the CA when presented (requests
    /// without one authenticate by token or are anonymous).
    pub fn server_config(
        &self,
        identity: Arc<rotation::Rotating>,
    ) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let tls = PkiError::Tls;
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
            .with_cert_resolver(identity);
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// How long before its end a certificate is issued anew (at a restart, or
/// when a node asks).
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// Whether the first certificate of `pem` ends within
/// [`RENEW_BEFORE_DAYS`] (or cannot be read).
pub fn expires_soon(pem: &str) -> bool {
    let Some(der) = rustls_pemfile_certs(pem)
        .ok()
        .and_then(|c| c.into_iter().next())
    else {
        return true;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return true;
    };
    let left =
        cert.validity().not_after.timestamp() - time::OffsetDateTime::now_utc().unix_timestamp();
    left < RENEW_BEFORE_DAYS * 86_400
}

/// The client certificate of a kubeconfig (its `client-certificate-data`).
pub fn kubeconfig_certificate(kubeconfig: &str) -> Option<String> {
    kubeconfig_pem(kubeconfig, "client-certificate-data:")
}

/// The CA a kubeconfig trusts (`certificate-authority-data`, as PEM).
pub fn kubeconfig_ca(kubeconfig: &str) -> Option<String> {
    kubeconfig_pem(kubeconfig, "certificate-authority-data:")
}

/// The PEM text of the first base64 `key` of a kubeconfig.
fn kubeconfig_pem(kubeconfig: &str, key: &str) -> Option<String> {
    let b64 = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix(key))?
        .trim();
    let pem = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(pem).ok()
}

/// The group of store members' peer certificates.
pub const MEMBER_GROUP: &str = "rudder:store-members";

/// Both sides of the peer port's mutual TLS, and the member identity
/// they present (renewed in place).
pub type PeerTlsConfigs = (
    Arc<rustls::ServerConfig>,
    Arc<rustls::ClientConfig>,
    Arc<rotation::Rotating>,
);

impl Pki {
    /// The peer port's TLS for store member `member`: a certificate of
    /// this CA for `rudder-store-member-<id>` in [`MEMBER_GROUP`] (made
    /// anew at each start), a server that requires a member certificate of
    /// this CA from clients, and a client that accepts only a member
    /// certificate of this CA from servers (the peer's address is not
    /// checked against it: membership, not a host name, is what is
    /// authenticated, so members may be reached by any address).
    pub fn peer_tls(&self, member: u64) -> Result<PeerTlsConfigs, PkiError> {
        let tls = PkiError::Tls;
        let pki = self.clone();
        let issue = move || {
            pki.issue_for(
                &format!("rudder-store-member-{member}"),
                &[MEMBER_GROUP],
                &[],
                &[
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            )
        };
        let (cert, key) = issue()?;
        let identity =
            rotation::Rotating::new("store member certificate", &cert, &key, Box::new(issue))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile_certs(&self.ca_cert_pem).map_err(tls)? {
            roots
                .add(c)
                .map_err(|e| tls(format!("CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| tls(format!("client verifier: {e}")))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(e.to_string()))?
            .with_client_cert_verifier(Arc::new(MemberClients(clients)))
            .with_cert_resolver(identity.clone());
        let servers = CaServerVerifier::new(&self.ca_cert_pem, true, |der| {
            if is_member(der) {
                Ok(())
            } else {
                Err(not_a_member())
            }
        })?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(servers))
            .with_client_cert_resolver(identity.clone());
        Ok((Arc::new(server), Arc::new(client), identity))
    }
}

/// Whether a certificate is a store member's (O = [`MEMBER_GROUP`]).
fn is_member(der: &[u8]) -> bool {
    identity_from_cert(der).is_some_and(|(_, groups)| groups.iter().any(|g| g == MEMBER_GROUP))
}

fn not_a_member() -> rustls::Error {
    rustls::Error::General(format!(
        "the peer's certificate is not a store member's ({MEMBER_GROUP})"
    ))
}

/// The CA's client verification, then: a member.
#[derive(Debug)]
struct MemberClients(Arc<dyn rustls::server::danger::ClientCertVerifier>);

impl rustls::server::danger::ClientCertVerifier for MemberClients {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let ok = self.0.verify_client_cert(end_entity, intermediates, now)?;
        if is_member(end_entity) {
            Ok(ok)
        } else {
            Err(not_a_member())
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Verifies a server's certificate against the CA's chain (and, unless
/// `any_name`, the name dialled), then with `leaf` (a check of what the
/// certificate says of its holder): the store members' peers, the
/// apiserver's kubelets.
#[derive(Debug)]
pub struct CaServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    any_name: bool,
    leaf: fn(&[u8]) -> Result<(), rustls::Error>,
}

impl CaServerVerifier {
    pub fn new(
        ca_pem: &str,
        any_name: bool,
        leaf: fn(&[u8]) -> Result<(), rustls::Error>,
    ) -> Result<Self, PkiError> {
        let tls = PkiError::Tls;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile_certs(ca_pem).map_err(tls)? {
            roots
                .add(c)
                .map_err(|e| tls(format!("CA certificate: {e}")))?;
        }
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| tls(format!("server verifier: {e}")))?;
        Ok(Self {
            inner,
            any_name,
            leaf,
        })
    }
}

impl rustls::client::danger::ServerCertVerifier for CaServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(_) => {}
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.any_name => {}
            Err(e) => return Err(e),
        }
        (self.leaf)(end_entity.as_ref())?;
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfig_names_the_ca_that_made_it() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &["127.0.0.1".into()]).unwrap();
        let kc = pki
            .kubeconfig("https://127.0.0.1:6443", "admin", &["system:masters"])
            .unwrap();
        assert_eq!(
            kubeconfig_ca(&kc).as_deref(),
            Some(pki.ca_cert_pem.as_str())
        );
        assert!(kubeconfig_certificate(&kc).is_some_and(|c| !expires_soon(&c)));
        let other = tempfile::tempdir().unwrap();
        let again = Pki::load_or_create(other.path(), &["127.0.0.1".into()]).unwrap();
        assert_ne!(
            kubeconfig_ca(&kc).as_deref(),
            Some(again.ca_cert_pem.as_str())
        );
    }
}
