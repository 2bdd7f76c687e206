//! The node's own credentials: a kubeconfig with a client certificate of
//! the cluster CA (from `rudder join`), renewed through Rudder's apiserver
//! (`POST /rudder/v1/renew`) before it ends, as the kubelet's client
//! certificate rotation does upstream. At start a certificate within
//! [`RENEW_BEFORE`] of its end is renewed first; while running,
//! [`keep_fresh`] renews the file daily once due and ends (so that the
//! service manager restarts the agent on the new file) shortly before the
//! certificate in use would.
//!
//! Kubeconfigs without a client certificate (tokens, a DaemonSet's
//! service account) are left alone.

use std::{path::Path, time::Duration};

use base64::Engine as _;

/// Renewed when less than this is left.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// The agent restarts on renewed credentials when less than this is left
/// of those it runs with.
pub const RESTART_BEFORE: Duration = Duration::from_secs(7 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("kubeconfig {path}: {reason}")]
    File { path: String, reason: String },
    #[error("renewing the node's credentials: {0}")]
    Renew(String),
    #[error(
        "the node's client certificate ends in less than {} days; the credentials were \
         renewed in {path}: restarting to use them",
        RESTART_BEFORE.as_secs() / 86_400
    )]
    Restart { path: String },
}

/// How long the kubeconfig's client certificate has left; `None` without
/// one.
pub fn time_left(kubeconfig: &str) -> Option<Duration> {
    let b64 = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("client-certificate-data:"))?
        .trim();
    let pem = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents).ok()?;
    let end = cert.validity().not_after.timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some(Duration::from_secs(end.saturating_sub(now).max(0) as u64))
}

/// Renews the kubeconfig at `path` if its certificate is due: asks the
/// apiserver with the current credentials and replaces the file
/// atomically (`0600`). Returns whether it renewed.
pub async fn renew_if_due(path: &Path) -> Result<bool, CredentialError> {
    let shown = path.display().to_string();
    let file = |reason: String| CredentialError::File {
        path: shown.clone(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file(e.to_string()))?;
    if time_left(&text).is_none_or(|left| left > RENEW_BEFORE) {
        return Ok(false);
    }
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| file(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| file(e.to_string()))?;
    let client = kube::Client::try_from(cfg).map_err(|e| CredentialError::Renew(e.to_string()))?;
    let req = hyper::Request::post("/rudder/v1/renew")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(b"{}".to_vec())
        .map_err(|e| CredentialError::Renew(e.to_string()))?;
    let answer: serde_json::Value = client
        .request(req)
        .await
        .map_err(|e| CredentialError::Renew(e.to_string()))?;
    let new = answer["kubeconfig"]
        .as_str()
        .filter(|k| time_left(k).is_some())
        .ok_or_else(|| CredentialError::Renew("the answer holds no kubeconfig".into()))?;
    write_private(path, new).map_err(|e| file(e.to_string()))?;
    tracing::info!(path = %shown, "renewed the node's credentials");
    Ok(true)
}

/// Replaces `path` with `text` atomically, readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let tmp = path.with_extension("renewing");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Runs beside the agent: checks daily, renews the file when due, and
/// returns [`CredentialError::Restart`] when the certificate the agent
/// started with nears its end (it never returns otherwise).
pub async fn keep_fresh(path: std::path::PathBuf) -> Result<(), CredentialError> {
    let started = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| time_left(&t));
    let Some(started_left) = started else {
        return std::future::pending().await;
    };
    let began = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(86_400)).await;
        if let Err(e) = renew_if_due(&path).await {
            tracing::warn!(error = %e, "renewing the node's credentials; trying again tomorrow");
        }
        if started_left.saturating_sub(began.elapsed()) < RESTART_BEFORE {
            return Err(CredentialError::Restart {
                path: path.display().to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(days: i64) -> String {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(days);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.pem());
        format!("users:\n- name: n\n  user:\n    client-certificate-data: {b64}\n")
    }

    #[test]
    fn the_time_left_is_read_from_the_certificate() {
        let left = time_left(&kubeconfig(10)).unwrap();
        assert!(left > Duration::from_secs(9 * 86_400) && left <= RENEW_BEFORE);
        assert!(time_left(&kubeconfig(365)).unwrap() > RENEW_BEFORE);
        assert_eq!(
            time_left("users:\n- name: n\n  user:\n    token: abc\n"),
            None
        );
    }
}
