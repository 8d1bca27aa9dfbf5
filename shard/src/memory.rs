//! The process's memory for INFO memory. The global allocator belongs to the binary, which
//! this crate cannot see: the binary installs an [`AllocatorProbe`] that reads it. Without a
//! probe, the allocator's figures are the resident set's, from /proc.

use std::sync::OnceLock;

/// What the allocator holds now and held at most.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocatorMemory {
    /// Bytes the allocator has committed for the heap: blocks in use and free blocks in pages
    /// it has not returned to the OS.
    pub committed_bytes: u64,
    pub committed_peak_bytes: u64,
}

/// The binary's reader of its global allocator.
#[derive(Clone, Copy, Debug)]
pub struct AllocatorProbe {
    /// Its name and version, as INFO's `mem_allocator` (Redis: `jemalloc-5.3.0`, `libc`).
    pub name: &'static str,
    pub read: fn() -> AllocatorMemory,
}

static PROBE: OnceLock<AllocatorProbe> = OnceLock::new();

/// Installs the probe INFO memory reads; only the first installed counts.
pub fn install_allocator_probe(probe: AllocatorProbe) {
    let _ = PROBE.set(probe);
}

/// INFO memory's figures, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemoryFigures {
    /// Redis's `used_memory`: the allocator's committed bytes, or the resident set.
    pub(crate) used: u64,
    pub(crate) used_peak: u64,
    pub(crate) resident: u64,
    pub(crate) allocator: &'static str,
}

pub(crate) fn figures() -> MemoryFigures {
    let resident = resident_bytes();
    match PROBE.get() {
        Some(probe) => {
            let memory = (probe.read)();
            MemoryFigures {
                used: memory.committed_bytes,
                used_peak: memory.committed_peak_bytes.max(memory.committed_bytes),
                resident,
                allocator: probe.name,
            }
        }
        None => MemoryFigures {
            used: resident,
            used_peak: resident_peak_bytes().max(resident),
            resident,
            allocator: "unknown",
        },
    }
}

/// The process's resident set size in bytes, from /proc (0 where unavailable).
#[must_use]
pub fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| text.split_whitespace().nth(1).and_then(|field| field.parse::<u64>().ok()))
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page_bytes).unwrap_or(4096)
}

/// The largest resident set the process had (`VmHWM`), in bytes (0 where unavailable).
fn resident_peak_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kilobytes = status.lines().find_map(|line| {
        let value = line.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?;
        value.trim().parse::<u64>().ok()
    });
    kilobytes.unwrap_or(0) * 1024
}

/// Bytes as Redis's `bytesToHuman` writes them: `512B`, `1.50K`, `2.00M`, ...
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [(&str, u64); 5] =
        [("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40), ("P", 1 << 50)];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let (unit, size) =
        UNITS.iter().rev().find(|(_, size)| bytes >= *size).copied().unwrap_or(UNITS[0]);
    format!("{:.2}{unit}", bytes as f64 / size as f64)
}

/// INFO's memory section.
pub(crate) fn section(text: &mut String) {
    use std::fmt::Write as _;
    let figures = figures();
    let ratio = if figures.used == 0 { 0.0 } else { figures.resident as f64 / figures.used as f64 };
    let _ = write!(
        text,
        "# Memory\r\nused_memory:{used}\r\nused_memory_human:{used_human}\r\n\
         used_memory_rss:{rss}\r\nused_memory_rss_human:{rss_human}\r\n\
         used_memory_peak:{peak}\r\nused_memory_peak_human:{peak_human}\r\n\
         maxmemory:0\r\nmaxmemory_human:0B\r\nmaxmemory_policy:noeviction\r\n\
         mem_fragmentation_ratio:{ratio:.2}\r\nmem_allocator:{allocator}\r\n\r\n",
        used = figures.used,
        used_human = human(figures.used),
        rss = figures.resident,
        rss_human = human(figures.resident),
        peak = figures.used_peak,
        peak_human = human(figures.used_peak),
        allocator = figures.allocator,
    );
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn sizes_read_as_redis_writes_them() {
        assert_eq!(human(0), "0B");
        assert_eq!(human(1023), "1023B");
        assert_eq!(human(1024), "1.00K");
        assert_eq!(human(1_013_368), "989.62K");
        assert_eq!(human(6_878_208), "6.56M");
        assert_eq!(human(3 << 30), "3.00G");
    }
}
