//! Parsing of the commands that walk the keyspace rather than name keys: KEYS, SCAN, RANDOMKEY,
//! and OBJECT's questions about one key; and the SCAN cursor's layout.

use super::{
    at_least, exact, parse_integer, unknown_subcommand, Command, CommandError, KeyCommand,
    NodeCommand,
};

/// SCAN's COUNT when none is given (Redis's).
pub const SCAN_COUNT_DEFAULT: usize = 10;

/// Bits of a SCAN cursor: the partition, the table layout the position belongs to, and the
/// position (a bucket index) within the partition's table.
const CURSOR_BUCKET_BITS: u32 = 40;
const CURSOR_LAYOUT_BITS: u32 = 10;
const CURSOR_PARTITION_BITS: u32 = 64 - CURSOR_BUCKET_BITS - CURSOR_LAYOUT_BITS;

/// Where a SCAN goes on: a bucket of one partition's table, valid only while that table keeps the
/// layout it had (`layout`, the low bits of a count of its rehashes). Cursor 0 is partition 0's
/// start; a bucket of 0 always means a partition's start, whatever the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanCursor {
    pub partition: u32,
    pub layout: u32,
    pub bucket: u64,
}

impl ScanCursor {
    pub const LAYOUT_MASK: u32 = (1 << CURSOR_LAYOUT_BITS) - 1;
    pub const BUCKET_MAX: u64 = (1 << CURSOR_BUCKET_BITS) - 1;

    /// The start of `partition`.
    #[must_use]
    pub fn start_of(partition: u32) -> ScanCursor {
        ScanCursor { partition, layout: 0, bucket: 0 }
    }

    #[must_use]
    pub fn decode(cursor: u64) -> ScanCursor {
        ScanCursor {
            partition: (cursor >> (CURSOR_BUCKET_BITS + CURSOR_LAYOUT_BITS)) as u32,
            layout: ((cursor >> CURSOR_BUCKET_BITS) as u32) & Self::LAYOUT_MASK,
            bucket: cursor & Self::BUCKET_MAX,
        }
    }

    #[must_use]
    pub fn encode(self) -> u64 {
        assert!(u64::from(self.partition) < 1 << CURSOR_PARTITION_BITS);
        assert!(self.layout <= Self::LAYOUT_MASK && self.bucket <= Self::BUCKET_MAX);
        (u64::from(self.partition) << (CURSOR_BUCKET_BITS + CURSOR_LAYOUT_BITS))
            | (u64::from(self.layout) << CURSOR_BUCKET_BITS)
            | self.bucket
    }
}

/// What OBJECT asks about a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectQuestion {
    Encoding,
    Frequency,
    IdleTime,
    ReferenceCount,
}

pub(super) fn parse_keys(rest: &[&[u8]]) -> Result<Command, CommandError> {
    exact("keys", rest, 1)?;
    Ok(Command::Key(KeyCommand::Keys { pattern: rest[0].to_vec() }))
}

pub(super) fn parse_random_key(rest: &[&[u8]]) -> Result<Command, CommandError> {
    exact("randomkey", rest, 0)?;
    Ok(Command::Key(KeyCommand::RandomKey { seed: 0 }))
}

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type], checked in Redis's order: the
/// cursor, then each option as it comes.
pub(super) fn parse_scan(rest: &[&[u8]]) -> Result<Command, CommandError> {
    at_least("scan", rest, 1)?;
    let cursor = parse_cursor(rest[0]).ok_or_else(|| CommandError("ERR invalid cursor".into()))?;
    let mut pattern = None;
    let mut count = SCAN_COUNT_DEFAULT;
    let mut type_name = None;
    let mut options = &rest[1..];
    while let Some(option) = options.first() {
        let (Some(argument), true) = (options.get(1), options.len() >= 2) else {
            return Err(CommandError::syntax());
        };
        if option.eq_ignore_ascii_case(b"count") {
            let asked = parse_integer(argument)?;
            if asked < 1 {
                return Err(CommandError::syntax());
            }
            count = usize::try_from(asked).unwrap_or(usize::MAX);
        } else if option.eq_ignore_ascii_case(b"match") {
            // A lone `*` matches every key, the empty one included, as in Redis.
            pattern = (*argument != b"*").then(|| argument.to_vec());
        } else if option.eq_ignore_ascii_case(b"type") {
            type_name = Some(argument.to_vec());
        } else {
            return Err(CommandError::syntax());
        }
        options = &options[2..];
    }
    // Every value is a string: any other type name finds nothing.
    let strings_only = type_name.is_none_or(|name| name.eq_ignore_ascii_case(b"string"));
    let cursor = ScanCursor::decode(cursor);
    Ok(Command::Key(KeyCommand::Scan { cursor, count, pattern, other_type: !strings_only }))
}

/// A cursor as Redis reads one (C's `strtoul`): no leading space, an optional sign (a negative
/// number wraps), digits, nothing after; out of range is refused. The empty string is 0.
fn parse_cursor(word: &[u8]) -> Option<u64> {
    let (negative, digits) = match word.first() {
        Some(b'-') => (true, &word[1..]),
        Some(b'+') => (false, &word[1..]),
        _ => (false, word),
    };
    if !digits.iter().all(u8::is_ascii_digit) || (digits.is_empty() && !word.is_empty()) {
        return None;
    }
    let mut value: u64 = 0;
    for digit in digits {
        value = value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
    }
    Some(if negative { value.wrapping_neg() } else { value })
}

/// OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT key, or OBJECT HELP.
pub(super) fn parse_object(rest: &[&[u8]]) -> Result<Command, CommandError> {
    at_least("object", rest, 1)?;
    let subcommand = String::from_utf8_lossy(rest[0]).to_ascii_lowercase();
    let question = match subcommand.as_str() {
        "help" => {
            exact("object|help", &rest[1..], 0)?;
            return Ok(Command::Node(NodeCommand::ObjectHelp));
        }
        "encoding" => ObjectQuestion::Encoding,
        "freq" => ObjectQuestion::Frequency,
        "idletime" => ObjectQuestion::IdleTime,
        "refcount" => ObjectQuestion::ReferenceCount,
        _ => return Err(unknown_subcommand(&String::from_utf8_lossy(rest[0]), "OBJECT")),
    };
    exact(&format!("object|{subcommand}"), &rest[1..], 1)?;
    Ok(Command::Key(KeyCommand::Object { key: rest[1].to_vec(), question }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_as_strtoul_reads_them() {
        assert_eq!(parse_cursor(b"0"), Some(0));
        assert_eq!(parse_cursor(b""), Some(0));
        assert_eq!(parse_cursor(b"+7"), Some(7));
        assert_eq!(parse_cursor(b"007"), Some(7));
        assert_eq!(parse_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(parse_cursor(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_cursor(b"18446744073709551616"), None);
        assert_eq!(parse_cursor(b"+"), None);
        assert_eq!(parse_cursor(b" 1"), None);
        assert_eq!(parse_cursor(b"1x"), None);
    }

    #[test]
    fn a_cursor_survives_its_encoding() {
        let cursor = ScanCursor { partition: 16383, layout: 1023, bucket: ScanCursor::BUCKET_MAX };
        assert_eq!(ScanCursor::decode(cursor.encode()), cursor);
        assert_eq!(ScanCursor::start_of(0).encode(), 0);
        assert_eq!(ScanCursor::decode(0), ScanCursor::start_of(0));
    }
}
