//! The bit commands (SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD) and LCS, each as Redis
//! answers it. Bit 0 is the most significant bit of the first byte. The work is done by pure
//! functions over byte slices; a write is logged as its effect, the whole new value, which
//! keeps the key's expiry (BITOP's destination gets none, as in Redis).

use super::{too_large, Answer, Context};
use crate::command::{
    BitOperator, BitRange, BitUnit, CommandError, FieldAction, FieldOperation, FieldType, LcsReply,
    Overflow,
};
use crate::record::Record;

/// Redis's bound on LCS's table of lengths (its default proto-max-bulk-len).
const LCS_TABLE_BYTES_MAX: u64 = 512 * 1024 * 1024;

impl Context<'_> {
    /// The length a value of `length` bytes under `key` needs to hold bit `offset`, refused
    /// past a record's limit as SETRANGE refuses it.
    fn length_for_bit(
        &self,
        key: &[u8],
        length: usize,
        offset: u64,
    ) -> Result<usize, CommandError> {
        let limit = self.partition.limits.record_bytes_max.saturating_sub(key.len());
        usize::try_from(offset / 8 + 1)
            .ok()
            .map(|needed| needed.max(length))
            .filter(|needed| *needed <= limit)
            .ok_or_else(too_large)
    }

    /// SETBIT: answers the bit's old value. A key it creates or grows is padded with zero
    /// bytes; nothing is written when nothing changes.
    pub(super) fn set_bit(
        &mut self,
        key: Vec<u8>,
        offset: u64,
        bit: bool,
    ) -> Result<Answer, CommandError> {
        let found = self.read(&key);
        let existed = found.is_some();
        let (mut value, expire_at_ms) =
            found.map_or((Vec::new(), 0), |found| (found.value, found.expire_at_ms));
        let length = self.length_for_bit(&key, value.len(), offset)?;
        let old = bit_at(&value, offset);
        if existed && length == value.len() && old == bit {
            return Ok(Answer::Integer(i64::from(old)));
        }
        value.resize(length, 0);
        write_bit(&mut value, offset, bit);
        self.set(key, value, expire_at_ms)?;
        Ok(Answer::Integer(i64::from(old)))
    }

    /// GETBIT: bits past the end are 0.
    pub(super) fn get_bit(&mut self, key: &[u8], offset: u64) -> Answer {
        let bit = self.inspect(key, |value| value.is_some_and(|value| bit_at(value, offset)));
        Answer::Integer(i64::from(bit))
    }

    /// BITCOUNT: a missing key counts 0 whatever its range says.
    pub(super) fn bit_count(
        &mut self,
        key: &[u8],
        range: Result<BitRange, CommandError>,
    ) -> Result<Answer, CommandError> {
        let count = self.inspect(key, |value| match value {
            Some(value) => range.map(|range| count_in_range(value, &range) as i64),
            None => Ok(0),
        })?;
        Ok(Answer::Integer(count))
    }

    /// BITPOS: a missing key is all zeros, so 0 is found at once and 1 never.
    pub(super) fn bit_position(
        &mut self,
        key: &[u8],
        bit: bool,
        range: Result<BitRange, CommandError>,
    ) -> Result<Answer, CommandError> {
        let position = self.inspect(key, |value| match value {
            Some(value) => range.map(|range| position_in_range(value, bit, &range)),
            None => Ok(if bit { -1 } else { 0 }),
        })?;
        Ok(Answer::Integer(position))
    }

    /// BITOP: stores the result (without expiry) and answers its length; an empty result
    /// deletes the destination.
    pub(super) fn bit_operation(
        &mut self,
        operator: BitOperator,
        destination: Vec<u8>,
        sources: &[Vec<u8>],
    ) -> Result<Answer, CommandError> {
        let values: Vec<Vec<u8>> = sources
            .iter()
            .map(|key| self.read(key).map(|found| found.value).unwrap_or_default())
            .collect();
        let result = combine(operator, &values);
        let length = result.len() as i64;
        if !result.is_empty() {
            self.set(destination, result, 0)?;
        } else if self.exists(&destination) {
            self.write(Record::Delete { key: destination })?;
        }
        Ok(Answer::Integer(length))
    }

    /// BITFIELD and BITFIELD_RO: one answer per operation, run in order. Without SET or INCRBY
    /// nothing is written; with them, the key is created or grown to their farthest bit even
    /// if every one of them fails, as in Redis.
    pub(super) fn bit_field(
        &mut self,
        key: Vec<u8>,
        operations: &[FieldOperation],
    ) -> Result<Answer, CommandError> {
        let writes = operations.iter().filter(|operation| operation.action != FieldAction::Get);
        let Some(last_bit) =
            writes.map(|write| write.offset + u64::from(write.field.bits) - 1).max()
        else {
            let answers = self.inspect(&key, |value| {
                let value = value.unwrap_or_default();
                operations.iter().map(|operation| field_get(value, operation)).collect()
            });
            return Ok(Answer::Array(answers));
        };
        let found = self.read(&key);
        let existed = found.is_some();
        let (mut value, expire_at_ms) =
            found.map_or((Vec::new(), 0), |found| (found.value, found.expire_at_ms));
        let length = self.length_for_bit(&key, value.len(), last_bit)?;
        let mut changed = !existed || length > value.len();
        value.resize(length, 0);
        let mut answers = Vec::with_capacity(operations.len());
        for operation in operations {
            let (answer, changed_field) = apply_field(&mut value, operation);
            changed |= changed_field;
            answers.push(field_answer(answer));
        }
        if changed {
            self.set(key, value, expire_at_ms)?;
        }
        Ok(Answer::Array(answers))
    }

    /// LCS: the longest common subsequence of two values (missing keys are empty), its
    /// length, or its matching ranges.
    pub(super) fn lcs(
        &mut self,
        first: &[u8],
        second: &[u8],
        reply: LcsReply,
    ) -> Result<Answer, CommandError> {
        let first = self.read(first).map(|found| found.value).unwrap_or_default();
        let second = self.read(second).map(|found| found.value).unwrap_or_default();
        let table = LcsTable::build(&first, &second)?;
        let length = i64::from(table.length());
        Ok(match reply {
            LcsReply::Length => Answer::Integer(length),
            LcsReply::Sequence => Answer::Bulk(Some(table.trace(&first, &second).sequence)),
            LcsReply::Matches { length_min, with_length } => {
                let matches = table.trace(&first, &second).matches;
                let kept =
                    matches.iter().filter(|found| length_min == 0 || found.length >= length_min);
                Answer::Array(vec![
                    Answer::Bulk(Some(b"matches".to_vec())),
                    Answer::Array(kept.map(|found| found.answer(with_length)).collect()),
                    Answer::Bulk(Some(b"len".to_vec())),
                    Answer::Integer(length),
                ])
            }
        })
    }
}

/// The bit at `offset` (0 past the end).
pub(crate) fn bit_at(value: &[u8], offset: u64) -> bool {
    let Ok(index) = usize::try_from(offset / 8) else { return false };
    value.get(index).is_some_and(|byte| byte & (0x80 >> (offset % 8)) != 0)
}

/// Sets the bit at `offset`, which lies within `value`.
pub(crate) fn write_bit(value: &mut [u8], offset: u64, bit: bool) {
    let mask = 0x80 >> (offset % 8);
    let byte = &mut value[(offset / 8) as usize];
    if bit {
        *byte |= mask;
    } else {
        *byte &= !mask;
    }
}

/// The first and last bit (inclusive) that `range` covers in a value of `length` bytes, or
/// none when it covers nothing. Negative offsets count from the end; both ends are clamped.
pub(crate) fn bit_span(length: usize, range: &BitRange) -> Option<(u64, u64)> {
    let bytes = i64::try_from(length).unwrap_or(i64::MAX);
    let total = match range.unit {
        BitUnit::Byte => bytes,
        BitUnit::Bit => bytes.saturating_mul(8),
    };
    let resolve =
        |offset: i64| if offset < 0 { total.saturating_add(offset).max(0) } else { offset };
    let start = resolve(range.start);
    let end = resolve(range.end.unwrap_or(-1)).min(total - 1);
    if start > end {
        return None;
    }
    let (start, end) = (start.unsigned_abs(), end.unsigned_abs());
    Some(match range.unit {
        BitUnit::Byte => (start * 8, end * 8 + 7),
        BitUnit::Bit => (start, end),
    })
}

/// The bits of the byte at `index` that lie between bits `first` and `last` (inclusive).
fn span_mask(index: usize, first: u64, last: u64) -> u8 {
    let from = if index as u64 == first / 8 { first % 8 } else { 0 };
    let to = if index as u64 == last / 8 { last % 8 } else { 7 };
    ((0xFF_u16 >> from) & !(0xFF_u16 >> (to + 1))) as u8
}

/// BITCOUNT: the set bits in `range`; two negative offsets in reverse count nothing.
pub(crate) fn count_in_range(value: &[u8], range: &BitRange) -> u64 {
    if let Some(end) = range.end {
        if range.start < 0 && end < 0 && range.start > end {
            return 0;
        }
    }
    let Some((first, last)) = bit_span(value.len(), range) else { return 0 };
    let (first_byte, last_byte) = ((first / 8) as usize, (last / 8) as usize);
    value[first_byte..=last_byte]
        .iter()
        .zip(first_byte..)
        .map(|(byte, index)| u64::from((byte & span_mask(index, first, last)).count_ones()))
        .sum()
}

/// The first bit equal to `bit` between bits `first` and `last` (inclusive).
fn first_bit(value: &[u8], bit: bool, first: u64, last: u64) -> Option<u64> {
    let (first_byte, last_byte) = ((first / 8) as usize, (last / 8) as usize);
    value[first_byte..=last_byte].iter().zip(first_byte..).find_map(|(byte, index)| {
        let wanted = if bit { *byte } else { !byte } & span_mask(index, first, last);
        (wanted != 0).then(|| index as u64 * 8 + u64::from(wanted.leading_zeros()))
    })
}

/// BITPOS: the first bit equal to `bit` in `range`, or -1. Without an end, the value counts as
/// followed by zeros, so a 0 not found in it is the first bit after it.
pub(crate) fn position_in_range(value: &[u8], bit: bool, range: &BitRange) -> i64 {
    let Some((first, last)) = bit_span(value.len(), range) else { return -1 };
    match first_bit(value, bit, first, last) {
        Some(position) => position as i64,
        None if !bit && range.end.is_none() => (last + 1) as i64,
        None => -1,
    }
}

/// BITOP: the sources combined byte by byte, as long as the longest; shorter ones count as
/// padded with zero bytes.
pub(crate) fn combine(operator: BitOperator, sources: &[Vec<u8>]) -> Vec<u8> {
    let length = sources.iter().map(Vec::len).max().unwrap_or(0);
    let Some((first, others)) = sources.split_first() else { return Vec::new() };
    let mut result = first.clone();
    result.resize(length, 0);
    if operator == BitOperator::Not {
        result.iter_mut().for_each(|byte| *byte = !*byte);
    }
    for source in others {
        let padded = source.iter().copied().chain(std::iter::repeat(0));
        for (byte, other) in result.iter_mut().zip(padded) {
            match operator {
                BitOperator::And => *byte &= other,
                BitOperator::Or => *byte |= other,
                BitOperator::Xor => *byte ^= other,
                BitOperator::Not => {}
            }
        }
    }
    result
}

/// The `bits` bits from `offset` as an unsigned number, the first one highest; bits past the
/// end are 0.
pub(crate) fn read_field(value: &[u8], offset: u64, bits: u32) -> u64 {
    (0..u64::from(bits))
        .fold(0, |field, index| (field << 1) | u64::from(bit_at(value, offset + index)))
}

/// Writes the low `bits` bits of `field` from `offset`, which lie within `value`.
pub(crate) fn write_field(value: &mut [u8], offset: u64, bits: u32, field: u64) {
    for index in 0..bits {
        let bit = (field >> (bits - 1 - index)) & 1 == 1;
        write_bit(value, offset + u64::from(index), bit);
    }
}

/// The low `bits` bits of `field` read as a two's complement number.
fn sign_extended(field: u64, bits: u32) -> i64 {
    if bits == 64 {
        return field as i64;
    }
    let high = u64::MAX << bits;
    let negative = (field >> (bits - 1)) & 1 == 1;
    (if negative { field | high } else { field & !high }) as i64
}

/// The value a field holds as its type reads it.
fn field_value(stored: u64, field: FieldType) -> i64 {
    if field.signed {
        sign_extended(stored, field.bits)
    } else {
        stored as i64
    }
}

/// `value + increment` in an unsigned field of `bits` bits (a SET adds 0 to the value it sets)
/// with Redis's overflow rules; `None` when it overflows under FAIL.
pub(crate) fn unsigned_sum(
    value: u64,
    increment: i64,
    bits: u32,
    overflow: Overflow,
) -> Option<u64> {
    let max = if bits == 64 { u64::MAX } else { (1 << bits) - 1 };
    let room_up = max.wrapping_sub(value) as i64;
    let room_down = value.wrapping_neg() as i64;
    let sum = value.wrapping_add(increment as u64);
    let limit = if value > max || (increment > 0 && increment > room_up) {
        max
    } else if increment < 0 && increment < room_down {
        0
    } else {
        return Some(sum);
    };
    match overflow {
        Overflow::Wrap => Some(sum & max),
        Overflow::Saturate => Some(limit),
        Overflow::Fail => None,
    }
}

/// `value + increment` in a signed field of `bits` bits, with Redis's overflow rules (and its
/// arithmetic, which wraps where C's would); `None` when it overflows under FAIL.
pub(crate) fn signed_sum(value: i64, increment: i64, bits: u32, overflow: Overflow) -> Option<i64> {
    let max = if bits == 64 { i64::MAX } else { (1 << (bits - 1)) - 1 };
    let min = -max - 1;
    let room_up = (max as u64).wrapping_sub(value as u64) as i64;
    let room_down = min.wrapping_sub(value);
    let narrow = bits < 64;
    let up = value > max
        || (narrow && increment > room_up)
        || (value >= 0 && increment > 0 && increment > room_up);
    let down = value < min
        || (narrow && increment < room_down)
        || (value < 0 && increment < 0 && increment < room_down);
    let limit = match (up, down) {
        (true, _) => max,
        (false, true) => min,
        (false, false) => return Some(value.wrapping_add(increment)),
    };
    match overflow {
        Overflow::Wrap => Some(sign_extended(value.wrapping_add(increment) as u64, bits)),
        Overflow::Saturate => Some(limit),
        Overflow::Fail => None,
    }
}

/// A BITFIELD GET of the (zero-padded) value.
fn field_get(value: &[u8], operation: &FieldOperation) -> Answer {
    let FieldOperation { field, offset, .. } = *operation;
    Answer::Integer(field_value(read_field(value, offset, field.bits), field))
}

/// Runs one BITFIELD operation on `value`, which holds its field: its answer (`None`: nil, a
/// failed overflow) and whether the field changed.
pub(crate) fn apply_field(value: &mut [u8], operation: &FieldOperation) -> (Option<i64>, bool) {
    let FieldOperation { action, field, offset, overflow } = *operation;
    let stored = read_field(value, offset, field.bits);
    let old = field_value(stored, field);
    let (start, increment) = match action {
        FieldAction::Get => return (Some(old), false),
        FieldAction::Set(new) => (new, 0),
        FieldAction::IncrementBy(delta) => (old, delta),
    };
    let new = if field.signed {
        signed_sum(start, increment, field.bits, overflow)
    } else {
        unsigned_sum(start as u64, increment, field.bits, overflow).map(|new| new as i64)
    };
    let Some(new) = new else { return (None, false) };
    write_field(value, offset, field.bits, new as u64);
    let answer = if matches!(action, FieldAction::Set(_)) { old } else { new };
    (Some(answer), new != old)
}

fn field_answer(answer: Option<i64>) -> Answer {
    answer.map_or(Answer::Bulk(None), Answer::Integer)
}

/// LCS's table: at (i, j), the length of the longest common subsequence of the first `i`
/// bytes of one value and the first `j` of the other.
struct LcsTable {
    lengths: Vec<u32>,
    width: usize,
}

/// A run of bytes common to both values: inclusive ranges in each, and its length.
#[derive(Debug, PartialEq, Eq)]
struct LcsMatch {
    first: (usize, usize),
    second: (usize, usize),
    length: u64,
}

impl LcsMatch {
    /// `[[start, end], [start, end]]`, and the length when asked for.
    fn answer(&self, with_length: bool) -> Answer {
        let range = |(start, end): (usize, usize)| {
            Answer::Array(vec![Answer::Integer(start as i64), Answer::Integer(end as i64)])
        };
        let mut parts = vec![range(self.first), range(self.second)];
        if with_length {
            parts.push(Answer::Integer(self.length as i64));
        }
        Answer::Array(parts)
    }
}

/// The sequence and the matches read back from an [`LcsTable`], both from the ends backward
/// (the matches last first, as Redis lists them).
#[derive(Debug, PartialEq, Eq)]
struct LcsTrace {
    sequence: Vec<u8>,
    matches: Vec<LcsMatch>,
}

impl LcsTable {
    fn insufficient(text: &str) -> CommandError {
        CommandError(format!("ERR Insufficient memory, {text}"))
    }

    /// Fills the table, refused as Redis refuses it when it would pass 512 MiB.
    fn build(first: &[u8], second: &[u8]) -> Result<LcsTable, CommandError> {
        let width = second.len() + 1;
        let cells = (first.len() as u64 + 1) * width as u64;
        if cells * 4 > LCS_TABLE_BYTES_MAX {
            return Err(LcsTable::insufficient(
                "transient memory for LCS exceeds proto-max-bulk-len",
            ));
        }
        let mut lengths = Vec::new();
        lengths
            .try_reserve_exact(cells as usize)
            .map_err(|_| LcsTable::insufficient("failed allocating transient memory for LCS"))?;
        lengths.resize(cells as usize, 0);
        for (i, a) in first.iter().enumerate() {
            for (j, b) in second.iter().enumerate() {
                let cell = (i + 1) * width + j + 1;
                lengths[cell] = if a == b {
                    lengths[cell - width - 1] + 1
                } else {
                    lengths[cell - width].max(lengths[cell - 1])
                };
            }
        }
        Ok(LcsTable { lengths, width })
    }

    fn at(&self, i: usize, j: usize) -> u32 {
        self.lengths[i * self.width + j]
    }

    fn length(&self) -> u32 {
        self.lengths[self.lengths.len() - 1]
    }

    /// Walks back from the ends: a common byte joins the sequence (and the current run), a
    /// difference steps back in the value whose shorter prefix keeps the longer subsequence
    /// (the second on a tie) and ends the run.
    fn trace(&self, first: &[u8], second: &[u8]) -> LcsTrace {
        let mut sequence = Vec::with_capacity(self.length() as usize);
        let mut matches = Vec::new();
        let mut run: Option<LcsMatch> = None;
        let (mut i, mut j) = (first.len(), second.len());
        while i > 0 && j > 0 {
            if first[i - 1] == second[j - 1] {
                sequence.push(first[i - 1]);
                i -= 1;
                j -= 1;
                run = Some(match run {
                    Some(mut current) => {
                        (current.first.0, current.second.0) = (i, j);
                        current.length += 1;
                        current
                    }
                    None => LcsMatch { first: (i, i), second: (j, j), length: 1 },
                });
                continue;
            }
            if self.at(i - 1, j) > self.at(i, j - 1) {
                i -= 1;
            } else {
                j -= 1;
            }
            matches.extend(run.take());
        }
        matches.extend(run);
        sequence.reverse();
        LcsTrace { sequence, matches }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: i64, end: Option<i64>, unit: BitUnit) -> BitRange {
        BitRange { start, end, unit }
    }

    #[test]
    fn bits_count_from_the_top_of_the_first_byte() {
        let mut value = vec![0u8; 2];
        write_bit(&mut value, 0, true);
        write_bit(&mut value, 9, true);
        assert_eq!(value, [0x80, 0x40]);
        assert!(bit_at(&value, 0) && bit_at(&value, 9));
        assert!(!bit_at(&value, 1) && !bit_at(&value, 100) && !bit_at(&value, u64::MAX));
        write_bit(&mut value, 0, false);
        assert_eq!(value, [0, 0x40]);
    }

    #[test]
    fn counts_cover_byte_and_bit_ranges() {
        let value = b"foobar";
        let count = |start, end: Option<i64>, unit| count_in_range(value, &range(start, end, unit));
        assert_eq!(count_in_range(value, &BitRange::WHOLE), 26);
        assert_eq!(count(0, Some(0), BitUnit::Byte), 4);
        assert_eq!(count(1, Some(1), BitUnit::Byte), 6);
        assert_eq!(count(1, Some(1), BitUnit::Bit), 1);
        assert_eq!(count(5, Some(30), BitUnit::Bit), 17);
        assert_eq!(count(-1, Some(-5), BitUnit::Byte), 0);
        assert_eq!(count(-100, Some(-50), BitUnit::Byte), 4, "both clamp to byte 0");
        assert_eq!(count(-100, Some(100), BitUnit::Bit), 26);
        assert_eq!(count(3, Some(2), BitUnit::Byte), 0);
        assert_eq!(count_in_range(b"", &range(0, Some(-1), BitUnit::Bit)), 0);
    }

    #[test]
    fn positions_treat_an_open_end_as_zero_padding() {
        let ones = [0xFF_u8; 3];
        assert_eq!(position_in_range(&ones, false, &BitRange::WHOLE), 24);
        assert_eq!(position_in_range(&ones, false, &range(0, Some(-1), BitUnit::Byte)), -1);
        assert_eq!(position_in_range(&ones, true, &range(2, None, BitUnit::Byte)), 16);
        assert_eq!(position_in_range(&ones, false, &range(3, None, BitUnit::Byte)), -1);
        let value = [0xFF, 0xF0, 0x00];
        assert_eq!(position_in_range(&value, false, &BitRange::WHOLE), 12);
        assert_eq!(position_in_range(&value, true, &range(2, None, BitUnit::Byte)), -1);
        assert_eq!(position_in_range(&value, true, &range(5, Some(9), BitUnit::Bit)), 5);
        assert_eq!(position_in_range(&value, false, &range(5, Some(11), BitUnit::Bit)), -1);
        assert_eq!(position_in_range(&value, false, &range(5, Some(12), BitUnit::Bit)), 12);
        assert_eq!(position_in_range(&[0; 2], true, &BitRange::WHOLE), -1);
    }

    #[test]
    fn operators_pad_short_sources_with_zeros() {
        let sources = [b"\xF0\x0F\xAA".to_vec(), b"\xFF".to_vec()];
        assert_eq!(combine(BitOperator::And, &sources), b"\xF0\x00\x00");
        assert_eq!(combine(BitOperator::Or, &sources), b"\xFF\x0F\xAA");
        assert_eq!(combine(BitOperator::Xor, &sources), b"\x0F\x0F\xAA");
        assert_eq!(combine(BitOperator::Not, &sources[..1]), b"\x0F\xF0\x55");
        assert_eq!(combine(BitOperator::Or, &[Vec::new(), Vec::new()]), b"");
    }

    #[test]
    fn fields_read_and_write_across_bytes() {
        let mut value = vec![0u8; 2];
        write_field(&mut value, 7, 5, 23);
        assert_eq!(value, [0b0000_0001, 0b0111_0000]);
        assert_eq!(read_field(&value, 7, 5), 23);
        assert_eq!(read_field(&value, 12, 64), 0, "past the end reads zeros");
        assert_eq!(sign_extended(0b1_0111, 5), -9);
        assert_eq!(sign_extended(u64::MAX, 64), -1);
    }

    #[test]
    fn overflows_wrap_saturate_or_fail_as_in_redis() {
        assert_eq!(unsigned_sum(250, 10, 8, Overflow::Wrap), Some(4));
        assert_eq!(unsigned_sum(250, 10, 8, Overflow::Saturate), Some(255));
        assert_eq!(unsigned_sum(250, 10, 8, Overflow::Fail), None);
        assert_eq!(unsigned_sum(5, -6, 8, Overflow::Wrap), Some(255));
        assert_eq!(unsigned_sum(5, -6, 8, Overflow::Saturate), Some(0));
        assert_eq!(unsigned_sum(u64::MAX, 0, 8, Overflow::Saturate), Some(255), "SET -1");
        assert_eq!(signed_sum(100, 100, 8, Overflow::Wrap), Some(-56));
        assert_eq!(signed_sum(100, 100, 8, Overflow::Saturate), Some(127));
        assert_eq!(signed_sum(-100, -100, 8, Overflow::Saturate), Some(-128));
        assert_eq!(signed_sum(-100, -100, 8, Overflow::Fail), None);
        assert_eq!(signed_sum(i64::MIN, -1, 64, Overflow::Wrap), Some(i64::MAX));
        assert_eq!(signed_sum(i64::MAX, 1, 64, Overflow::Saturate), Some(i64::MAX));
        // Redis's C arithmetic wraps here, so the most negative SET saturates upwards.
        assert_eq!(signed_sum(i64::MIN, 0, 8, Overflow::Saturate), Some(127));
        assert_eq!(signed_sum(3, 0, 1, Overflow::Wrap), Some(-1));
    }

    #[test]
    fn fields_answer_old_values_for_set_and_new_ones_for_incrby() {
        let field = FieldType { signed: false, bits: 8 };
        let operation =
            |action| FieldOperation { action, field, offset: 0, overflow: Overflow::Wrap };
        let mut value = vec![0u8; 1];
        assert_eq!(apply_field(&mut value, &operation(FieldAction::Set(200))), (Some(0), true));
        assert_eq!(
            apply_field(&mut value, &operation(FieldAction::IncrementBy(0))),
            (Some(200), false)
        );
        assert_eq!(apply_field(&mut value, &operation(FieldAction::Get)), (Some(200), false));
        let failing =
            FieldOperation { overflow: Overflow::Fail, ..operation(FieldAction::Set(256)) };
        assert_eq!(apply_field(&mut value, &failing), (None, false));
        assert_eq!(value, [200]);
    }

    fn traced(first: &[u8], second: &[u8]) -> LcsTrace {
        let table = LcsTable::build(first, second).unwrap();
        assert_eq!(table.length() as usize, table.trace(first, second).sequence.len());
        table.trace(first, second)
    }

    fn run(first: (usize, usize), second: (usize, usize)) -> LcsMatch {
        LcsMatch { first, second, length: (first.1 - first.0 + 1) as u64 }
    }

    #[test]
    fn lcs_finds_the_sequence_and_its_runs_from_the_end() {
        let found = traced(b"ohmytext", b"mynewtext");
        assert_eq!(found.sequence, b"mytext");
        assert_eq!(found.matches, [run((4, 7), (5, 8)), run((2, 3), (0, 1))]);
        assert_eq!(traced(b"", b"abc"), LcsTrace { sequence: Vec::new(), matches: Vec::new() });
        assert_eq!(traced(b"abc", b"abc").matches, [run((0, 2), (0, 2))]);
        // On a tie the walk steps back in the second value.
        assert_eq!(traced(b"ab", b"ba").sequence, b"b");
    }

    #[test]
    fn lcs_refuses_a_table_past_redis_bound() {
        let long = vec![b'a'; 12_000];
        let error = LcsTable::build(&long, &long).err().unwrap();
        assert_eq!(
            error.0,
            "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len"
        );
    }
}
