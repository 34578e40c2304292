//! `kiln-builder`: build context, cache keys, the solver and one handler per instruction.

pub mod cache;
pub mod cache_key;
pub mod context;
pub mod copy;
pub mod dockerignore;
pub mod error;
pub mod events;
pub mod history;
mod inroot;
mod isolation;
mod path;
pub mod request;
pub mod rootfs;
mod sandbox;
pub mod solver;
mod stage;
pub mod state;
mod steps;
mod vertex;

pub use error::{Error, Result};
pub use request::{BuildOutcome, BuildRequest, SecretSource};
pub use solver::build;
