//! Scenario files: TOML read in two layers — a spanned tree read by typed accessors that
//! collect every problem with its place, then the validated [`Scenario`].
//!
//! - [`parse()`]: text to scenario (no file reading of its own but trace files).
//! - [`load`]: read a file, then parse it.
//! - [`model`]: the validated types.
//! - [`units`], [`diag`]: the engine's pool-file units and diagnostics, shared by every file
//!   that holds a pool.

pub mod build;
pub mod model;

pub mod logs;

mod files;
mod overrides;
mod parse;
mod replicas;
mod traffic;

use std::path::Path;

pub use crate::engine::pool_file::{diag, units, Diagnostic, Diagnostics};
pub use model::*;
pub use parse::{parse, parse_pool};

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file has problems.
    #[error("{0}")]
    Invalid(Box<Diagnostics>),
}

/// Reads and parses the scenario at `path`, applying `overrides` (`path=value`).
pub fn load(path: &Path, overrides: &[String]) -> Result<Scenario, LoadError> {
    load_with(path, overrides, parse)
}

/// Reads the scenario at `path` for the fake alone: `[[traffic]]` optional ([`parse_pool`]).
pub fn load_pool(path: &Path, overrides: &[String]) -> Result<Scenario, LoadError> {
    load_with(path, overrides, parse_pool)
}

type Parser = fn(&str, &str, Option<&Path>, &[String]) -> Result<Scenario, Diagnostics>;

fn load_with(path: &Path, overrides: &[String], parse: Parser) -> Result<Scenario, LoadError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.display().to_string(), source })?;
    let origin = path.display().to_string();
    parse(&text, &origin, path.parent(), overrides).map_err(|d| LoadError::Invalid(Box::new(d)))
}
