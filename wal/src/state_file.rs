//! A small file of the caller's bytes next to a partition's log, replaced atomically and
//! durably: the replication layer keeps there what must survive a restart beside the log (its
//! highest epoch seen, its in-sync set), encoded by itself.
//!
//! A write goes to `<name>.tmp`, is synced, renamed over `<name>`, and the directory synced,
//! so a crash leaves the old contents or the new, never a mix. The log's own operations leave
//! the file alone: recovery and [`install_snapshot`](crate::install_snapshot) remove only
//! segments, snapshots and `*.tmp` files, which is why a state file may not be named like
//! one of them.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::WalError;
use crate::install::is_log_file;
use crate::snapshot::TEMPORARY_SUFFIX;
use crate::wal::write_new_file;

/// The most bytes a state file holds: it is meant for a few fields, and it is read whole.
pub const STATE_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Replaces `dir/name` with `bytes`, atomically and durably: writes and syncs `name.tmp`,
/// renames it to `name`, syncs the directory. Runs on the shard's monoio runtime; the syncs go
/// through its `io_uring` and do not block the thread. Calls for the same file must not
/// overlap (they share the temporary file): the partition's owner makes them one at a time.
///
/// # Errors
///
/// [`WalError::StateFileName`] for a name that is not a plain file name or that the log uses
/// itself; [`WalError::StateFileTooLarge`] above [`STATE_FILE_BYTES_MAX`]; [`WalError::Io`]
/// when a file operation fails, after which `dir/name` holds the old contents or the new.
pub async fn write_state_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), WalError> {
    check_name(name)?;
    check_size(bytes.len() as u64)?;
    let temporary = temporary_path(dir, name);
    write_new_file(&temporary, bytes.to_vec(), "write state file").await?;
    let path = dir.join(name);
    monoio::fs::rename(&temporary, &path)
        .await
        .map_err(|source| WalError::io("rename", &temporary, source))?;
    sync_directory(dir).await
}

/// Reads `dir/name` whole, for recovery: `None` when it does not exist. A leftover `name.tmp`
/// (a write that a crash interrupted before its rename) is ignored and removed. Blocking file
/// I/O, as [`PartitionWal::recover`](crate::PartitionWal::recover).
///
/// # Errors
///
/// [`WalError::StateFileName`] for a name [`write_state_file`] refuses; [`WalError::Corrupt`]
/// for a file above [`STATE_FILE_BYTES_MAX`], which `write_state_file` never writes;
/// [`WalError::Io`] when a file operation fails.
pub fn read_state_file(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, WalError> {
    check_name(name)?;
    let temporary = temporary_path(dir, name);
    match fs::remove_file(&temporary) {
        Ok(()) => tracing::debug!(path = %temporary.display(), "removed an unfinished state file"),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(WalError::io("remove", &temporary, source)),
    }
    let path = dir.join(name);
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(WalError::io("read state file", &path, source)),
    };
    let mut bytes = Vec::new();
    // One byte more than the limit tells a file over it from one at it.
    file.take(STATE_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| WalError::io("read state file", &path, source))?;
    if bytes.len() as u64 > STATE_FILE_BYTES_MAX {
        let reason = format!("state file larger than {STATE_FILE_BYTES_MAX} bytes");
        return Err(WalError::corrupt(&path, STATE_FILE_BYTES_MAX, reason));
    }
    Ok(Some(bytes))
}

/// A state file needs a plain name of its own in the directory: no path separator, not `.` or
/// `..`, and none the log uses, since recovery deletes `*.tmp` files and segment and
/// snapshot names belong to the log.
fn check_name(name: &str) -> Result<(), WalError> {
    let plain = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0']);
    if plain && !name.ends_with(TEMPORARY_SUFFIX) && !is_log_file(name) {
        return Ok(());
    }
    Err(WalError::StateFileName { name: name.to_string() })
}

fn check_size(bytes: u64) -> Result<(), WalError> {
    if bytes > STATE_FILE_BYTES_MAX {
        return Err(WalError::StateFileTooLarge { bytes, bytes_max: STATE_FILE_BYTES_MAX });
    }
    Ok(())
}

fn temporary_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{TEMPORARY_SUFFIX}"))
}

/// Syncs the directory on the runtime's `io_uring`, so that the rename is durable.
async fn sync_directory(dir: &Path) -> Result<(), WalError> {
    let io_error = |source| WalError::io("sync directory", dir, source);
    let directory = monoio::fs::File::open(dir).await.map_err(io_error)?;
    directory.sync_all().await.map_err(io_error)?;
    directory.close().await.map_err(io_error)
}
