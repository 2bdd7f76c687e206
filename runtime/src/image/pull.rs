//! Pulling images into containerd 1.6 without its Transfer service, as
//! containerd's own Go client does: resolve the reference against the
//! registry (distribution API, bearer-token or basic auth, mirrors in
//! order), write every blob into the content store under a lease with GC
//! reference labels, record the image, then unpack the layers into
//! overlayfs snapshots named by chain ID through the diff service.

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine as _;
use containerd_client::types::Descriptor;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

pub use super::manifest::{chain_ids, parse_config};
use super::{
    Endpoint, Reference, Registries,
    manifest::{
        MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST, Manifest, is_index,
        parse_manifest, pick_platform, platform_arch,
    },
    mirror,
};
use crate::containerd::{Containerd, ContainerdError, SNAPSHOTTER};

/// Manifests larger than this are refused (registries cap them at 4 MiB).
const MAX_MANIFEST: u64 = 4 << 20;

/// What the kubelet needs of an image to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The normalized name containerd knows it by.
    pub name: String,
    /// `name@sha256:…` of the manifest actually used (the pod's imageID).
    pub image_id: String,
    /// The top layer's chain ID: the parent of every container snapshot.
    pub chain_id: String,
    pub config: ImageConfig,
}

/// The runtime part of an image configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: String,
}

/// Credentials for one registry host (from `imagePullSecrets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub host: String,
    pub username: String,
    pub password: String,
}

/// Why a pull failed, in the kubelet's terms.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    InvalidName(#[from] super::ReferenceError),
    #[error("failed to resolve reference \"{reference}\": {message}")]
    Resolve { reference: String, message: String },
    #[error("failed to pull \"{reference}\": {message}")]
    Fetch { reference: String, message: String },
    #[error("failed to unpack \"{reference}\": {message}")]
    Unpack { reference: String, message: String },
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
}

/// Parses a `.dockerconfigjson` (or legacy `.dockercfg`) document into
/// credentials, as the kubelet reads `imagePullSecrets`.
pub fn parse_docker_config(json: &[u8]) -> Vec<Credential> {
    let Ok(v) = serde_json::from_slice::<Value>(json) else {
        return vec![];
    };
    let auths = v.get("auths").unwrap_or(&v);
    let Some(map) = auths.as_object() else {
        return vec![];
    };
    map.iter()
        .filter_map(|(host, entry)| {
            let (username, password) = match entry.get("auth").and_then(Value::as_str) {
                Some(a) => {
                    let decoded = base64::engine::general_purpose::STANDARD.decode(a).ok()?;
                    let s = String::from_utf8(decoded).ok()?;
                    let (u, p) = s.split_once(':')?;
                    (u.to_string(), p.to_string())
                }
                None => (
                    entry.get("username")?.as_str()?.to_string(),
                    entry.get("password")?.as_str()?.to_string(),
                ),
            };
            let host = host
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let host = match host.as_str() {
                "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
                _ => host,
            };
            Some(Credential {
                host,
                username,
                password,
            })
        })
        .collect()
}

/// Pulls images into one containerd namespace.
#[derive(Debug, Clone)]
pub struct Puller {
    containerd: Containerd,
    registries: Registries,
    /// Where blobs are downloaded before they are written to containerd.
    scratch: PathBuf,
    /// What an image's target (index or manifest digest) resolves to on
    /// this platform: its config and top chain ID. Content is addressed by
    /// digest, so an entry never goes stale; a retag changes the target.
    /// Shared by clones.
    resolved: std::sync::Arc<std::sync::Mutex<HashMap<String, (ImageConfig, String)>>>,
}

/// Resolved images remembered at most (then the memory starts afresh).
const RESOLVED_MAX: usize = 256;

impl Puller {
    pub fn new(containerd: Containerd, registries: Registries, scratch: PathBuf) -> Self {
        Self {
            containerd,
            registries,
            scratch,
            resolved: std::sync::Arc::default(),
        }
    }

    /// The image if containerd has it and it is unpacked.
    pub async fn local(&self, image: &str) -> Result<Option<ImageInfo>, PullError> {
        let reference = Reference::parse(image)?;
        let name = reference.to_string();
        let Some(target) = self.containerd.image_get(&name).await? else {
            return Ok(None);
        };
        let image_id = format!("{}@{}", name_without_tag(&reference), target.digest);
        let known = self
            .resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&target.digest)
            .cloned();
        if let Some((config, top)) = known {
            // Two calls where resolving takes five: the start of every
            // container of an image already seen.
            if !self.containerd.snapshot_exists(&top).await? {
                return Ok(None);
            }
            return Ok(Some(ImageInfo {
                image_id,
                name,
                chain_id: top,
                config,
            }));
        }
        let Ok(Some(manifest_desc)) = self.platform_manifest_local(&target).await else {
            return Ok(None);
        };
        let Ok(raw) = self.containerd.content_read(&manifest_desc.digest).await else {
            return Ok(None);
        };
        let manifest = parse_manifest(&raw).map_err(|message| PullError::Unpack {
            reference: name.clone(),
            message,
        })?;
        let Ok(config_raw) = self.containerd.content_read(&manifest.config.digest).await else {
            return Ok(None);
        };
        let (config, diff_ids) =
            parse_config(&config_raw).map_err(|message| PullError::Unpack {
                reference: name.clone(),
                message,
            })?;
        let chain = chain_ids(&diff_ids);
        let Some(top) = chain.last().cloned() else {
            return Ok(None);
        };
        if !self.containerd.snapshot_exists(&top).await? {
            return Ok(None);
        }
        {
            let mut resolved = self
                .resolved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if resolved.len() >= RESOLVED_MAX {
                resolved.clear();
            }
            resolved.insert(target.digest.clone(), (config.clone(), top.clone()));
        }
        Ok(Some(ImageInfo {
            image_id,
            name,
            chain_id: top,
            config,
        }))
    }

    async fn platform_manifest_local(
        &self,
        target: &Descriptor,
    ) -> Result<Option<Descriptor>, ContainerdError> {
        if !is_index(&target.media_type) {
            return Ok(Some(target.clone()));
        }
        let raw = self.containerd.content_read(&target.digest).await?;
        Ok(serde_json::from_slice::<Value>(&raw)
            .ok()
            .and_then(|v| pick_platform(&v)))
    }

    /// Pulls `image` (always from the registry) and unpacks it.
    pub async fn pull(
        &self,
        image: &str,
        credentials: &[Credential],
    ) -> Result<ImageInfo, PullError> {
        let reference = Reference::parse(image)?;
        let name = reference.to_string();
        let endpoints = mirror::endpoints(&self.registries, &reference);
        let creds: Vec<Credential> = credentials.to_vec();
        let scratch = self.scratch.clone();
        let lease = format!("rudder-pull-{}", rand::random::<u64>());
        self.containerd
            .lease_create(&lease, Duration::from_secs(3600))
            .await?;
        let result = async {
            // Resolve and download on a blocking thread (the HTTP client is
            // synchronous), then hand the files to containerd.
            let r2 = reference.clone();
            let fetched =
                tokio::task::spawn_blocking(move || fetch_all(&r2, &endpoints, &creds, &scratch))
                    .await
                    .map_err(|e| PullError::Fetch {
                        reference: name.clone(),
                        message: e.to_string(),
                    })??;
            self.store(&reference, fetched, &lease).await
        }
        .await;
        let _ = self.containerd.lease_delete(&lease).await;
        result
    }

    async fn store(
        &self,
        reference: &Reference,
        fetched: Fetched,
        lease: &str,
    ) -> Result<ImageInfo, PullError> {
        let name = reference.to_string();
        let unpack_err = |message: String| PullError::Unpack {
            reference: name.clone(),
            message,
        };
        // Blobs bottom-up: layers and config first, then the manifest that
        // references them, then the index: a reference label always points
        // at content that is there.
        for blob in &fetched.blobs {
            self.write_blob(lease, blob, HashMap::new()).await?;
        }
        let mut labels = HashMap::new();
        labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            fetched.manifest.config.digest.clone(),
        );
        for (i, l) in fetched.manifest.layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.clone(),
            );
        }
        self.write_blob(lease, &fetched.manifest_blob, labels)
            .await?;
        if let Some(index) = &fetched.index_blob {
            let labels = HashMap::from([(
                "containerd.io/gc.ref.content.m.0".to_string(),
                fetched.manifest_blob.digest.clone(),
            )]);
            self.write_blob(lease, index, labels).await?;
        }
        let target = fetched
            .index_blob
            .as_ref()
            .unwrap_or(&fetched.manifest_blob);
        let target_desc = Descriptor {
            media_type: target.media_type.clone(),
            digest: target.digest.clone(),
            size: target.size as i64,
            annotations: HashMap::new(),
        };

        // Unpack.
        let config_raw =
            std::fs::read(&fetched.config_path).map_err(|e| unpack_err(e.to_string()))?;
        let (config, diff_ids) = parse_config(&config_raw).map_err(unpack_err)?;
        if diff_ids.len() != fetched.manifest.layers.len() {
            return Err(unpack_err(format!(
                "the config lists {} layers, the manifest {}",
                diff_ids.len(),
                fetched.manifest.layers.len()
            )));
        }
        let chain = chain_ids(&diff_ids);
        for (i, layer) in fetched.manifest.layers.iter().enumerate() {
            let chain_id = &chain[i];
            if self.containerd.snapshot_exists(chain_id).await? {
                continue;
            }
            let parent = if i == 0 {
                String::new()
            } else {
                chain[i - 1].clone()
            };
            let key = format!("extract-{} {chain_id}", rand::random::<u32>());
            let mounts = self
                .containerd
                .snapshot_prepare(Some(lease), &key, &parent, HashMap::new())
                .await?;
            let applied = match self
                .containerd
                .diff_apply(lease, layer.clone(), mounts)
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    let _ = self.containerd.snapshot_remove(&key).await;
                    return Err(e.into());
                }
            };
            if applied != diff_ids[i] {
                let _ = self.containerd.snapshot_remove(&key).await;
                return Err(unpack_err(format!(
                    "layer {} unpacked to {applied}, but the config says {}",
                    layer.digest, diff_ids[i]
                )));
            }
            match self
                .containerd
                .snapshot_commit(Some(lease), chain_id, &key, HashMap::new())
                .await
            {
                Ok(()) => {}
                // Another pull of an image sharing the layer won the race.
                Err(e) if e.is_already_exists() => {
                    let _ = self.containerd.snapshot_remove(&key).await;
                }
                Err(e) => return Err(e.into()),
            }
            self.containerd
                .content_add_labels(
                    &layer.digest,
                    HashMap::from([(
                        "containerd.io/uncompressed".to_string(),
                        diff_ids[i].clone(),
                    )]),
                )
                .await?;
        }
        let top = chain.last().cloned().unwrap_or_default();
        self.containerd
            .content_add_labels(
                &fetched.manifest.config.digest,
                HashMap::from([(
                    format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
                    top.clone(),
                )]),
            )
            .await?;
        // The image record last: it is what keeps all of it from the GC.
        self.containerd.image_put(&name, target_desc).await?;
        Ok(ImageInfo {
            image_id: format!("{}@{}", name_without_tag(reference), target.digest),
            name,
            chain_id: top,
            config,
        })
    }

    async fn write_blob(
        &self,
        lease: &str,
        blob: &Blob,
        labels: HashMap<String, String>,
    ) -> Result<(), PullError> {
        if self
            .containerd
            .content_labels(&blob.digest)
            .await?
            .is_some()
        {
            if !labels.is_empty() {
                self.containerd
                    .content_add_labels(&blob.digest, labels)
                    .await?;
            }
            let _ = std::fs::remove_file(&blob.path);
            return Ok(());
        }
        let file = std::fs::File::open(&blob.path).map_err(|e| PullError::Fetch {
            reference: blob.digest.clone(),
            message: format!("reopening the download {}: {e}", blob.path.display()),
        })?;
        let r = self
            .containerd
            .content_write(lease, &blob.digest, file, blob.size, labels)
            .await;
        let _ = std::fs::remove_file(&blob.path);
        r.map_err(Into::into)
    }
}

fn name_without_tag(r: &Reference) -> String {
    format!("{}/{}", r.registry, r.repository)
}

/// A downloaded, verified blob waiting in the scratch directory.
#[derive(Debug)]
struct Blob {
    digest: String,
    media_type: String,
    size: u64,
    path: PathBuf,
}

struct Fetched {
    index_blob: Option<Blob>,
    manifest_blob: Blob,
    manifest: Manifest,
    config_path: PathBuf,
    /// Config and layers.
    blobs: Vec<Blob>,
}

struct Session<'a> {
    http: ureq::Agent,
    endpoint: &'a Endpoint,
    credential: Option<&'a Credential>,
    token: Option<String>,
}

enum HttpFailure {
    /// The server answered with this status.
    Status(u16, String),
    /// No answer (connection refused, timeout, TLS).
    Transport(String),
}

impl std::fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(404, _) => write!(f, "not found"),
            Self::Status(401, _) => write!(f, "unauthorized: authentication required"),
            Self::Status(403, _) => write!(f, "denied: access forbidden"),
            Self::Status(s, body) => write!(f, "unexpected status {s}: {}", body.trim()),
            Self::Transport(m) => write!(f, "{m}"),
        }
    }
}

impl<'a> Session<'a> {
    fn new(endpoint: &'a Endpoint, credential: Option<&'a Credential>) -> Self {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(30)))
            .max_redirects(5)
            .build()
            .into();
        Self {
            http,
            endpoint,
            credential,
            token: None,
        }
    }

    /// GET with auth: on a 401 challenge, fetch a token (Bearer) or use
    /// basic credentials, then retry once.
    fn get(
        &mut self,
        url: &str,
        accept: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, HttpFailure> {
        for attempt in 0..2 {
            let mut req = self.http.get(url).header("Accept", accept);
            if let Some(t) = &self.token {
                req = req.header("Authorization", t);
            }
            let resp = req
                .call()
                .map_err(|e| HttpFailure::Transport(e.to_string()))?;
            let status = resp.status().as_u16();
            if status == 401 && attempt == 0 {
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                self.token = Some(self.authorize(&challenge)?);
                continue;
            }
            if (200..300).contains(&status) {
                return Ok(resp);
            }
            let body = resp
                .into_body()
                .with_config()
                .limit(4096)
                .read_to_string()
                .unwrap_or_default();
            return Err(HttpFailure::Status(status, body));
        }
        Err(HttpFailure::Status(401, String::new()))
    }

    fn basic(&self) -> Option<String> {
        self.credential.map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password))
            )
        })
    }

    fn authorize(&self, challenge: &str) -> Result<String, HttpFailure> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return self.basic().ok_or(HttpFailure::Status(
                401,
                "the registry wants credentials".into(),
            ));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(HttpFailure::Status(
                401,
                format!("unsupported auth challenge {challenge}"),
            ));
        }
        let params = parse_challenge(params);
        let realm = params
            .get("realm")
            .ok_or_else(|| HttpFailure::Status(401, "bearer challenge without realm".into()))?;
        let mut url = realm.clone();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for key in ["service", "scope"] {
            let value = match (key, params.get(key)) {
                (_, Some(v)) => v.clone(),
                ("scope", None) => format!("repository:{}:pull", self.endpoint.repository),
                _ => continue,
            };
            url.push(sep);
            url.push_str(key);
            url.push('=');
            url.push_str(&percent_encode(&value));
            sep = '&';
        }
        let mut req = self.http.get(&url);
        if let Some(b) = self.basic() {
            req = req.header("Authorization", &b);
        }
        let resp = req
            .call()
            .map_err(|e| HttpFailure::Transport(format!("token endpoint {realm}: {e}")))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .unwrap_or_default();
        if status != 200 {
            return Err(HttpFailure::Status(status, body));
        }
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| HttpFailure::Transport(format!("token endpoint {realm}: {e}")))?;
        let token = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .ok_or_else(|| {
                HttpFailure::Transport(format!("token endpoint {realm} gave no token"))
            })?;
        Ok(format!("Bearer {token}"))
    }

    /// Downloads a blob into `dir`, checking its size and digest.
    fn blob(&mut self, desc: &Descriptor, dir: &Path) -> Result<Blob, String> {
        let url = format!(
            "{}/v2/{}/blobs/{}",
            self.endpoint.base_url, self.endpoint.repository, desc.digest
        );
        let resp = self
            .get(&url, "*/*")
            .map_err(|e| format!("blob {}: {e}", desc.digest))?;
        let hex = desc
            .digest
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("unsupported digest {}", desc.digest))?;
        let path = dir.join(format!("{hex}.{}", rand::random::<u32>()));
        let mut file =
            std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut reader = resp.into_body().into_reader();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        let want = u64::try_from(desc.size).unwrap_or(0);
        let fail = |path: &Path, m: String| {
            let _ = std::fs::remove_file(path);
            m
        };
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| fail(&path, format!("blob {}: {e}", desc.digest)))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > want {
                return Err(fail(
                    &path,
                    format!("blob {} is larger than its descriptor says", desc.digest),
                ));
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(|e| fail(&path, format!("{}: {e}", path.display())))?;
        }
        let got = hex::encode(hasher.finalize());
        if total != want || got != hex {
            return Err(fail(
                &path,
                format!(
                    "blob {}: got {total} bytes with digest sha256:{got}",
                    desc.digest
                ),
            ));
        }
        Ok(Blob {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
            size: total,
            path,
        })
    }

    /// Fetches a manifest or index by tag or digest; returns its bytes and
    /// descriptor.
    fn manifest(&mut self, reference: &str) -> Result<(Vec<u8>, Descriptor), HttpFailure> {
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            self.endpoint.base_url, self.endpoint.repository
        );
        let accept = [
            MT_OCI_INDEX,
            MT_OCI_MANIFEST,
            MT_DOCKER_LIST,
            MT_DOCKER_MANIFEST,
        ]
        .join(", ");
        let resp = self.get(&url, &accept)?;
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let body = resp
            .into_body()
            .with_config()
            .limit(MAX_MANIFEST)
            .read_to_vec()
            .map_err(|e| HttpFailure::Transport(e.to_string()))?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        if reference.starts_with("sha256:") && reference != digest {
            return Err(HttpFailure::Transport(format!(
                "the manifest's digest is {digest}, not the {reference} asked for"
            )));
        }
        let media_type = if media_type.is_empty() || media_type == "application/json" {
            serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["mediaType"].as_str().map(str::to_string))
                .unwrap_or_else(|| MT_OCI_MANIFEST.to_string())
        } else {
            media_type
        };
        let size = body.len() as i64;
        Ok((
            body,
            Descriptor {
                media_type,
                digest,
                size,
                annotations: HashMap::new(),
            },
        ))
    }
}

fn parse_challenge(params: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((k, v)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (value, after) = if let Some(stripped) = v.strip_prefix('"') {
            match stripped.find('"') {
                Some(end) => (&stripped[..end], &stripped[end + 1..]),
                None => (stripped, ""),
            }
        } else {
            match v.find(',') {
                Some(end) => (&v[..end], &v[end..]),
                None => (v, ""),
            }
        };
        out.insert(k, value.to_string());
        rest = after.trim_start_matches(',').trim();
    }
    out
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn write_scratch(dir: &Path, desc: &Descriptor, body: &[u8]) -> Result<Blob, String> {
    let path = dir.join(format!(
        "{}.{}",
        desc.digest.trim_start_matches("sha256:"),
        rand::random::<u32>()
    ));
    std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Blob {
        digest: desc.digest.clone(),
        media_type: desc.media_type.clone(),
        size: body.len() as u64,
        path,
    })
}

/// Resolves and downloads an image from the first endpoint that has it.
fn fetch_all(
    reference: &Reference,
    endpoints: &[Endpoint],
    credentials: &[Credential],
    scratch: &Path,
) -> Result<Fetched, PullError> {
    std::fs::create_dir_all(scratch).map_err(|e| PullError::Fetch {
        reference: reference.to_string(),
        message: format!("{}: {e}", scratch.display()),
    })?;
    let mut failures = vec![];
    for endpoint in endpoints {
        let host = endpoint
            .base_url
            .split("://")
            .nth(1)
            .unwrap_or(&endpoint.base_url);
        // Credentials for the registry go to the registry (and to mirrors
        // only when configured for the mirror's own host).
        let credential = credentials
            .iter()
            .find(|c| c.host == host || (!endpoint.mirror && c.host == reference.registry));
        let mut session = Session::new(endpoint, credential);
        let (top_body, top) = match session.manifest(reference.manifest_reference()) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{}: {e}", endpoint.base_url));
                continue;
            }
        };
        let resolve = |message: String| PullError::Resolve {
            reference: reference.to_string(),
            message,
        };
        let (index_blob, manifest_body, manifest_desc) = if is_index(&top.media_type) {
            let v: Value = serde_json::from_slice(&top_body).map_err(|e| resolve(e.to_string()))?;
            let want = pick_platform(&v).ok_or_else(|| {
                resolve(format!(
                    "no manifest for linux/{} in the index",
                    platform_arch()
                ))
            })?;
            let (body, desc) = session
                .manifest(&want.digest)
                .map_err(|e| resolve(format!("{}: {e}", endpoint.base_url)))?;
            (
                Some(write_scratch(scratch, &top, &top_body).map_err(resolve)?),
                body,
                desc,
            )
        } else {
            (None, top_body, top)
        };
        let manifest = parse_manifest(&manifest_body).map_err(resolve)?;
        let manifest_blob =
            write_scratch(scratch, &manifest_desc, &manifest_body).map_err(resolve)?;
        let fetch = |message: String| PullError::Fetch {
            reference: reference.to_string(),
            message,
        };
        let config = session.blob(&manifest.config, scratch).map_err(fetch)?;
        let config_path = config.path.clone();
        // The config is read again after it is stored: keep a copy.
        let config_copy = scratch.join(format!("config.{}", rand::random::<u32>()));
        std::fs::copy(&config_path, &config_copy).map_err(|e| fetch(e.to_string()))?;
        let mut blobs = vec![config];
        for layer in &manifest.layers {
            blobs.push(session.blob(layer, scratch).map_err(fetch)?);
        }
        return Ok(Fetched {
            index_blob,
            manifest_blob,
            manifest,
            config_path: config_copy,
            blobs,
        });
    }
    Err(PullError::Resolve {
        reference: reference.to_string(),
        message: failures.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let d1 = format!("sha256:{}", "a".repeat(64));
        let d2 = format!("sha256:{}", "b".repeat(64));
        let c = chain_ids(&[d1.clone(), d2.clone()]);
        assert_eq!(c[0], d1);
        let want = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("{d1} {d2}")))
        );
        assert_eq!(c[1], want);
    }

    #[test]
    fn bearer_challenges_parse() {
        let p = parse_challenge(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
    }

    #[test]
    fn docker_config_json_in_both_shapes() {
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:s3cret");
        let j = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"127.0.0.1:5001":{{"username":"u","password":"p"}}}}}}"#
        );
        let mut c = parse_docker_config(j.as_bytes());
        c.sort_by(|a, b| a.host.cmp(&b.host));
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].host, "127.0.0.1:5001");
        assert_eq!(
            (
                c[1].host.as_str(),
                c[1].username.as_str(),
                c[1].password.as_str()
            ),
            ("docker.io", "bob", "s3cret")
        );
        assert!(parse_docker_config(b"not json").is_empty());
    }

    #[test]
    fn image_configs_and_their_errors() {
        let (c, d) = parse_config(
            br#"{"config":{"Entrypoint":["/echo"],"Cmd":["-p","80"],"Env":["PATH=/bin"],"WorkingDir":"/w","StopSignal":"SIGQUIT"},"rootfs":{"type":"layers","diff_ids":["sha256:x"]}}"#,
        )
        .unwrap();
        assert_eq!(c.entrypoint, ["/echo"]);
        assert_eq!(c.cmd, ["-p", "80"]);
        assert_eq!(c.stop_signal, "SIGQUIT");
        assert_eq!(d, ["sha256:x"]);
        assert!(parse_config(b"{}").is_err());
        assert!(parse_config(b"[").is_err());
    }

    #[test]
    fn platform_choice_from_an_index() {
        let v: Value = serde_json::from_str(&format!(
            r#"{{"manifests":[{{"mediaType":"{MT_OCI_MANIFEST}","digest":"sha256:arm","size":1,"platform":{{"os":"linux","architecture":"arm"}}}},
                {{"mediaType":"{MT_OCI_MANIFEST}","digest":"sha256:me","size":2,"platform":{{"os":"linux","architecture":"{}"}}}}]}}"#,
            platform_arch()
        ))
        .unwrap();
        assert_eq!(pick_platform(&v).unwrap().digest, "sha256:me");
    }
}
