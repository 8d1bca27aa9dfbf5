//! String commands beyond GET and SET: GETDEL, GETEX, GETRANGE, SETRANGE, INCRBYFLOAT and
//! EXPIRETIME, each as Redis answers it. A write is logged as its effect (the whole new
//! value, a delete, an expiry), so replicas and replay never compute it again.

use super::{too_large, Answer, Context};
use crate::command::EXPIRE_AT_MS_MAX;
use crate::command::{
    invalid_expire_time, parse_set_expiry, CommandError, GetExpiry, SetExpiry, TimeUnit,
};
use crate::float::{self, FloatError};
use crate::record::Record;

impl Context<'_> {
    /// `now + milliseconds` as an absolute expiry, refused past Redis's limit.
    pub(super) fn relative_expiry(
        &self,
        milliseconds: u64,
        command: &str,
    ) -> Result<u64, CommandError> {
        self.now_ms
            .checked_add(milliseconds)
            .filter(|at| *at <= EXPIRE_AT_MS_MAX)
            .ok_or_else(|| invalid_expire_time(command))
    }

    pub(super) fn get_delete(&mut self, key: Vec<u8>) -> Result<Answer, CommandError> {
        let Some(found) = self.read(&key) else {
            return Ok(Answer::Bulk(None));
        };
        self.write(Record::Delete { key })?;
        Ok(Answer::Bulk(Some(found.value)))
    }

    /// GETEX: the value, after the expiry changed as asked (an absolute time already past
    /// deletes the key).
    pub(super) fn get_expire(
        &mut self,
        key: Vec<u8>,
        expiry: GetExpiry,
    ) -> Result<Answer, CommandError> {
        let Some(found) = self.read(&key) else {
            return Ok(Answer::Bulk(None));
        };
        let target = match expiry {
            GetExpiry::At { option, argument } => {
                match parse_set_expiry(option, &argument, "getex")? {
                    SetExpiry::RelativeMs(milliseconds) => {
                        Some(self.relative_expiry(milliseconds, "getex")?)
                    }
                    SetExpiry::AbsoluteMs(at) => Some(at),
                    SetExpiry::None | SetExpiry::Keep => None,
                }
            }
            GetExpiry::Unchanged => None,
            GetExpiry::Persist => Some(0),
        };
        match target {
            None => {}
            Some(0) if found.expire_at_ms == 0 => {}
            Some(at) if at != 0 && at <= self.now_ms => self.write(Record::Delete { key })?,
            Some(expire_at_ms) => self.write(Record::Expire { key, expire_at_ms })?,
        }
        Ok(Answer::Bulk(Some(found.value)))
    }

    /// GETRANGE: negative offsets count from the end; both ends are inclusive and clamped.
    pub(super) fn get_range(&mut self, key: &[u8], start: i64, end: i64) -> Answer {
        let value = self.read(key).map(|found| found.value).unwrap_or_default();
        Answer::Bulk(Some(range_of(&value, start, end).to_vec()))
    }

    /// SETRANGE: overwrites from `offset`, padding with zero bytes; answers the new length.
    pub(super) fn set_range(
        &mut self,
        key: Vec<u8>,
        offset: u64,
        patch: &[u8],
    ) -> Result<Answer, CommandError> {
        let found = self.read(&key);
        let length = found.as_ref().map_or(0, |found| found.value.len());
        if patch.is_empty() {
            return Ok(Answer::Integer(length as i64));
        }
        let limit = self.partition.limits.record_bytes_max.saturating_sub(key.len());
        let end = usize::try_from(offset)
            .ok()
            .and_then(|offset| offset.checked_add(patch.len()))
            .filter(|end| *end <= limit)
            .ok_or_else(too_large)?;
        let (mut value, expire_at_ms) =
            found.map_or((Vec::new(), 0), |found| (found.value, found.expire_at_ms));
        if value.len() < end {
            value.resize(end, 0);
        }
        value[end - patch.len()..end].copy_from_slice(patch);
        let length = value.len() as i64;
        self.set(key, value, expire_at_ms)?;
        Ok(Answer::Integer(length))
    }

    /// INCRBYFLOAT: the sum in Redis's long double, stored as the text it answers.
    pub(super) fn increment_by_float(
        &mut self,
        key: Vec<u8>,
        increment: &[u8],
    ) -> Result<Answer, CommandError> {
        let found = self.read(&key);
        let current = found.as_ref().map_or(&b"0"[..], |found| found.value.as_slice());
        let sum = float::add(current, increment).map_err(|error| match error {
            FloatError::Invalid => CommandError("ERR value is not a valid float".into()),
            FloatError::NotFinite => {
                CommandError("ERR increment would produce NaN or Infinity".into())
            }
        })?;
        let expire_at_ms = found.map_or(0, |found| found.expire_at_ms);
        self.set(key, sum.clone(), expire_at_ms)?;
        Ok(Answer::Bulk(Some(sum)))
    }

    /// EXPIRETIME/PEXPIRETIME: -2 without the key, -1 without an expiry, else the absolute
    /// time (seconds truncated).
    pub(super) fn expire_time(&mut self, key: &[u8], unit: TimeUnit) -> i64 {
        match self.read(key) {
            None => -2,
            Some(found) if found.expire_at_ms == 0 => -1,
            Some(found) => {
                let at = i64::try_from(found.expire_at_ms).unwrap_or(i64::MAX);
                match unit {
                    TimeUnit::Seconds => at / 1000,
                    TimeUnit::Milliseconds => at,
                }
            }
        }
    }
}

impl Context<'_> {
    /// RENAME (OK) and RENAMENX (1, or 0 when the destination exists): the destination takes
    /// the value and expiry, the source goes.
    pub(super) fn rename(
        &mut self,
        source: Vec<u8>,
        destination: Vec<u8>,
        only_if_absent: bool,
    ) -> Result<Answer, CommandError> {
        let found = self.read(&source).ok_or_else(|| CommandError("ERR no such key".into()))?;
        if source == destination {
            return Ok(if only_if_absent { Answer::Integer(0) } else { Answer::Ok });
        }
        if only_if_absent && self.exists(&destination) {
            return Ok(Answer::Integer(0));
        }
        self.set(destination, found.value, found.expire_at_ms)?;
        self.write(Record::Delete { key: source })?;
        Ok(if only_if_absent { Answer::Integer(1) } else { Answer::Ok })
    }

    /// COPY: 1 once the destination holds the source's value and expiry; 0 without the
    /// source, or with a destination and no REPLACE.
    pub(super) fn copy(
        &mut self,
        source: &[u8],
        destination: Vec<u8>,
        replace: bool,
    ) -> Result<Answer, CommandError> {
        if source == destination.as_slice() {
            return Err(CommandError("ERR source and destination objects are the same".into()));
        }
        let Some(found) = self.read(source) else {
            return Ok(Answer::Integer(0));
        };
        if !replace && self.exists(&destination) {
            return Ok(Answer::Integer(0));
        }
        self.set(destination, found.value, found.expire_at_ms)?;
        Ok(Answer::Integer(1))
    }

    /// MSETNX: sets every pair (1) unless one of the keys exists (0, nothing set).
    pub(super) fn multi_set_if_absent(
        &mut self,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Answer, CommandError> {
        if pairs.iter().any(|(key, _)| self.exists(key)) {
            return Ok(Answer::Integer(0));
        }
        for (key, value) in pairs {
            self.set(key, value, 0)?;
        }
        Ok(Answer::Integer(1))
    }
}

/// The bytes of `value` from `start` to `end` (inclusive), as Redis's GETRANGE counts them.
pub(crate) fn range_of(value: &[u8], start: i64, end: i64) -> &[u8] {
    let length = value.len() as i64;
    if (start < 0 && end < 0 && start > end) || length == 0 {
        return &[];
    }
    let from_end = |offset: i64| if offset < 0 { (length + offset).max(0) } else { offset };
    let (start, end) = (from_end(start), from_end(end).min(length - 1));
    if start > end {
        return &[];
    }
    &value[start as usize..=end as usize]
}

#[cfg(test)]
mod tests {
    use super::range_of;

    #[test]
    fn ranges_count_as_redis_counts_them() {
        let value = b"Hello World";
        assert_eq!(range_of(value, 0, 3), b"Hell");
        assert_eq!(range_of(value, -3, -1), b"rld");
        assert_eq!(range_of(value, 0, -1), value);
        assert_eq!(range_of(value, 10, 100), b"d");
        assert_eq!(range_of(value, 5, 3), b"");
        assert_eq!(range_of(value, -1, -5), b"");
        assert_eq!(range_of(value, -100, 2), b"Hel");
        assert_eq!(range_of(value, 20, 30), b"");
        assert_eq!(range_of(b"", 0, -1), b"");
        assert_eq!(range_of(value, i64::MIN, i64::MAX), value);
    }
}
