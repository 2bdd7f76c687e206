//! Image manifests and configurations as registries and containerd hold
//! them: media types, the platform's manifest of an index, the runtime part
//! of a configuration and the layers' chain IDs. Pure: no I/O.

use std::collections::HashMap;

use containerd_client::types::Descriptor;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::pull::ImageConfig;

pub(super) const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(super) const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(super) const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(super) const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A parsed manifest: config and layers.
pub(super) struct Manifest {
    pub(super) config: Descriptor,
    pub(super) layers: Vec<Descriptor>,
}

pub(super) fn is_index(media_type: &str) -> bool {
    media_type == MT_OCI_INDEX || media_type == MT_DOCKER_LIST
}

/// The platform this agent runs containers for, in OCI terms.
pub(super) fn platform_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The manifest for this platform in an index.
pub(super) fn pick_platform(index: &Value) -> Option<Descriptor> {
    let manifests = index.get("manifests")?.as_array()?;
    let arch = platform_arch();
    manifests
        .iter()
        .find(|m| {
            let p = &m["platform"];
            p["os"].as_str() == Some("linux") && p["architecture"].as_str() == Some(arch)
        })
        .and_then(descriptor)
}

pub(super) fn descriptor(v: &Value) -> Option<Descriptor> {
    Some(Descriptor {
        media_type: v.get("mediaType")?.as_str()?.to_string(),
        digest: v.get("digest")?.as_str()?.to_string(),
        size: v.get("size")?.as_i64()?,
        annotations: HashMap::new(),
    })
}

pub(super) fn parse_manifest(raw: &[u8]) -> Result<Manifest, String> {
    let v: Value =
        serde_json::from_slice(raw).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    let config = v
        .get("config")
        .and_then(descriptor)
        .ok_or("the manifest has no config descriptor")?;
    let layers = v
        .get("layers")
        .and_then(Value::as_array)
        .ok_or("the manifest has no layers")?
        .iter()
        .map(|l| descriptor(l).ok_or_else(|| "a layer descriptor is malformed".to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Manifest { config, layers })
}

/// The image configuration's runtime defaults and its layers' diffIDs.
pub fn parse_config(raw: &[u8]) -> Result<(ImageConfig, Vec<String>), String> {
    let v: Value =
        serde_json::from_slice(raw).map_err(|e| format!("the image config is not JSON: {e}"))?;
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let c = &v["config"];
    let config = ImageConfig {
        entrypoint: strings(&c["Entrypoint"]),
        cmd: strings(&c["Cmd"]),
        env: strings(&c["Env"]),
        working_dir: c["WorkingDir"].as_str().unwrap_or_default().to_string(),
        user: c["User"].as_str().unwrap_or_default().to_string(),
        stop_signal: c["StopSignal"].as_str().unwrap_or_default().to_string(),
    };
    let diff_ids = strings(&v["rootfs"]["diff_ids"]);
    if diff_ids.is_empty() {
        return Err("the image config lists no layers (rootfs.diff_ids)".into());
    }
    Ok((config, diff_ids))
}

/// OCI chain IDs: `chain[0] = diff[0]`, `chain[n] = sha256(chain[n-1] + " " + diff[n])`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

// ---- the registry client (blocking) ----
