//! `kiln-oci`: the content store (an OCI image layout), image types with canonical JSON, the layer
//! writer, archives and the registry client. Knows nothing of Dockerfiles or namespaces.

pub mod archive;
pub mod canonical;
pub mod config;
pub mod digest;
pub mod error;
pub mod gc;
pub mod image;
pub mod layer;
pub mod reference;
pub mod store;

pub use config::{ContainerConfig, HealthConfig, History, ImageConfig, RootFs};
pub use digest::Digest;
pub use error::{Error, Result};
pub use image::{Image, ImageSummary};
pub use layer::{Compression, Layer, LayerOptions, LayerWriter, open_layer, open_layer_blob};
pub use reference::Reference;
pub use store::{Store, default_root};
