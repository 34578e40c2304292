//! `kiln-builder`: build context, cache keys, the solver and one handler per instruction.

pub mod cache;
pub mod cache_key;
pub mod cache_mounts;
pub mod context;
pub mod copy;
pub mod dockerignore;
pub mod error;
pub mod events;
pub mod explain;
mod fxhash;
pub mod history;
mod inroot;
mod isolation;
mod path;
mod pull;
pub mod remote;
pub mod remote_cache;
pub mod request;
pub mod rootfs;
mod sandbox;
pub mod solver;
mod ssh_proxy;
mod stage;
pub mod state;
mod steps;
mod vertex;

pub use error::{Error, Result};
pub use request::{BuildOutcome, BuildRequest, SecretSource};
pub use solver::build;
