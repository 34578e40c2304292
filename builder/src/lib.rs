//! `kiln-builder`: build context, cache keys, the solver and one handler per instruction.

pub mod cache_key;
pub mod context;
pub mod dockerignore;
pub mod error;
pub mod events;
pub mod request;
pub mod rootfs;

pub use error::{Error, Result};
pub use request::{BuildOutcome, BuildRequest};
