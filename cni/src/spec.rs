//! CNI specification 1.0.0 / 1.1.0: error codes, the error result and
//! version negotiation.

use serde::Serialize;

/// Versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];

/// Well-known error codes (CNI spec, "Error" section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    ContainerUnknown = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decoding = 6,
    InvalidNetworkConfig = 7,
    TryAgainLater = 11,
    PluginNotAvailable = 50,
    PluginNotAvailableLimitedConnectivity = 51,
    /// Rudder's own: the kernel refused a change (netlink).
    KernelRefused = 100,
    /// Rudder's own: no address could be allocated (range full, duplicate).
    NoAddress = 101,
    /// Rudder's own: CHECK found the attachment differs from its result.
    CheckFailed = 102,
}

/// The error result a plugin prints on stdout, exiting non-zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl ErrorResult {
    pub fn new(cni_version: &str, code: ErrorCode, msg: impl Into<String>) -> Self {
        Self {
            cni_version: cni_version.to_string(),
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }
}

/// The VERSION command's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

/// Answers VERSION for a caller speaking `requested`.
pub fn version_result(requested: &str) -> VersionResult {
    let cni_version = if SUPPORTED_VERSIONS.contains(&requested) {
        requested
    } else {
        "1.1.0"
    };
    VersionResult {
        cni_version: cni_version.to_string(),
        supported_versions: SUPPORTED_VERSIONS
            .iter()
            .map(|s| (*s).to_string())
            .collect(),
    }
}

/// Checks that a config's `cniVersion` is one we speak.
pub fn check_version(requested: &str) -> Result<(), ErrorResult> {
    if SUPPORTED_VERSIONS.contains(&requested) {
        Ok(())
    } else {
        Err(ErrorResult::new(
            "1.1.0",
            ErrorCode::IncompatibleVersion,
            format!(
                "incompatible CNI version {requested:?}; supported: {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_matches_the_spec_shape() {
        let e = ErrorResult::new("1.0.0", ErrorCode::InvalidNetworkConfig, "bad subnet");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"bad subnet"}"#
        );
    }

    #[test]
    fn version_negotiation() {
        assert_eq!(version_result("1.0.0").cni_version, "1.0.0");
        assert!(check_version("1.1.0").is_ok());
        let e = check_version("0.2.0").unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.msg.contains("0.2.0"));
    }
}
