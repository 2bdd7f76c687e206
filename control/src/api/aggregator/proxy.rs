//! Forwarding a request to a remote APIService: the TLS client (the
//! APIService's trust, the front-proxy client certificate), the request
//! with the user in the request headers extension servers trust, and the
//! answer streamed back (watches included).

use std::sync::{Arc, OnceLock};

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse as _, Response},
};

use super::Remote;
use crate::api::{ApiState, auth::User, status::ApiError};

/// The front-proxy client's common name, as kube-apiserver's
/// `--requestheader-allowed-names` usually lists it.
pub const FRONT_PROXY_CN: &str = "front-proxy-client";

type Identity = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

static IDENTITY: OnceLock<Result<Identity, String>> = OnceLock::new();

/// The front-proxy client certificate, issued by the cluster CA once.
fn identity(st: &ApiState) -> Result<Identity, String> {
    let pki = st.config.pki.as_ref().ok_or("this apiserver has no CA")?;
    IDENTITY
        .get_or_init(|| {
            use rustls::pki_types::pem::PemObject as _;
            let (cert, key) = pki
                .issue(FRONT_PROXY_CN, &[], &[], false)
                .map_err(|e| e.to_string())?;
            let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| e.to_string())?;
            Ok((certs, key))
        })
        .as_ref()
        .map(|(c, k)| (c.clone(), k.clone_key()))
        .map_err(Clone::clone)
}

/// Accepts any server certificate (`insecureSkipTLSVerify`), still
/// checking the handshake's signatures.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS client for an APIService's spec.
pub fn tls_for(st: &ApiState, spec: &serde_json::Value) -> Result<rustls::ClientConfig, String> {
    let (certs, key) = identity(st)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if spec["insecureSkipTLSVerify"].as_bool() == Some(true) {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
    } else {
        builder.with_root_certificates(roots_of(spec["caBundle"].as_str())?)
    };
    builder
        .with_client_auth_cert(certs, key)
        .map_err(|e| e.to_string())
}

fn roots_of(ca_bundle: Option<&str>) -> Result<rustls::RootCertStore, String> {
    use base64::Engine as _;
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca_bundle.unwrap_or(""))
        .map_err(|e| format!("caBundle is not base64: {e}"))?;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    Ok(roots)
}

/// Request headers never forwarded: the caller's credentials and any
/// identity headers it made up.
fn forwarded(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    !(n == "authorization"
        || n == "host"
        || n == "connection"
        || n == "upgrade"
        || n.starts_with("impersonate-")
        || n.starts_with("x-remote-"))
}

/// Sends one request to the remote and returns its answer, body streamed.
pub async fn send(
    st: &ApiState,
    remote: &Remote,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    user: Option<&User>,
    body: bytes::Bytes,
) -> Result<Response, String> {
    let (ns, name, port) = &remote.service;
    let addr = crate::api::webhook::call::endpoint(st, ns, name, *port).await?;
    let server_name = format!("{name}.{ns}.svc");
    let mut sender =
        crate::api::webhook::call::dial(addr, &server_name, remote.tls.clone()).await?;
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(hyper::header::HOST, server_name.as_str());
    for (k, v) in headers {
        if forwarded(k.as_str()) {
            req = req.header(k, v);
        }
    }
    if let Some(u) = user {
        req = req.header(
            "X-Remote-User",
            HeaderValue::from_str(&u.name).map_err(|e| e.to_string())?,
        );
        for g in &u.groups {
            req = req.header(
                "X-Remote-Group",
                HeaderValue::from_str(g).map_err(|e| e.to_string())?,
            );
        }
    }
    let req = req
        .body(http_body_util::Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, incoming) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::new(incoming)))
}

/// Serves a request for a remote group-version.
pub async fn serve(
    st: &ApiState,
    remote: &Remote,
    user: &User,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Response {
    if !remote.available {
        return ApiError::unavailable("the server is currently unable to handle the request")
            .into_response();
    }
    match send(
        st,
        remote,
        method,
        path_and_query,
        headers,
        Some(user),
        body,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(apiservice = %remote.name, error = %e, "proxying to an APIService failed");
            let mut r = ApiError::unavailable(format!("error trying to reach service: {e}"))
                .into_response();
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }
    }
}
