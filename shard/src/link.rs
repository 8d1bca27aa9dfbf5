//! One direction of a peer connection on a shard: a bounded queue of encoded messages and the
//! task that writes them. One connection carries the streams of several partitions, so what
//! they queue in one turn of the shard goes out in one write. Producers never wait: a queue
//! past its limit closes the link (a replica too far behind is cut off, on every partition of
//! the connection, and catches up again when it reconnects).

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;

use crate::peer_stream::PeerWriter;
use strata_core::peer::{
    encode_position_message, encode_stream_message, encode_stream_parts, MessageKind, Position,
};
use strata_core::{Epoch, Lsn, PartitionId};

use crate::signal::Signal;

/// Reusable write buffers are kept up to this size.
const SPARE_BUFFER_BYTES_MAX: usize = 4 * 1024 * 1024;

pub(crate) struct Link {
    queue: RefCell<Vec<u8>>,
    /// Bytes queued at most, beyond snapshots and catch-up frames in flight
    /// (`[cluster] replica_window`, plus their allowances).
    queue_limit: Cell<usize>,
    /// Raised by producers, and by the reader when the connection's TLS session has
    /// something to send of its own.
    signal: Rc<Signal>,
    closed: Cell<bool>,
    /// Set by [`finish`](Self::finish): the writer sends what is queued, then closes.
    finishing: Cell<bool>,
    fd: RawFd,
}

impl Link {
    pub(crate) fn new(fd: RawFd, window: usize) -> Rc<Link> {
        Rc::new(Link {
            queue: RefCell::new(Vec::new()),
            queue_limit: Cell::new(window),
            signal: Rc::new(Signal::default()),
            closed: Cell::new(false),
            finishing: Cell::new(false),
            fd,
        })
    }

    /// What wakes this link's writer: given to the connection's reader half.
    pub(crate) fn writer_signal(&self) -> Rc<Signal> {
        Rc::clone(&self.signal)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Lets the queue hold `extra` more bytes (a snapshot or catch-up frames being sent for
    /// one of the connection's partitions).
    pub(crate) fn allow_extra(&self, extra: usize) {
        self.queue_limit.set(self.queue_limit.get().saturating_add(extra));
    }

    /// Queues one message of `partition`'s stream. Returns false, and closes the link, when
    /// the queue is over its limit; false too when already closed.
    pub(crate) fn push(&self, kind: MessageKind, partition: PartitionId, payload: &[u8]) -> bool {
        if self.closed.get() {
            return false;
        }
        let mut queue = self.queue.borrow_mut();
        if queue.len() + payload.len() > self.queue_limit.get() {
            drop(queue);
            tracing::warn!(bytes = self.queue_limit.get(), "peer queue full; cutting the link");
            self.close();
            return false;
        }
        encode_stream_message(&mut queue, kind, partition, payload);
        drop(queue);
        self.signal.raise();
        true
    }

    /// Queues frames of `partition`'s stream behind the epoch of the leader sending them,
    /// without copying them first. Limits as [`push`](Self::push).
    pub(crate) fn push_frames(&self, partition: PartitionId, epoch: Epoch, frames: &[u8]) -> bool {
        if self.closed.get() {
            return false;
        }
        let mut queue = self.queue.borrow_mut();
        if queue.len() + frames.len() > self.queue_limit.get() {
            drop(queue);
            tracing::warn!(bytes = self.queue_limit.get(), "peer queue full; cutting the link");
            self.close();
            return false;
        }
        let epoch = epoch.0.to_le_bytes();
        encode_stream_parts(&mut queue, MessageKind::Frames, partition, &[&epoch, frames]);
        drop(queue);
        self.signal.raise();
        true
    }

    /// Queues a message carrying an LSN and its stream's epoch (Commit, Ack, `SnapshotEnd`).
    pub(crate) fn push_position(
        &self,
        kind: MessageKind,
        partition: PartitionId,
        lsn: Lsn,
        epoch: Epoch,
    ) -> bool {
        if self.closed.get() {
            return false;
        }
        let position = Position { lsn, epoch };
        encode_position_message(&mut self.queue.borrow_mut(), kind, partition, position);
        self.signal.raise();
        true
    }

    /// Queues a refusal of the whole connection (it closes after).
    pub(crate) fn push_refusal(&self, reason: &str) {
        if self.closed.get() {
            return;
        }
        strata_core::peer::encode_message(
            &mut self.queue.borrow_mut(),
            MessageKind::Refused,
            reason.as_bytes(),
        );
        self.finish();
    }

    /// Closes the link once what is queued is written (a refusal, a fence, a failure report
    /// must reach the other end before the connection goes).
    pub(crate) fn finish(&self) {
        self.finishing.set(true);
        self.signal.raise();
    }

    /// Closes the link: the socket is shut down in both directions, so that a read or write
    /// blocked on it returns, and both tasks end.
    pub(crate) fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        // SAFETY: shutdown(2) on a descriptor this link's stream owns; the stream outlives the
        // link's tasks, and a stale descriptor number only makes the call fail.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        self.signal.raise();
    }

    /// Writes queued messages until the link closes or a write fails.
    pub(crate) async fn run_writer(self: Rc<Self>, mut writer: PeerWriter) {
        let mut spare = Vec::new();
        loop {
            self.signal.wait().await;
            if self.closed.get() {
                break;
            }
            let batch =
                std::mem::replace(&mut *self.queue.borrow_mut(), std::mem::take(&mut spare));
            if batch.is_empty() {
                if self.finishing.get() || writer.flush().await.is_err() {
                    self.close();
                    break;
                }
                continue;
            }
            let (result, mut written) = writer.write_all(batch).await;
            if result.is_err() {
                self.close();
                break;
            }
            written.clear();
            if written.capacity() <= SPARE_BUFFER_BYTES_MAX {
                spare = written;
            }
            if self.finishing.get() && self.queue.borrow().is_empty() {
                self.close();
                break;
            }
        }
    }
}
