//! The caller's side of CNI (what libcni does for the kubelet): load the
//! network configuration list from the conf dir, find plugin binaries in the
//! bin dirs, run ADD through the chain feeding each result to the next as
//! `prevResult`, cache the final result, and run DEL (reverse order) and
//! CHECK with it. STATUS and GC are sent only when the list's version is
//! 1.1.0 or newer, as the spec says.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::{Map, Value, json};

use crate::types::Attachment;

/// A loaded network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfList {
    pub path: PathBuf,
    pub cni_version: String,
    pub name: String,
    pub disable_check: bool,
    pub plugins: Vec<Map<String, Value>>,
}

/// One attachment to make or remove.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS`, e.g. `K8S_POD_NAMESPACE=default`.
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `bandwidth`, …), given to the
    /// plugins that declare the capability, as `runtimeConfig`.
    pub capability_args: Map<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no network configuration in {}: expected a *.conflist, *.conf or *.json file", .0.display())]
    NoConfig(PathBuf),
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid network configuration {}: {why}", .path.display())]
    Invalid { path: PathBuf, why: String },
    #[error("failed to find plugin {plugin:?} in path {dirs:?}")]
    NotFound { plugin: String, dirs: Vec<PathBuf> },
    #[error("cannot run plugin {plugin:?}: {source}")]
    Exec {
        plugin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin {plugin:?} {command} failed (code {code}): {msg}")]
    Plugin {
        plugin: String,
        command: String,
        code: u32,
        msg: String,
    },
    #[error("plugin {plugin:?} {command}: unreadable output: {why}")]
    Output {
        plugin: String,
        command: String,
        why: String,
    },
    #[error("result cache {}: {source}", .path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Loads the first configuration (in lexical order) from `conf_dir`, as the
/// kubelet's CNI manager does. A single-plugin `.conf` becomes a list of one.
pub fn load_conflist(conf_dir: &Path) -> Result<ConfList, RuntimeError> {
    let read_err = |source| RuntimeError::Read {
        path: conf_dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(conf_dir)
        .map_err(read_err)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    let path = files
        .into_iter()
        .next()
        .ok_or_else(|| RuntimeError::NoConfig(conf_dir.to_path_buf()))?;
    let text = std::fs::read_to_string(&path).map_err(|source| RuntimeError::Read {
        path: path.clone(),
        source,
    })?;
    parse_conflist(&text, &path)
}

/// Parses a list (or a single-plugin config).
pub fn parse_conflist(text: &str, path: &Path) -> Result<ConfList, RuntimeError> {
    let invalid = |why: String| RuntimeError::Invalid {
        path: path.to_path_buf(),
        why,
    };
    let v: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| invalid("not a JSON object".into()))?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("name is missing".into()))?
        .to_string();
    let cni_version = obj
        .get("cniVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("cniVersion is missing".into()))?
        .to_string();
    let plugins = match obj.get("plugins") {
        Some(Value::Array(ps)) => ps
            .iter()
            .map(|p| {
                p.as_object()
                    .filter(|p| p.get("type").and_then(Value::as_str).is_some())
                    .cloned()
                    .ok_or_else(|| invalid("every plugin needs a \"type\"".into()))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(invalid("plugins is not a list".into())),
        None if obj.contains_key("type") => vec![obj.clone()],
        None => return Err(invalid("neither plugins nor type".into())),
    };
    if plugins.is_empty() {
        return Err(invalid("plugins is empty".into()));
    }
    Ok(ConfList {
        path: path.to_path_buf(),
        cni_version,
        name,
        disable_check: obj
            .get("disableCheck")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        plugins,
    })
}

/// Whether `v` is at least `min` (dotted numeric versions).
fn version_at_least(v: &str, min: &str) -> bool {
    let parse = |s: &str| -> Vec<u32> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(v) >= parse(min)
}

/// Runs plugins for one node.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub bin_dirs: Vec<PathBuf>,
    /// Where final ADD results are kept for DEL and CHECK.
    pub cache_dir: PathBuf,
}

impl Runtime {
    fn find(&self, plugin: &str) -> Result<PathBuf, RuntimeError> {
        self.bin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| RuntimeError::NotFound {
                plugin: plugin.to_string(),
                dirs: self.bin_dirs.clone(),
            })
    }

    fn cache_path(&self, list: &ConfList, rc: &RuntimeConf) -> PathBuf {
        self.cache_dir
            .join("results")
            .join(format!("{}-{}-{}", list.name, rc.container_id, rc.ifname))
    }

    /// The config one plugin gets: its entry plus what the runtime injects.
    fn plugin_config(
        list: &ConfList,
        plugin: &Map<String, Value>,
        rc: &RuntimeConf,
        prev: Option<&Value>,
        extra: &[(&str, Value)],
    ) -> Value {
        let mut conf = plugin.clone();
        conf.insert("cniVersion".into(), json!(list.cni_version));
        conf.insert("name".into(), json!(list.name));
        if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
            let rt: Map<String, Value> = caps
                .iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .filter_map(|(k, _)| Some((k.clone(), rc.capability_args.get(k)?.clone())))
                .collect();
            if !rt.is_empty() {
                conf.insert("runtimeConfig".into(), Value::Object(rt));
            }
        }
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        for (k, v) in extra {
            conf.insert((*k).to_string(), v.clone());
        }
        Value::Object(conf)
    }

    fn exec(
        &self,
        command: &str,
        plugin: &Map<String, Value>,
        config: &Value,
        rc: Option<&RuntimeConf>,
    ) -> Result<Option<Value>, RuntimeError> {
        let ty = plugin
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let bin = self.find(&ty)?;
        let path = std::env::join_paths(&self.bin_dirs).unwrap_or_default();
        let mut cmd = Command::new(&bin);
        // Plugins get the runtime's environment (they exec iptables, IPAM
        // plugins, …) with the CNI variables of this call only.
        for k in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"] {
            cmd.env_remove(k);
        }
        cmd.env("CNI_COMMAND", command)
            .env("CNI_PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(rc) = rc {
            // As containerd and the kubelet do: the reference plugins refuse
            // arguments they do not know unless told to ignore them.
            let args: Vec<String> = std::iter::once("IgnoreUnknown=1".to_string())
                .chain(rc.args.iter().map(|(k, v)| format!("{k}={v}")))
                .collect();
            cmd.env("CNI_CONTAINERID", &rc.container_id)
                .env("CNI_NETNS", &rc.netns)
                .env("CNI_IFNAME", &rc.ifname)
                .env("CNI_ARGS", args.join(";"));
        }
        let exec_err = |source| RuntimeError::Exec {
            plugin: ty.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(exec_err)?;
        let input = serde_json::to_vec(config).expect("serializable");
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin may exit without reading its input (VERSION).
            let _ = stdin.write_all(&input);
        }
        let out = child.wait_with_output().map_err(exec_err)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let err: Value = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
            return Err(RuntimeError::Plugin {
                plugin: ty,
                command: command.to_string(),
                code: err.get("code").and_then(Value::as_u64).unwrap_or(0) as u32,
                msg: err.get("msg").and_then(Value::as_str).map_or_else(
                    || {
                        format!(
                            "{} (stderr: {})",
                            out.status,
                            String::from_utf8_lossy(&out.stderr).trim()
                        )
                    },
                    str::to_string,
                ),
            });
        }
        if stdout.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(stdout.trim())
            .map(Some)
            .map_err(|e| RuntimeError::Output {
                plugin: ty,
                command: command.to_string(),
                why: e.to_string(),
            })
    }

    /// ADD through the chain; the final result is cached and returned. If a
    /// plugin fails, the ones before it are unwound with DEL.
    pub fn add(&self, list: &ConfList, rc: &RuntimeConf) -> Result<Value, RuntimeError> {
        let mut prev: Option<Value> = None;
        for (i, plugin) in list.plugins.iter().enumerate() {
            let config = Self::plugin_config(list, plugin, rc, prev.as_ref(), &[]);
            match self.exec("ADD", plugin, &config, Some(rc)) {
                Ok(Some(result)) => prev = Some(result),
                Ok(None) => {}
                Err(e) => {
                    for p in list.plugins[..=i].iter().rev() {
                        let c = Self::plugin_config(list, p, rc, prev.as_ref(), &[]);
                        let _ = self.exec("DEL", p, &c, Some(rc));
                    }
                    return Err(e);
                }
            }
        }
        let result = prev.unwrap_or_else(|| json!({"cniVersion": list.cni_version}));
        let path = self.cache_path(list, rc);
        let cache = json!({"kind": "cniCacheV1", "containerId": rc.container_id,
            "ifName": rc.ifname, "networkName": list.name, "result": result});
        crate::subnet::write_atomic(&path, cache.to_string().as_bytes())
            .map_err(|source| RuntimeError::Cache { path, source })?;
        Ok(result)
    }

    fn cached(&self, list: &ConfList, rc: &RuntimeConf) -> Option<Value> {
        let text = std::fs::read_to_string(self.cache_path(list, rc)).ok()?;
        serde_json::from_str::<Value>(&text)
            .ok()?
            .get("result")
            .cloned()
    }

    /// DEL through the chain in reverse, with the cached result; the cache
    /// entry goes once every plugin succeeded.
    pub fn del(&self, list: &ConfList, rc: &RuntimeConf) -> Result<(), RuntimeError> {
        let prev = self.cached(list, rc);
        for plugin in list.plugins.iter().rev() {
            let config = Self::plugin_config(list, plugin, rc, prev.as_ref(), &[]);
            self.exec("DEL", plugin, &config, Some(rc))?;
        }
        let path = self.cache_path(list, rc);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RuntimeError::Cache { path, source }),
        }
    }

    /// CHECK through the chain with the cached result (skipped when the
    /// list disables it).
    pub fn check(&self, list: &ConfList, rc: &RuntimeConf) -> Result<(), RuntimeError> {
        if list.disable_check || !version_at_least(&list.cni_version, "0.4.0") {
            return Ok(());
        }
        let prev = self.cached(list, rc).ok_or_else(|| RuntimeError::Plugin {
            plugin: list.name.clone(),
            command: "CHECK".into(),
            code: 3,
            msg: format!("no cached result for {}/{}", rc.container_id, rc.ifname),
        })?;
        for plugin in &list.plugins {
            let config = Self::plugin_config(list, plugin, rc, Some(&prev), &[]);
            self.exec("CHECK", plugin, &config, Some(rc))?;
        }
        Ok(())
    }

    /// STATUS of every plugin (lists older than 1.1.0: nothing to ask).
    pub fn status(&self, list: &ConfList) -> Result<(), RuntimeError> {
        if !version_at_least(&list.cni_version, "1.1.0") {
            return Ok(());
        }
        for plugin in &list.plugins {
            let config = Self::plugin_config(list, plugin, &RuntimeConf::default(), None, &[]);
            self.exec("STATUS", plugin, &config, None)?;
        }
        Ok(())
    }

    /// GC: every plugin releases what belongs to attachments not in
    /// `valid` (lists older than 1.1.0: nothing to ask).
    pub fn gc(&self, list: &ConfList, valid: &[Attachment]) -> Result<(), RuntimeError> {
        if !version_at_least(&list.cni_version, "1.1.0") {
            return Ok(());
        }
        let valid = serde_json::to_value(valid).expect("serializable");
        for plugin in &list.plugins {
            let config = Self::plugin_config(
                list,
                plugin,
                &RuntimeConf::default(),
                None,
                &[("cni.dev/valid-attachments", valid.clone())],
            );
            self.exec("GC", plugin, &config, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_parsing_and_injection() {
        let list = parse_conflist(
            r#"{"cniVersion":"1.0.0","name":"cbr0","plugins":[
                {"type":"rudder"},
                {"type":"portmap","capabilities":{"portMappings":true}}]}"#,
            Path::new("10-rudder.conflist"),
        )
        .unwrap();
        assert_eq!(list.plugins.len(), 2);
        let mut rc = RuntimeConf::default();
        rc.capability_args
            .insert("portMappings".into(), json!([{"hostPort": 8080}]));
        rc.capability_args.insert("bandwidth".into(), json!({}));
        let c = Runtime::plugin_config(&list, &list.plugins[1], &rc, Some(&json!({"x": 1})), &[]);
        assert_eq!(c["name"], "cbr0");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(
            c["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080}]})
        );
        assert_eq!(c["prevResult"], json!({"x": 1}));
        let c0 = Runtime::plugin_config(&list, &list.plugins[0], &rc, None, &[]);
        assert!(c0.get("runtimeConfig").is_none());

        let single = parse_conflist(
            r#"{"cniVersion":"0.4.0","name":"n","type":"bridge"}"#,
            Path::new("x.conf"),
        )
        .unwrap();
        assert_eq!(single.plugins.len(), 1);
        let e = parse_conflist(
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{}]}"#,
            Path::new("y"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("type"), "{e}");
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("1.1.0", "1.1.0"));
        assert!(version_at_least("1.10.0", "1.1.0"));
        assert!(!version_at_least("1.0.0", "1.1.0"));
        assert!(!version_at_least("0.4.0", "1.0.0"));
    }
}
