//! Commands that walk a partition's keys (KEYS, SCAN, RANDOMKEY) and OBJECT's questions about
//! one key. The walks answer once everything the partition holds now is committed, so that no
//! key a crash could take away is shown.

use super::{Answer, Context, ScanPage};
use crate::command::{parse_integer, CommandError, ObjectQuestion, ScanCursor};
use crate::glob;

/// Redis keeps a value of up to this many bytes in one allocation with its header (`embstr`).
const EMBEDDED_STRING_BYTES_MAX: usize = 44;
/// Redis stores a value of up to this many bytes that reads as a 64-bit integer as one (`int`).
const INTEGER_STRING_BYTES_MAX: usize = 20;

impl Context<'_> {
    /// Waits for whatever the partition holds now: a walk sees all of it.
    fn depend_on_everything(&mut self) {
        self.wait_lsn = self.wait_lsn.max(self.partition.last_lsn);
    }

    pub(super) fn keys(&mut self, pattern: &[u8]) -> Answer {
        self.depend_on_everything();
        let all = pattern == b"*";
        let keys = self.partition.keyspace.iter_live(self.now_ms);
        let matching = keys.filter(|key| all || glob::matches(pattern, key));
        Answer::Bulks(matching.map(|key| Some(key.to_vec())).collect())
    }

    pub(super) fn scan(
        &mut self,
        cursor: ScanCursor,
        count: usize,
        pattern: Option<&[u8]>,
        other_type: bool,
    ) -> Answer {
        self.depend_on_everything();
        let keyspace = &self.partition.keyspace;
        let mut keys = Vec::new();
        let from = (cursor.bucket, cursor.layout);
        let (next, seen) = keyspace.scan(from, count, self.now_ms, |key| {
            let wanted = !other_type && pattern.is_none_or(|pattern| glob::matches(pattern, key));
            if wanted {
                keys.push(key.to_vec());
            }
        });
        let next = next.map(|bucket| ScanCursor {
            partition: cursor.partition,
            layout: keyspace.layout_tag(),
            bucket,
        });
        Answer::Scanned(Box::new(ScanPage { next, keys, seen }))
    }

    pub(super) fn random_key(&mut self, seed: u64) -> Answer {
        self.depend_on_everything();
        let keyspace = &self.partition.keyspace;
        let key = keyspace.random_key(seed, self.now_ms).map(<[u8]>::to_vec);
        Answer::Sampled(Box::new((key, keyspace.len())))
    }

    pub(super) fn object(
        &mut self,
        key: &[u8],
        question: ObjectQuestion,
    ) -> Result<Answer, CommandError> {
        self.wait_lsn = self.wait_lsn.max(self.partition.dependency(key));
        let keyspace = &self.partition.keyspace;
        let Some(idle_seconds) = keyspace.idle_seconds(key, self.now_ms) else {
            return Ok(Answer::Bulk(None));
        };
        match question {
            ObjectQuestion::Encoding => {
                let value = keyspace.get_raw(key).map_or(&[][..], |entry| entry.value);
                Ok(Answer::Bulk(Some(encoding_of(value).as_bytes().to_vec())))
            }
            // Every value has one owner here: none is shared as Redis shares small integers.
            ObjectQuestion::ReferenceCount => Ok(Answer::Integer(1)),
            ObjectQuestion::IdleTime => Ok(Answer::Integer(idle_seconds as i64)),
            ObjectQuestion::Frequency => Err(CommandError(
                "ERR An LFU maxmemory policy is not selected, access frequency not tracked. \
                 Please note that when switching between policies at runtime LRU and LFU data \
                 will take some time to adjust."
                    .into(),
            )),
        }
    }
}

/// The encoding Redis gives a string it was sent whole (by SET): `int` for a 64-bit integer in
/// canonical form, `embstr` up to 44 bytes, `raw` beyond. Values are all stored alike here; the
/// name tells a client what Redis would have done with the value.
fn encoding_of(value: &[u8]) -> &'static str {
    if value.len() <= INTEGER_STRING_BYTES_MAX && parse_integer(value).is_ok() {
        "int"
    } else if value.len() <= EMBEDDED_STRING_BYTES_MAX {
        "embstr"
    } else {
        "raw"
    }
}
