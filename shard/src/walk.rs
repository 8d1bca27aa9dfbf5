//! SCAN across partitions and shards: a call starts at its cursor's partition and, when that
//! partition is done with COUNT not yet spent, goes on to the next partitions (on whichever
//! shard owns them), so a small keyspace is scanned in one call as Redis scans it.

use strata_core::command::{KeyCommand, ScanCursor};
use strata_core::partition::{Answer, ScanPage};
use strata_core::PartitionId;

use crate::reply;
use crate::shard::{now_ms, Outbox, Pending, Shard};

/// One SCAN call on its way through the partitions.
pub(crate) struct ScanWalk {
    /// The partition being asked, and its answer to come (None: the cursor names no partition).
    part: Option<(u32, Pending)>,
    /// Keys the call may still look at.
    count: usize,
    pattern: Option<Vec<u8>>,
    other_type: bool,
    keys: Vec<Vec<u8>>,
}

impl ScanWalk {
    /// Asks the cursor's partition first (queued in `outbox` with the round's other requests).
    pub(crate) fn start(
        shard: &Shard,
        outbox: &mut Outbox,
        cursor: ScanCursor,
        count: usize,
        pattern: Option<Vec<u8>>,
        other_type: bool,
    ) -> ScanWalk {
        let mut walk = ScanWalk { part: None, count, pattern, other_type, keys: Vec::new() };
        // A cursor past the last partition was not given by this node: the scan is over.
        if cursor.partition < shard.mesh.options.partition_count {
            walk.part = Some((cursor.partition, walk.ask(shard, outbox, cursor)));
        }
        walk
    }

    fn ask(&self, shard: &Shard, outbox: &mut Outbox, cursor: ScanCursor) -> Pending {
        let command = KeyCommand::Scan {
            cursor,
            count: self.count,
            pattern: self.pattern.clone(),
            other_type: self.other_type,
        };
        shard.submit(outbox, PartitionId(cursor.partition), command, now_ms())
    }

    /// Gathers the partitions' pages and writes SCAN's reply (or the first error).
    pub(crate) async fn finish(mut self, shard: &Shard, output: &mut Vec<u8>) {
        let partition_count = shard.mesh.options.partition_count;
        let mut next_cursor = 0;
        while let Some((partition, pending)) = self.part.take() {
            let ScanPage { next, keys, seen } = match pending.resolve(shard).await {
                Answer::Scanned(page) => *page,
                other => return reply::encode_answer(output, &other),
            };
            self.keys.extend(keys);
            // An empty partition costs one, so that a call crosses a bounded number of them.
            self.count = self.count.saturating_sub(seen.max(1));
            if let Some(cursor) = next {
                next_cursor = cursor.encode();
                break;
            }
            let following = partition + 1;
            if following == partition_count {
                break;
            }
            let cursor = ScanCursor::start_of(following);
            if self.count == 0 {
                next_cursor = cursor.encode();
                break;
            }
            let mut outbox = Outbox::default();
            self.part = Some((following, self.ask(shard, &mut outbox, cursor)));
        }
        reply::encode_scan_page(output, next_cursor, &self.keys);
    }
}
