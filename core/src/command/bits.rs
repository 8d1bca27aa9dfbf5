//! The arguments of the bit commands (SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD,
//! BITFIELD_RO) and of LCS, read and checked in the order Redis checks them, with its texts.

use super::{at_least, exact, one_slot, parse_integer, CommandError, KeyCommand};

/// The highest bit offset Redis takes: its byte must lie below the default proto-max-bulk-len
/// (512 MiB). Writes that far still meet the smaller limit of a record.
pub const BIT_OFFSET_MAX: u64 = 512 * 1024 * 1024 * 8 - 1;

/// Whether a BITCOUNT or BITPOS range counts bytes (the default) or bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitUnit {
    Byte,
    Bit,
}

/// A BITCOUNT or BITPOS range: inclusive offsets, negative ones counted from the end, in
/// `unit`s. Without `end` (BITPOS), the range runs to the end of the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitRange {
    pub start: i64,
    pub end: Option<i64>,
    pub unit: BitUnit,
}

impl BitRange {
    /// The whole value.
    pub const WHOLE: BitRange = BitRange { start: 0, end: None, unit: BitUnit::Byte };
}

/// BITOP's operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitOperator {
    And,
    Or,
    Xor,
    Not,
}

/// What BITFIELD's SET and INCRBY do when the result does not fit the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Wrap around (the default).
    Wrap,
    /// Stop at the field's minimum or maximum.
    Saturate,
    /// Leave the field alone and answer nil.
    Fail,
}

/// A BITFIELD type: `i1` to `i64`, `u1` to `u63`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldType {
    pub signed: bool,
    pub bits: u32,
}

/// What one BITFIELD operation does to its field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldAction {
    Get,
    /// SET: answers the old value.
    Set(i64),
    /// INCRBY: answers the new value.
    IncrementBy(i64),
}

/// One BITFIELD operation, with the OVERFLOW mode in force where it stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldOperation {
    pub action: FieldAction,
    pub field: FieldType,
    /// The offset in bits (`#N` already multiplied by the type's width).
    pub offset: u64,
    pub overflow: Overflow,
}

/// What LCS answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LcsReply {
    /// The longest common subsequence itself.
    Sequence,
    /// LEN: its length.
    Length,
    /// IDX: the matching ranges of at least `length_min` bytes, each with its length when
    /// `with_length` (WITHMATCHLEN), and the total length.
    Matches { length_min: u64, with_length: bool },
}

fn bit_offset_error() -> CommandError {
    CommandError("ERR bit offset is not an integer or out of range".into())
}

fn bit_value_error() -> CommandError {
    CommandError("ERR bit is not an integer or out of range".into())
}

fn field_type_error() -> CommandError {
    CommandError(
        "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported \
         but i64 is."
            .into(),
    )
}

/// SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD, BITFIELD_RO and LCS.
pub(super) fn parse_bit_command(name: &str, rest: &[&[u8]]) -> Result<KeyCommand, CommandError> {
    let key = || rest[0].to_vec();
    match name {
        "setbit" => {
            exact(name, rest, 3)?;
            let offset = parse_bit_offset(rest[1], None)?;
            let bit = parse_integer(rest[2]).map_err(|_| bit_value_error())?;
            if bit != 0 && bit != 1 {
                return Err(bit_value_error());
            }
            Ok(KeyCommand::SetBit { key: key(), offset, bit: bit == 1 })
        }
        "getbit" => {
            exact(name, rest, 2)?;
            Ok(KeyCommand::GetBit { key: key(), offset: parse_bit_offset(rest[1], None)? })
        }
        "bitcount" => {
            at_least(name, rest, 1)?;
            Ok(KeyCommand::BitCount { key: key(), range: count_range(&rest[1..]) })
        }
        "bitpos" => parse_bit_position(rest),
        "bitop" => parse_bit_operation(rest),
        "bitfield" | "bitfield_ro" => {
            at_least(name, rest, 1)?;
            let operations = parse_field_operations(&rest[1..])?;
            let read_only = name == "bitfield_ro";
            let writes = operations.iter().any(|operation| operation.action != FieldAction::Get);
            if read_only && writes {
                return Err(CommandError(
                    "ERR BITFIELD_RO only supports the GET subcommand".into(),
                ));
            }
            Ok(KeyCommand::BitField { key: key(), operations, read_only })
        }
        "lcs" => parse_lcs(rest),
        _ => unreachable!("dispatched by name"),
    }
}

/// A bit offset, `#N` (N fields of `field_bits`) where BITFIELD allows it.
fn parse_bit_offset(word: &[u8], field_bits: Option<u32>) -> Result<u64, CommandError> {
    let (digits, multiplier) = match (word.split_first(), field_bits) {
        (Some((b'#', digits)), Some(bits)) => (digits, i64::from(bits)),
        _ => (word, 1),
    };
    // Redis multiplies without a check: a product that wraps is judged as it lands.
    let offset = parse_integer(digits).map_err(|_| bit_offset_error())?.wrapping_mul(multiplier);
    u64::try_from(offset)
        .ok()
        .filter(|offset| *offset <= BIT_OFFSET_MAX)
        .ok_or_else(bit_offset_error)
}

fn parse_unit(word: &[u8]) -> Result<BitUnit, CommandError> {
    if word.eq_ignore_ascii_case(b"byte") {
        Ok(BitUnit::Byte)
    } else if word.eq_ignore_ascii_case(b"bit") {
        Ok(BitUnit::Bit)
    } else {
        Err(CommandError::syntax())
    }
}

/// BITCOUNT's `[start end [BYTE|BIT]]`. Redis reads it only once the key exists, so an error
/// here is answered only then. Two negative offsets in reverse count nothing, whatever unit
/// follows them.
fn count_range(arguments: &[&[u8]]) -> Result<BitRange, CommandError> {
    let (start, end, unit) = match arguments {
        [] => return Ok(BitRange::WHOLE),
        [start, end] => (start, end, None),
        [start, end, unit] => (start, end, Some(unit)),
        _ => return Err(CommandError::syntax()),
    };
    let (start, end) = (parse_integer(start)?, parse_integer(end)?);
    let unit = match unit {
        Some(_) if start < 0 && end < 0 && start > end => BitUnit::Byte,
        Some(word) => parse_unit(word)?,
        None => BitUnit::Byte,
    };
    Ok(BitRange { start, end: Some(end), unit })
}

/// BITPOS key bit [start [end [BYTE|BIT]]]: the bit is checked at once, the range only once
/// the key exists; the unit is read before the end.
fn parse_bit_position(rest: &[&[u8]]) -> Result<KeyCommand, CommandError> {
    at_least("bitpos", rest, 2)?;
    let bit = parse_integer(rest[1])?;
    if bit != 0 && bit != 1 {
        return Err(CommandError("ERR The bit argument must be 1 or 0.".into()));
    }
    let range = position_range(&rest[2..]);
    Ok(KeyCommand::BitPosition { key: rest[0].to_vec(), bit: bit == 1, range })
}

/// BITPOS's `[start [end [BYTE|BIT]]]`, read in Redis's order: start, unit, end.
fn position_range(arguments: &[&[u8]]) -> Result<BitRange, CommandError> {
    let Some(start) = arguments.first() else { return Ok(BitRange::WHOLE) };
    if arguments.len() > 3 {
        return Err(CommandError::syntax());
    }
    let start = parse_integer(start)?;
    let unit = arguments.get(2).map_or(Ok(BitUnit::Byte), |word| parse_unit(word))?;
    let end = arguments.get(1).map(|word| parse_integer(word)).transpose()?;
    Ok(BitRange { start, end, unit })
}

/// BITOP operation destkey key [key ...]: every key in one hash slot, checked right after the
/// arity as Redis Cluster does.
fn parse_bit_operation(rest: &[&[u8]]) -> Result<KeyCommand, CommandError> {
    at_least("bitop", rest, 3)?;
    one_slot(rest[1..].iter().copied())?;
    let operator = match rest[0].to_ascii_lowercase().as_slice() {
        b"and" => BitOperator::And,
        b"or" => BitOperator::Or,
        b"xor" => BitOperator::Xor,
        b"not" => BitOperator::Not,
        _ => return Err(CommandError::syntax()),
    };
    if operator == BitOperator::Not && rest.len() != 3 {
        return Err(CommandError("ERR BITOP NOT must be called with a single source key.".into()));
    }
    let destination = rest[1].to_vec();
    let sources = rest[2..].iter().map(|key| key.to_vec()).collect();
    Ok(KeyCommand::BitOperation { operator, destination, sources })
}

/// BITFIELD's operations, in order: GET type offset, SET type offset value, INCRBY type offset
/// increment, and OVERFLOW WRAP|SAT|FAIL for the operations after it.
fn parse_field_operations(arguments: &[&[u8]]) -> Result<Vec<FieldOperation>, CommandError> {
    let mut operations = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut index = 0;
    while index < arguments.len() {
        let word = arguments[index];
        let remaining = arguments.len() - index - 1;
        let is = |name: &str, count: usize| {
            word.eq_ignore_ascii_case(name.as_bytes()) && remaining >= count
        };
        if is("overflow", 1) {
            overflow = parse_overflow(arguments[index + 1])?;
            index += 2;
            continue;
        }
        let get = is("get", 2);
        if !get && !is("set", 3) && !is("incrby", 3) {
            return Err(CommandError::syntax());
        }
        let field = parse_field_type(arguments[index + 1])?;
        let offset = parse_bit_offset(arguments[index + 2], Some(field.bits))?;
        let action = if get {
            FieldAction::Get
        } else {
            let amount = parse_integer(arguments[index + 3])?;
            if word.eq_ignore_ascii_case(b"set") {
                FieldAction::Set(amount)
            } else {
                FieldAction::IncrementBy(amount)
            }
        };
        operations.push(FieldOperation { action, field, offset, overflow });
        index += if get { 3 } else { 4 };
    }
    Ok(operations)
}

fn parse_overflow(word: &[u8]) -> Result<Overflow, CommandError> {
    match word.to_ascii_lowercase().as_slice() {
        b"wrap" => Ok(Overflow::Wrap),
        b"sat" => Ok(Overflow::Saturate),
        b"fail" => Ok(Overflow::Fail),
        _ => Err(CommandError("ERR Invalid OVERFLOW type specified".into())),
    }
}

/// `i<bits>` or `u<bits>`, lower case only; Redis reads the width as a C string, up to the
/// first zero byte.
fn parse_field_type(word: &[u8]) -> Result<FieldType, CommandError> {
    let word = word.split(|byte| *byte == 0).next().unwrap_or_default();
    let (signed, bits_max) = match word.first() {
        Some(b'i') => (true, 64),
        Some(b'u') => (false, 63),
        _ => return Err(field_type_error()),
    };
    let bits = parse_integer(&word[1..])
        .ok()
        .filter(|bits| (1..=bits_max).contains(bits))
        .ok_or_else(field_type_error)?;
    Ok(FieldType { signed, bits: bits as u32 })
}

/// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]: both keys in one hash slot;
/// options in any order, a negative MINMATCHLEN counting as 0.
fn parse_lcs(rest: &[&[u8]]) -> Result<KeyCommand, CommandError> {
    at_least("lcs", rest, 2)?;
    one_slot(rest[..2].iter().copied())?;
    let (mut length, mut indexes, mut with_length, mut length_min) = (false, false, false, 0);
    let mut index = 2;
    while index < rest.len() {
        let option = rest[index].to_ascii_lowercase();
        match option.as_slice() {
            b"idx" => indexes = true,
            b"len" => length = true,
            b"withmatchlen" => with_length = true,
            b"minmatchlen" if index + 1 < rest.len() => {
                index += 1;
                length_min = parse_integer(rest[index])?.max(0).unsigned_abs();
            }
            _ => return Err(CommandError::syntax()),
        }
        index += 1;
    }
    let reply = match (length, indexes) {
        (true, true) => {
            return Err(CommandError(
                "ERR If you want both the length and indexes, please just use IDX.".into(),
            ))
        }
        (true, false) => LcsReply::Length,
        (false, true) => LcsReply::Matches { length_min, with_length },
        (false, false) => LcsReply::Sequence,
    };
    Ok(KeyCommand::Lcs { first: rest[0].to_vec(), second: rest[1].to_vec(), reply })
}
