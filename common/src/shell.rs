//! Command lines printed for users to paste: a word the shell would split
//! or expand (a path with a space, a quote, a `$`) is single-quoted.

use std::borrow::Cow;

/// `word` as one shell word.
pub fn quote(word: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return Cow::Borrowed(word);
    }
    Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
}

/// A path as one shell word (lossy for non-UTF-8 names).
pub fn quote_path(path: &std::path::Path) -> String {
    quote(&path.to_string_lossy()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_words_the_shell_would_change_are_quoted() {
        assert_eq!(quote("/tmp/twopc-local"), "/tmp/twopc-local");
        assert_eq!(quote("/tmp/my cluster"), "'/tmp/my cluster'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$HOME/x"), "'$HOME/x'");
        assert_eq!(quote("~/x"), "'~/x'");
        assert_eq!(quote(""), "''");
    }
}
