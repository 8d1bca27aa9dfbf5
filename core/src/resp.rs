//! The RESP2 codec: client commands in, replies out, and a reply parser for the client side.
//!
//! Nothing here does I/O. Each parser looks at the front of a buffer and answers
//! "incomplete", "complete after N bytes" or a protocol error; the caller keeps the bytes and
//! calls again once more have arrived. The one exception, [`LargeCommand`], keeps the
//! arguments of a large command as they arrive, so that its bytes need not wait in the input.
//!
//! Commands come in two shapes, as Redis accepts them:
//!
//! - A RESP array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), which is what
//!   redis-cli, redis-benchmark and client libraries send.
//! - An inline line (`GET k\r\n`), as typed into telnet, split on blanks with Redis's quoting
//!   rules (`"a b"`, `'c'`, `"\x41"`).
//!
//! Arguments come back as [`Argument`]s. Every argument of a RESP array, and every inline word
//! without quotes, is a byte range into the input, so the hot path allocates nothing per
//! argument once the caller's `Vec<Argument>` has grown. Only inline words with quotes, whose
//! unescaped bytes differ from the input, own their bytes.
//!
//! Every size a peer declares is checked against [`RespLimits`] as soon as its header is read,
//! before any of its data has arrived, so a parser never asks the caller to buffer more than
//! the limits allow for one element.

use std::ops::Range;

mod large;

pub use large::{Fed, LargeCommand};

/// Default largest bulk string in a command: large values are rare and cost memory per client.
pub const BULK_BYTES_MAX_DEFAULT: usize = 8 * 1024 * 1024;
/// Default largest number of elements in one array.
pub const ARRAY_LENGTH_MAX_DEFAULT: usize = 1_048_576;
/// Default longest inline line, as Redis's `PROTO_INLINE_MAX_SIZE`.
pub const INLINE_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Deepest nesting of arrays [`parse_reply`] and [`skip_reply`] accept. Redis's own replies
/// nest a few levels at most; the bound keeps recursion and the skip stack small.
pub const REPLY_DEPTH_MAX: usize = 32;

/// Fewest bytes one bulk argument of a command can take (`$0\r\n\r\n`). Bounds how many
/// argument slots a short array header can make the parser reserve.
const BULK_ARGUMENT_BYTES_MIN: usize = 6;
/// Fewest bytes one reply element can take (`+\r\n`).
const REPLY_ELEMENT_BYTES_MIN: usize = 3;
/// Magnitude of `i64::MIN`, the largest a decimal line may spell.
const DECIMAL_MAGNITUDE_MAX: u64 = 1 << 63;

const _: () = assert!(BULK_ARGUMENT_BYTES_MIN == b"$0\r\n\r\n".len());
const _: () = assert!(REPLY_ELEMENT_BYTES_MIN == b"+\r\n".len());
const _: () = assert!(DECIMAL_MAGNITUDE_MAX == i64::MIN.unsigned_abs());
const _: () = assert!(REPLY_DEPTH_MAX > 0);

/// Limits on what a client may send; input beyond them is a protocol error.
#[derive(Clone, Copy, Debug)]
pub struct RespLimits {
    /// Largest bulk string, in bytes.
    pub bulk_bytes_max: usize,
    /// Largest number of elements in one array.
    pub array_length_max: usize,
    /// Longest inline command line (or simple reply line), in bytes before the `\n`.
    pub inline_bytes_max: usize,
}

impl Default for RespLimits {
    fn default() -> RespLimits {
        RespLimits {
            bulk_bytes_max: BULK_BYTES_MAX_DEFAULT,
            array_length_max: ARRAY_LENGTH_MAX_DEFAULT,
            inline_bytes_max: INLINE_BYTES_MAX_DEFAULT,
        }
    }
}

/// Outcome of trying to parse one command from the front of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed; nothing was consumed.
    Incomplete,
    /// One command took the first `consumed` bytes (possibly with zero arguments).
    Complete { consumed: usize },
}

/// Where the bytes of one parsed command argument are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Argument {
    /// The argument is `input[range]`, where `input` is the slice given to [`parse_command`].
    Range(Range<usize>),
    /// The unescaped bytes of an inline argument written with quotes.
    Owned(Vec<u8>),
}

impl Argument {
    /// The argument's bytes, given the same `input` that [`parse_command`] parsed.
    #[must_use]
    pub fn bytes<'a>(&'a self, input: &'a [u8]) -> &'a [u8] {
        match self {
            Argument::Range(range) => &input[range.clone()],
            Argument::Owned(bytes) => bytes,
        }
    }
}

/// A protocol error. The text of each is what Redis replies (after `-`) before it closes the
/// connection, so clients see the same messages.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RespError {
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    #[error("Protocol error: expected '$', got '{}'", printable(.found))]
    ExpectedBulk { found: u8 },
    #[error("Protocol error: expected CRLF after bulk data")]
    MissingBulkTerminator,
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("Protocol error: invalid integer reply")]
    InvalidInteger,
    #[error("Protocol error: invalid reply type '{}'", printable(.found))]
    UnknownReplyType { found: u8 },
    #[error("Protocol error: reply line not terminated by CRLF")]
    InvalidLineTerminator,
    #[error("Protocol error: too big reply line")]
    ReplyLineTooBig,
    #[error("Protocol error: reply nested deeper than {depth_max} arrays")]
    ReplyTooDeep { depth_max: usize },
}

/// Shows a byte as Redis's `%c` would, for error texts. It takes a reference because that is
/// what the error derive hands over for a field.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn printable(byte: &u8) -> char {
    char::from(*byte)
}

/// What reading a decimal line such as `-12\r\n` found.
enum Decimal {
    Incomplete,
    Invalid,
    /// The value, and the position just after its `\r\n`.
    Complete {
        value: i64,
        end: usize,
    },
}

/// Reads a strict decimal (optional `-`, no leading zeros, no `-0`, fits in `i64`) followed by
/// `\r\n`, starting at `start`. A bad byte or an overflow is reported as soon as it is seen, not
/// when the line ends, so a peer cannot make the caller buffer a long garbage header.
fn read_decimal(input: &[u8], start: usize) -> Decimal {
    let negative = input.get(start) == Some(&b'-');
    let digits_start = start + usize::from(negative);
    let mut position = digits_start;
    let mut magnitude: u64 = 0;
    loop {
        let Some(&byte) = input.get(position) else {
            return Decimal::Incomplete;
        };
        if byte == b'\r' {
            break;
        }
        if !byte.is_ascii_digit() || (position > digits_start && input[digits_start] == b'0') {
            return Decimal::Invalid;
        }
        let next =
            magnitude.checked_mul(10).and_then(|tens| tens.checked_add(u64::from(byte - b'0')));
        match next {
            Some(next) if next <= DECIMAL_MAGNITUDE_MAX => magnitude = next,
            _ => return Decimal::Invalid,
        }
        position += 1;
    }
    if position == digits_start || (negative && magnitude == 0) {
        return Decimal::Invalid;
    }
    let value = if negative {
        0_i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    };
    let Some(value) = value else {
        return Decimal::Invalid;
    };
    match input.get(position + 1) {
        None => Decimal::Incomplete,
        Some(b'\n') => Decimal::Complete { value, end: position + 2 },
        Some(_) => Decimal::Invalid,
    }
}

/// Checks the `\r\n` after bulk data of `length` bytes at `data_start`. Returns the data's
/// range, or `None` when not all of it has arrived.
fn bulk_data(
    input: &[u8],
    data_start: usize,
    length: usize,
) -> Result<Option<Range<usize>>, RespError> {
    let data_end = data_start.saturating_add(length);
    let terminator = input.get(data_end..).unwrap_or_default();
    // Each terminator byte is checked as soon as it arrives.
    match terminator {
        [] | [b'\r'] => Ok(None),
        [b'\r', b'\n', ..] => Ok(Some(data_start..data_end)),
        _ => Err(RespError::MissingBulkTerminator),
    }
}

/// Parses one client command (a RESP array of bulk strings, or an inline command line as
/// redis-cli and telnet send it, with Redis's quoting rules for inline) from the front of
/// `input`.
///
/// On `Complete`, `arguments` holds one [`Argument`] per argument (it is cleared first); on
/// `Incomplete` or an error it is left empty. An empty array (`*0`), an array of negative
/// length (`*-1`, `*-10`: Redis ignores them) and an empty inline line are consumed with zero
/// arguments: the caller skips them.
///
/// # Errors
///
/// A [`RespError`] when the input breaks the protocol or exceeds `limits`; the connection
/// should then be closed after sending the error, as Redis does.
///
/// # Panics
///
/// Never on any input: the asserts inside check this module's own postconditions.
pub fn parse_command(
    input: &[u8],
    limits: &RespLimits,
    arguments: &mut Vec<Argument>,
) -> Result<Parsed, RespError> {
    arguments.clear();
    let Some(&first) = input.first() else {
        return Ok(Parsed::Incomplete);
    };
    let parsed = if first == b'*' {
        parse_array_command(input, limits, arguments)
    } else {
        parse_inline_command(input, limits, arguments)
    };
    match parsed {
        Ok(Parsed::Complete { consumed }) => {
            assert!(consumed > 0);
            assert!(consumed <= input.len());
            debug_assert!(arguments.iter().all(|argument| match argument {
                Argument::Range(range) => range.start <= range.end && range.end <= consumed,
                Argument::Owned(_) => true,
            }));
        }
        Ok(Parsed::Incomplete) | Err(_) => arguments.clear(),
    }
    parsed
}

fn parse_array_command(
    input: &[u8],
    limits: &RespLimits,
    arguments: &mut Vec<Argument>,
) -> Result<Parsed, RespError> {
    debug_assert_eq!(input[0], b'*');
    let (length, mut position) = match read_decimal(input, 1) {
        Decimal::Incomplete => return Ok(Parsed::Incomplete),
        Decimal::Invalid => return Err(RespError::InvalidMultibulkLength),
        Decimal::Complete { value, end } => (value, end),
    };
    // Redis consumes any length of zero or less and runs nothing (`*-10` too).
    if length <= 0 {
        return Ok(Parsed::Complete { consumed: position });
    }
    let length = usize::try_from(length)
        .ok()
        .filter(|length| *length <= limits.array_length_max)
        .ok_or(RespError::InvalidMultibulkLength)?;
    // Reserve only what the bytes at hand could hold, so a short header cannot make us
    // allocate for a million arguments that never arrive.
    arguments.reserve(length.min((input.len() - position) / BULK_ARGUMENT_BYTES_MIN + 1));
    for _ in 0..length {
        let Some(range) = parse_bulk_argument(input, position, limits)? else {
            return Ok(Parsed::Incomplete);
        };
        position = range.end + 2;
        arguments.push(Argument::Range(range));
    }
    Ok(Parsed::Complete { consumed: position })
}

/// Parses one `$<length>\r\n<data>\r\n` element at `start`; returns the data's range.
fn parse_bulk_argument(
    input: &[u8],
    start: usize,
    limits: &RespLimits,
) -> Result<Option<Range<usize>>, RespError> {
    let Some((length, data_start)) = read_argument_header(input, start, limits)? else {
        return Ok(None);
    };
    bulk_data(input, data_start, length)
}

/// Reads the `$<length>\r\n` header of a command's bulk argument at `start`: its length
/// (within the limit) and where its data starts, or `None` when the header is incomplete.
fn read_argument_header(
    input: &[u8],
    start: usize,
    limits: &RespLimits,
) -> Result<Option<(usize, usize)>, RespError> {
    let Some(&marker) = input.get(start) else {
        return Ok(None);
    };
    if marker != b'$' {
        return Err(RespError::ExpectedBulk { found: marker });
    }
    let (length, data_start) = match read_decimal(input, start + 1) {
        Decimal::Incomplete => return Ok(None),
        Decimal::Invalid => return Err(RespError::InvalidBulkLength),
        Decimal::Complete { value, end } => (value, end),
    };
    let length = usize::try_from(length)
        .ok()
        .filter(|length| *length <= limits.bulk_bytes_max)
        .ok_or(RespError::InvalidBulkLength)?;
    Ok(Some((length, data_start)))
}

fn parse_inline_command(
    input: &[u8],
    limits: &RespLimits,
    arguments: &mut Vec<Argument>,
) -> Result<Parsed, RespError> {
    // The limit covers every byte before the `\n`, including an optional `\r`. Searching only
    // within it keeps the scan bounded however much garbage has been buffered.
    let window = &input[..input.len().min(limits.inline_bytes_max.saturating_add(1))];
    let Some(newline) = window.iter().position(|&byte| byte == b'\n') else {
        if input.len() > limits.inline_bytes_max {
            return Err(RespError::InlineTooBig);
        }
        return Ok(Parsed::Incomplete);
    };
    let mut line = &input[..newline];
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    // Redis splits the line as a C string, so a NUL byte ends it; do the same to agree on
    // what such a line means.
    if let Some(nul) = line.iter().position(|&byte| byte == 0) {
        line = &line[..nul];
    }
    split_inline(line, arguments)?;
    Ok(Parsed::Complete { consumed: newline + 1 })
}

/// Blank bytes between inline arguments: C's `isspace`, as Redis uses.
fn is_blank(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Bytes that end an inline argument written without quotes. Redis's splitter ends words only
/// on these, not on every blank, so vertical tab and form feed stay inside a word.
fn ends_word(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// Splits an inline line into arguments with Redis's rules; ranges are into `line`, which
/// starts where the parsed input starts.
fn split_inline(line: &[u8], arguments: &mut Vec<Argument>) -> Result<(), RespError> {
    let mut position = 0;
    loop {
        while position < line.len() && is_blank(line[position]) {
            position += 1;
        }
        if position == line.len() {
            return Ok(());
        }
        position = split_word(line, position, arguments)?;
    }
}

/// Reads one inline argument starting at `start`; returns the position after it.
fn split_word(
    line: &[u8],
    start: usize,
    arguments: &mut Vec<Argument>,
) -> Result<usize, RespError> {
    let mut position = start;
    while position < line.len() && !ends_word(line[position]) {
        if line[position] == b'"' || line[position] == b'\'' {
            return split_quoted_word(line, start, position, arguments);
        }
        position += 1;
    }
    arguments.push(Argument::Range(start..position));
    Ok(position)
}

/// Reads an inline argument whose bytes from `quote` on start with a quote. Bytes before the
/// quote belong to the argument too (`ab"c d"` is `abc d`), and the closing quote ends it.
fn split_quoted_word(
    line: &[u8],
    start: usize,
    quote: usize,
    arguments: &mut Vec<Argument>,
) -> Result<usize, RespError> {
    let mut word = line[start..quote].to_vec();
    let after_quote = if line[quote] == b'"' {
        unquote_double(line, quote + 1, &mut word)?
    } else {
        unquote_single(line, quote + 1, &mut word)?
    };
    // A closing quote must be followed by a blank or the end of the line.
    if after_quote < line.len() && !is_blank(line[after_quote]) {
        return Err(RespError::UnbalancedQuotes);
    }
    arguments.push(Argument::Owned(word));
    Ok(after_quote)
}

/// Copies the inside of a `"..."` argument into `word`, resolving `\xHH`, `\n`, `\r`, `\t`,
/// `\b`, `\a` and `\<other>` escapes. Returns the position after the closing quote.
fn unquote_double(line: &[u8], start: usize, word: &mut Vec<u8>) -> Result<usize, RespError> {
    let mut position = start;
    loop {
        match line.get(position..).unwrap_or_default() {
            [] => return Err(RespError::UnbalancedQuotes),
            [b'"', ..] => return Ok(position + 1),
            [b'\\', b'x', high, low, ..] if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
                word.push(hex_value(*high) << 4 | hex_value(*low));
                position += 4;
            }
            [b'\\', escaped, ..] => {
                word.push(unescape(*escaped));
                position += 2;
            }
            [byte, ..] => {
                word.push(*byte);
                position += 1;
            }
        }
    }
}

/// Copies the inside of a `'...'` argument into `word`; only `\'` is an escape there.
fn unquote_single(line: &[u8], start: usize, word: &mut Vec<u8>) -> Result<usize, RespError> {
    let mut position = start;
    loop {
        match line.get(position..).unwrap_or_default() {
            [] => return Err(RespError::UnbalancedQuotes),
            [b'\'', ..] => return Ok(position + 1),
            [b'\\', b'\'', ..] => {
                word.push(b'\'');
                position += 2;
            }
            [byte, ..] => {
                word.push(*byte);
                position += 1;
            }
        }
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => unreachable!("caller checked for a hex digit"),
    }
}

fn unescape(escaped: u8) -> u8 {
    match escaped {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'a' => 0x07,
        other => other,
    }
}

/// A RESP2 reply, as built by tests and clients. The server encodes its replies directly with
/// the `encode_*` functions instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+text`. Parsing replaces bytes that are not UTF-8 with U+FFFD.
    Simple(String),
    /// `-text`, where the text starts with a code such as `ERR` or `WRONGTYPE`.
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    /// `$-1`: a missing value.
    Null,
    /// `*-1`: a missing array.
    NullArray,
    Array(Vec<Reply>),
}

impl Reply {
    /// Appends the reply's RESP2 bytes to `output`.
    pub fn encode(&self, output: &mut Vec<u8>) {
        match self {
            Reply::Simple(text) => encode_simple(output, text),
            Reply::Error(text) => encode_error(output, text),
            Reply::Integer(value) => encode_integer(output, *value),
            Reply::Bulk(value) => encode_bulk(output, value),
            Reply::Null => encode_null(output),
            Reply::NullArray => encode_null_array(output),
            Reply::Array(elements) => {
                encode_array_header(output, elements.len());
                for element in elements {
                    element.encode(output);
                }
            }
        }
    }
}

/// Appends `marker`, `text` and `\r\n`. A CR or LF inside `text` would end the line early and
/// desynchronize the client, so each becomes a space, as Redis does for error texts.
fn encode_line(output: &mut Vec<u8>, marker: u8, text: &str) {
    output.reserve(text.len() + 3);
    output.push(marker);
    let start = output.len();
    output.extend_from_slice(text.as_bytes());
    for byte in &mut output[start..] {
        if *byte == b'\r' || *byte == b'\n' {
            *byte = b' ';
        }
    }
    output.extend_from_slice(b"\r\n");
}

/// Appends `marker`, the decimal `value` and `\r\n`.
fn encode_decimal_line<V: itoa::Integer>(output: &mut Vec<u8>, marker: u8, value: V) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(value).as_bytes();
    output.reserve(digits.len() + 3);
    output.push(marker);
    output.extend_from_slice(digits);
    output.extend_from_slice(b"\r\n");
}

/// Appends `+text\r\n`.
pub fn encode_simple(output: &mut Vec<u8>, text: &str) {
    encode_line(output, b'+', text);
}

/// Appends `-text\r\n`; `text` already starts with its code (`ERR`, `WRONGTYPE`, ...).
pub fn encode_error(output: &mut Vec<u8>, text: &str) {
    encode_line(output, b'-', text);
}

/// Appends `:value\r\n`.
pub fn encode_integer(output: &mut Vec<u8>, value: i64) {
    encode_decimal_line(output, b':', value);
}

/// Appends `$length\r\nvalue\r\n`, reserving the whole element first so it is copied once.
pub fn encode_bulk(output: &mut Vec<u8>, value: &[u8]) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(value.len()).as_bytes();
    output.reserve(digits.len() + value.len() + 5);
    output.push(b'$');
    output.extend_from_slice(digits);
    output.extend_from_slice(b"\r\n");
    output.extend_from_slice(value);
    output.extend_from_slice(b"\r\n");
}

/// Appends `$-1\r\n`, the missing value.
pub fn encode_null(output: &mut Vec<u8>) {
    output.extend_from_slice(b"$-1\r\n");
}

/// Appends `*-1\r\n`, the missing array.
pub fn encode_null_array(output: &mut Vec<u8>) {
    output.extend_from_slice(b"*-1\r\n");
}

/// Appends `*length\r\n`; the caller then encodes `length` elements.
pub fn encode_array_header(output: &mut Vec<u8>, length: usize) {
    encode_decimal_line(output, b'*', length);
}

/// Encodes a command as a RESP array of bulk strings (client side), reserving the whole
/// command first so the output grows at most once.
pub fn encode_command(output: &mut Vec<u8>, arguments: &[&[u8]]) {
    // 20 digits hold any usize; 5 more bytes hold `$`, and two `\r\n`.
    let bytes_max: usize = arguments.iter().map(|argument| argument.len() + 25).sum();
    output.reserve(bytes_max + 25);
    let start = output.len();
    encode_array_header(output, arguments.len());
    for argument in arguments {
        encode_bulk(output, argument);
    }
    // A wrong estimate would only cost a second allocation, so this is checked in debug builds.
    debug_assert!(output.len() - start <= bytes_max + 25);
}

/// One reply element's header, read without copying anything.
enum Header {
    Simple(Range<usize>),
    Error(Range<usize>),
    Integer(i64),
    Bulk(Range<usize>),
    Null,
    NullArray,
    /// An array of this many elements (at least zero), which follow the header.
    Array(usize),
}

/// Reads the element starting at `start`: its header, and for every kind but arrays all of its
/// data. Returns the header and the position after what was read, or `None` when incomplete.
fn read_header(
    input: &[u8],
    start: usize,
    limits: &RespLimits,
) -> Result<Option<(Header, usize)>, RespError> {
    let Some(&marker) = input.get(start) else {
        return Ok(None);
    };
    match marker {
        b'+' => {
            Ok(read_line(input, start + 1, limits)?.map(|(line, end)| (Header::Simple(line), end)))
        }
        b'-' => {
            Ok(read_line(input, start + 1, limits)?.map(|(line, end)| (Header::Error(line), end)))
        }
        b':' => match read_decimal(input, start + 1) {
            Decimal::Incomplete => Ok(None),
            Decimal::Invalid => Err(RespError::InvalidInteger),
            Decimal::Complete { value, end } => Ok(Some((Header::Integer(value), end))),
        },
        b'$' => read_bulk_header(input, start + 1, limits),
        b'*' => read_array_header(input, start + 1, limits),
        _ => Err(RespError::UnknownReplyType { found: marker }),
    }
}

/// Reads the text of a simple or error line up to its `\r\n`; returns its range and the
/// position after the `\r\n`.
fn read_line(
    input: &[u8],
    start: usize,
    limits: &RespLimits,
) -> Result<Option<(Range<usize>, usize)>, RespError> {
    let window_end =
        input.len().min(start.saturating_add(limits.inline_bytes_max).saturating_add(1));
    let window = &input[start..window_end];
    let Some(offset) = window.iter().position(|&byte| byte == b'\r' || byte == b'\n') else {
        if input.len() - start > limits.inline_bytes_max {
            return Err(RespError::ReplyLineTooBig);
        }
        return Ok(None);
    };
    let line_end = start + offset;
    match &input[line_end..] {
        [b'\r'] => Ok(None),
        [b'\r', b'\n', ..] => Ok(Some((start..line_end, line_end + 2))),
        _ => Err(RespError::InvalidLineTerminator),
    }
}

fn read_bulk_header(
    input: &[u8],
    start: usize,
    limits: &RespLimits,
) -> Result<Option<(Header, usize)>, RespError> {
    let (length, data_start) = match read_decimal(input, start) {
        Decimal::Incomplete => return Ok(None),
        Decimal::Invalid => return Err(RespError::InvalidBulkLength),
        Decimal::Complete { value: -1, end } => return Ok(Some((Header::Null, end))),
        Decimal::Complete { value, end } => (value, end),
    };
    let length = usize::try_from(length)
        .ok()
        .filter(|length| *length <= limits.bulk_bytes_max)
        .ok_or(RespError::InvalidBulkLength)?;
    let data = bulk_data(input, data_start, length)?;
    Ok(data.map(|data| {
        let end = data.end + 2;
        (Header::Bulk(data), end)
    }))
}

fn read_array_header(
    input: &[u8],
    start: usize,
    limits: &RespLimits,
) -> Result<Option<(Header, usize)>, RespError> {
    let (length, end) = match read_decimal(input, start) {
        Decimal::Incomplete => return Ok(None),
        Decimal::Invalid => return Err(RespError::InvalidMultibulkLength),
        Decimal::Complete { value: -1, end } => return Ok(Some((Header::NullArray, end))),
        Decimal::Complete { value, end } => (value, end),
    };
    let length = usize::try_from(length)
        .ok()
        .filter(|length| *length <= limits.array_length_max)
        .ok_or(RespError::InvalidMultibulkLength)?;
    Ok(Some((Header::Array(length), end)))
}

/// Parses one reply from the front of `input`: `Ok(None)` when incomplete, otherwise the reply
/// and the bytes it took. Arrays nest at most [`REPLY_DEPTH_MAX`] deep; sizes are bounded by
/// `limits` (simple and error lines by `inline_bytes_max`). Never panics on any input.
///
/// # Errors
///
/// A [`RespError`] when the input is not a RESP2 reply or exceeds the limits.
///
/// # Panics
///
/// Never on any input: the asserts inside check this module's own postconditions.
pub fn parse_reply(input: &[u8], limits: &RespLimits) -> Result<Option<(Reply, usize)>, RespError> {
    let parsed = parse_element(input, 0, limits, 0)?;
    if let Some((_, consumed)) = &parsed {
        assert!(*consumed > 0);
        assert!(*consumed <= input.len());
    }
    Ok(parsed)
}

/// Parses the element at `start`, inside `depth` arrays.
fn parse_element(
    input: &[u8],
    start: usize,
    limits: &RespLimits,
    depth: usize,
) -> Result<Option<(Reply, usize)>, RespError> {
    let Some((header, end)) = read_header(input, start, limits)? else {
        return Ok(None);
    };
    let reply = match header {
        Header::Simple(line) => Reply::Simple(String::from_utf8_lossy(&input[line]).into_owned()),
        Header::Error(line) => Reply::Error(String::from_utf8_lossy(&input[line]).into_owned()),
        Header::Integer(value) => Reply::Integer(value),
        Header::Bulk(data) => Reply::Bulk(input[data].to_vec()),
        Header::Null => Reply::Null,
        Header::NullArray => Reply::NullArray,
        Header::Array(length) => return parse_array_elements(input, end, limits, depth, length),
    };
    Ok(Some((reply, end)))
}

/// Parses the `length` elements of an array, itself inside `depth` arrays, that start at
/// `start`.
fn parse_array_elements(
    input: &[u8],
    start: usize,
    limits: &RespLimits,
    depth: usize,
    length: usize,
) -> Result<Option<(Reply, usize)>, RespError> {
    if depth >= REPLY_DEPTH_MAX {
        return Err(RespError::ReplyTooDeep { depth_max: REPLY_DEPTH_MAX });
    }
    // As for commands, reserve only what the bytes at hand could hold.
    let mut elements =
        Vec::with_capacity(length.min((input.len() - start) / REPLY_ELEMENT_BYTES_MIN + 1));
    let mut position = start;
    for _ in 0..length {
        let Some((element, end)) = parse_element(input, position, limits, depth + 1)? else {
            return Ok(None);
        };
        elements.push(element);
        position = end;
    }
    Ok(Some((Reply::Array(elements), position)))
}

/// Like [`parse_reply`] but only measures one reply without building it (fast path for load
/// generators). Agrees with [`parse_reply`] on every input: the same length, `None` or error.
///
/// # Errors
///
/// The same [`RespError`] that [`parse_reply`] returns for this input.
///
/// # Panics
///
/// Never on any input: the asserts inside check this module's own postconditions.
pub fn skip_reply(input: &[u8], limits: &RespLimits) -> Result<Option<usize>, RespError> {
    // Elements still to come in each open array, innermost last. Walking iteratively with an
    // explicit stack visits elements in the same order as `parse_reply`'s recursion, so both
    // meet the same first error or missing byte.
    let mut remaining = [0_usize; REPLY_DEPTH_MAX];
    let mut open = 0;
    let mut position = 0;
    loop {
        let Some((header, end)) = read_header(input, position, limits)? else {
            return Ok(None);
        };
        position = end;
        if let Header::Array(length) = header {
            if open >= REPLY_DEPTH_MAX {
                return Err(RespError::ReplyTooDeep { depth_max: REPLY_DEPTH_MAX });
            }
            if length > 0 {
                remaining[open] = length;
                open += 1;
                continue;
            }
        }
        // One element is complete: it may complete the arrays around it too.
        loop {
            if open == 0 {
                assert!(position > 0);
                assert!(position <= input.len());
                return Ok(Some(position));
            }
            remaining[open - 1] -= 1;
            if remaining[open - 1] > 0 {
                break;
            }
            open -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> RespLimits {
        RespLimits::default()
    }

    /// Limits small enough for random input to reach them.
    fn small_limits() -> RespLimits {
        RespLimits { bulk_bytes_max: 16, array_length_max: 4, inline_bytes_max: 16 }
    }

    /// Parses one command with default limits and returns what it took and its arguments.
    fn command(input: &[u8]) -> (usize, Vec<Vec<u8>>) {
        let mut arguments = Vec::new();
        match parse_command(input, &limits(), &mut arguments) {
            Ok(Parsed::Complete { consumed }) => {
                let owned = arguments.iter().map(|argument| argument.bytes(input).to_vec());
                (consumed, owned.collect())
            }
            other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn command_error(input: &[u8], limits: &RespLimits) -> String {
        let mut arguments = Vec::new();
        let outcome = parse_command(input, limits, &mut arguments);
        assert!(arguments.is_empty());
        outcome.expect_err("a protocol error").to_string()
    }

    fn words(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|word| word.as_bytes().to_vec()).collect()
    }

    /// Commands as redis-benchmark, redis-cli and a telnet user send them, with their arguments.
    fn client_commands() -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
        let mut mset = b"*21\r\n$4\r\nMSET\r\n".to_vec();
        let mut mset_arguments = words(&["MSET"]);
        for index in 0..10 {
            let key = format!("key:{index:012}");
            mset.extend_from_slice(format!("$16\r\n{key}\r\n$3\r\nxxx\r\n").as_bytes());
            mset_arguments.extend(words(&[&key, "xxx"]));
        }
        vec![
            (b"PING\r\n".to_vec(), words(&["PING"])),
            (b"*1\r\n$4\r\nPING\r\n".to_vec(), words(&["PING"])),
            (
                b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000042\r\n$3\r\nxxx\r\n".to_vec(),
                words(&["SET", "key:000000000042", "xxx"]),
            ),
            (
                b"*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000042\r\n".to_vec(),
                words(&["GET", "key:000000000042"]),
            ),
            (b"*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n".to_vec(), words(&["INCR", "counter"])),
            (
                b"*3\r\n$5\r\nLPUSH\r\n$6\r\nmylist\r\n$3\r\nxxx\r\n".to_vec(),
                words(&["LPUSH", "mylist", "xxx"]),
            ),
            (mset, mset_arguments),
            (b"*2\r\n$7\r\nCOMMAND\r\n$4\r\nDOCS\r\n".to_vec(), words(&["COMMAND", "DOCS"])),
            (b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n".to_vec(), words(&["GET", ""])),
            (
                b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\n\r\n\x00\xff\r\n".to_vec(),
                vec![b"SET".to_vec(), b"k".to_vec(), b"\r\n\x00\xff".to_vec()],
            ),
            (b"set a b\r\n".to_vec(), words(&["set", "a", "b"])),
            (b"get a\n".to_vec(), words(&["get", "a"])),
            (b"  PING \t \r\n".to_vec(), words(&["PING"])),
            (b"SET k \"a b\"\r\n".to_vec(), words(&["SET", "k", "a b"])),
        ]
    }

    #[test]
    fn client_command_shapes_parse() {
        for (input, expected) in client_commands() {
            let (consumed, arguments) = command(&input);
            assert_eq!(consumed, input.len());
            assert_eq!(arguments, expected);
        }
    }

    #[test]
    fn array_arguments_are_ranges() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let mut arguments = Vec::new();
        let parsed = parse_command(input, &limits(), &mut arguments).unwrap();
        assert_eq!(parsed, Parsed::Complete { consumed: input.len() });
        assert_eq!(arguments, vec![Argument::Range(8..11), Argument::Range(17..18)]);
    }

    #[test]
    fn empty_commands_are_consumed_without_arguments() {
        for input in [&b"*0\r\n"[..], b"*-1\r\n", b"*-10\r\n", b"\r\n", b"\n", b"   \t\r\n"] {
            let (consumed, arguments) = command(input);
            assert_eq!(consumed, input.len());
            assert!(arguments.is_empty());
        }
    }

    #[test]
    fn pipelined_commands_parse_back_to_back() {
        let commands = client_commands();
        let mut input: Vec<u8> = Vec::new();
        for (bytes, _) in &commands {
            input.extend_from_slice(bytes);
            input.extend_from_slice(b"*0\r\n");
        }
        let mut arguments = vec![Argument::Owned(b"stale".to_vec())];
        let mut position = 0;
        for (bytes, expected) in &commands {
            for expected_arguments in [expected.clone(), Vec::new()] {
                let rest = &input[position..];
                let parsed = parse_command(rest, &limits(), &mut arguments).unwrap();
                let Parsed::Complete { consumed } = parsed else { panic!("incomplete") };
                let found: Vec<Vec<u8>> =
                    arguments.iter().map(|argument| argument.bytes(rest).to_vec()).collect();
                assert_eq!(found, expected_arguments);
                position += consumed;
            }
            assert!(!bytes.is_empty());
        }
        assert_eq!(position, input.len());
        assert_eq!(
            parse_command(&input[position..], &limits(), &mut arguments),
            Ok(Parsed::Incomplete)
        );
        assert!(arguments.is_empty());
    }

    #[test]
    fn every_split_point_is_incomplete_until_the_last_byte() {
        let mut arguments = Vec::new();
        for (input, expected) in client_commands() {
            for split in 0..input.len() {
                let parsed = parse_command(&input[..split], &limits(), &mut arguments);
                assert_eq!(parsed, Ok(Parsed::Incomplete), "split {split} of {input:?}");
                assert!(arguments.is_empty());
            }
            let parsed = parse_command(&input, &limits(), &mut arguments);
            assert_eq!(parsed, Ok(Parsed::Complete { consumed: input.len() }));
            assert_eq!(arguments.len(), expected.len());
        }
    }

    #[test]
    fn malformed_arrays_give_redis_errors() {
        let cases: [(&[u8], &str); 16] = [
            (b"*abc\r\n", "Protocol error: invalid multibulk length"),
            (b"*-0\r\n", "Protocol error: invalid multibulk length"),
            (b"*01\r\n", "Protocol error: invalid multibulk length"),
            (b"*\r\n", "Protocol error: invalid multibulk length"),
            (b"*1\rx", "Protocol error: invalid multibulk length"),
            (b"*99999999999999999999\r\n", "Protocol error: invalid multibulk length"),
            (b"*-92233720368547758080\r\n", "Protocol error: invalid multibulk length"),
            (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
            (b"*1\r\n$x\r\n", "Protocol error: invalid bulk length"),
            (b"*1\r\n$+3\r\n", "Protocol error: invalid bulk length"),
            (b"*1\r\n:1\r\n", "Protocol error: expected '$', got ':'"),
            (b"*2\r\n$1\r\na\r\nx", "Protocol error: expected '$', got 'x'"),
            (b"*1\r\n$3\r\nabcX\r\n", "Protocol error: expected CRLF after bulk data"),
            (b"*1\r\n$3\r\nabc\rX", "Protocol error: expected CRLF after bulk data"),
            (b"*1\r\n$3\r\nabc\n", "Protocol error: expected CRLF after bulk data"),
            (b"*1\r\n$3\r\nabcd", "Protocol error: expected CRLF after bulk data"),
        ];
        for (input, message) in cases {
            assert_eq!(command_error(input, &limits()), message, "{input:?}");
        }
    }

    #[test]
    fn declared_sizes_over_the_limits_fail_before_the_data_arrives() {
        let limits = limits();
        let too_long = format!("*{}\r\n", limits.array_length_max + 1);
        assert_eq!(
            command_error(too_long.as_bytes(), &limits),
            "Protocol error: invalid multibulk length"
        );
        let longest = format!("*{}\r\n", limits.array_length_max);
        let mut arguments = Vec::new();
        let parsed = parse_command(longest.as_bytes(), &limits, &mut arguments);
        assert_eq!(parsed, Ok(Parsed::Incomplete));
        assert!(arguments.capacity() < 16, "reserved for arguments that have not arrived");

        let too_big = format!("*1\r\n${}\r\n", limits.bulk_bytes_max + 1);
        assert_eq!(
            command_error(too_big.as_bytes(), &limits),
            "Protocol error: invalid bulk length"
        );
        let biggest = format!("*1\r\n${}\r\n", limits.bulk_bytes_max);
        assert_eq!(
            parse_command(biggest.as_bytes(), &limits, &mut arguments),
            Ok(Parsed::Incomplete)
        );
    }

    #[test]
    fn inline_lines_are_bounded() {
        let limits = RespLimits { inline_bytes_max: 8, ..RespLimits::default() };
        let mut arguments = Vec::new();
        let parse =
            |input: &[u8], arguments: &mut Vec<Argument>| parse_command(input, &limits, arguments);
        assert_eq!(parse(b"GET abcd", &mut arguments), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"GET abcd\n", &mut arguments), Ok(Parsed::Complete { consumed: 9 }));
        assert_eq!(parse(b"GET abc\r\n", &mut arguments), Ok(Parsed::Complete { consumed: 9 }));
        let message = "Protocol error: too big inline request";
        assert_eq!(command_error(b"GET abcde", &limits), message);
        assert_eq!(command_error(b"GET abcde\n", &limits), message);
        assert_eq!(command_error(b"GET abcd\r\n", &limits), message);
        // Bytes of the following commands do not count against this line.
        let mut arguments = Vec::new();
        assert_eq!(
            parse(b"PING\r\nGET abcdefgh", &mut arguments),
            Ok(Parsed::Complete { consumed: 6 })
        );
    }

    #[test]
    fn inline_quoting_follows_redis() {
        let cases: [(&[u8], &[&[u8]]); 14] = [
            (b"SET \"a b\" 'c d'", &[b"SET", b"a b", b"c d"]),
            (b"\"\\x41\\x4a\\x4A\"", &[b"AJJ"]),
            (b"\"\\n\\r\\t\\b\\a\\q\\\\\\\"\"", &[b"\n\r\t\x08\x07q\\\""]),
            (b"\"\\x4g\"", &[b"x4g"]),
            (b"'it\\'s'", &[b"it's"]),
            (b"'\\x41\\n'", &[b"\\x41\\n"]),
            (b"ab\"c d\" e", &[b"abc d", b"e"]),
            (b"\"\" ''", &[b"", b""]),
            (b"\"a\"\t'b'", &[b"a", b"b"]),
            (b"\"a\"\x0bb", &[b"a", b"b"]),
            (b"a\x0bb c", &[b"a\x0bb", b"c"]),
            (b"GET a\x00b c", &[b"GET", b"a"]),
            (b"\"a\x00\"", &[]),
            (b"'\"' \"'\"", &[b"\"", b"'"]),
        ];
        for (line, expected) in cases {
            let mut input = line.to_vec();
            input.extend_from_slice(b"\r\n");
            if line.contains(&0) && line.starts_with(b"\"") {
                assert_eq!(
                    command_error(&input, &limits()),
                    "Protocol error: unbalanced quotes in request"
                );
                continue;
            }
            let (consumed, arguments) = command(&input);
            assert_eq!(consumed, input.len());
            let expected: Vec<Vec<u8>> = expected.iter().map(|word| word.to_vec()).collect();
            assert_eq!(arguments, expected, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn only_quoted_inline_arguments_own_their_bytes() {
        let input = b"SET k \"v w\"\r\n";
        let mut arguments = Vec::new();
        parse_command(input, &limits(), &mut arguments).unwrap();
        let expected =
            vec![Argument::Range(0..3), Argument::Range(4..5), Argument::Owned(b"v w".to_vec())];
        assert_eq!(arguments, expected);
    }

    #[test]
    fn unbalanced_quotes_are_errors() {
        for line in [&b"SET \"a"[..], b"SET 'a", b"SET \"a\"b", b"SET 'a'b", b"\"a\\\"", b"'a\\'"] {
            let mut input = line.to_vec();
            input.extend_from_slice(b"\r\n");
            let message = command_error(&input, &limits());
            assert_eq!(message, "Protocol error: unbalanced quotes in request", "{line:?}");
        }
    }

    #[test]
    fn replies_encode_to_exact_bytes() {
        let mut output = Vec::new();
        encode_simple(&mut output, "OK");
        encode_error(&mut output, "ERR no\r\nway");
        encode_integer(&mut output, 0);
        encode_integer(&mut output, i64::MIN);
        encode_bulk(&mut output, b"");
        encode_bulk(&mut output, b"a\r\nb");
        encode_null(&mut output);
        encode_null_array(&mut output);
        encode_array_header(&mut output, 12);
        let expected: &[u8] = b"+OK\r\n-ERR no  way\r\n:0\r\n:-9223372036854775808\r\n$0\r\n\r\n\
            $4\r\na\r\nb\r\n$-1\r\n*-1\r\n*12\r\n";
        assert_eq!(output, expected);

        output.clear();
        encode_command(&mut output, &[b"SET", b"key", b""]);
        assert_eq!(output, b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$0\r\n\r\n");
        output.clear();
        encode_command(&mut output, &[]);
        assert_eq!(output, b"*0\r\n");
    }

    fn sample_replies() -> Vec<(&'static [u8], Reply)> {
        vec![
            (b"+OK\r\n", Reply::Simple("OK".into())),
            (b"+\r\n", Reply::Simple(String::new())),
            (b"-ERR unknown\r\n", Reply::Error("ERR unknown".into())),
            (b":-42\r\n", Reply::Integer(-42)),
            (b":-9223372036854775808\r\n", Reply::Integer(i64::MIN)),
            (b":9223372036854775807\r\n", Reply::Integer(i64::MAX)),
            (b"$3\r\na\r\n\r\n", Reply::Bulk(b"a\r\n".to_vec())),
            (b"$-1\r\n", Reply::Null),
            (b"*-1\r\n", Reply::NullArray),
            (b"*0\r\n", Reply::Array(Vec::new())),
            (
                b"*3\r\n:1\r\n*2\r\n$1\r\nx\r\n$-1\r\n+OK\r\n",
                Reply::Array(vec![
                    Reply::Integer(1),
                    Reply::Array(vec![Reply::Bulk(b"x".to_vec()), Reply::Null]),
                    Reply::Simple("OK".into()),
                ]),
            ),
            (b"+caf\xc3\xa9 \xff\r\n", Reply::Simple("caf\u{e9} \u{fffd}".into())),
        ]
    }

    #[test]
    fn replies_parse_and_skip() {
        for (input, expected) in sample_replies() {
            let mut piped = input.to_vec();
            piped.extend_from_slice(b":7\r\n");
            assert_eq!(parse_reply(&piped, &limits()), Ok(Some((expected, input.len()))));
            assert_eq!(skip_reply(&piped, &limits()), Ok(Some(input.len())));
            for split in 0..input.len() {
                assert_eq!(parse_reply(&input[..split], &limits()), Ok(None), "{input:?}");
                assert_eq!(skip_reply(&input[..split], &limits()), Ok(None), "{input:?}");
            }
        }
    }

    #[test]
    fn malformed_replies_give_errors() {
        let limits = small_limits();
        let long_line = format!("+{}\r\n", "a".repeat(limits.inline_bytes_max + 1));
        let cases: [(&[u8], RespError); 14] = [
            (b"?x\r\n", RespError::UnknownReplyType { found: b'?' }),
            (b":abc\r\n", RespError::InvalidInteger),
            (b":9223372036854775808\r\n", RespError::InvalidInteger),
            (b":92233720368547758080\r\n", RespError::InvalidInteger),
            (b"$-2\r\n", RespError::InvalidBulkLength),
            (b"$17\r\n", RespError::InvalidBulkLength),
            (b"$1\r\nab", RespError::MissingBulkTerminator),
            (b"*-2\r\n", RespError::InvalidMultibulkLength),
            (b"*5\r\n", RespError::InvalidMultibulkLength),
            (b"*2\r\n:1\r\n!", RespError::UnknownReplyType { found: b'!' }),
            (b"+a\nb\r\n", RespError::InvalidLineTerminator),
            (b"-a\rb\r\n", RespError::InvalidLineTerminator),
            (long_line.as_bytes(), RespError::ReplyLineTooBig),
            (&long_line.as_bytes()[..limits.inline_bytes_max + 2], RespError::ReplyLineTooBig),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_reply(input, &limits), Err(expected.clone()), "{input:?}");
            assert_eq!(skip_reply(input, &limits), Err(expected), "{input:?}");
        }
        let longest_line = format!("+{}\r\n", "a".repeat(limits.inline_bytes_max));
        assert_eq!(skip_reply(longest_line.as_bytes(), &limits), Ok(Some(longest_line.len())));
        let message = RespError::UnknownReplyType { found: b'?' }.to_string();
        assert_eq!(message, "Protocol error: invalid reply type '?'");
    }

    #[test]
    fn reply_nesting_is_bounded() {
        let mut deepest = b"*1\r\n".repeat(REPLY_DEPTH_MAX);
        deepest.extend_from_slice(b":1\r\n");
        assert!(parse_reply(&deepest, &limits()).unwrap().is_some());
        assert_eq!(skip_reply(&deepest, &limits()), Ok(Some(deepest.len())));
        for innermost in [&b"*0\r\n"[..], b"*1\r\n:1\r\n", b"*1\r\n"] {
            let mut too_deep = b"*1\r\n".repeat(REPLY_DEPTH_MAX);
            too_deep.extend_from_slice(innermost);
            let expected = Err(RespError::ReplyTooDeep { depth_max: REPLY_DEPTH_MAX });
            assert_eq!(parse_reply(&too_deep, &limits()).map(|_| ()), expected);
            assert_eq!(skip_reply(&too_deep, &limits()).map(|_| ()), expected);
        }
    }

    fn argument_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..48)
    }

    fn reply_strategy() -> impl Strategy<Value = Reply> {
        let text = "[^\r\n]{0,12}";
        let leaf = prop_oneof![
            text.prop_map(Reply::Simple),
            text.prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Reply::Bulk),
            Just(Reply::Null),
            Just(Reply::NullArray),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Reply::Array)
        })
    }

    /// Byte strings made of RESP-looking pieces, which reach deeper than uniform random bytes.
    fn resp_like_bytes() -> impl Strategy<Value = Vec<u8>> {
        let pieces: Vec<&'static [u8]> = vec![
            b"*",
            b"$",
            b"+",
            b"-",
            b":",
            b"\r\n",
            b"\r",
            b"\n",
            b"0",
            b"1",
            b"2",
            b"3",
            b"-1",
            b"-2",
            b"a",
            b" ",
            b"\t",
            b"\"",
            b"'",
            b"\\x4",
            b"\\",
            b"\x00",
            b"99999999999999999999",
        ];
        proptest::collection::vec(proptest::sample::select(pieces), 0..48)
            .prop_map(|pieces| pieces.concat())
    }

    /// Checks that every parser returns without panicking, that each keeps its postconditions,
    /// and that `skip_reply` agrees with `parse_reply`.
    fn check_any_input(input: &[u8], limits: &RespLimits) -> Result<(), TestCaseError> {
        let mut arguments = vec![Argument::Range(0..1)];
        match parse_command(input, limits, &mut arguments) {
            Ok(Parsed::Complete { consumed }) => {
                prop_assert!(consumed > 0 && consumed <= input.len());
                for argument in &arguments {
                    if let Argument::Range(range) = argument {
                        prop_assert!(range.start <= range.end && range.end <= consumed);
                    }
                }
            }
            Ok(Parsed::Incomplete) | Err(_) => prop_assert!(arguments.is_empty()),
        }
        let parsed = parse_reply(input, limits).map(|parsed| parsed.map(|(_, consumed)| consumed));
        prop_assert_eq!(skip_reply(input, limits), parsed);
        Ok(())
    }

    proptest! {
        #[test]
        fn commands_round_trip(
            arguments in proptest::collection::vec(argument_strategy(), 1..12),
        ) {
            let borrowed: Vec<&[u8]> = arguments.iter().map(Vec::as_slice).collect();
            let mut input = Vec::new();
            encode_command(&mut input, &borrowed);
            input.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
            let command_bytes = input.len() - 14;
            let mut parsed = Vec::new();
            for split in 0..command_bytes {
                let outcome = parse_command(&input[..split], &limits(), &mut parsed);
                prop_assert_eq!(outcome, Ok(Parsed::Incomplete));
            }
            let outcome = parse_command(&input, &limits(), &mut parsed);
            prop_assert_eq!(outcome, Ok(Parsed::Complete { consumed: command_bytes }));
            let found: Vec<Vec<u8>> =
                parsed.iter().map(|argument| argument.bytes(&input).to_vec()).collect();
            prop_assert_eq!(found, arguments);
        }

        #[test]
        fn replies_round_trip(reply in reply_strategy()) {
            let mut input = Vec::new();
            reply.encode(&mut input);
            let reply_bytes = input.len();
            input.extend_from_slice(b"+next\r\n");
            prop_assert_eq!(parse_reply(&input, &limits()), Ok(Some((reply, reply_bytes))));
            prop_assert_eq!(skip_reply(&input, &limits()), Ok(Some(reply_bytes)));
            for split in 0..reply_bytes {
                prop_assert_eq!(skip_reply(&input[..split], &limits()), Ok(None));
            }
        }

        #[test]
        fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            check_any_input(&input, &limits())?;
            check_any_input(&input, &small_limits())?;
        }

        #[test]
        fn resp_like_bytes_never_panic(input in resp_like_bytes()) {
            check_any_input(&input, &limits())?;
            check_any_input(&input, &small_limits())?;
        }

        #[test]
        fn damaged_replies_never_panic(
            reply in reply_strategy(),
            index in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut input = Vec::new();
            reply.encode(&mut input);
            let position = index.index(input.len());
            input[position] ^= flip;
            check_any_input(&input, &limits())?;
            check_any_input(&input[..position], &small_limits())?;
        }
    }
}
