//! Glob-style patterns as Redis matches them (KEYS, SCAN MATCH, CONFIG GET): `*` any run of
//! bytes, `?` one byte, `[abc]`, `[^abc]`, `[a-z]` one byte of (or not of) a set, `\x` the byte
//! `x`. Bytes compare exactly (ranges as signed chars, as Redis's C does).
//!
//! The same quirks as Redis's: an unclosed `[` takes the rest of the pattern as its set, a range
//! written backwards (`[z-a]`) is the same range. Matching a `*` tries each split of the input
//! only until the rest of the pattern failed from every position once: after that no longer
//! match of an earlier `*` can succeed, so a pattern of many stars costs polynomial time, not
//! exponential; and, as in Redis, nesting deeper than 1000 stars is no match.

/// Stars deeper than this do not match (Redis's protection against abusive patterns).
const NESTING_MAX: usize = 1000;

/// Whether `text` matches the glob `pattern`.
#[must_use]
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let mut matcher = Matcher { give_up_longer: false };
    matcher.matches(pattern, text, 0)
}

struct Matcher {
    /// Set once the rest of a pattern after a star matched from no position: every earlier star
    /// can stop trying longer matches.
    give_up_longer: bool,
}

/// The byte at `index`, or 0 past the end (Redis's patterns end with a NUL it may look at).
fn byte_at(bytes: &[u8], index: usize) -> u8 {
    bytes.get(index).copied().unwrap_or(0)
}

impl Matcher {
    fn matches(&mut self, mut pattern: &[u8], mut text: &[u8], nesting: usize) -> bool {
        if nesting > NESTING_MAX {
            return false;
        }
        while !pattern.is_empty() && !text.is_empty() {
            match pattern[0] {
                b'*' => return self.star(pattern, text, nesting),
                b'?' => text = &text[1..],
                b'[' => {
                    let Some(rest) = bracket(pattern, text[0]) else { return false };
                    pattern = rest;
                    text = &text[1..];
                }
                b'\\' if pattern.len() >= 2 => {
                    pattern = &pattern[1..];
                    if pattern[0] != text[0] {
                        return false;
                    }
                    text = &text[1..];
                }
                literal => {
                    if literal != text[0] {
                        return false;
                    }
                    text = &text[1..];
                }
            }
            pattern = &pattern[1..];
            if text.is_empty() {
                while pattern.first() == Some(&b'*') {
                    pattern = &pattern[1..];
                }
                break;
            }
        }
        pattern.is_empty() && text.is_empty()
    }

    /// `pattern` starts with a star.
    fn star(&mut self, pattern: &[u8], mut text: &[u8], nesting: usize) -> bool {
        let mut pattern = pattern;
        while pattern.len() >= 2 && pattern[1] == b'*' {
            pattern = &pattern[1..];
        }
        if pattern.len() == 1 {
            return true;
        }
        while !text.is_empty() {
            if self.matches(&pattern[1..], text, nesting + 1) {
                return true;
            }
            if self.give_up_longer {
                return false;
            }
            text = &text[1..];
        }
        self.give_up_longer = true;
        false
    }
}

/// Matches `byte` against the set that `whole` (from its `[`) opens. Returns the pattern from
/// its closing `]` (or from its last byte when the set is unclosed), or None when the byte is
/// not matched.
fn bracket(whole: &[u8], byte: u8) -> Option<&[u8]> {
    let mut pattern = &whole[1..];
    let negated = byte_at(pattern, 0) == b'^';
    if negated {
        pattern = &pattern[1..];
    }
    let mut matched = false;
    let mut index = 0;
    loop {
        let current = byte_at(pattern, index);
        let remaining = pattern.len().saturating_sub(index);
        if current == b'\\' && remaining >= 2 {
            index += 1;
            matched |= pattern[index] == byte;
        } else if current == b']' && remaining > 0 {
            break;
        } else if remaining == 0 {
            // Unclosed: the set ends with the pattern; the caller steps over its last byte.
            return (matched != negated).then(|| &whole[whole.len() - 1..]);
        } else if remaining >= 3 && pattern[index + 1] == b'-' {
            let (mut start, mut end) = (pattern[index] as i8, pattern[index + 2] as i8);
            if start > end {
                std::mem::swap(&mut start, &mut end);
            }
            matched |= (start..=end).contains(&(byte as i8));
            index += 2;
        } else {
            matched |= current == byte;
        }
        index += 1;
    }
    if matched != negated {
        Some(&pattern[index..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_questions_and_literals() {
        // As in Redis, where KEYS and SCAN take a lone `*` as "all keys" before matching.
        assert!(!matches(b"*", b""));
        assert!(matches(b"*", b"anything"));
        assert!(matches(b"h?llo", b"hello"));
        assert!(!matches(b"h?llo", b"hllo"));
        assert!(matches(b"h*llo", b"heeeello"));
        assert!(matches(b"user:*:name", b"user:42:name"));
        assert!(!matches(b"user:*:name", b"user:42:age"));
        assert!(matches(b"a**", b"a"));
        assert!(!matches(b"", b"a"));
        assert!(matches(b"", b""));
    }

    #[test]
    fn sets_ranges_negation_and_escapes() {
        assert!(matches(b"h[ae]llo", b"hallo"));
        assert!(!matches(b"h[ae]llo", b"hillo"));
        assert!(matches(b"h[^e]llo", b"hallo"));
        assert!(!matches(b"h[^e]llo", b"hello"));
        assert!(matches(b"h[a-b]llo", b"hbllo"));
        assert!(matches(b"h[b-a]llo", b"hallo"));
        assert!(matches(b"h\\*llo", b"h*llo"));
        assert!(!matches(b"h\\*llo", b"hello"));
        assert!(matches(b"[\\]]", b"]"));
        // An unclosed set takes the rest of the pattern.
        assert!(matches(b"[abc", b"b"));
        assert!(!matches(b"[abc", b"d"));
        assert!(!matches(b"[", b"a"));
        assert!(matches(b"[^", b"a"));
        assert!(!matches(b"a[", b"a"));
    }

    #[test]
    fn many_stars_do_not_take_exponential_time() {
        let pattern = b"a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let text = [b'a'; 100];
        assert!(!matches(pattern, &text));
    }
}
