//! [`DirectAppender`]: lays out appends for a segment opened with `O_DIRECT | O_DSYNC`.
//!
//! Such a write must start and end on block boundaries, but frames are only 8-byte aligned.
//! So every append rewrites the active segment's partial last block: the buffer holds the bytes
//! from the block boundary at or before the write offset up to it (identical to what is on
//! disk), then the new frames, then zeros up to the next block boundary (identical to the
//! pre-written zeros there). The frames land back to back, exactly as with buffered writes.

use crate::aligned::{AlignedBuf, BLOCK_BYTES};

/// The largest buffer an appender keeps for its next append. Ordinary appends (a round's
/// frame, at most about 1 MiB) stay below it and reuse one buffer; a larger one (a single
/// large record, up to 8 MiB) allocates its own and frees it once written, so a partition does
/// not hold that memory for good after one large write.
pub(crate) const KEPT_BUFFER_BYTES_MAX: usize = 2 * 1024 * 1024;

const _: () = assert!(KEPT_BUFFER_BYTES_MAX.is_multiple_of(BLOCK_BYTES));

/// Appends laid out as whole blocks, with a copy of the active segment's partial last block
/// and one reusable aligned buffer. Owned by the partition's [`PartitionWal`](crate::PartitionWal).
pub(crate) struct DirectAppender {
    /// The bytes of the active segment from the block boundary at or before the write offset
    /// up to the write offset: fewer than [`BLOCK_BYTES`].
    tail_block: Vec<u8>,
    /// Reused by appends up to [`KEPT_BUFFER_BYTES_MAX`]; `None` while a write holds it, or
    /// after a larger one.
    buffer: Option<AlignedBuf>,
    /// The largest buffer an append needs: the largest append plus two partial blocks.
    buffer_bytes_max: usize,
}

/// One append laid out for a single aligned write.
pub(crate) struct StagedWrite {
    pub buffer: AlignedBuf,
    /// Where the buffer goes: a block boundary.
    pub file_offset: u64,
    /// Bytes of the buffer before the padding: the tail block prefix and the frames.
    pub data_bytes: usize,
}

impl DirectAppender {
    /// An appender for a segment whose write offset is `write_offset`, where `tail_block` is
    /// what the segment holds from `write_offset` rounded down to a block up to `write_offset`.
    pub(crate) fn new(write_offset: u64, tail_block: Vec<u8>, frame_bytes_max: usize) -> Self {
        assert_eq!(tail_block.len() as u64, write_offset % BLOCK_BYTES as u64);
        DirectAppender {
            tail_block,
            buffer: None,
            buffer_bytes_max: frame_bytes_max + 2 * BLOCK_BYTES,
        }
    }

    /// Bytes to read from the segment at `block_offset(write_offset)` to build the tail block.
    pub(crate) fn tail_bytes(write_offset: u64) -> usize {
        usize::try_from(write_offset % BLOCK_BYTES as u64).expect("below one block")
    }

    /// The block boundary at or before `write_offset`.
    pub(crate) fn block_offset(write_offset: u64) -> u64 {
        write_offset - write_offset % BLOCK_BYTES as u64
    }

    /// A new segment became active: its frames start on a block boundary.
    pub(crate) fn start_segment(&mut self, write_offset: u64) {
        assert_eq!(write_offset % BLOCK_BYTES as u64, 0);
        self.tail_block.clear();
    }

    /// Lays out `frames`, to be written at `write_offset`, as whole blocks.
    pub(crate) fn stage(&mut self, write_offset: u64, frames: &[u8]) -> StagedWrite {
        let prefix_bytes = self.tail_block.len();
        assert_eq!(prefix_bytes, Self::tail_bytes(write_offset));
        let data_bytes = prefix_bytes + frames.len();
        let buffer_bytes = data_bytes.next_multiple_of(BLOCK_BYTES);
        assert!(buffer_bytes <= self.buffer_bytes_max, "append larger than the limit");
        let mut buffer = match self.buffer.take() {
            Some(buffer) if buffer.capacity() >= buffer_bytes => buffer,
            // Grows to the largest append seen up to the kept size, then stays: no allocation
            // per ordinary append.
            _ => AlignedBuf::with_capacity(buffer_bytes),
        };
        buffer.clear();
        buffer.extend_from_slice(&self.tail_block);
        buffer.extend_from_slice(frames);
        buffer.pad_to_block();
        assert_eq!(buffer.len(), buffer_bytes);
        StagedWrite { buffer, file_offset: Self::block_offset(write_offset), data_bytes }
    }

    /// The staged write reached the disk: its last partial block is the new tail block, and
    /// the buffer is kept for the next append unless it is larger than
    /// [`KEPT_BUFFER_BYTES_MAX`] (a smaller one kept before is kept on).
    pub(crate) fn written(&mut self, buffer: AlignedBuf, data_bytes: usize) {
        let last_block_start = data_bytes - data_bytes % BLOCK_BYTES;
        self.tail_block.clear();
        self.tail_block.extend_from_slice(&buffer.as_slice()[last_block_start..data_bytes]);
        if buffer.capacity() <= KEPT_BUFFER_BYTES_MAX {
            self.buffer = Some(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_rewrite_the_partial_block_and_land_back_to_back() {
        let mut disk = vec![0u8; 4 * BLOCK_BYTES];
        let mut write_offset = BLOCK_BYTES as u64;
        let mut appender = DirectAppender::new(write_offset, Vec::new(), 2 * BLOCK_BYTES);
        let mut expected = disk.clone();
        for (index, length) in [24usize, 4000, 8, 4096, 512].into_iter().enumerate() {
            let frames = vec![u8::try_from(index + 1).unwrap(); length];
            let staged = appender.stage(write_offset, &frames);
            assert_eq!(staged.file_offset % BLOCK_BYTES as u64, 0);
            assert_eq!(staged.buffer.len() % BLOCK_BYTES, 0);
            let start = usize::try_from(staged.file_offset).unwrap();
            let end = start + staged.buffer.len();
            // The rewritten prefix and the padding equal what the disk already holds.
            let offset = usize::try_from(write_offset).unwrap();
            assert_eq!(&staged.buffer.as_slice()[..offset - start], &disk[start..offset]);
            assert!(staged.buffer.as_slice()[staged.data_bytes..].iter().all(|byte| *byte == 0));
            disk[start..end].copy_from_slice(staged.buffer.as_slice());
            expected[offset..offset + length].copy_from_slice(&frames);
            appender.written(staged.buffer, staged.data_bytes);
            write_offset += length as u64;
        }
        assert_eq!(disk, expected);
    }

    #[test]
    fn the_buffer_is_reused_once_grown() {
        let mut appender = DirectAppender::new(4100, vec![7; 4], 3 * BLOCK_BYTES);
        let staged = appender.stage(4100, &[1; 5000]);
        let address = staged.buffer.as_slice().as_ptr();
        assert_eq!(staged.buffer.capacity(), 2 * BLOCK_BYTES);
        appender.written(staged.buffer, staged.data_bytes);
        let staged = appender.stage(9100, &[2; 16]);
        assert_eq!(staged.buffer.as_slice().as_ptr(), address);
        assert_eq!(staged.file_offset, 8192);
        assert_eq!(&staged.buffer.as_slice()[..908], &[1; 908][..]);
    }

    #[test]
    fn a_buffer_larger_than_the_kept_size_is_freed_once_written() {
        let frame_bytes_max = 4 * KEPT_BUFFER_BYTES_MAX;
        let mut appender = DirectAppender::new(0, Vec::new(), frame_bytes_max);
        let staged = appender.stage(0, &[1; 100]);
        appender.written(staged.buffer, staged.data_bytes);
        assert!(appender.buffer.is_some());
        let staged = appender.stage(100, &vec![2; 2 * KEPT_BUFFER_BYTES_MAX]);
        appender.written(staged.buffer, staged.data_bytes);
        assert!(appender.buffer.is_none(), "a large buffer is kept");
        // The next append still finds its tail block, and keeps a buffer again.
        let write_offset = 100 + 2 * KEPT_BUFFER_BYTES_MAX as u64;
        let staged = appender.stage(write_offset, &[3; 8]);
        let tail = usize::try_from(write_offset % BLOCK_BYTES as u64).unwrap();
        assert_eq!(&staged.buffer.as_slice()[..tail], &vec![2; tail][..]);
        appender.written(staged.buffer, staged.data_bytes);
        assert!(appender.buffer.is_some());
    }
}
