//! Redaction: how key ids appear in anything a person or a log sees.

/// A key id as reports show it: ids that look like secrets are shortened to their first and
/// last four characters; plain labels are shown as they are.
pub fn redact(id: &str) -> String {
    let looks_secret = id.starts_with("AIza") || (id.len() >= 20 && !id.contains(['-', '_', ' ']));
    if !looks_secret {
        return id.to_owned();
    }
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 8 {
        return "…".to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// `text` with every key-shaped word redacted (a run of letters, digits, `-` and `_` that
/// [`redact`] would shorten, or an OpenAI-style `sk-` key): for error messages, which may quote
/// anything a user typed, files and command lines included.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.starts_with("sk-") && word.len() >= 20 {
            out.push_str("sk-…");
            out.extend(word.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev());
        } else if let Some(i) = word.find("AIza").filter(|&i| i > 0) {
            // A key glued to something else (`x-AIza…`, `%22AIza…`, an escaped `\nAIza…`).
            out.push_str(&word[..i]);
            out.push_str(&redact(&word[i..]));
        } else {
            out.push_str(&redact(word));
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// `scheme://host[:port]` of a URL, for reports.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = rest[..end].rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shaped_words_are_redacted_in_text() {
        let key = format!("AIza{}", "Qx7-_".repeat(7));
        let text = format!("error: key '{key}' is listed twice\n  keys = [\"{key}\", \"proj-1-key-a\"]");
        let out = redact_text(&text);
        assert!(!out.contains(&key[4..30]), "{out}");
        assert!(out.contains("AIza…") && out.contains("proj-1-key-a") && out.contains("listed twice"), "{out}");
        for glued in [format!("x-{key}"), format!("%22{key}"), format!("nope_{key}")] {
            let out = redact_text(&glued);
            assert!(!out.contains(&key[4..30]), "{out}");
        }
        let sk = format!("sk-proj-{}", "a1".repeat(12));
        assert_eq!(redact_text(&format!("--target {sk}")), "--target sk-…a1a1");
    }

    #[test]
    fn secrets_are_redacted_labels_are_not() {
        assert_eq!(redact("key-1"), "key-1");
        // Built at run time, so that no literal in the repository looks like a real key.
        let fake = format!("AIza{}", "x".repeat(31) + "stuv");
        assert_eq!(redact(&fake), "AIza…stuv");
        assert_eq!(redact("abcdefghijklmnopqrstuvwxyz0123"), "abcd…0123");
    }
}
