//! [`AlignedBuf`]: a byte buffer whose address and length suit `O_DIRECT` writes.
//!
//! `O_DIRECT` needs the buffer address, the file offset and the length to be multiples of the
//! device's logical block size. monoio 0.2.4 has no buffer type with an aligned address, so this
//! module provides one.

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::slice;

use monoio::buf::IoBuf;

/// The alignment of `O_DIRECT` buffers, offsets and lengths: the largest logical block size
/// in common use, so that it also holds for devices with 512-byte blocks.
pub(crate) const BLOCK_BYTES: usize = 4096;

/// A heap buffer aligned to [`BLOCK_BYTES`], whose capacity is a whole number of blocks.
///
/// Its first `len` bytes are the content handed to the kernel. The whole capacity is
/// initialized memory (zeroed when allocated, then overwritten), so any prefix of it may be
/// read.
pub(crate) struct AlignedBuf {
    pointer: NonNull<u8>,
    capacity: usize,
    len: usize,
}

impl AlignedBuf {
    /// An empty buffer of at least `bytes` capacity (and at least one block).
    pub(crate) fn with_capacity(bytes: usize) -> AlignedBuf {
        let capacity = bytes.max(1).next_multiple_of(BLOCK_BYTES);
        let layout = layout(capacity);
        // SAFETY: the layout's size is at least one block, so it is not zero.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(pointer) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout);
        };
        AlignedBuf { pointer, capacity, len: 0 }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The content: the first `len` bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.whole()[..self.len]
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `bytes` after the content.
    ///
    /// # Panics
    ///
    /// If they do not fit in the capacity: the caller sizes the buffer first.
    pub(crate) fn extend_from_slice(&mut self, bytes: &[u8]) {
        let start = self.len;
        let end = start + bytes.len();
        assert!(end <= self.capacity, "{end} bytes exceed the aligned buffer");
        self.whole_mut()[start..end].copy_from_slice(bytes);
        self.len = end;
    }

    /// Appends zeros up to the next multiple of [`BLOCK_BYTES`].
    pub(crate) fn pad_to_block(&mut self) {
        let start = self.len;
        let end = start.next_multiple_of(BLOCK_BYTES);
        debug_assert!(end <= self.capacity);
        self.whole_mut()[start..end].fill(0);
        self.len = end;
    }

    fn whole(&self) -> &[u8] {
        // SAFETY: `pointer` is a live allocation of `capacity` bytes owned by `self`, all of
        // them initialized (zeroed at allocation); the shared borrow of `self` prevents writes.
        unsafe { slice::from_raw_parts(self.pointer.as_ptr(), self.capacity) }
    }

    fn whole_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `whole`, and the exclusive borrow of `self` makes this the only view.
        unsafe { slice::from_raw_parts_mut(self.pointer.as_ptr(), self.capacity) }
    }
}

fn layout(capacity: usize) -> Layout {
    Layout::from_size_align(capacity, BLOCK_BYTES).expect("aligned buffer size overflows")
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `pointer` came from `alloc_zeroed` with this same layout (the capacity never
        // changes) and is freed only here, once.
        unsafe { alloc::dealloc(self.pointer.as_ptr(), layout(self.capacity)) }
    }
}

// SAFETY: `read_ptr` points at a heap allocation owned by the buffer, which stays at the same
// address when the `AlignedBuf` value moves and lives until it is dropped; monoio keeps the
// buffer alive (and does not touch it) while the kernel reads it. The first `bytes_init` bytes
// are initialized, as the whole capacity is.
unsafe impl IoBuf for AlignedBuf {
    fn read_ptr(&self) -> *const u8 {
        self.pointer.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_whole_aligned_blocks() {
        for (asked, capacity) in [(0, 4096), (1, 4096), (4096, 4096), (4097, 8192)] {
            let buffer = AlignedBuf::with_capacity(asked);
            assert_eq!(buffer.capacity(), capacity);
            assert_eq!(buffer.read_ptr() as usize % BLOCK_BYTES, 0);
            assert_eq!(buffer.len(), 0);
            assert_eq!(buffer.bytes_init(), 0);
        }
    }

    #[test]
    fn content_is_padded_with_zeros_over_stale_bytes() {
        let mut buffer = AlignedBuf::with_capacity(3 * BLOCK_BYTES);
        buffer.extend_from_slice(&[0xab; 5000]);
        buffer.pad_to_block();
        assert_eq!(buffer.len(), 2 * BLOCK_BYTES);
        buffer.clear();
        buffer.extend_from_slice(b"abc");
        buffer.extend_from_slice(b"de");
        assert_eq!(buffer.as_slice(), b"abcde");
        buffer.pad_to_block();
        assert_eq!(buffer.bytes_init(), BLOCK_BYTES);
        assert_eq!(&buffer.as_slice()[..5], b"abcde");
        assert!(buffer.as_slice()[5..].iter().all(|byte| *byte == 0));
    }

    #[test]
    #[should_panic(expected = "exceed the aligned buffer")]
    fn overfilling_is_a_bug() {
        let mut buffer = AlignedBuf::with_capacity(BLOCK_BYTES);
        buffer.extend_from_slice(&[1; BLOCK_BYTES + 1]);
    }

    #[test]
    fn a_slice_of_it_is_written_and_the_buffer_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let written = crate::tests::run(async {
            let file = monoio::fs::File::create(&path).await.unwrap();
            let mut buffer = AlignedBuf::with_capacity(BLOCK_BYTES);
            buffer.extend_from_slice(b"0123456789");
            let (result, slice) = file.write_all_at(buffer.slice(2..6), 0).await;
            result.unwrap();
            file.close().await.unwrap();
            slice.into_inner().as_slice().to_vec()
        });
        assert_eq!(written, b"0123456789");
        assert_eq!(std::fs::read(&path).unwrap(), b"2345");
    }
}
