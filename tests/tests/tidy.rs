//! Tidy: project rules a compiler does not check. Lines fit 100 columns; no `dbg!`, `todo!`,
//! `unimplemented!` or FIXME in committed code; `core` stays free of I/O; and workspace crates
//! depend only in the allowed directions (toward `core`).

use std::path::{Path, PathBuf};

use strata_tests::workspace_root;

const LINE_COLUMNS_MAX: usize = 100;
const SOURCE_DIRECTORIES: &[&str] =
    &["core", "wal", "shard", "control", "archive", "sim", "chaos", "benches", "tests", "strata"];

fn rust_files(directory: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

fn workspace_sources() -> Vec<(PathBuf, String)> {
    let root = workspace_root();
    let mut files = Vec::new();
    for directory in SOURCE_DIRECTORIES {
        rust_files(&root.join(directory), &mut files);
    }
    assert!(files.len() > 20, "tidy found too few files: {}", files.len());
    files.into_iter().map(|path| (path.clone(), std::fs::read_to_string(&path).unwrap())).collect()
}

#[test]
fn lines_fit_and_no_debugging_leftovers() {
    let banned = ["dbg!(", "todo!(", "unimplemented!(", "FIXME"];
    let mut problems = Vec::new();
    for (path, text) in workspace_sources() {
        if path.ends_with("tidy.rs") {
            continue;
        }
        for (index, line) in text.lines().enumerate() {
            let place = format!("{}:{}", path.display(), index + 1);
            if line.chars().count() > LINE_COLUMNS_MAX {
                problems.push(format!("{place}: longer than {LINE_COLUMNS_MAX} columns"));
            }
            for word in banned {
                if line.contains(word) {
                    problems.push(format!("{place}: contains {word}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "tidy:\n{}", problems.join("\n"));
}

#[test]
fn core_does_no_io() {
    let banned =
        ["std::fs", "std::net", "Instant::now", "SystemTime::now", "thread_rng", "std::env"];
    let mut problems = Vec::new();
    for (path, text) in workspace_sources() {
        if !path.starts_with(workspace_root().join("core")) {
            continue;
        }
        for (index, line) in text.lines().enumerate() {
            for word in banned {
                if line.contains(word) {
                    problems.push(format!("{}:{}: {word}", path.display(), index + 1));
                }
            }
        }
    }
    assert!(problems.is_empty(), "core must stay free of I/O and clocks:\n{}", problems.join("\n"));
}

/// The workspace crates each crate may depend on (normal dependencies).
fn allowed(package: &str) -> &'static [&'static str] {
    match package {
        "strata-core" => &[],
        "strata-wal" => &["strata-core"],
        // The shard runtime drives the WAL (docs/ARCHITECTURE.md, deviations).
        "strata-shard" => &["strata-core", "strata-wal"],
        "strata-benches" => &["strata-core"],
        // The simulator builds clusters from the core state machines alone.
        "strata-sim" => &["strata-core"],
        // The chaos harness drives node processes from outside, over their public ports.
        "strata-chaos" => &[],
        // The archive reads and writes the WAL's files and formats.
        "strata-archive" => &["strata-core", "strata-wal"],
        // The control thread orders the shards through the node handle, and bootstraps a
        // replica from the archive.
        "strata-control" => &["strata-core", "strata-shard", "strata-wal", "strata-archive"],
        // Tests drive node processes; they read the archive in the bucket to check it, and
        // share the chaos harness's admin API client.
        "strata-tests" => &["strata-core", "strata-archive", "strata-chaos"],
        "strata" => &[
            "strata-core",
            "strata-shard",
            "strata-control",
            "strata-benches",
            "strata-wal",
            "strata-archive",
        ],
        other => panic!("unknown workspace package {other}: add it to tidy"),
    }
}

#[test]
fn workspace_dependencies_point_toward_core() {
    let root = workspace_root();
    let mut problems = Vec::new();
    for directory in SOURCE_DIRECTORIES {
        let manifest = std::fs::read_to_string(root.join(directory).join("Cargo.toml")).unwrap();
        let package = manifest
            .lines()
            .find_map(|line| line.strip_prefix("name = \""))
            .and_then(|rest| rest.strip_suffix('"'))
            .expect("package name");
        let dependencies = manifest
            .split("[dependencies]")
            .nth(1)
            .map(|rest| rest.split("\n[").next().unwrap_or(""))
            .unwrap_or("");
        for line in dependencies.lines() {
            let name = line.split(['=', '.', ' ']).next().unwrap_or("").trim();
            if name.starts_with("strata") && !allowed(package).contains(&name) {
                problems.push(format!("{package} depends on {name}"));
            }
        }
    }
    assert!(problems.is_empty(), "dependency direction:\n{}", problems.join("\n"));
}
