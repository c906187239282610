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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_labels_are_not() {
        assert_eq!(redact("key-1"), "key-1");
        // Built at run time, so that no literal in the repository looks like a real key.
        let fake = format!("AIza{}", "x".repeat(31) + "stuv");
        assert_eq!(redact(&fake), "AIza…stuv");
        assert_eq!(redact("abcdefghijklmnopqrstuvwxyz0123"), "abcd…0123");
    }
}
