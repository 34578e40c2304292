//! Images a build reads (`FROM`, `COPY --from`, `RUN --mount=from=`) that are not in the store
//! come from their registry; with `--pull` every one is checked there once per build.

use crate::error::{Error, Result};
use crate::events::{Event, Stream};
use crate::stage::BuildCtx;
use crate::vertex::Vertex;
use kiln_oci::registry::{self, BlobStatus, Client, PullOptions, RegistryConfig};
use kiln_oci::{Digest, Image, Reference};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The build's registry access: a client made on first use, and the images already pulled.
#[derive(Default)]
pub struct Registry {
    config: RegistryConfig,
    client: Mutex<Option<Arc<Client>>>,
    pulled: Mutex<HashMap<String, Image>>,
}

impl Registry {
    pub fn new(config: RegistryConfig) -> Registry {
        Registry {
            config,
            ..Registry::default()
        }
    }

    fn client(&self) -> Result<Arc<Client>> {
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = client.as_ref() {
            return Ok(client.clone());
        }
        let made = Arc::new(Client::new(self.config.clone())?);
        *client = Some(made.clone());
        Ok(made)
    }
}

impl BuildCtx<'_> {
    /// The image `wanted` names: from the store, pulled when it is not there (or, with
    /// `--pull`, whenever it has not been checked in this build yet). `line` is the
    /// instruction's, for the progress display.
    pub fn image(&self, wanted: &str, line: usize) -> Result<Image> {
        let local = match self.store.find_image(wanted) {
            Ok(image) => Some(image),
            Err(kiln_oci::Error::ImageNotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let Ok(reference) = Reference::parse(wanted) else {
            // An image id: only ever local.
            return local.ok_or_else(|| Error::ImageNotInStore(wanted.to_string()));
        };
        if let Some(image) = &local
            && !self.request.pull
        {
            return Ok(image.clone());
        }
        let full = reference.normalized().to_string();
        if let Some(image) = self
            .registry
            .pulled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&full)
        {
            return Ok(image.clone());
        }
        let vertex = self.start_vertex(format!("[internal] load metadata for {full}"), line);
        let pulled = self.registry.client().and_then(|client| {
            registry::pull(
                &client,
                self.store,
                &reference,
                &PullOptions::default(),
                &VertexProgress(&vertex),
            )
            .map_err(Error::from)
        });
        match (pulled, local) {
            (Ok(pulled), _) => {
                vertex.log(
                    Stream::Stdout,
                    format!("resolved {full} to {}", pulled.digest),
                );
                vertex.done();
                self.registry
                    .pulled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(full, pulled.image.clone());
                Ok(pulled.image)
            }
            // `--pull` of an image that only exists here (built, imported) keeps it.
            (Err(e), Some(local)) => {
                vertex.failed(e.to_string());
                self.events.emit(Event::Warning {
                    message: format!("--pull: {full}: {e}; using the image in the store"),
                });
                Ok(local)
            }
            (Err(e), None) => {
                vertex.failed(e.to_string());
                Err(e)
            }
        }
    }
}

/// Blob progress as log lines of the pull's step.
struct VertexProgress<'v, 'a>(&'v Vertex<'a>);

impl registry::Progress for VertexProgress<'_, '_> {
    fn finished(&self, digest: &Digest, status: BlobStatus) {
        self.0.log(
            Stream::Stdout,
            format!("{}: {}", digest.short(), status.message()),
        );
    }
}
