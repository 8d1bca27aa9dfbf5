//! Replacing a partition's whole log with a snapshot from its leader: what a replica does when
//! its own log cannot continue the leader's (it is new, too far behind, or diverged).

use std::fs;
use std::io::Write;
use std::path::Path;

use strata_core::{Lsn, PartitionId};

use crate::error::WalError;
use crate::recovery::sync_directory;
use crate::snapshot::{check_image, snapshot_file_name, LoadedSnapshot, TEMPORARY_SUFFIX};

/// Checks `image` (a sealed snapshot image of `partition` at `lsn`, from
/// [`seal_snapshot`](crate::seal_snapshot)) and makes it the whole content of the partition
/// directory `dir`: every segment and snapshot there is deleted first, then the image is
/// written durably as the snapshot at its LSN. A crash in between leaves a directory that
/// recovers to an empty or to the new state, never to a mix. Recover the directory afterwards
/// to load it. Blocking file I/O, as [`PartitionWal::recover`](crate::PartitionWal::recover).
///
/// # Errors
///
/// [`WalError::Corrupt`] (naming `<dir>/snapshot`) when the image is damaged, of another
/// partition or of another LSN, before anything is deleted; [`WalError::Io`] when a file
/// operation fails.
pub fn install_snapshot(
    dir: &Path,
    partition: PartitionId,
    lsn: Lsn,
    image: &[u8],
) -> Result<LoadedSnapshot, WalError> {
    let loaded = check_image(image, partition, Some(lsn), &mut |_, _, _| {})
        .map_err(|(offset, reason)| WalError::corrupt(dir.join("snapshot"), offset, reason))?;
    fs::create_dir_all(dir).map_err(|source| WalError::io("create directory", dir, source))?;
    remove_log_files(dir)?;
    sync_directory(dir)?;
    let path = dir.join(snapshot_file_name(loaded.lsn));
    let temporary = dir.join(format!("{}{TEMPORARY_SUFFIX}", snapshot_file_name(loaded.lsn)));
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(image)?;
        file.sync_all()
    };
    write().map_err(|source| WalError::io("write snapshot", &temporary, source))?;
    fs::rename(&temporary, &path).map_err(|source| WalError::io("rename", &temporary, source))?;
    sync_directory(dir)?;
    Ok(loaded)
}

/// Deletes every file of the log in `dir`: segments, snapshots, spares, temporaries.
fn remove_log_files(dir: &Path) -> Result<(), WalError> {
    for name in file_names(dir)? {
        if name.ends_with(TEMPORARY_SUFFIX) || is_log_file(&name) {
            let path = dir.join(&name);
            fs::remove_file(&path).map_err(|source| WalError::io("remove", &path, source))?;
        }
    }
    Ok(())
}

/// Whether `name` is a segment or snapshot file's.
pub(crate) fn is_log_file(name: &str) -> bool {
    crate::parse_snapshot_file_name(name).is_some()
        || crate::parse_segment_file_name(name).is_some()
}

/// The names of the files in `dir` (lossily as UTF-8).
pub(crate) fn file_names(dir: &Path) -> Result<Vec<String>, WalError> {
    let entries =
        fs::read_dir(dir).map_err(|source| WalError::io("read directory", dir, source))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| WalError::io("read directory", dir, source))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// Replaces the log in the partition directory `dir` with the one written in `staged` (by a
/// [`PartitionWriter`](crate::PartitionWriter), from the archive): every log file in `dir`
/// is deleted, then each staged file is moved in, and `staged` is removed. Both directories
/// must be on one filesystem. Recover `dir` afterwards to load it. A crash in between leaves
/// a directory that recovers to a shorter log, never a mix of two: the staged snapshot (if
/// any) moves first, then the segments in LSN order.
///
/// # Errors
///
/// [`WalError::Io`] when a file operation fails.
pub fn install_log(dir: &Path, staged: &Path) -> Result<(), WalError> {
    fs::create_dir_all(dir).map_err(|source| WalError::io("create directory", dir, source))?;
    remove_log_files(dir)?;
    sync_directory(dir)?;
    let mut names = file_names(staged)?;
    // Snapshots ("snapshot-…") sort before segments (digits) would not: order explicitly.
    names.sort_by_key(|name| (crate::parse_snapshot_file_name(name).is_none(), name.clone()));
    for name in names {
        let from = staged.join(&name);
        if is_log_file(&name) {
            let to = dir.join(&name);
            fs::rename(&from, &to).map_err(|source| WalError::io("rename", &from, source))?;
        }
    }
    sync_directory(dir)?;
    fs::remove_dir_all(staged).map_err(|source| WalError::io("remove", staged, source))
}
