//! Read-only maps of files that recovery reads whole: the bytes come from the page cache and
//! do not count as the node's own memory, so recovering a 64 MiB segment or a large
//! snapshot does not leave the allocator holding that much.

use std::fs;
use std::path::Path;

use crate::error::WalError;

/// The whole file at `path`, mapped read-only. `what` names the file's role in errors.
pub(crate) fn map_file(path: &Path, what: &'static str) -> Result<Mapped, WalError> {
    let file = fs::File::open(path).map_err(|source| WalError::io(what, path, source))?;
    let length = file.metadata().map_err(|source| WalError::io(what, path, source))?.len();
    if length == 0 {
        // A zero-length map is an error on Linux; an empty file reads as no bytes.
        return Ok(Mapped { map: None });
    }
    // SAFETY: the file is only read while mapped, during recovery, when this process holds
    // the data directory's lock: no other writer changes it under the map. A file truncated
    // by something outside the node's control would raise SIGBUS, as it would for any reader
    // of a file that shrinks beneath it.
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|source| WalError::io(what, path, source))?;
    Ok(Mapped { map: Some(map) })
}

/// A mapped file, or nothing for an empty one.
pub(crate) struct Mapped {
    map: Option<memmap2::Mmap>,
}

impl std::ops::Deref for Mapped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}
