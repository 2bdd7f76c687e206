//! Pod volumes on the node: emptyDir, hostPath, configMap and secret, set
//! up under the pod's directory and bind-mounted into containers.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret};
use kube::Api;

use super::spec::MountSpec;

/// A volume that could not be set up: shown as a `FailedMount` event and
/// keeps the container in `ContainerCreating`.
#[derive(Debug, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
pub(crate) struct VolumeError {
    pub volume: String,
    pub message: String,
}

fn verr(volume: &str, message: impl Into<String>) -> VolumeError {
    VolumeError {
        volume: volume.to_string(),
        message: message.into(),
    }
}

/// Writes a configMap or secret volume the way the kubelet's atomic
/// writer does: the files go into a fresh `..<timestamp>` directory, the
/// `..data` symlink is switched to it in one rename, and each top-level
/// entry is a symlink through `..data`. A container reading the volume sees
/// the old set or the new one, never a mix; unchanged content is left alone.
fn write_items(
    dir: &Path,
    volume: &str,
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
    kind: &str,
    name: &str,
) -> Result<(), VolumeError> {
    let io = |e: std::io::Error| verr(volume, e.to_string());
    std::fs::create_dir_all(dir).map_err(io)?;
    let entries: Vec<(String, Vec<u8>, i32)> = match items {
        Some(items) => items
            .iter()
            .map(|i| match data.get(&i.key) {
                Some(v) => Ok((i.path.clone(), v.clone(), i.mode.unwrap_or(default_mode))),
                None => Err(verr(
                    volume,
                    format!("{kind} references non-existent config key: {}", i.key),
                )),
            })
            .collect::<Result<_, _>>()?,
        None => data
            .into_iter()
            .map(|(k, v)| (k, v, default_mode))
            .collect(),
    };
    for (rel, _, _) in &entries {
        if rel.is_empty()
            || rel.starts_with('/')
            || rel.starts_with("..")
            || rel.split('/').any(|c| c == "..")
        {
            return Err(verr(
                volume,
                format!("invalid path {rel:?} in {kind} {name}"),
            ));
        }
    }
    let data_link = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data_link) {
        let cur = dir.join(current);
        let same = entries.iter().all(|(rel, value, mode)| {
            let p = cur.join(rel);
            std::fs::read(&p).is_ok_and(|v| v == *value)
                && std::fs::metadata(&p)
                    .is_ok_and(|m| m.permissions().mode() & 0o7777 == (*mode as u32 & 0o7777))
        }) && count_files(&cur) == entries.len();
        if same {
            return Ok(());
        }
    }
    let stamp = jiff::Timestamp::now()
        .strftime("..%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let fresh = dir.join(&stamp);
    std::fs::create_dir_all(&fresh).map_err(io)?;
    for (rel, value, mode) in &entries {
        let p = fresh.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&p, value).map_err(io)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode as u32 & 0o7777))
            .map_err(io)?;
    }
    let old = std::fs::read_link(&data_link).ok();
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link).map_err(io)?;
    std::fs::rename(&tmp_link, &data_link).map_err(io)?;
    // Top-level names through ..data; names no longer there go.
    let top: std::collections::BTreeSet<String> = entries
        .iter()
        .filter_map(|(rel, _, _)| rel.split('/').next().map(str::to_string))
        .collect();
    for t in &top {
        let link = dir.join(t);
        if std::fs::read_link(&link).is_err() {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(PathBuf::from("..data").join(t), &link).map_err(io)?;
        }
    }
    for e in std::fs::read_dir(dir).map_err(io)?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.starts_with("..") && !top.contains(&n) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { count_files(&p) } else { 1 }
        })
        .sum()
}

/// Sets up every volume of the pod; returns each volume's host path.
pub(crate) async fn setup(
    client: &kube::Client,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default()
    {
        let dir = pod_dir.join("volumes").join(&v.name);
        if let Some(h) = &v.host_path {
            let p = PathBuf::from(&h.path);
            let t = h.type_.clone().unwrap_or_default();
            let exists = p.exists();
            match t.as_str() {
                "DirectoryOrCreate" if !exists => {
                    std::fs::create_dir_all(&p).map_err(|e| verr(&v.name, e.to_string()))?;
                    let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755));
                }
                "FileOrCreate" if !exists => {
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| verr(&v.name, e.to_string()))?;
                    }
                    std::fs::write(&p, b"").map_err(|e| verr(&v.name, e.to_string()))?;
                    let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644));
                }
                "Directory" if !p.is_dir() => {
                    return Err(verr(
                        &v.name,
                        format!("hostPath type check failed: {} is not a directory", h.path),
                    ));
                }
                "File" if !p.is_file() => {
                    return Err(verr(
                        &v.name,
                        format!("hostPath type check failed: {} is not a file", h.path),
                    ));
                }
                "Socket" | "CharDevice" | "BlockDevice" => {
                    use std::os::unix::fs::FileTypeExt as _;
                    let ft = std::fs::metadata(&p).map(|m| m.file_type());
                    let ok = ft.is_ok_and(|ft| match t.as_str() {
                        "Socket" => ft.is_socket(),
                        "CharDevice" => ft.is_char_device(),
                        _ => ft.is_block_device(),
                    });
                    if !ok {
                        return Err(verr(
                            &v.name,
                            format!("hostPath type check failed: {} is not a {t}", h.path),
                        ));
                    }
                }
                _ => {}
            }
            out.insert(v.name.clone(), p);
        } else if let Some((kind, name, items, mode, optional)) = v
            .config_map
            .as_ref()
            .map(|c| {
                (
                    "configmap",
                    c.name.clone(),
                    c.items.as_ref(),
                    c.default_mode,
                    c.optional,
                )
            })
            .or_else(|| {
                v.secret.as_ref().map(|s| {
                    let name = s.secret_name.clone().unwrap_or_default();
                    ("secret", name, s.items.as_ref(), s.default_mode, s.optional)
                })
            })
        {
            let fetched = if kind == "configmap" {
                Api::<ConfigMap>::namespaced(client.clone(), &ns)
                    .get_opt(&name)
                    .await
                    .map(|o| {
                        o.map(|cm| {
                            let mut data: BTreeMap<String, Vec<u8>> = cm
                                .data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.into_bytes()))
                                .collect();
                            data.extend(
                                cm.binary_data
                                    .unwrap_or_default()
                                    .into_iter()
                                    .map(|(k, b)| (k, b.0)),
                            );
                            data
                        })
                    })
            } else {
                Api::<Secret>::namespaced(client.clone(), &ns)
                    .get_opt(&name)
                    .await
                    .map(|o| {
                        o.map(|sec| {
                            let mut data: BTreeMap<String, Vec<u8>> = sec
                                .data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.0))
                                .collect();
                            data.extend(
                                sec.string_data
                                    .unwrap_or_default()
                                    .into_iter()
                                    .map(|(k, v)| (k, v.into_bytes())),
                            );
                            data
                        })
                    })
            };
            match fetched.map_err(|e| verr(&v.name, e.to_string()))? {
                Some(data) => write_items(
                    &dir,
                    &v.name,
                    data,
                    items,
                    mode.unwrap_or(0o644),
                    kind,
                    &name,
                )?,
                None if optional == Some(true) => {
                    std::fs::create_dir_all(&dir).map_err(|e| verr(&v.name, e.to_string()))?;
                }
                None => return Err(verr(&v.name, format!("{kind} \"{name}\" not found"))),
            }
            out.insert(v.name.clone(), dir);
        } else {
            // emptyDir, and volumes with no source (which default to it).
            std::fs::create_dir_all(&dir).map_err(|e| verr(&v.name, e.to_string()))?;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
            out.insert(v.name.clone(), dir);
        }
    }
    Ok(out)
}

/// The container's volume mounts as bind mounts (with `subPath`).
pub(crate) fn mounts(
    c: &Container,
    volumes: &BTreeMap<String, PathBuf>,
) -> Result<Vec<MountSpec>, VolumeError> {
    let mut out = vec![];
    for m in c.volume_mounts.iter().flatten() {
        let base = volumes
            .get(&m.name)
            .ok_or_else(|| verr(&m.name, "no such volume in the pod"))?;
        let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                if sub.starts_with('/') || sub.split('/').any(|c| c == "..") {
                    return Err(verr(&m.name, format!("invalid subPath {sub:?}")));
                }
                let p = base.join(sub);
                if !p.exists() {
                    std::fs::create_dir_all(&p).map_err(|e| verr(&m.name, e.to_string()))?;
                }
                p
            }
            None => base.clone(),
        };
        out.push(MountSpec {
            destination: m.mount_path.clone(),
            source,
            read_only: m.read_only == Some(true),
        });
    }
    Ok(out)
}

/// Decodes docker config JSON from a pod's `imagePullSecrets`.
pub(crate) async fn pull_credentials(
    client: &kube::Client,
    pod: &Pod,
) -> Vec<crate::image::Credential> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut out = vec![];
    for r in pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default()
    {
        if let Ok(Some(s)) = api.get_opt(&r.name).await {
            let data = s.data.unwrap_or_default();
            for key in [".dockerconfigjson", ".dockercfg"] {
                if let Some(b) = data.get(key) {
                    out.extend(crate::image::pull::parse_docker_config(&b.0));
                }
            }
        }
    }
    out
}
