//! Builds Rudder's eBPF objects.
//!
//! The programs in `dataplane-ebpf/programs` build only with the `nightly`
//! toolchain, for `bpfel-unknown-none`, with `-Z build-std=core` (which needs
//! the `rust-src` component) and are linked by `bpf-linker` 0.10 (which loads
//! rustc's own LLVM). This crate checks those prerequisites first and names
//! exactly what is missing and how to get it, then runs the build and copies
//! each object to a directory of the caller's choosing as `<name>.bpf.o`.
//!
//! It is used by the agent's build script (which embeds the objects) and by
//! `cargo xtask build-ebpf` (which leaves them in `target/bpf/`).

use std::{
    ffi::OsStr,
    fs, io,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// The eBPF programs, one object each.
pub const PROGRAMS: &[&str] = &["packet-stats", "service"];
/// The toolchain the eBPF crate is built with.
pub const TOOLCHAIN: &str = "nightly";
/// The BPF target triple (little-endian hosts only: x86_64 and aarch64).
pub const TARGET: &str = "bpfel-unknown-none";
/// The bpf-linker series that builds here: 0.11 and later link a system LLVM 21+.
pub const BPF_LINKER_VERSION: &str = "0.10";

/// Failures of the eBPF build, each saying what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "rustup was not found on PATH; the eBPF programs need rustup's `{TOOLCHAIN}` toolchain. Install rustup, then `rustup toolchain install {TOOLCHAIN}`"
    )]
    NoRustup,
    #[error(
        "the `{TOOLCHAIN}` toolchain is not installed (`rustup run {TOOLCHAIN} rustc` failed: {detail}); install it with `rustup toolchain install {TOOLCHAIN} --component rust-src`"
    )]
    NoNightly { detail: String },
    #[error(
        "the `rust-src` component of the `{TOOLCHAIN}` toolchain is missing (no {}); `-Z build-std=core` needs it: `rustup component add rust-src --toolchain {TOOLCHAIN}`",
        .0.display()
    )]
    NoRustSrc(PathBuf),
    #[error(
        "bpf-linker was not found on PATH (nor in ~/.cargo/bin); install it with `cargo install bpf-linker@0.10.0 --locked` (0.11 and later need a system LLVM 21+)"
    )]
    NoBpfLinker,
    #[error(
        "bpf-linker at {} is version `{found}`, but {BPF_LINKER_VERSION}.x is needed (later ones link a system LLVM 21+): `cargo install bpf-linker@0.10.0 --locked --force`",
        .path.display()
    )]
    WrongBpfLinker { path: PathBuf, found: String },
    #[error("failed to run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Cargo {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("failed to copy the eBPF object {} to {}", .from.display(), .to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What to build and where.
#[derive(Debug, Clone)]
pub struct Build {
    /// `dataplane-ebpf/` in the repository.
    pub ebpf_dir: PathBuf,
    /// Cargo's `--target-dir` for the nested build (its cache).
    pub target_dir: PathBuf,
    /// Where the objects are copied as `<name>.bpf.o`.
    pub out_dir: PathBuf,
}

/// Checked prerequisites: the bpf-linker to use.
#[derive(Debug, Clone)]
pub struct Prerequisites {
    pub bpf_linker: PathBuf,
}

impl Build {
    /// The build for a repository whose root is `repo`: cache in
    /// `<target>/bpf-build`, objects in `out_dir`.
    pub fn for_repo(repo: &Path, target: &Path, out_dir: &Path) -> Self {
        Self {
            ebpf_dir: repo.join("dataplane-ebpf"),
            target_dir: target.join("bpf-build"),
            out_dir: out_dir.to_path_buf(),
        }
    }

    /// Files and directories whose change must trigger a rebuild.
    pub fn inputs(&self) -> Vec<PathBuf> {
        let p = self.ebpf_dir.join("programs");
        let c = self.ebpf_dir.join("common");
        vec![
            p.join("src"),
            p.join("Cargo.toml"),
            p.join("Cargo.lock"),
            c.join("src"),
            c.join("Cargo.toml"),
        ]
    }

    /// Builds every program and returns the paths of the objects.
    pub fn run(&self, prereq: &Prerequisites) -> Result<Vec<PathBuf>, BuildError> {
        self.cargo(prereq, &["build", "--release", "--bins"], &[])?;
        fs::create_dir_all(&self.out_dir).map_err(|source| BuildError::Copy {
            from: self.target_dir.clone(),
            to: self.out_dir.clone(),
            source,
        })?;
        PROGRAMS
            .iter()
            .map(|name| {
                let from = self.target_dir.join(TARGET).join("release").join(name);
                let to = self.out_dir.join(object_file_name(name));
                fs::copy(&from, &to).map_err(|source| BuildError::Copy {
                    from,
                    to: to.clone(),
                    source,
                })?;
                Ok(to)
            })
            .collect()
    }

    /// Runs clippy on the eBPF crate, denying warnings.
    pub fn clippy(&self, prereq: &Prerequisites) -> Result<(), BuildError> {
        self.cargo(
            prereq,
            &["clippy", "--bins", "--lib"],
            &["--", "-D", "warnings"],
        )
    }

    /// Runs `cargo <args>` on the eBPF crate with the nightly toolchain, for
    /// the BPF target, then `trailing` (arguments after `--`).
    fn cargo(
        &self,
        prereq: &Prerequisites,
        args: &[&str],
        trailing: &[&str],
    ) -> Result<(), BuildError> {
        let manifest = self.ebpf_dir.join("programs").join("Cargo.toml");
        let mut cmd = Command::new("rustup");
        cmd.args(["run", TOOLCHAIN, "cargo"])
            .args(args)
            .args(["--target", TARGET, "-Z", "build-std=core"])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&self.target_dir)
            .args(trailing);
        // BTF needs debug info; `bpf_target_arch` is what aya-ebpf's
        // arch-specific bindings key on.
        let rustflags = [
            format!("--cfg=bpf_target_arch=\"{}\"", host_arch()),
            "-Cdebuginfo=2".to_string(),
            "-Clink-arg=--btf".to_string(),
        ]
        .join("\x1f");
        cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags);
        // When called from a build script or clippy, these point at the outer
        // (stable) toolchain's compiler or at clippy-driver.
        for key in [
            "RUSTC",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "RUSTFLAGS",
            "CARGO",
        ] {
            cmd.env_remove(key);
        }
        // bpf-linker is found by rustc as the linker named `bpf-linker`.
        if let Some(dir) = prereq.bpf_linker.parent() {
            cmd.env("PATH", prepend_path(dir));
        }
        let command = format!(
            "rustup run {TOOLCHAIN} cargo {} --target {TARGET} -Z build-std=core --manifest-path {}",
            args.join(" "),
            manifest.display()
        );
        let output = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|source| BuildError::Spawn {
                command: command.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(BuildError::Cargo {
                command,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(())
    }
}

/// `packet-stats` → `packet-stats.bpf.o`.
pub fn object_file_name(program: &str) -> String {
    format!("{program}.bpf.o")
}

/// Checks that rustup, the nightly toolchain, its `rust-src` and bpf-linker
/// 0.10 are present, in that order, and says which is missing.
pub fn check_prerequisites() -> Result<Prerequisites, BuildError> {
    let sysroot = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"])
        .env_remove("RUSTC")
        .stdin(Stdio::null())
        .output();
    let sysroot = match sysroot {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BuildError::NoRustup),
        Err(e) => {
            return Err(BuildError::NoNightly {
                detail: e.to_string(),
            });
        }
        Ok(o) if !o.status.success() => {
            return Err(BuildError::NoNightly {
                detail: String::from_utf8_lossy(&o.stderr).trim().to_string(),
            });
        }
        Ok(o) => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
    };
    let core = sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if !core.exists() {
        return Err(BuildError::NoRustSrc(core));
    }
    let bpf_linker = find_bpf_linker().ok_or(BuildError::NoBpfLinker)?;
    let version = Command::new(&bpf_linker)
        .arg("--version")
        .output()
        .map_err(|source| BuildError::Spawn {
            command: "bpf-linker --version".into(),
            source,
        })?;
    let found = String::from_utf8_lossy(&version.stdout).trim().to_string();
    if !bpf_linker_version_ok(&found) {
        return Err(BuildError::WrongBpfLinker {
            path: bpf_linker,
            found,
        });
    }
    Ok(Prerequisites { bpf_linker })
}

/// `bpf-linker 0.10.0` (or just `0.10.0`) is accepted; other series are not.
fn bpf_linker_version_ok(version_line: &str) -> bool {
    version_line.split_whitespace().last().is_some_and(|v| {
        v.strip_prefix(BPF_LINKER_VERSION)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

fn find_bpf_linker() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin"));
    std::env::split_paths(&path)
        .chain(cargo_bin)
        .map(|dir| dir.join("bpf-linker"))
        .find(|p| p.is_file())
}

fn prepend_path(dir: &Path) -> std::ffi::OsString {
    let old = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&old)))
        .unwrap_or_else(|_| OsStr::new("/usr/bin:/bin").to_os_string())
}

fn host_arch() -> &'static str {
    std::env::consts::ARCH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_0_10_series() {
        assert!(bpf_linker_version_ok("bpf-linker 0.10.0"));
        assert!(bpf_linker_version_ok("0.10.3"));
        assert!(!bpf_linker_version_ok("bpf-linker 0.11.0"));
        assert!(!bpf_linker_version_ok("bpf-linker 0.1.0"));
        assert!(!bpf_linker_version_ok("bpf-linker 0.100.0"));
        assert!(!bpf_linker_version_ok(""));
    }

    #[test]
    fn object_names() {
        assert_eq!(object_file_name("packet-stats"), "packet-stats.bpf.o");
    }
}
