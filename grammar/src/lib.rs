//! `kiln-grammar`: the Dockerfile language, with no I/O.
//!
//! Text → [`ast::Dockerfile`] (raw nodes with spans, BuildKit's parse) → typed instructions →
//! the build plan (stages, args, dependencies). Word expansion (`$VAR`, `${VAR:-x}`, …) is a
//! separate lexer used by the later steps.

pub mod ast;
pub mod directives;
pub mod dump;
pub mod error;
pub mod expand;
pub mod instructions;
mod parser;
pub mod plan;
pub mod suggest;

pub use error::{Error, ErrorKind, Result};
pub use parser::parse;
