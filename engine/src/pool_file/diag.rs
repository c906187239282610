//! Diagnostics: every problem of a scenario at once, each with its place in the file.

use std::fmt;
use std::ops::Range;

/// One problem in a scenario file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// What is wrong, lower-case, naming the offending input.
    pub message: String,
    /// Byte range in the source, if the problem has a place.
    pub span: Option<Range<usize>>,
    /// A hint on how to fix it.
    pub help: Option<String>,
}

/// Every problem found in one scenario, with the source to show them in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostics {
    /// Where the source came from (a path, or a name for strings).
    pub origin: String,
    /// The source text.
    pub source: String,
    /// The problems, in the order of their place in the file.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// 1-based line and column (in characters) of byte offset `at`.
    pub fn line_col(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.source.len());
        let before = &self.source[..at];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, self.source[line_start..at].chars().count() + 1)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, d) in self.items.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            writeln!(f, "error: {}", d.message)?;
            match &d.span {
                Some(span) => {
                    let (line, col) = self.line_col(span.start);
                    let text = self.source.lines().nth(line - 1).unwrap_or("");
                    let width = line.to_string().len();
                    let pad = " ".repeat(width);
                    writeln!(f, "{pad}--> {}:{line}:{col}", self.origin)?;
                    writeln!(f, "{pad} |")?;
                    writeln!(f, "{line} | {text}")?;
                    let line_chars = text.chars().count();
                    let span_chars = self.source[span.start..span.end.min(self.source.len())]
                        .lines()
                        .next()
                        .map_or(1, |s| s.chars().count().max(1));
                    let carets = span_chars.min(line_chars.saturating_sub(col - 1).max(1));
                    writeln!(f, "{pad} | {}{}", " ".repeat(col - 1), "^".repeat(carets))?;
                }
                None => writeln!(f, "  --> {}", self.origin)?,
            }
            if let Some(help) = &d.help {
                writeln!(f, "  = help: {help}")?;
            }
        }
        let n = self.items.len();
        write!(f, "{n} problem{} in {}", if n == 1 { "" } else { "s" }, self.origin)
    }
}

impl std::error::Error for Diagnostics {}
