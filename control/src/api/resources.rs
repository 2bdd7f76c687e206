//! The resource types the apiserver serves: the table lives in
//! `rudder-k8s` (shared with the controllers); the CustomResourceDefinition
//! controller installs the custom ones there.

pub use rudder_k8s::served::*;
