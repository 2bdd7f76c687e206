//! `cargo xtask images`: builds the OCI images that tests and examples use,
//! from Debian's static busybox and this workspace's echo server (and, for
//! the kopf operator test, the host's Python: `python_image.rs`), and pushes
//! them to the local registry. Layers are built deterministically (fixed
//! times and owners), so digests are stable and a re-run uploads nothing.

use std::{io::Write as _, path::Path, process::Command};

use anyhow::{Context as _, bail};
use flate2::{Compression, write::GzEncoder};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::{
    registry::{self, Registry},
    util,
};

const BUSYBOX: &str = "/bin/busybox";
pub(crate) const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Tags of each image, as manifests name them through the docker.io mirror.
pub(crate) const BUSYBOX_TAGS: &[&str] = &["latest", "1.28", "1.36"];
pub(crate) const NGINX_TAGS: &[&str] = &["latest", "1.14.2", "1.16.1", "1.25"];

/// A compressed layer and the digests that name it.
pub(crate) struct Layer {
    pub(crate) blob: Vec<u8>,
    digest: String,
    diff_id: String,
}

pub(crate) fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// A file system entry of a layer.
pub(crate) enum Entry<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, Vec<u8>),
    Symlink(&'a str, &'a str),
}

pub(crate) fn layer(mut entries: Vec<Entry<'_>>) -> anyhow::Result<Layer> {
    let path = |e: &Entry<'_>| match e {
        Entry::Dir(p, _) | Entry::File(p, _, _) | Entry::Symlink(p, _) => p.to_string(),
    };
    entries.sort_by_key(path);
    let mut tar = tar::Builder::new(Vec::new());
    for e in &entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                tar.append_data(&mut h, format!("{p}/"), std::io::empty())?;
            }
            Entry::File(p, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, p, data.as_slice())?;
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                tar.append_link(&mut h, p, target)?;
            }
        }
    }
    let raw = tar.into_inner()?;
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&raw)?;
    let blob = gz.finish()?;
    Ok(Layer {
        digest: sha256(&blob),
        diff_id: sha256(&raw),
        blob,
    })
}

/// `nslookup` as Docker Hub's busybox behaves for `until nslookup svc; do
/// …; done` (the init-container example of the Kubernetes documentation):
/// Debian's busybox 1.35 exits 1 when any search domain answers NXDOMAIN,
/// even after printing the address; 1.28 resolves through the C library and
/// exits 0 once the name is found. So: busybox's answer, and success when
/// it names an address.
///
/// Debian's busybox shell runs its own applets before searching `PATH`, so
/// a script named `nslookup` would never run: the image's busybox has the
/// applet renamed (`nslook35`, [`RENAMED`]: same length, same place in the
/// sorted name table), which the script calls.
const NSLOOKUP: &str = r#"#!/bin/sh
out=$(/bin/busybox nslook35 "$@" 2>&1)
rc=$?
printf '%s\n' "$out"
if [ "$rc" -ne 0 ] && printf '%s\n' "$out" | /bin/busybox grep -q '^Name:'; then
    exit 0
fi
exit "$rc"
"#;

/// `wget` as Docker Hub's busybox takes it: `-T SEC` and `--timeout=SEC`
/// (`wget --spider --timeout=1 nginx` is how the Kubernetes documentation
/// checks a NetworkPolicy). Debian's static build has no timeout support:
/// `--timeout` is refused and `-T` crashes it. So the time limit is kept
/// by the `timeout` applet around the (renamed, see [`NSLOOKUP`]) applet,
/// and a timeout exits 1 saying so, as busybox's own does.
const WGET: &str = r#"#!/bin/sh
t=
n=$#
i=0
while [ "$i" -lt "$n" ]; do
    a=$1
    shift
    i=$((i + 1))
    case "$a" in
        -T | --timeout) t=$1; shift; i=$((i + 1)) ;;
        -T*) t=${a#-T} ;;
        --timeout=*) t=${a#--timeout=} ;;
        *) set -- "$@" "$a" ;;
    esac
done
if [ -z "$t" ]; then
    exec /bin/busybox wge5 "$@"
fi
# The shell's "Terminated" notice goes nowhere (it is printed to the
# stderr of the command waited for); wget's own errors reach stderr
# through fd 3.
exec 3>&2
/bin/busybox timeout "$t" /bin/busybox sh -c 'exec /bin/busybox wge5 "$@" 2>&3' wget "$@" 2>/dev/null
rc=$?
if [ "$rc" -eq 143 ] || [ "$rc" -eq 124 ]; then
    echo "wget: download timed out" >&2
    exit 1
fi
exit "$rc"
"#;

/// Applets the image's busybox has renamed (same length, same place in the
/// sorted name table) so that a script of the same name runs instead.
const RENAMED: [(&[u8], &[u8], &str); 2] = [
    (b"\0nslookup\0", b"\0nslook35\0", NSLOOKUP),
    (b"\0wget\0", b"\0wge5\0", WGET),
];

/// `busybox` with the applets of [`RENAMED`] renamed: each name occurs
/// once, in the applet name table.
fn rename_applets(mut bin: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    for (name, new, _) in RENAMED {
        let at: Vec<usize> = bin
            .windows(name.len())
            .enumerate()
            .filter(|(_, w)| *w == name)
            .map(|(i, _)| i)
            .collect();
        let [at] = at[..] else {
            bail!(
                "{BUSYBOX}: the applet name {} occurs {} times, not once",
                String::from_utf8_lossy(&name[1..name.len() - 1]),
                at.len()
            );
        };
        bin[at..at + name.len()].copy_from_slice(new);
    }
    Ok(bin)
}

/// Debian's static busybox with a symlink per applet (`nslookup` and `wget`
/// scripts, [`RENAMED`]) and a minimal /etc.
pub(crate) fn busybox_layer() -> anyhow::Result<Layer> {
    let bin = std::fs::read(BUSYBOX).with_context(|| {
        format!("cannot read {BUSYBOX}: install busybox-static (`cargo xtask setup`)")
    })?;
    let bin = rename_applets(bin)?;
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .context("busybox --list")?;
    let applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect();
    if !applets.iter().any(|a| a == "sh") || !applets.iter().any(|a| a == "nslookup") {
        bail!("{BUSYBOX} lacks the sh or nslookup applet");
    }
    let links: Vec<String> = applets.iter().map(|a| format!("bin/{a}")).collect();
    let mut entries = vec![
        Entry::Dir("bin", 0o755),
        Entry::Dir("dev", 0o755),
        Entry::Dir("etc", 0o755),
        Entry::Dir("proc", 0o555),
        Entry::Dir("sys", 0o555),
        Entry::Dir("root", 0o700),
        Entry::Dir("tmp", 0o1777),
        Entry::Dir("usr", 0o755),
        Entry::Dir("usr/bin", 0o755),
        Entry::Dir("var", 0o755),
        Entry::Dir("var/run", 0o755),
        Entry::File("bin/busybox", 0o755, bin),
        Entry::Symlink("usr/bin/env", "/bin/busybox"),
        Entry::File(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
        ),
        Entry::File(
            "etc/group",
            0o644,
            b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        ),
    ];
    let scripts: Vec<(String, &str)> = RENAMED
        .iter()
        .map(|(name, _, script)| {
            let name = String::from_utf8_lossy(&name[1..name.len() - 1]).into_owned();
            (format!("bin/{name}"), *script)
        })
        .collect();
    entries.extend(
        links
            .iter()
            .filter(|l| !scripts.iter().any(|(s, _)| s == *l))
            .map(|l| Entry::Symlink(l, "/bin/busybox")),
    );
    for (path, script) in &scripts {
        entries.push(Entry::File(path, 0o755, script.as_bytes().to_vec()));
    }
    layer(entries)
}

/// The echo server, linked statically so it needs nothing from the image.
fn echo_binary(root: &Path) -> anyhow::Result<Vec<u8>> {
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    util::step("building the echo server (static)");
    util::run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--quiet",
                "--release",
                "--package",
                "rudder-echo",
                "--target",
                &triple,
            ])
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    )?;
    let bin_path = util::target_dir(root)
        .join(&triple)
        .join("release")
        .join("rudder-echo");
    std::fs::read(&bin_path).with_context(|| format!("cannot read {}", bin_path.display()))
}

pub(crate) fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Pushes an image made of `layers` with the given `config` section.
fn push_image(
    reg: &Registry,
    repo: &str,
    tags: &[&str],
    layers: &[&Layer],
    image_config: &serde_json::Value,
) -> anyhow::Result<()> {
    let manifest = push_content(reg, repo, layers, image_config)?;
    for tag in tags {
        reg.push_manifest(repo, tag, MANIFEST_TYPE, &manifest)?;
    }
    println!("    {repo}:{{{}}} {}", tags.join(","), sha256(&manifest));
    Ok(())
}

/// Pushes the layers and config of an image; its manifest (not pushed).
pub(crate) fn push_content(
    reg: &Registry,
    repo: &str,
    layers: &[&Layer],
    image_config: &serde_json::Value,
) -> anyhow::Result<Vec<u8>> {
    let config = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": oci_arch(),
        "os": "linux",
        "config": image_config,
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>() },
        "history": layers.iter().map(|_| json!({"created": "1970-01-01T00:00:00Z", "created_by": "cargo xtask images"})).collect::<Vec<_>>(),
    });
    let config = serde_json::to_vec(&config)?;
    let config_digest = sha256(&config);
    for l in layers {
        reg.push_blob(repo, &l.digest, &l.blob)?;
    }
    reg.push_blob(repo, &config_digest, &config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": { "mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len() },
        "layers": layers.iter().map(|l| json!({"mediaType": LAYER_TYPE, "digest": l.digest, "size": l.blob.len()})).collect::<Vec<_>>(),
    });
    Ok(serde_json::to_vec(&manifest)?)
}

/// Builds and pushes the images; returns whether it had to start the registry.
pub(crate) fn run(root: &Path, addr: &str) -> anyhow::Result<bool> {
    let started = registry::ensure_running(root, addr)?;
    let busybox = busybox_layer()?;
    let echo_bin = echo_binary(root)?;
    let echo = layer(vec![Entry::File("rudder-echo", 0o755, echo_bin)])?;
    util::step(&format!("pushing images to {addr}"));
    let reg = Registry::new(addr);
    push_image(
        &reg,
        "library/busybox",
        BUSYBOX_TAGS,
        &[&busybox],
        &json!({ "Env": [PATH_ENV], "Cmd": ["sh"] }),
    )?;
    push_image(
        &reg,
        "rudder/echo",
        &["latest"],
        &[&busybox, &echo],
        &json!({
            "Env": [PATH_ENV, "ECHO_VERSION=latest"],
            "Entrypoint": ["/rudder-echo"],
            "ExposedPorts": { "8080/tcp": {}, "9000/tcp": {}, "9000/udp": {} },
        }),
    )?;
    for tag in NGINX_TAGS {
        push_image(
            &reg,
            "library/nginx",
            &[tag],
            &[&busybox, &echo],
            &json!({
                "Env": [PATH_ENV, format!("ECHO_VERSION={tag}"), "ECHO_PAGE=nginx"],
                "Entrypoint": ["/rudder-echo", "--http-port", "80"],
                "ExposedPorts": { "80/tcp": {}, "9000/tcp": {}, "9000/udp": {} },
            }),
        )?;
    }
    match crate::python_image::python_layer(root)? {
        Some(python) => push_image(
            &reg,
            "rudder/kopf",
            &["latest"],
            &[&busybox, &python],
            &json!({
                "Env": [
                    PATH_ENV,
                    format!("PYTHONPATH=/{}", crate::python_image::SITE_PACKAGES),
                    "PYTHONUNBUFFERED=1",
                ],
                "Entrypoint": ["python3"],
            }),
        )?,
        None => {
            println!(
                "    rudder/kopf: skipped, no Python environment (cargo xtask setup makes it)"
            );
        }
    }
    println!("catalog of {addr}: {}", reg.catalog()?.join(" "));
    Ok(started)
}
