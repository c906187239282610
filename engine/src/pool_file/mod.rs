//! Pool files: the TOML sections that describe a pool and its engine (`[[models]]`,
//! `[[projects]]`, `[engine]`, `[warnings]`), read in two layers — a spanned tree read by
//! typed accessors that collect every problem with its place, then validated definitions.
//!
//! One parser and one set of diagnostics serve every file that holds a pool: the lab's
//! scenario files and the proxy's configuration alike. Each reads its own sections with the
//! same [`Table`] accessors and reports through the same [`Ctx`].
//!
//! - [`diag`]: diagnostics and their rendering with line, column and caret.
//! - [`fields`]: typed reads from the spanned tree.
//! - [`units`]: durations, rates, comparisons.
//! - [`model`]: the validated definitions.
//! - [`build`]: the engine a pool file describes.

pub mod build;
pub mod diag;
pub mod fields;
pub mod model;
pub mod units;

mod pool;
mod warnings;

use std::path::Path;

use toml::de::DeTable;

pub use diag::{Diagnostic, Diagnostics};
pub use fields::{Ctx, Span, Table};
pub use model::*;
pub use pool::{resolve, tokenizer};

/// The root keys the pool sections take.
pub const POOL_KEYS: &[&str] = &["models", "projects", "engine", "warnings"];

/// The pool sections of one file, read.
#[derive(Debug)]
pub struct Sections {
    /// `[[models]]`.
    pub models: Vec<ModelDef>,
    /// `[[projects]]`, with their keys and resolved limits.
    pub projects: Vec<ProjectDef>,
    /// `[engine]`; `None` when it has errors (reported).
    pub engine: Option<EngineDef>,
    /// `[warnings]`: `Some(None)` when absent or off; `None` when it has errors (reported).
    pub warnings: Option<Option<WarningsDef>>,
}

/// Reads the pool sections of `root` into `ctx`. `seed` seeds the engine's randomness; `base`
/// is the folder relative paths resolve against; `truth` is the provider's tokenizer, the
/// default of the `tokenizer` estimator; `own` names the `[engine]` fields the caller reads
/// itself (the simulator's reference gateways, for one).
pub fn sections(
    ctx: &mut Ctx,
    root: &Table<'_, '_>,
    seed: u64,
    base: Option<&Path>,
    truth: Option<&TokenizerFile>,
    own: &[&str],
) -> Sections {
    let models = pool::models(ctx, root);
    let projects = pool::projects(ctx, root, &models);
    let engine_table = root.table(ctx, "engine");
    let engine = pool::engine(ctx, engine_table.as_ref(), seed, base, truth, &models, own);
    let warnings = match root.table(ctx, "warnings") {
        Some(t) => warnings::parse(ctx, &t, base),
        None => Some(None),
    };
    // Whatever else the engine would refuse when a run starts is found now, at the pool's
    // place: every check above is the engine's own, so this only catches what they miss.
    if let (Some(def), true) = (&engine, ctx.diags.is_empty()) {
        let built = crate::Engine::builder(build::pool_spec(&models, &projects)).config(def.config.clone()).build();
        if let Err(e) = built {
            let span = root.raw("projects").or_else(|| root.raw("models")).map_or(root.span.clone(), |v| v.span());
            ctx.error(span, format!("the pool: {e}"));
        }
    }
    Sections { models, projects, engine, warnings }
}

/// Parses TOML `text` into its spanned tree, or the syntax errors with their places.
pub fn document(text: &str) -> Result<DeTable<'_>, Vec<Diagnostic>> {
    let (root, errors) = DeTable::parse_recoverable(text);
    if errors.is_empty() {
        return Ok(root.into_inner());
    }
    Err(errors.iter().map(|e| Diagnostic { message: e.message().to_owned(), span: e.span(), help: None }).collect())
}

impl Ctx {
    /// The problems found, in the order of their place in the file, as [`Diagnostics`] of
    /// `source` (named `origin`); `Ok(())` if there are none.
    pub fn finish(mut self, origin: &str, source: &str) -> Result<(), Diagnostics> {
        if self.diags.is_empty() {
            return Ok(());
        }
        self.diags.sort_by_key(|d| d.span.as_ref().map_or(usize::MAX, |s| s.start));
        Err(Diagnostics { origin: origin.to_owned(), source: source.to_owned(), items: self.diags })
    }
}
