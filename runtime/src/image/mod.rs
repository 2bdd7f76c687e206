//! Image references and where to fetch them from (re-exported from
//! `rudder-image-ref`), and pulling them into containerd.

mod manifest;
pub mod pull;

pub use pull::{Credential, ImageConfig, ImageInfo, PullError, Puller};
pub use rudder_image_ref::{
    Endpoint, MirrorSpec, Reference, ReferenceError, Registries, RegistryConfig, mirror, reference,
};
