//! Glob patterns as Redis matches them (`stringmatchlen`): `*`, `?`, `[abc]`, `[^a-z]` and
//! `\` escapes, for CONFIG GET and COMMAND LIST FILTERBY PATTERN.

/// Whether `text` matches `pattern`, case-sensitively. Runs in O(pattern × text): a `*` is
/// retried from the last one only, never recursively.
#[must_use]
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut pattern_at, mut text_at) = (0, 0);
    // The position after the last `*` seen, and the text position it is retried from.
    let mut retry: Option<(usize, usize)> = None;
    while text_at < text.len() {
        match step(pattern, pattern_at, text[text_at]) {
            Step::Star => {
                retry = Some((pattern_at + 1, text_at));
                pattern_at += 1;
                continue;
            }
            Step::Matched(next) => {
                pattern_at = next;
                text_at += 1;
                continue;
            }
            Step::Failed => {}
        }
        let Some((after_star, from)) = retry else { return false };
        pattern_at = after_star;
        text_at = from + 1;
        retry = Some((after_star, from + 1));
    }
    pattern[pattern_at..].iter().all(|&byte| byte == b'*')
}

enum Step {
    Star,
    /// The byte matched; the pattern continues at this position.
    Matched(usize),
    Failed,
}

/// Matches one `byte` of text against the pattern element at `at`.
fn step(pattern: &[u8], at: usize, byte: u8) -> Step {
    match pattern.get(at) {
        None => Step::Failed,
        Some(b'*') => Step::Star,
        Some(b'?') => Step::Matched(at + 1),
        Some(b'[') => class(pattern, at + 1, byte),
        Some(b'\\') if at + 1 < pattern.len() => {
            if pattern[at + 1] == byte {
                Step::Matched(at + 2)
            } else {
                Step::Failed
            }
        }
        Some(&literal) if literal == byte => Step::Matched(at + 1),
        Some(_) => Step::Failed,
    }
}

/// A `[...]` class starting after its `[`; an unclosed class runs to the pattern's end.
fn class(pattern: &[u8], mut at: usize, byte: u8) -> Step {
    let negated = pattern.get(at) == Some(&b'^');
    if negated {
        at += 1;
    }
    let mut matched = false;
    while at < pattern.len() && pattern[at] != b']' {
        if pattern[at] == b'\\' && at + 1 < pattern.len() {
            matched |= pattern[at + 1] == byte;
            at += 2;
        } else if at + 2 < pattern.len() && pattern[at + 1] == b'-' && pattern[at + 2] != b']' {
            let (low, high) = (pattern[at].min(pattern[at + 2]), pattern[at].max(pattern[at + 2]));
            matched |= (low..=high).contains(&byte);
            at += 3;
        } else {
            matched |= pattern[at] == byte;
            at += 1;
        }
    }
    if matched == negated {
        return Step::Failed;
    }
    Step::Matched((at + 1).min(pattern.len()))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_match_like_redis() {
        assert!(matches(b"*", b"save"));
        assert!(matches(b"*", b""));
        assert!(matches(b"append*", b"appendfsync"));
        assert!(matches(b"max*", b"maxmemory-policy"));
        assert!(matches(b"*memory*", b"maxmemory"));
        assert!(matches(b"sa?e", b"save"));
        assert!(matches(b"s[a-c]ve", b"save"));
        assert!(matches(b"s[^x]ve", b"save"));
        assert!(!matches(b"s[^a]ve", b"save"));
        assert!(matches(b"a\\*b", b"a*b"));
        assert!(!matches(b"a\\*b", b"axb"));
        assert!(!matches(b"save", b"saves"));
        assert!(!matches(b"x*", b"save"));
        assert!(!matches(b"?", b""));
        assert!(matches(b"*a*a*a*b", b"aaaaaaaaaaaaaaaaaaaaaaaaab"));
        assert!(!matches(b"*a*a*a*b", b"aaaaaaaaaaaaaaaaaaaaaaaaaa"));
    }
}
