//! Which writing system a text is in — tokenizers treat them very differently (a token is
//! about four Latin characters but often a single CJK character) — or whether it is code.

/// Punctuation that is common in code and rare in prose.
fn is_code_mark(c: char) -> bool {
    matches!(
        c,
        '{' | '}' | '[' | ']' | '(' | ')' | ';' | '=' | '<' | '>' | '\\' | '*' | '&' | '|' | '_' | '#' | '$' | '`'
    )
}

/// Characters of a text that classification looks at.
pub const SAMPLE: usize = 1_024;

/// A text's dominant script, or code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Script {
    /// Latin letters (English, most European languages).
    Latin,
    /// Cyrillic letters.
    Cyrillic,
    /// Arabic letters.
    Arabic,
    /// Chinese, Japanese and Korean characters.
    Cjk,
    /// Source code (mostly ASCII with dense punctuation).
    Code,
    /// Anything else, or no letters at all.
    Other,
}

impl Script {
    /// Every script, in index order.
    pub const ALL: [Script; 6] = [Self::Latin, Self::Cyrillic, Self::Arabic, Self::Cjk, Self::Code, Self::Other];

    /// Lower-case name, as in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Latin => "latin",
            Self::Cyrillic => "cyrillic",
            Self::Arabic => "arabic",
            Self::Cjk => "cjk",
            Self::Code => "code",
            Self::Other => "other",
        }
    }

    /// Index into per-script arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Classifies `text` by its letters; mostly-ASCII text dense in code punctuation is code.
    /// Reads at most the first [`SAMPLE`] characters.
    pub fn of(text: &str) -> Script {
        let mut counts = [0u32; 4];
        let (mut chars, mut ascii, mut code_marks, mut letters) = (0u32, 0u32, 0u32, 0u32);
        for c in text.chars().take(SAMPLE) {
            chars += 1;
            if c.is_ascii() {
                ascii += 1;
                code_marks += u32::from(is_code_mark(c));
            }
            let slot = match c as u32 {
                0x41..=0x5A | 0x61..=0x7A | 0xC0..=0x24F => Some(0),
                0x400..=0x4FF => Some(1),
                0x600..=0x6FF | 0x750..=0x77F | 0xFB50..=0xFDFF | 0xFE70..=0xFEFF => Some(2),
                0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF => Some(3),
                _ => None,
            };
            if let Some(s) = slot {
                counts[s] += 1;
                letters += 1;
            }
        }
        if chars == 0 || letters == 0 {
            return Script::Other;
        }
        if ascii * 10 >= chars * 9 && (code_marks * 100 >= chars * 3 || looks_like_code_lines(text)) {
            return Script::Code;
        }
        let (best, n) =
            counts.iter().enumerate().max_by_key(|(i, n)| (**n, std::cmp::Reverse(*i))).expect("four scripts");
        if *n * 3 < letters {
            return Script::Other;
        }
        [Script::Latin, Script::Cyrillic, Script::Arabic, Script::Cjk][best]
    }
}

/// Whether most lines of a multi-line text look like code: indented, commented with `//` or
/// `#`, or ending in `;`, `{`, `}`, `,` or `)`.
fn looks_like_code_lines(text: &str) -> bool {
    let (mut lines, mut codey) = (0u32, 0u32);
    for line in text.lines().take(32).filter(|l| !l.trim().is_empty()) {
        lines += 1;
        let t = line.trim_end();
        let start = line.trim_start();
        let indented = line.starts_with("    ") || line.starts_with('\t');
        let commented = start.starts_with("//") || start.starts_with('#');
        let ends = t.ends_with([';', '{', '}', ',', ')']);
        codey += u32::from(indented || commented || ends);
    }
    lines >= 2 && codey * 2 >= lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_languages_and_code() {
        assert_eq!(Script::of("The quick brown fox jumps over the lazy dog."), Script::Latin);
        assert_eq!(Script::of("Съешь же ещё этих мягких французских булок."), Script::Cyrillic);
        assert_eq!(Script::of("مرحبا بالعالم، هذه جملة باللغة العربية."), Script::Arabic);
        assert_eq!(Script::of("今天天气很好，我们去公园散步吧。"), Script::Cjk);
        assert_eq!(
            Script::of("fn main() {\n    let x = vec![1, 2, 3];\n    println!(\"{:?}\", x);\n}\n"),
            Script::Code
        );
        assert_eq!(Script::of("//! The engine: pure logic.\n//! No I/O, no clock.\n"), Script::Code);
        assert_eq!(Script::of("First line of a letter.\nSecond line, plain prose.\n"), Script::Latin);
        assert_eq!(Script::of("12345 67890"), Script::Other);
        assert_eq!(Script::of(""), Script::Other);
    }
}
