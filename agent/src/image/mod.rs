//! Image references and where to fetch them from.

mod manifest;
pub mod mirror;
pub mod reference;

pub use mirror::{Endpoint, MirrorSpec, Registries, RegistryConfig};
pub use reference::{Reference, ReferenceError};
pub mod pull;

pub use pull::{Credential, ImageConfig, ImageInfo, PullError, Puller};
