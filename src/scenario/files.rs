//! Files a scenario refers to: tokenizers and prompt corpora, read relative to the scenario's
//! folder, with problems reported at the place that names the file.

use std::path::Path;

use super::model::CorpusText;
use crate::engine::estimate::HfTokenizer;
use crate::engine::pool_file::{resolve, Ctx, Span};

/// Reads a JSON-lines corpus: `{"lang": .., "text": .., "tokens": ..}` a line. True counts come
/// from `truth` where given, else from each line's `tokens`.
pub(super) fn corpus(
    ctx: &mut Ctx,
    file: &str,
    span: Span,
    base: Option<&Path>,
    language: Option<&str>,
    truth: Option<&HfTokenizer>,
) -> Option<Vec<CorpusText>> {
    let path = resolve(base, file);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            ctx.error(span, format!("cannot read corpus '{file}' (paths are relative to the scenario's folder): {e}"));
            return None;
        }
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match parse_line(line, truth) {
            Ok(t) if language.is_none_or(|l| l == t.lang) => out.push(t),
            Ok(_) => {}
            Err(e) => {
                ctx.error(span, format!("corpus '{file}' line {}: {e}", n + 1));
                return None;
            }
        }
    }
    if out.is_empty() {
        let what = language.map_or_else(String::new, |l| format!(" in language '{l}'"));
        ctx.error(span, format!("corpus '{file}' holds no texts{what}"));
        return None;
    }
    Some(out)
}

fn parse_line(line: &str, truth: Option<&HfTokenizer>) -> Result<CorpusText, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let text = v.get("text").and_then(|t| t.as_str()).ok_or("no string field `text`")?.to_owned();
    let lang = v.get("lang").and_then(|t| t.as_str()).unwrap_or("unknown").to_owned();
    let tokens = match (truth, v.get("tokens").and_then(|t| t.as_u64())) {
        (Some(t), _) => t.count(&text),
        (None, Some(n)) => n,
        (None, None) => return Err("no `tokens` count, and no [provider] tokenizer to count with".into()),
    };
    Ok(CorpusText { lang, text, tokens })
}
