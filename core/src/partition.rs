//! One partition's state machine on the node that takes writes: it checks a command, computes
//! its effect against the latest state, assigns LSNs, and gathers the records into the open
//! batch. It does no I/O: the shard runtime takes batches, makes them durable and reports
//! commits back, and answers each command once the LSN it depends on is committed.
//!
//! The keyspace holds the latest state, committed or not. Every entry carries the LSN that wrote
//! it, deleted keys leave a tombstone until their delete commits, and a FLUSHALL leaves its LSN:
//! so an answer is computed at once but sent only when everything it saw is committed. That is
//! what keeps reads from returning data that a crash could still take away.

use std::collections::HashMap;

use crate::command::{
    invalid_expire_time, CommandError, ExpireCondition, KeyCommand, ScanCursor, SetCondition,
    SetExpiry, SetName, TimeUnit,
};
use crate::ids::{Lsn, PartitionId};
use crate::keyspace::Keyspace;
use crate::record::{Record, RecordView};

/// The value part of an answer to a key command, before it is encoded for the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Ok,
    /// A simple string other than OK (TYPE's).
    Status(&'static str),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Bulks(Vec<Option<Vec<u8>>>),
    /// A partition's key counts, for INFO (not sent to clients as such).
    Counts {
        keys: usize,
        expires: usize,
    },
    /// A partition's page of a SCAN (boxed: answers are moved on every command's way, and
    /// must stay small). The router turns it into SCAN's reply.
    Scanned(Box<ScanPage>),
    /// A partition's part of RANDOMKEY: a key chosen at random, and how many it holds.
    Sampled(Box<(Option<Vec<u8>>, usize)>),
    /// An array of answers, nested as deep as needed (BITFIELD's integers and nils, LCS's
    /// matches).
    Array(Vec<Answer>),
    Error(CommandError),
}

/// One partition's page of a SCAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    /// Where the next call goes on; None once the partition is done.
    pub next: Option<ScanCursor>,
    pub keys: Vec<Vec<u8>>,
    /// How many keys the page looked at (matching or not).
    pub seen: usize,
}

/// The result of executing a command: its answer, to be sent once `wait_lsn` is committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    pub answer: Answer,
    pub wait_lsn: Lsn,
}

/// Records taken from a partition to be made durable together, the first at `first_lsn`.
#[derive(Debug, PartialEq, Eq)]
pub struct TakenBatch {
    pub first_lsn: Lsn,
    pub records: Vec<Record>,
}

impl TakenBatch {
    #[must_use]
    pub fn last_lsn(&self) -> Lsn {
        Lsn(self.first_lsn.0 + self.records.len() as u64 - 1)
    }
}

/// Sizes a partition enforces.
#[derive(Clone, Copy, Debug)]
pub struct PartitionLimits {
    /// Largest key plus value one record may carry; larger writes are refused.
    pub record_bytes_max: usize,
    /// Records are taken in batches of at most about this many bytes; a record larger than
    /// this goes alone.
    pub batch_bytes_max: usize,
    /// A value at least this large is moved into the keyspace, not copied, and held there
    /// alone while its record waits in the open batch: [`Partition::take_batch`] copies it
    /// back into the record. Smaller values are copied into the keyspace and kept in the
    /// record (a copy is cheaper than the bookkeeping).
    pub value_in_keyspace_bytes_min: usize,
}

/// The default of [`PartitionLimits::value_in_keyspace_bytes_min`].
pub const VALUE_IN_KEYSPACE_BYTES_MIN: usize = 4096;

impl Default for PartitionLimits {
    fn default() -> Self {
        PartitionLimits {
            record_bytes_max: 8 * 1024 * 1024,
            batch_bytes_max: 1024 * 1024,
            value_in_keyspace_bytes_min: VALUE_IN_KEYSPACE_BYTES_MIN,
        }
    }
}

/// A record of the open batch. A large SET's value is left out of it (`Record::Set` with an
/// empty value, `value_in_keyspace` its length) while the keyspace holds that value: until the
/// batch is taken, or until the key is about to change, when it is copied back.
#[derive(Debug)]
struct OpenRecord {
    record: Record,
    value_in_keyspace: usize,
}

impl OpenRecord {
    fn size_estimate(&self) -> usize {
        self.record.size_estimate() + self.value_in_keyspace
    }
}

/// One partition's keyspace, log positions and open batch. Owned by one shard.
#[derive(Debug)]
pub struct Partition {
    id: PartitionId,
    keyspace: Keyspace,
    tombstones: HashMap<Box<[u8]>, Lsn, foldhash::fast::RandomState>,
    flush_lsn: Lsn,
    last_lsn: Lsn,
    commit_lsn: Lsn,
    /// Records not yet taken for a frame; the first has LSN `last_lsn + 1 - open.len()`.
    open: Vec<OpenRecord>,
    open_bytes: usize,
    /// Open records whose value is in the keyspace only: while there are none, a write need
    /// not look for one to give its value back.
    values_in_keyspace: usize,
    failure: Option<String>,
    limits: PartitionLimits,
}

fn too_large() -> CommandError {
    CommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)".into())
}

impl Partition {
    #[must_use]
    pub fn new(id: PartitionId, limits: PartitionLimits) -> Partition {
        Partition {
            id,
            keyspace: Keyspace::default(),
            tombstones: HashMap::default(),
            flush_lsn: Lsn::ZERO,
            last_lsn: Lsn::ZERO,
            commit_lsn: Lsn::ZERO,
            open: Vec::new(),
            open_bytes: 0,
            values_in_keyspace: 0,
            failure: None,
            limits,
        }
    }

    #[must_use]
    pub fn id(&self) -> PartitionId {
        self.id
    }

    #[must_use]
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    #[must_use]
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    #[must_use]
    pub fn commit_lsn(&self) -> Lsn {
        self.commit_lsn
    }

    #[must_use]
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Loads one snapshot entry during recovery.
    pub fn load_entry(&mut self, key: &[u8], value: &[u8], expire_at_ms: u64, lsn: Lsn) {
        assert!(self.open.is_empty());
        self.keyspace.insert(key, value, expire_at_ms, lsn);
    }

    /// Applies a committed record during recovery (or on a replica). LSNs must ascend.
    pub fn apply_committed(&mut self, lsn: Lsn, record: RecordView<'_>) {
        assert!(self.open.is_empty());
        assert!(lsn > self.last_lsn || self.last_lsn == Lsn::ZERO, "LSN went backwards");
        self.keyspace.apply(lsn, record);
        self.last_lsn = lsn;
        self.commit_lsn = lsn;
    }

    /// Sets the log position after recovery: everything up to `lsn` is durable.
    pub fn recovered_through(&mut self, lsn: Lsn) {
        assert!(self.open.is_empty());
        assert!(lsn >= self.last_lsn);
        self.last_lsn = lsn;
        self.commit_lsn = lsn;
    }

    /// Sets the log position of a replica that loaded a snapshot at `lsn` from its leader:
    /// the state may hold records the leader has not committed yet, so every read waits until
    /// the commit LSN (the leader's `commit`, for now) reaches `lsn`.
    pub fn recovered_as_replica(&mut self, lsn: Lsn, commit: Lsn) {
        assert!(self.open.is_empty());
        assert!(lsn >= self.last_lsn);
        self.last_lsn = lsn;
        self.commit_lsn = commit.min(lsn);
        if self.commit_lsn < lsn {
            self.flush_lsn = lsn;
        }
    }

    #[must_use]
    pub fn has_open_records(&self) -> bool {
        !self.open.is_empty()
    }

    /// Takes the open records, up to the batch size limit, for one frame.
    pub fn take_batch(&mut self) -> Option<TakenBatch> {
        if self.open.is_empty() {
            return None;
        }
        let open_first = self.open_first();
        let mut bytes = 0;
        let mut count = 0;
        for record in &self.open {
            bytes += record.size_estimate();
            if count > 0 && bytes > self.limits.batch_bytes_max {
                break;
            }
            count += 1;
        }
        for index in 0..count {
            self.restore_value(index);
        }
        let records: Vec<Record> = self.open.drain(..count).map(|open| open.record).collect();
        debug_assert_eq!(
            self.values_in_keyspace,
            self.open.iter().filter(|open| open.value_in_keyspace > 0).count()
        );
        self.open_bytes = self.open.iter().map(OpenRecord::size_estimate).sum();
        Some(TakenBatch { first_lsn: open_first, records })
    }

    /// Everything up to `through` is durable (and acknowledged by whoever must acknowledge it).
    pub fn commit(&mut self, through: Lsn) {
        assert!(through <= self.last_lsn, "commit beyond the last assigned LSN");
        if through <= self.commit_lsn {
            return;
        }
        self.commit_lsn = through;
        if !self.tombstones.is_empty() {
            self.tombstones.retain(|_, lsn| *lsn > through);
        }
    }

    /// The partition's log failed: it refuses writes until the node restarts.
    pub fn fail(&mut self, reason: String) {
        if self.failure.is_none() {
            self.failure = Some(reason);
        }
    }

    /// The error sent to writes, and to reads of uncommitted data, after a failure.
    #[must_use]
    pub fn failure_error(&self) -> Option<CommandError> {
        self.failure.as_ref().map(|reason| {
            CommandError(format!(
                "ERR partition {} refuses writes after a WAL failure ({reason}); restart the node",
                self.id
            ))
        })
    }

    /// Active expiry: deletes up to `limit` keys whose expiry time has passed, as DEL would.
    /// The deletes are logged, so replicas and replay remove the same keys at the same LSNs
    /// (only a partition that takes writes runs this). Returns how many keys were deleted.
    pub fn delete_expired(&mut self, now_ms: u64, limit: usize) -> usize {
        if self.failure.is_some() {
            return 0;
        }
        let keys = self.keyspace.expired_keys(now_ms, limit);
        let count = keys.len();
        for key in keys {
            self.append(Record::Delete { key });
        }
        count
    }

    /// Executes one command against the latest state.
    pub fn execute(&mut self, command: KeyCommand, now_ms: u64) -> Execution {
        if command.is_write() {
            if let Some(error) = self.failure_error() {
                return Execution { answer: Answer::Error(error), wait_lsn: Lsn::ZERO };
            }
        }
        self.keyspace.set_clock(now_ms);
        let mut context = Context { partition: self, now_ms, wait_lsn: Lsn::ZERO };
        let answer = context.run(command);
        let wait_lsn = context.wait_lsn;
        Execution { answer, wait_lsn }
    }

    /// Applies a record a leader assigned `lsn` to, on a replica: the state changes at once,
    /// but reads that see it wait until [`commit`](Self::commit) covers `lsn`. LSNs must follow
    /// each other without a gap. The record is borrowed, usually from the received frame itself:
    /// its value is copied once, into the keyspace.
    pub fn apply_replicated(&mut self, lsn: Lsn, record: RecordView<'_>) {
        assert!(self.open.is_empty(), "a replica takes no writes of its own");
        assert_eq!(lsn, self.last_lsn.next(), "replicated records must follow each other");
        self.apply_effect(lsn, record);
        self.last_lsn = lsn;
    }

    fn append(&mut self, record: Record) -> Lsn {
        assert!(self.failure.is_none());
        let lsn = self.last_lsn.next();
        self.before_change(record.view());
        self.open_bytes += record.size_estimate();
        let open = match record {
            Record::Set { key, value, expire_at_ms }
                if value.len() >= self.limits.value_in_keyspace_bytes_min =>
            {
                // The value moves into the keyspace, uncopied; the record holds it no more.
                let value_in_keyspace = value.len();
                self.keyspace.insert_owned(&key, value, expire_at_ms, lsn);
                self.values_in_keyspace += 1;
                let record = Record::Set { key, value: Vec::new(), expire_at_ms };
                OpenRecord { record, value_in_keyspace }
            }
            record => {
                self.apply_effect(lsn, record.view());
                OpenRecord { record, value_in_keyspace: 0 }
            }
        };
        self.open.push(open);
        self.last_lsn = lsn;
        lsn
    }

    /// The LSN of the first open record (one past the last when there is none).
    fn open_first(&self) -> Lsn {
        Lsn(self.last_lsn.0 + 1 - self.open.len() as u64)
    }

    /// Before `record` changes the keyspace, gives back the values of the open records it
    /// would overwrite: the key's own record, or every one for FLUSHALL.
    fn before_change(&mut self, record: RecordView<'_>) {
        if self.values_in_keyspace == 0 {
            return;
        }
        let key = match record {
            RecordView::Set { key, .. }
            | RecordView::Delete { key }
            | RecordView::Expire { key, .. } => key,
            RecordView::FlushAll => {
                for index in 0..self.open.len() {
                    self.restore_value(index);
                }
                return;
            }
        };
        // A value left out of its record is still the key's value, written at that record's
        // LSN: nothing changes a key without first coming here.
        let Some(entry) = self.keyspace.get_raw(key) else { return };
        let open_first = self.open_first();
        if entry.lsn >= open_first && entry.lsn <= self.last_lsn {
            let index = usize::try_from(entry.lsn.0 - open_first.0).expect("open records fit");
            self.restore_value(index);
        }
    }

    /// Copies the value of open record `index` back from the keyspace, if it was left out.
    fn restore_value(&mut self, index: usize) {
        let open_first = self.open_first();
        let open = &mut self.open[index];
        if open.value_in_keyspace == 0 {
            return;
        }
        let Record::Set { key, value, .. } = &mut open.record else {
            unreachable!("only a SET leaves its value in the keyspace");
        };
        let entry = self.keyspace.get_raw(key).expect("a value left in the keyspace is there");
        assert_eq!(entry.lsn.0, open_first.0 + index as u64, "the key changed since its record");
        assert_eq!(entry.value.len(), open.value_in_keyspace);
        *value = entry.value.to_vec();
        open.value_in_keyspace = 0;
        self.values_in_keyspace -= 1;
    }

    /// Changes the keyspace as `record` written at `lsn` says, leaving what reads must wait for.
    fn apply_effect(&mut self, lsn: Lsn, record: RecordView<'_>) {
        match record {
            RecordView::Set { key, value, expire_at_ms } => {
                self.keyspace.insert(key, value, expire_at_ms, lsn);
            }
            RecordView::Delete { key } => {
                self.keyspace.remove(key);
                self.tombstones.insert(Box::from(key), lsn);
            }
            RecordView::Expire { key, expire_at_ms } => {
                self.keyspace.set_expiry(key, expire_at_ms, lsn);
            }
            RecordView::FlushAll => {
                self.keyspace.clear();
                self.tombstones.clear();
                self.flush_lsn = lsn;
            }
        }
    }

    /// The LSN that last changed what a read of `key` sees.
    fn dependency(&self, key: &[u8]) -> Lsn {
        let written = match self.keyspace.get_raw(key) {
            Some(entry) => entry.lsn,
            None => self.tombstones.get(key).copied().unwrap_or(Lsn::ZERO),
        };
        written.max(self.flush_lsn)
    }
}

/// A copy of a live value a command read.
struct Found {
    value: Vec<u8>,
    expire_at_ms: u64,
}

/// Execution of one command: tracks the newest LSN its answer depends on.
struct Context<'a> {
    partition: &'a mut Partition,
    now_ms: u64,
    wait_lsn: Lsn,
}

impl Context<'_> {
    fn read(&mut self, key: &[u8]) -> Option<Found> {
        self.wait_lsn = self.wait_lsn.max(self.partition.dependency(key));
        let entry = self.partition.keyspace.get(key, self.now_ms)?;
        Some(Found { value: entry.value.to_vec(), expire_at_ms: entry.expire_at_ms })
    }

    /// Runs `reader` on the live value of `key` (`None` without one) where it lies, for reads
    /// that need a few bytes of a value that may be large.
    fn inspect<T>(&mut self, key: &[u8], reader: impl FnOnce(Option<&[u8]>) -> T) -> T {
        self.wait_lsn = self.wait_lsn.max(self.partition.dependency(key));
        reader(self.partition.keyspace.get(key, self.now_ms).map(|entry| entry.value))
    }

    fn exists(&mut self, key: &[u8]) -> bool {
        self.wait_lsn = self.wait_lsn.max(self.partition.dependency(key));
        self.partition.keyspace.get(key, self.now_ms).is_some()
    }

    fn write(&mut self, record: Record) -> Result<(), CommandError> {
        if record.size_estimate() > self.partition.limits.record_bytes_max {
            return Err(too_large());
        }
        let lsn = self.partition.append(record);
        self.wait_lsn = self.wait_lsn.max(lsn);
        Ok(())
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>, expire_at_ms: u64) -> Result<(), CommandError> {
        self.write(Record::Set { key, value, expire_at_ms })
    }

    fn run(&mut self, command: KeyCommand) -> Answer {
        match self.dispatch(command) {
            Ok(answer) => answer,
            Err(error) => Answer::Error(error),
        }
    }

    fn dispatch(&mut self, command: KeyCommand) -> Result<Answer, CommandError> {
        match command {
            KeyCommand::Get { key } => Ok(Answer::Bulk(self.read(&key).map(|found| found.value))),
            KeyCommand::Set { key, value, condition, expiry, get, command } => {
                self.set_command(key, value, condition, expiry, get, command)
            }
            KeyCommand::GetDelete { key } => self.get_delete(key),
            KeyCommand::GetExpire { key, expiry } => self.get_expire(key, expiry),
            KeyCommand::GetRange { key, start, end } => Ok(self.get_range(&key, start, end)),
            KeyCommand::SetRange { key, offset, value } => self.set_range(key, offset, &value),
            KeyCommand::IncrementByFloat { key, increment } => {
                self.increment_by_float(key, &increment)
            }
            KeyCommand::Type { key } => {
                Ok(Answer::Status(if self.exists(&key) { "string" } else { "none" }))
            }
            KeyCommand::Touch { keys } => {
                Ok(Answer::Integer(keys.iter().filter(|key| self.exists(key)).count() as i64))
            }
            KeyCommand::ExpireTime { key, unit } => {
                Ok(Answer::Integer(self.expire_time(&key, unit)))
            }
            KeyCommand::Rename { source, destination, only_if_absent } => {
                self.rename(source, destination, only_if_absent)
            }
            KeyCommand::Copy { source, destination, replace } => {
                self.copy(&source, destination, replace)
            }
            KeyCommand::MultiSetIfAbsent { pairs } => self.multi_set_if_absent(pairs),
            KeyCommand::SetBit { key, offset, bit } => self.set_bit(key, offset, bit),
            KeyCommand::GetBit { key, offset } => Ok(self.get_bit(&key, offset)),
            KeyCommand::BitCount { key, range } => self.bit_count(&key, range),
            KeyCommand::BitPosition { key, bit, range } => self.bit_position(&key, bit, range),
            KeyCommand::BitOperation { operator, destination, sources } => {
                self.bit_operation(operator, destination, &sources)
            }
            KeyCommand::BitField { key, operations, .. } => self.bit_field(key, &operations),
            KeyCommand::Lcs { first, second, reply } => self.lcs(&first, &second, reply),
            KeyCommand::GetSet { key, value } => {
                let old = self.read(&key).map(|found| found.value);
                self.set(key, value, 0)?;
                Ok(Answer::Bulk(old))
            }
            KeyCommand::SetNx { key, value } => {
                if self.exists(&key) {
                    return Ok(Answer::Integer(0));
                }
                self.set(key, value, 0)?;
                Ok(Answer::Integer(1))
            }
            KeyCommand::Delete { keys } => self.delete(keys),
            KeyCommand::Exists { keys } => {
                Ok(Answer::Integer(keys.iter().filter(|key| self.exists(key)).count() as i64))
            }
            KeyCommand::MultiSet { pairs } => {
                for (key, value) in pairs {
                    self.set(key, value, 0)?;
                }
                Ok(Answer::Ok)
            }
            KeyCommand::MultiGet { keys } => Ok(Answer::Bulks(
                keys.iter().map(|key| self.read(key).map(|found| found.value)).collect(),
            )),
            KeyCommand::IncrementBy { key, delta } => self.increment(&key, delta),
            KeyCommand::Append { key, value } => self.append_command(&key, &value),
            KeyCommand::Strlen { key } => {
                Ok(Answer::Integer(self.read(&key).map_or(0, |entry| entry.value.len() as i64)))
            }
            KeyCommand::Expire { key, amount, unit, absolute, condition } => {
                self.expire(&key, amount, unit, absolute, condition)
            }
            KeyCommand::Ttl { key, unit } => Ok(Answer::Integer(self.ttl(&key, unit))),
            KeyCommand::Persist { key } => self.persist(&key),
            KeyCommand::DbSize => {
                self.wait_lsn = self.partition.last_lsn;
                Ok(Answer::Integer(self.partition.keyspace.len() as i64))
            }
            KeyCommand::Status => match self.partition.failure_error() {
                Some(error) => Err(error),
                None => {
                    let keyspace = &self.partition.keyspace;
                    Ok(Answer::Counts { keys: keyspace.len(), expires: keyspace.expiring() })
                }
            },
            KeyCommand::FlushAll => {
                self.write(Record::FlushAll)?;
                Ok(Answer::Ok)
            }
            KeyCommand::Keys { pattern } => Ok(self.keys(&pattern)),
            KeyCommand::Scan { cursor, count, pattern, other_type } => {
                Ok(self.scan(cursor, count, pattern.as_deref(), other_type))
            }
            KeyCommand::RandomKey { seed } => Ok(self.random_key(seed)),
            KeyCommand::Object { key, question } => self.object(&key, question),
        }
    }

    fn set_command(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        condition: SetCondition,
        expiry: SetExpiry,
        get: bool,
        command: SetName,
    ) -> Result<Answer, CommandError> {
        // A plain SET needs nothing of the old value: skip the lookup and its copy. An absolute
        // expiry may lie in the past, which deletes the key if it exists.
        let needs_old = get
            || condition != SetCondition::Always
            || matches!(expiry, SetExpiry::Keep | SetExpiry::AbsoluteMs(_));
        let old = if needs_old { self.read(&key) } else { None };
        // The expiry is checked first, as Redis does, whether or not the condition holds.
        let expire_at_ms = match expiry {
            SetExpiry::None => 0,
            SetExpiry::Keep => old.as_ref().map_or(0, |entry| entry.expire_at_ms),
            SetExpiry::RelativeMs(milliseconds) => {
                self.relative_expiry(milliseconds, command.as_str())?
            }
            SetExpiry::AbsoluteMs(at) => at,
        };
        let allowed = match condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => old.is_none(),
            SetCondition::IfPresent => old.is_some(),
        };
        let old_value = || Answer::Bulk(old.as_ref().map(|found| found.value.clone()));
        if !allowed {
            return Ok(if get { old_value() } else { Answer::Bulk(None) });
        }
        if expire_at_ms != 0 && expire_at_ms <= self.now_ms {
            // An absolute time in the past: the key is set and gone at once, as in Redis.
            if old.is_some() {
                self.write(Record::Delete { key })?;
            }
        } else {
            self.set(key, value, expire_at_ms)?;
        }
        Ok(if get { old_value() } else { Answer::Ok })
    }

    fn delete(&mut self, keys: Vec<Vec<u8>>) -> Result<Answer, CommandError> {
        let mut removed = 0;
        for key in keys {
            if self.exists(&key) {
                self.write(Record::Delete { key })?;
                removed += 1;
            }
        }
        Ok(Answer::Integer(removed))
    }

    fn increment(&mut self, key: &[u8], delta: i64) -> Result<Answer, CommandError> {
        let old = self.read(key);
        let current = match &old {
            Some(entry) => crate::command::parse_integer(&entry.value)?,
            None => 0,
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| CommandError("ERR increment or decrement would overflow".into()))?;
        let expire_at_ms = old.map_or(0, |entry| entry.expire_at_ms);
        self.set(key.to_vec(), next.to_string().into_bytes(), expire_at_ms)?;
        Ok(Answer::Integer(next))
    }

    fn append_command(&mut self, key: &[u8], suffix: &[u8]) -> Result<Answer, CommandError> {
        let old = self.read(key);
        let (mut value, expire_at_ms) = match old {
            Some(found) => (found.value, found.expire_at_ms),
            None => (Vec::new(), 0),
        };
        if value.len() + suffix.len() + key.len() > self.partition.limits.record_bytes_max {
            return Err(too_large());
        }
        value.extend_from_slice(suffix);
        let length = value.len() as i64;
        self.set(key.to_vec(), value, expire_at_ms)?;
        Ok(Answer::Integer(length))
    }

    fn expire(
        &mut self,
        key: &[u8],
        amount: i64,
        unit: TimeUnit,
        absolute: bool,
        condition: ExpireCondition,
    ) -> Result<Answer, CommandError> {
        let command = match (unit, absolute) {
            (TimeUnit::Seconds, false) => "expire",
            (TimeUnit::Milliseconds, false) => "pexpire",
            (TimeUnit::Seconds, true) => "expireat",
            (TimeUnit::Milliseconds, true) => "pexpireat",
        };
        let invalid = || invalid_expire_time(command);
        let milliseconds = match unit {
            TimeUnit::Seconds => amount.checked_mul(1000).ok_or_else(invalid)?,
            TimeUnit::Milliseconds => amount,
        };
        let target = if absolute {
            milliseconds
        } else {
            i64::try_from(self.now_ms)
                .map_err(|_| invalid())?
                .checked_add(milliseconds)
                .ok_or_else(invalid)?
        };
        let Some(entry) = self.read(key) else {
            return Ok(Answer::Integer(0));
        };
        let current = entry.expire_at_ms;
        let allowed = match condition {
            ExpireCondition::Always => true,
            ExpireCondition::IfNoExpiry => current == 0,
            ExpireCondition::IfHasExpiry => current != 0,
            ExpireCondition::IfGreater => current != 0 && target > current as i64,
            ExpireCondition::IfLess => current == 0 || target < current as i64,
            ExpireCondition::IfHasExpiryAndLess => current != 0 && target < current as i64,
        };
        if !allowed {
            return Ok(Answer::Integer(0));
        }
        if target <= self.now_ms as i64 {
            self.write(Record::Delete { key: key.to_vec() })?;
        } else {
            self.write(Record::Expire { key: key.to_vec(), expire_at_ms: target as u64 })?;
        }
        Ok(Answer::Integer(1))
    }

    fn ttl(&mut self, key: &[u8], unit: TimeUnit) -> i64 {
        let Some(entry) = self.read(key) else {
            return -2;
        };
        if entry.expire_at_ms == 0 {
            return -1;
        }
        let remaining = entry.expire_at_ms.saturating_sub(self.now_ms) as i64;
        match unit {
            TimeUnit::Seconds => (remaining + 500) / 1000,
            TimeUnit::Milliseconds => remaining,
        }
    }

    fn persist(&mut self, key: &[u8]) -> Result<Answer, CommandError> {
        match self.read(key) {
            Some(entry) if entry.expire_at_ms != 0 => {
                self.write(Record::Expire { key: key.to_vec(), expire_at_ms: 0 })?;
                Ok(Answer::Integer(1))
            }
            _ => Ok(Answer::Integer(0)),
        }
    }
}

mod bits;
mod strings;
#[cfg(test)]
mod tests;
mod walk;
