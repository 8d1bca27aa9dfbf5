//! Which cores the shard threads run on: `[general] cpu_affinity`.
//!
//! `auto` pins shard `i` to the i-th core this process may run on (what `taskset` and the
//! cgroup's cpuset leave it) when the shards leave at least one of those cores free, and
//! pins nothing when they would take them all (the default shard count): then whatever else
//! runs on the machine (a client, the node's control and upload threads) would have to
//! preempt a shard pinned to its core, where the kernel could have moved the shard to an idle
//! one. `none` pins nothing, and a list (`"2,3"`, `"4-7"`, `"0,2-3"`)
//! gives the cores, shard `i` on the list's i-th (round robin when there are more shards).
//! Nodes sharing a machine should be given different cores, or `none`: pinned to the same
//! core, their shards take turns on it while the others idle. A node that finds another's shard
//! threads pinned to its own cores says so in its log.

use std::path::Path;

/// Core numbers are below this (the kernel's `CPU_SETSIZE`).
const CORES_MAX: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuAffinity {
    Auto,
    None,
    Cores(Vec<usize>),
}

/// Reads `auto`, `none`, or a list of cores and ranges.
pub fn parse(text: &str) -> Result<CpuAffinity, String> {
    match text.trim() {
        "auto" => return Ok(CpuAffinity::Auto),
        "none" => return Ok(CpuAffinity::None),
        _ => {}
    }
    let mut cores = Vec::new();
    for item in text.split(',').map(str::trim) {
        let (first, last) = match item.split_once('-') {
            Some((first, last)) => (core_number(first)?, core_number(last)?),
            None => (core_number(item)?, core_number(item)?),
        };
        if first > last {
            return Err(format!("the range {item} goes down"));
        }
        for core in first..=last {
            if !cores.contains(&core) {
                cores.push(core);
            }
        }
    }
    Ok(CpuAffinity::Cores(cores))
}

fn core_number(text: &str) -> Result<usize, String> {
    let number: usize = text.trim().parse().map_err(|_| {
        format!("{text:?} is not a core number (use \"auto\", \"none\" or a list like \"0,2-3\")")
    })?;
    if number >= CORES_MAX {
        return Err(format!("core {number} is beyond the last possible one ({})", CORES_MAX - 1));
    }
    Ok(number)
}

/// The cores this process may run on (`sched_getaffinity`), in order.
#[must_use]
pub fn allowed_cores() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    if unsafe { libc::sched_getaffinity(0, size, &raw mut set) } != 0 {
        return Vec::new();
    }
    (0..CORES_MAX).filter(|&core| unsafe { libc::CPU_ISSET(core, &set) }).collect()
}

/// The cores shard `i` is pinned to in turn (None: no pinning), given the number of shards
/// and the cores allowed.
pub fn shard_cores(
    affinity: &CpuAffinity,
    shards: u32,
    allowed: &[usize],
) -> Result<Option<Vec<usize>>, String> {
    match affinity {
        CpuAffinity::None => Ok(None),
        CpuAffinity::Auto if shards as usize >= allowed.len() => Ok(None),
        CpuAffinity::Auto => Ok(Some(allowed.to_vec())),
        CpuAffinity::Cores(cores) => {
            if let Some(core) = cores.iter().find(|core| !allowed.contains(core)) {
                return Err(format!(
                    "core {core} is not one this process may run on (allowed: {})",
                    list_text(allowed)
                ));
            }
            Ok(Some(cores.clone()))
        }
    }
}

/// Cores as a list, `0,1,4`.
fn list_text(cores: &[usize]) -> String {
    cores.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

/// Other processes' shard threads (threads named `shard-N` of a process whose name has
/// `strata` in it) pinned to one of `cores`: (pid, thread name, core).
#[must_use]
pub fn shards_pinned_elsewhere(
    proc: &Path,
    own_pid: u32,
    cores: &[usize],
) -> Vec<(u32, String, usize)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(proc) else { return found };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let is_strata = std::fs::read_to_string(entry.path().join("comm"))
            .is_ok_and(|name| name.contains("strata"));
        if pid == own_pid || !is_strata {
            continue;
        }
        found.extend(
            pinned_shard_threads(&entry.path(), cores)
                .into_iter()
                .map(|(name, core)| (pid, name, core)),
        );
    }
    found
}

/// The process's shard threads that may run on exactly one core, that core being in `cores`.
fn pinned_shard_threads(process: &Path, cores: &[usize]) -> Vec<(String, usize)> {
    let Ok(tasks) = std::fs::read_dir(process.join("task")) else { return Vec::new() };
    let mut found = Vec::new();
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let name = name.trim();
        if !name.starts_with("shard-") {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let allowed = status.lines().find_map(|line| line.strip_prefix("Cpus_allowed_list:"));
        let Some(Ok(CpuAffinity::Cores(allowed))) = allowed.map(parse) else { continue };
        if let [core] = allowed.as_slice() {
            if cores.contains(core) {
                found.push((name.to_string(), *core));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_ranges_and_words_parse() {
        assert_eq!(parse("auto"), Ok(CpuAffinity::Auto));
        assert_eq!(parse("none"), Ok(CpuAffinity::None));
        assert_eq!(parse("2,3"), Ok(CpuAffinity::Cores(vec![2, 3])));
        assert_eq!(parse("4-7"), Ok(CpuAffinity::Cores(vec![4, 5, 6, 7])));
        assert_eq!(parse("0, 2-3,2"), Ok(CpuAffinity::Cores(vec![0, 2, 3])));
        assert!(parse("3-1").unwrap_err().contains("goes down"));
        assert!(parse("x").unwrap_err().contains("not a core number"));
        assert!(parse("").unwrap_err().contains("not a core number"));
        assert!(parse("1,").unwrap_err().contains("not a core number"));
        assert!(parse("5000").unwrap_err().contains("beyond"));
    }

    #[test]
    fn shards_get_the_cores_allowed_or_those_listed() {
        let allowed = [0, 1, 4];
        assert_eq!(shard_cores(&CpuAffinity::Auto, 2, &allowed), Ok(Some(vec![0, 1, 4])));
        assert_eq!(shard_cores(&CpuAffinity::Auto, 3, &allowed), Ok(None), "no core left free");
        assert_eq!(shard_cores(&CpuAffinity::Auto, 1, &[]), Ok(None));
        assert_eq!(shard_cores(&CpuAffinity::None, 1, &allowed), Ok(None));
        assert_eq!(shard_cores(&CpuAffinity::Cores(vec![4]), 3, &allowed), Ok(Some(vec![4])));
        let refused = shard_cores(&CpuAffinity::Cores(vec![2]), 1, &allowed).unwrap_err();
        assert_eq!(refused, "core 2 is not one this process may run on (allowed: 0,1,4)");
        assert!(!allowed_cores().is_empty());
    }
}
