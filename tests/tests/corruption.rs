//! Damage on disk and in the config, as `docs/wal-format.md` and the binary's exit codes
//! describe them: a flipped byte in an older segment stops recovery (exit code 5) naming the
//! file and offset; a torn last frame of the newest segment is cut and the node serves; a bad
//! config stops the node with exit code 2 naming the key.

use std::path::PathBuf;
use std::time::Duration;

use strata_tests::keys::key_partition;
use strata_tests::raw::Reply;
use strata_tests::wal_files::{
    overwrite, read_at, segment_files, segment_frames, SEGMENT_HEADER_BYTES,
};
use strata_tests::{NodeSettings, TestNode};

const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

fn small_segments() -> NodeSettings {
    NodeSettings { segment_size: "64KB", snapshot_size: "64MB", ..NodeSettings::default() }
}

/// The partition that owns every key with this hash tag, after checking that no other
/// partition holds a frame.
fn tagged_partition(node: &TestNode, tag: &str) -> u32 {
    let partition = key_partition(tag.as_bytes(), node.settings.partitions);
    for other in (0..node.settings.partitions).filter(|&other| other != partition) {
        for segment in segment_files(&node.partition_dir(other)) {
            let frames = segment_frames(&segment);
            assert!(
                frames.is_empty(),
                "{} holds frames of keys tagged {{{tag}}}",
                segment.display()
            );
        }
    }
    partition
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_flipped_byte_in_an_older_segment_stops_recovery() {
    let mut node = TestNode::start(small_segments());
    let mut connection = node.client();
    let value = "v".repeat(1000);
    for batch in 0..20 {
        let mut pipe = redis::pipe();
        for i in 0..10 {
            pipe.cmd("SET").arg(format!("{{seg}}:{}", batch * 10 + i)).arg(&value).ignore();
        }
        pipe.query::<()>(&mut connection).unwrap();
    }
    node.kill();

    let partition = tagged_partition(&node, "seg");
    let segments = segment_files(&node.partition_dir(partition));
    assert!(segments.len() >= 3, "200 KB in 64 KB segments made only {segments:?}");
    let oldest: PathBuf = segments[0].clone();
    let frames = segment_frames(&oldest);
    let first = *frames.first().expect("the oldest segment holds frames");
    assert_eq!(first.offset, SEGMENT_HEADER_BYTES);
    assert_eq!(first.first_lsn, 1);
    assert_eq!(first.partition, partition);
    assert!(frames.len() >= 2, "the oldest segment holds one frame: {frames:?}");
    let target = SEGMENT_HEADER_BYTES + 100;
    assert!(target < first.offset + first.bytes, "byte {target} is past the first frame {first:?}");

    let original = read_at(&oldest, target, 1)[0];
    overwrite(&oldest, target, &[original ^ 0x20]);
    node.spawn();
    let status = node.wait_exit(EXIT_TIMEOUT).expect("the node starts on a damaged segment");
    let log = node.log();
    assert_eq!(status.code(), Some(5), "exit status {status} on a damaged segment:\n{log}");
    assert!(
        log.contains(&file_name(&oldest)),
        "the log does not name {}:\n{log}",
        oldest.display()
    );
    let offset = format!("byte offset {}", first.offset);
    assert!(log.contains(&offset), "the log does not say `{offset}`:\n{log}");

    // Repaired, the same files recover completely.
    overwrite(&oldest, target, &[original]);
    node.restart();
    let mut raw = node.raw();
    assert_eq!(raw.command_words(&["DBSIZE"]), Reply::Integer(200));
    assert_eq!(raw.command_words(&["STRLEN", "{seg}:0"]), Reply::Integer(1000));
    assert_eq!(raw.command_words(&["STRLEN", "{seg}:199"]), Reply::Integer(1000));
}

#[test]
fn a_torn_last_frame_of_the_newest_segment_is_cut() {
    let mut node = TestNode::start(small_segments());
    let mut raw = node.raw();
    // One client, one write at a time: each SET is its own frame.
    for i in 0..50 {
        let reply = raw.command(&[
            b"SET",
            format!("{{torn}}:{i}").as_bytes(),
            format!("value-{i}").as_bytes(),
        ]);
        assert_eq!(reply, Reply::Simple("OK".into()));
    }
    drop(raw);
    node.kill();

    let partition = tagged_partition(&node, "torn");
    let segments = segment_files(&node.partition_dir(partition));
    let newest = segments.last().expect("a segment").clone();
    let frames = segment_frames(&newest);
    let last = *frames.last().expect("the newest segment holds frames");
    assert_eq!(
        (last.first_lsn, last.last_lsn),
        (50, 50),
        "the last frame is not the last SET: {frames:?}"
    );
    let half = last.bytes / 2;
    overwrite(&newest, last.offset + half, &vec![0xA5; (last.bytes - half) as usize]);

    node.restart();
    let mut raw = node.raw();
    for i in 0..49 {
        let key = format!("{{torn}}:{i}");
        assert_eq!(raw.command_words(&["GET", &key]), Reply::bulk(&format!("value-{i}")), "{key}");
    }
    assert_eq!(
        raw.command_words(&["GET", "{torn}:49"]),
        Reply::Bulk(None),
        "a torn frame was replayed"
    );
    assert_eq!(raw.command_words(&["DBSIZE"]), Reply::Integer(49));

    // The cut leaves a clean tail: new frames go there and survive another crash.
    assert_eq!(raw.command_words(&["SET", "{torn}:after", "x"]), Reply::Simple("OK".into()));
    drop(raw);
    node.kill();
    let frames = segment_frames(&newest);
    let after = frames.last().expect("frames");
    assert_eq!(
        (after.offset, after.first_lsn),
        (last.offset, 50),
        "the new frame is not where the cut was"
    );
    node.restart();
    let mut raw = node.raw();
    assert_eq!(raw.command_words(&["GET", "{torn}:after"]), Reply::bulk("x"));
    assert_eq!(raw.command_words(&["GET", "{torn}:48"]), Reply::bulk("value-48"));
    assert_eq!(raw.command_words(&["DBSIZE"]), Reply::Integer(50));
}

/// Starts a node with `settings` and expects it to stop at once with exit code 2 and a
/// message containing `named`.
fn assert_config_refused(settings: NodeSettings, named: &str) {
    let mut node = TestNode::create(settings);
    node.spawn();
    let status = node.wait_exit(EXIT_TIMEOUT).expect("the node runs with a bad config");
    let log = node.log();
    assert_eq!(status.code(), Some(2), "exit status {status} for a bad config:\n{log}");
    assert!(log.contains(named), "the message does not name {named}:\n{log}");
}

#[test]
fn a_bad_config_stops_the_node_with_exit_code_2() {
    assert_config_refused(
        NodeSettings { extra: "no_such_key = 1".into(), ..NodeSettings::default() },
        "no_such_key",
    );
    assert_config_refused(
        NodeSettings { wal_flush: "Sometimes", ..NodeSettings::default() },
        "wal_flush",
    );
    assert_config_refused(
        NodeSettings { segment_size: "1000", ..NodeSettings::default() },
        "segment_size",
    );
    assert_config_refused(
        NodeSettings { segment_size: "1MB", snapshot_size: "64KB", ..NodeSettings::default() },
        "snapshot_size",
    );
}
