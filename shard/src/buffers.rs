//! The buffers of client connections. An idle connection holds none: it waits for its socket
//! to become readable with empty buffers, and only then takes one from its shard's
//! [`BufferPool`] to read into; once its input is used up and its replies are written, both
//! go back. So memory follows the connections that have something to do, not all of them.
//!
//! One pool per shard, owned by that shard's thread (the [`crate::shard::Shard`] holds it).

use std::cell::RefCell;

/// What a connection reads from its socket at once, and the capacity of a pooled buffer.
pub(crate) const CHUNK_BYTES: usize = 64 * 1024;
/// Free buffers a shard keeps for its connections to reuse (at most 4 MiB); buffers given
/// back beyond this are freed. Enough for the connections that are busy at one time on a
/// loaded shard, so that reading does not allocate and free a chunk for every request.
pub(crate) const POOLED_BUFFERS_MAX: usize = 64;
/// A buffer that grew beyond this capacity (a large request or reply) is freed rather than
/// pooled once it is empty: a large request costs memory only while it is in flight.
pub(crate) const POOLED_CAPACITY_MAX: usize = 2 * CHUNK_BYTES;

const _: () = assert!(CHUNK_BYTES <= POOLED_CAPACITY_MAX);

/// A shard's free connection buffers, each empty with a capacity from [`CHUNK_BYTES`] to
/// [`POOLED_CAPACITY_MAX`]; at most [`POOLED_BUFFERS_MAX`] of them.
#[derive(Default)]
pub(crate) struct BufferPool {
    free: RefCell<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// An empty buffer with room for at least [`CHUNK_BYTES`]: a pooled one, or a new one.
    pub(crate) fn take(&self) -> Vec<u8> {
        let buffer = self.free.borrow_mut().pop();
        let buffer = buffer.unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES));
        debug_assert!(buffer.is_empty());
        debug_assert!(buffer.capacity() >= CHUNK_BYTES);
        buffer
    }

    /// Takes `buffer` back for reuse (its contents are dropped), or frees it when it is too
    /// large or the pool is full. A buffer that never had an allocation is ignored.
    pub(crate) fn give_back(&self, mut buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        if !(CHUNK_BYTES..=POOLED_CAPACITY_MAX).contains(&capacity) {
            return;
        }
        let mut free = self.free.borrow_mut();
        if free.len() < POOLED_BUFFERS_MAX {
            buffer.clear();
            free.push(buffer);
        }
    }

    /// How many free buffers the pool holds.
    #[cfg(test)]
    pub(crate) fn free_count(&self) -> usize {
        self.free.borrow().len()
    }
}

/// Hands `buffer`'s allocation back to `pool` (or frees it) once it holds nothing, leaving an
/// empty buffer without capacity: a connection about to wait keeps no memory.
pub(crate) fn release_if_empty(pool: &BufferPool, buffer: &mut Vec<u8>) {
    if buffer.is_empty() {
        pool.give_back(std::mem::take(buffer));
    }
}

/// Frees `buffer`'s allocation once it is empty and larger than a pooled buffer: a request
/// that needed a large input gives its memory back as soon as it is parsed, before its
/// commands are waited for.
pub(crate) fn free_if_large_and_empty(buffer: &mut Vec<u8>) {
    if buffer.is_empty() && buffer.capacity() > POOLED_CAPACITY_MAX {
        *buffer = Vec::new();
    }
}

/// Makes room in `input` for the next read: a pooled buffer when it has no allocation, or
/// [`CHUNK_BYTES`] more when a partial request has filled most of it (a large request grows
/// its buffer by doubling, as a `Vec` does).
pub(crate) fn prepare_read(pool: &BufferPool, input: &mut Vec<u8>) {
    if input.capacity() == 0 {
        *input = pool.take();
    }
    if input.capacity() - input.len() < CHUNK_BYTES / 4 {
        input.reserve(CHUNK_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_buffer_comes_back_for_reuse() {
        let pool = BufferPool::default();
        let mut buffer = pool.take();
        buffer.extend_from_slice(b"PING\r\n");
        let address = buffer.as_ptr();
        pool.give_back(buffer);
        assert_eq!(pool.free_count(), 1);
        let again = pool.take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), address);
        assert_eq!(pool.free_count(), 0);
    }

    #[test]
    fn large_and_unallocated_buffers_are_not_pooled() {
        let pool = BufferPool::default();
        pool.give_back(Vec::new());
        pool.give_back(Vec::with_capacity(POOLED_CAPACITY_MAX + 1));
        assert_eq!(pool.free_count(), 0);
    }

    #[test]
    fn the_pool_keeps_at_most_its_limit() {
        let pool = BufferPool::default();
        for _ in 0..POOLED_BUFFERS_MAX + 3 {
            pool.give_back(Vec::with_capacity(CHUNK_BYTES));
        }
        assert_eq!(pool.free_count(), POOLED_BUFFERS_MAX);
    }

    #[test]
    fn an_empty_buffer_is_released_and_a_partial_request_kept() {
        let pool = BufferPool::default();
        let mut input = pool.take();
        release_if_empty(&pool, &mut input);
        assert_eq!(input.capacity(), 0);
        assert_eq!(pool.free_count(), 1);
        prepare_read(&pool, &mut input);
        assert!(input.capacity() >= CHUNK_BYTES);
        input.extend_from_slice(b"*1\r\n");
        release_if_empty(&pool, &mut input);
        assert_eq!(&input[..], b"*1\r\n");
    }

    #[test]
    fn a_large_input_is_freed_once_used_up() {
        let mut input = Vec::with_capacity(POOLED_CAPACITY_MAX * 4);
        input.push(b'*');
        free_if_large_and_empty(&mut input);
        assert!(input.capacity() > POOLED_CAPACITY_MAX);
        input.clear();
        free_if_large_and_empty(&mut input);
        assert_eq!(input.capacity(), 0);
    }
}
