//! Images as root filesystems: every layer of an image applied once as a snapshot chain, so that
//! builds (FROM, COPY --from an image) and `kiln run` mount it without unpacking again.

use crate::error::{Error, Result};
use kiln_oci::{Image, Store, open_layer_blob};
use kiln_snapshotter::{ChainId, Snapshotter, chain_id};
use std::io;

/// Apply every layer of `image` (skipping chains already present) and return the top chain id,
/// or `None` for an image with no layers.
pub fn unpack_image(
    store: &Store,
    snapshotter: &Snapshotter,
    image: &Image,
) -> Result<Option<ChainId>> {
    let layers = image.layers()?;
    let diff_ids = image.diff_ids()?;
    let mut parent: Option<ChainId> = None;
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let mut reader = None;
        // Leased before it is looked for, so that a `kiln prune` cannot remove it meanwhile.
        store.lease(chain_id(parent.as_ref(), &diff_id).as_str())?;
        let chain = snapshotter.apply_layer(parent.as_ref(), &diff_id, {
            // Opened lazily: a chain that already exists never reads its blob.
            LazyReader {
                open: || open_layer_blob(store, &layer.digest),
                reader: &mut reader,
            }
        })?;
        // A tar reader stops at the end-of-archive blocks; reading the rest lets the blob
        // reader check the compressed digest too.
        if let Some(mut r) = reader {
            io::copy(&mut r, &mut io::sink()).map_err(|e| Error::Layer {
                digest: layer.digest.to_string(),
                source: e,
            })?;
        }
        parent = Some(chain);
    }
    Ok(parent)
}

/// A reader that opens its source on the first read.
struct LazyReader<'a, F> {
    open: F,
    reader: &'a mut Option<Box<dyn io::Read + Send>>,
}

impl<F> io::Read for LazyReader<'_, F>
where
    F: FnMut() -> kiln_oci::Result<Box<dyn io::Read + Send>>,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.reader.is_none() {
            *self.reader = Some((self.open)().map_err(io::Error::other)?);
        }
        match self.reader.as_mut() {
            Some(r) => r.read(buf),
            None => Ok(0),
        }
    }
}
