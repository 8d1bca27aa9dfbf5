//! The state file next to a partition's log: replaced whole, read back, unfinished writes
//! ignored, and left alone by the log's own operations.

use std::fs;

use strata_core::Lsn;

use super::{empty_snapshot, fill, recover, run, small_config, PARTITION};
use crate::{
    install_snapshot, read_state_file, seal_snapshot, segment_file_name, snapshot_file_name,
    write_state_file, WalError, STATE_FILE_BYTES_MAX,
};

const NAME: &str = "replication.state";

#[test]
fn a_written_state_file_reads_back_and_is_replaced_whole() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(read_state_file(dir.path(), NAME).unwrap(), None);
    run(async { write_state_file(dir.path(), NAME, b"epoch 7, in sync 1 2 3").await.unwrap() });
    let read = read_state_file(dir.path(), NAME).unwrap();
    assert_eq!(read.as_deref(), Some(&b"epoch 7, in sync 1 2 3"[..]));
    run(async { write_state_file(dir.path(), NAME, b"epoch 8").await.unwrap() });
    assert_eq!(read_state_file(dir.path(), NAME).unwrap().as_deref(), Some(&b"epoch 8"[..]));
    run(async { write_state_file(dir.path(), NAME, b"").await.unwrap() });
    assert_eq!(read_state_file(dir.path(), NAME).unwrap(), Some(Vec::new()));
    assert!(!dir.path().join(format!("{NAME}.tmp")).exists());
}

#[test]
fn an_unfinished_write_is_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let temporary = dir.path().join(format!("{NAME}.tmp"));
    fs::write(&temporary, b"half of a new st").unwrap();
    assert_eq!(read_state_file(dir.path(), NAME).unwrap(), None);
    assert!(!temporary.exists());
    run(async { write_state_file(dir.path(), NAME, b"old").await.unwrap() });
    fs::write(&temporary, b"new, unfinished").unwrap();
    assert_eq!(read_state_file(dir.path(), NAME).unwrap().as_deref(), Some(&b"old"[..]));
    assert!(!temporary.exists());
}

#[test]
fn names_the_log_uses_or_paths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let segment = segment_file_name(Lsn(1));
    let snapshot = snapshot_file_name(Lsn(1));
    for name in ["", ".", "..", "a/b", "/etc", "x.tmp", "nul\0", &segment, &snapshot] {
        let written = run(async { write_state_file(dir.path(), name, b"x").await });
        assert!(matches!(written, Err(WalError::StateFileName { .. })), "{name:?}: {written:?}");
        let read = read_state_file(dir.path(), name);
        assert!(matches!(read, Err(WalError::StateFileName { .. })), "{name:?}: {read:?}");
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn contents_over_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let limit = usize::try_from(STATE_FILE_BYTES_MAX).unwrap();
    run(async { write_state_file(dir.path(), NAME, &vec![7; limit]).await.unwrap() });
    assert_eq!(read_state_file(dir.path(), NAME).unwrap().map(|bytes| bytes.len()), Some(limit));
    let written = run(async { write_state_file(dir.path(), NAME, &vec![8; limit + 1]).await });
    assert!(matches!(written, Err(WalError::StateFileTooLarge { .. })), "{written:?}");
    fs::write(dir.path().join(NAME), vec![9; limit + 1]).unwrap();
    let read = read_state_file(dir.path(), NAME);
    assert!(matches!(read, Err(WalError::Corrupt { .. })), "{read:?}");
}

#[test]
fn the_log_leaves_the_state_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut wal = recover(dir.path(), &small_config()).unwrap().wal;
        write_state_file(dir.path(), NAME, b"kept").await.unwrap();
        fill(&mut wal, 40, 2).await;
    });
    run(async { recover(dir.path(), &small_config()).unwrap() });
    crate::truncate_log(dir.path(), PARTITION, Lsn(10)).unwrap();
    run(async { recover(dir.path(), &small_config()).unwrap() });
    let mut image = empty_snapshot();
    seal_snapshot(&mut image, PARTITION, Lsn(3));
    install_snapshot(dir.path(), PARTITION, Lsn(3), &image).unwrap();
    run(async { recover(dir.path(), &small_config()).unwrap() });
    assert_eq!(read_state_file(dir.path(), NAME).unwrap().as_deref(), Some(&b"kept"[..]));
}

#[test]
fn a_state_file_is_written_on_the_legacy_driver_too() {
    // monoio falls back to epoll and blocking file calls where io_uring is unavailable.
    let dir = tempfile::tempdir().unwrap();
    let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build().unwrap();
    runtime.block_on(async { write_state_file(dir.path(), NAME, b"legacy").await.unwrap() });
    assert_eq!(read_state_file(dir.path(), NAME).unwrap().as_deref(), Some(&b"legacy"[..]));
}
