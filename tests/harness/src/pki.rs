//! Certificates for tests that need TLS with client certificates (an etcd
//! serving TLS, as kubeadm's does): a CA, a serving certificate for
//! 127.0.0.1 and a client certificate, as PEM files.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose as Eku, IsCa, Issuer, KeyPair,
    SanType,
};

/// Writes `ca.crt`, `server.crt`/`server.key` (for 127.0.0.1) and
/// `client.crt`/`client.key` into `dir`, all signed by a new CA.
pub fn write_tls_pki(dir: &Path) {
    let write = |name: &str, pem: String| {
        std::fs::write(dir.join(name), pem)
            .unwrap_or_else(|e| panic!("write {}: {e}", dir.join(name).display()));
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("a key");
    write(
        "ca.crt",
        ca.clone().self_signed(&ca_key).expect("the CA").pem(),
    );
    let issuer = Issuer::new(ca, ca_key);
    for (name, usage) in [("server", Eku::ServerAuth), ("client", Eku::ClientAuth)] {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("parameters");
        p.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("a key");
        write(
            &format!("{name}.crt"),
            p.signed_by(&key, &issuer).expect("signed").pem(),
        );
        write(&format!("{name}.key"), key.serialize_pem());
    }
}
