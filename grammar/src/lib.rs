//! `kiln-grammar`: the Dockerfile language, with no I/O.
//!
//! Text → [`ast::Dockerfile`] (raw nodes with spans, BuildKit's parse) → typed instructions →
//! the build plan (stages, args, dependencies). Word expansion (`$VAR`, `${VAR:-x}`, …) is a
//! separate lexer used by the later steps.

pub mod ast;
pub mod directives;
pub mod dump;
pub mod error;
mod parser;
pub mod suggest;
pub mod instructions;
pub mod plan;
pub mod expand;

pub use error::{Error, ErrorKind, Result};
pub use parser::parse;
