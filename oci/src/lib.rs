//! `kiln-oci`: the content store (an OCI image layout), image types with canonical JSON, the layer
//! writer, archives and the registry client. Knows nothing of Dockerfiles or namespaces.
//!
//! ```
//! use kiln_oci::{ImageConfig, LayerOptions, LayerWriter, Reference, Store};
//! use std::io::Write;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path())?;
//! // A layer is written as an uncompressed tar; it is compressed, hashed and committed.
//! let mut layer = LayerWriter::new(&store, LayerOptions::default())?;
//! layer.write_all(&[0u8; 1024])?; // an empty tar: two zero blocks
//! let layer = layer.finish()?;
//! let tag = Reference::parse("app:1")?;
//! let image = store.write_image(&ImageConfig::for_host(), &[layer], &[tag])?;
//! assert_eq!(store.find_image("app:1")?.id, image.id);
//! # Ok(())
//! # }
//! ```

pub mod archive;
pub mod canonical;
pub mod config;
pub mod digest;
pub mod error;
pub mod gc;
mod gzip;
pub mod image;
pub mod layer;
pub mod reference;
pub mod registry;
pub mod store;
pub mod transport;

pub use config::{ContainerConfig, HealthConfig, History, ImageConfig, RootFs};
pub use digest::Digest;
pub use error::{Error, Result};
pub use image::{Image, ImageSummary};
pub use layer::{Compression, Layer, LayerOptions, LayerWriter, open_layer, open_layer_blob};
pub use reference::Reference;
pub use store::{Store, default_root};
