//! The kubelet API's serving certificate, and its rotation while the
//! kubelet runs. The certificate comes from the apiserver (signed by the
//! cluster CA for this node's name and addresses, which the apiserver
//! checks before it sends `kubectl exec` here); an apiserver that issues
//! none (not Rudder's) leaves a self-signed one. As the kubelet's
//! certificate manager does upstream, a new one is asked for once 70–90 %
//! of the current one's life has passed (jittered, so that nodes do not
//! all ask at once), retried with back-off when the apiserver cannot
//! answer, and handed to rustls at the next handshake; connections
//! already open keep theirs. A self-signed certificate is replaced by a
//! CA one as soon as the apiserver issues it (asked hourly).

use std::{
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use hyper::Request;
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use super::{Shared, server::ServerError};

/// A certificate as the kubelet holds it: for rustls, with its validity
/// and where it came from.
#[derive(Debug, Clone)]
struct Held {
    key: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
    from_ca: bool,
}

/// The serving identity, replaced in place by [`keep_fresh`].
#[derive(Debug)]
pub(crate) struct ServingCert(RwLock<Held>);

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.held().key)
    }
}

impl ServingCert {
    fn held(&self) -> Held {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, new: Held) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
    }
}

fn tls(e: impl std::fmt::Display) -> ServerError {
    ServerError::Tls(e.to_string())
}

/// Builds what rustls serves from a DER chain and key.
fn held(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    from_ca: bool,
) -> Result<Held, ServerError> {
    let first = certs.first().ok_or_else(|| tls("no certificate"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(first.as_ref()).map_err(tls)?;
    let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    let validity = parsed.validity();
    let (not_before, not_after) = (
        at(validity.not_before.timestamp()),
        at(validity.not_after.timestamp()),
    );
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(tls)?;
    Ok(Held {
        key: Arc::new(CertifiedKey::new(certs, signing)),
        not_before,
        not_after,
        from_ca,
    })
}

/// Asks the apiserver for a serving certificate.
async fn from_apiserver(shared: &Shared) -> Result<Held, ServerError> {
    use rustls::pki_types::pem::PemObject as _;
    let cfg = &shared.cfg;
    let body = serde_json::to_vec(&serde_json::json!({"nodeName": cfg.node_name})).map_err(tls)?;
    let req = Request::post("/rudder/v1/kubelet-serving")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(tls)?;
    let v = shared
        .client
        .request::<serde_json::Value>(req)
        .await
        .map_err(tls)?;
    let cert = v["certificate"].as_str().unwrap_or_default().as_bytes();
    let certs = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(format!("the issued certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(v["key"].as_str().unwrap_or_default().as_bytes())
        .map_err(|e| tls(format!("the issued key: {e}")))?;
    held(certs, key, true)
}

fn self_signed(shared: &Shared) -> Result<Held, ServerError> {
    let cfg = &shared.cfg;
    let names = vec![cfg.node_name.clone(), cfg.node_ip.clone()];
    let certified = rcgen::generate_simple_self_signed(names).map_err(tls)?;
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der()).map_err(tls)?;
    held(vec![cert], key, false)
}

/// The serving identity at start: the apiserver's, else a self-signed
/// one for the node's names.
pub(crate) async fn obtain(shared: &Shared) -> Result<Arc<ServingCert>, ServerError> {
    let h = match from_apiserver(shared).await {
        Ok(h) => {
            tracing::info!("kubelet serving certificate issued by the cluster CA");
            h
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "the apiserver issues no kubelet serving certificate; serving a self-signed one"
            );
            self_signed(shared)?
        }
    };
    Ok(Arc::new(ServingCert(RwLock::new(h))))
}

/// When to ask for a new certificate: at `fraction` (0.7–0.9) of the
/// way from `not_before` to `not_after`.
fn renewal_time(not_before: SystemTime, not_after: SystemTime, fraction: f64) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    not_before + life.mul_f64(fraction.clamp(0.0, 1.0))
}

/// The longest single sleep, so that a clock that jumps (a suspended VM)
/// is noticed within it.
const RECHECK: Duration = Duration::from_secs(3600);

/// Runs [`keep_fresh`] until the returned guard is dropped (with the
/// server that serves the certificate).
pub(crate) fn renew_in_background(
    shared: Arc<Shared>,
    cert: Arc<ServingCert>,
) -> rudder_host::supervise::TaskGuard {
    rudder_host::supervise::spawn_scoped(keep_fresh(shared, cert))
}

/// Replaces the certificate as it comes due (see the module doc); never
/// returns.
async fn keep_fresh(shared: Arc<Shared>, cert: Arc<ServingCert>) {
    let mut backoff = Duration::from_secs(5);
    loop {
        let h = cert.held();
        let due = if h.from_ca {
            renewal_time(h.not_before, h.not_after, rand::random_range(0.7..0.9))
        } else {
            SystemTime::now() + RECHECK
        };
        let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(wait.min(RECHECK)).await;
        if SystemTime::now() < due {
            continue;
        }
        match from_apiserver(&shared).await {
            Ok(new) => {
                cert.replace(new);
                backoff = Duration::from_secs(5);
                tracing::info!("renewed the kubelet serving certificate");
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "renewing the kubelet serving certificate");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(300));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_within_70_to_90_percent_of_the_life() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(1_000);
        assert_eq!(
            renewal_time(start, end, 0.7),
            start + Duration::from_secs(700)
        );
        assert_eq!(
            renewal_time(start, end, 0.9),
            start + Duration::from_secs(900)
        );
        // A certificate that ended before it began is due at once.
        assert_eq!(renewal_time(end, start, 0.8), end);
    }

    #[test]
    fn a_replaced_certificate_is_served_at_the_next_handshake() {
        let make = |name: &str| {
            let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
            held(
                vec![CertificateDer::from(c.cert.der().to_vec())],
                PrivateKeyDer::try_from(c.signing_key.serialize_der()).unwrap(),
                true,
            )
            .unwrap()
        };
        let (a, b) = (make("a"), make("b"));
        assert!(a.not_after > a.not_before);
        let serving = ServingCert(RwLock::new(a.clone()));
        assert_eq!(serving.held().key.cert, a.key.cert);
        serving.replace(b.clone());
        assert_eq!(serving.held().key.cert, b.key.cert);
    }
}
