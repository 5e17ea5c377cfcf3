//! A process's memory as Linux reports it (`/proc/<pid>/smaps`): the resident set and where it
//! lies — glibc malloc's main heap (`[heap]`), its other arenas (each an anonymous mapping of
//! up to 64 MiB reserved at a 64 MiB-aligned address, `HEAP_MAX_SIZE` in glibc's arena.c),
//! other anonymous memory (thread stacks, large allocations malloc maps on their own) and
//! file-backed pages (the binary, libraries, redb's file cache).

use std::path::Path;

/// glibc's `HEAP_MAX_SIZE` on 64-bit: each non-main arena reserves this much, aligned to it.
const ARENA_BYTES: u64 = 64 << 20;

/// Resident memory of one process, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Memory {
    /// Resident set (the sum of every mapping's `Rss`).
    pub rss_kib: u64,
    /// Resident in `[heap]`: glibc's main arena (the first thread's allocations).
    pub heap_kib: u64,
    /// Resident in the other malloc arenas (one per thread that allocated, up to 8 × cores).
    pub arenas_kib: u64,
    /// How many such arenas are mapped.
    pub arenas: u64,
    /// Other anonymous memory (stacks, malloc's own mmaps of large blocks).
    pub other_anon_kib: u64,
    /// File-backed pages (binary, libraries, mapped files).
    pub file_kib: u64,
}

impl Memory {
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

/// One mapping of `/proc/<pid>/smaps`.
struct Mapping {
    start: u64,
    end: u64,
    perms: String,
    path: String,
    rss_kib: u64,
}

/// Reads process `pid`'s memory.
pub fn read(pid: u32) -> std::io::Result<Memory> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    Ok(classify(&parse(&smaps)))
}

fn parse(smaps: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((start, end)) = first.split_once('-').and_then(|(s, e)| {
            Some((
                u64::from_str_radix(s, 16).ok()?,
                u64::from_str_radix(e, 16).ok()?,
            ))
        }) {
            let perms = words.next().unwrap_or_default().to_string();
            let path = words.nth(3).unwrap_or_default().to_string();
            out.push(Mapping {
                start,
                end,
                perms,
                path,
                rss_kib: 0,
            });
        } else if first == "Rss:" {
            if let (Some(m), Some(kib)) = (out.last_mut(), words.next()) {
                m.rss_kib = kib.parse().unwrap_or(0);
            }
        }
    }
    out
}

/// Sorts the mappings' resident pages into the [`Memory`] classes. An arena is an anonymous
/// read-write mapping at a 64 MiB-aligned address whose reservation (it and the inaccessible
/// `---p` rest right after it) spans exactly 64 MiB.
fn classify(maps: &[Mapping]) -> Memory {
    let mut mem = Memory::default();
    for (i, m) in maps.iter().enumerate() {
        mem.rss_kib += m.rss_kib;
        let anonymous = m.path.is_empty();
        let reserved_to = maps
            .get(i + 1)
            .filter(|n| n.start == m.end && n.perms.starts_with("---") && n.path.is_empty())
            .map_or(m.end, |n| n.end);
        if m.path == "[heap]" {
            mem.heap_kib += m.rss_kib;
        } else if anonymous
            && m.perms.starts_with("rw")
            && m.start % ARENA_BYTES == 0
            && reserved_to - m.start == ARENA_BYTES
        {
            mem.arenas += 1;
            mem.arenas_kib += m.rss_kib;
        } else if anonymous || m.path.starts_with('[') {
            mem.other_anon_kib += m.rss_kib;
        } else {
            mem.file_kib += m.rss_kib;
        }
    }
    mem
}

/// Makes process `pid` call glibc's `malloc_trim(0)` (through gdb, which attaches and detaches),
/// so that its arenas return their free pages to the kernel: the resident set that goes away
/// was free memory malloc kept, what stays is live data (or pages pinned by live data).
pub fn trim(pid: u32) -> std::io::Result<()> {
    let out = std::process::Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "call (int) malloc_trim(0)",
        ])
        .stdin(std::process::Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "gdb could not call malloc_trim in {pid} (install gdb; ptrace needs root): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        )))
    }
}

/// The pid of the one process whose command line holds `args` in a row (e.g. a member's
/// `--client-listen 127.0.0.1:port`), from `/proc/*/cmdline`.
pub fn pid_with_args(args: &[&str]) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline =
            std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline")).ok()?;
        let words: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        words
            .windows(args.len())
            .any(|w| w.iter().zip(args).all(|(a, b)| *a == b.as_bytes()))
            .then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arenas_heap_and_files_are_told_apart() {
        let smaps = "\
55d0a0000000-55d0a0100000 r-xp 00000000 08:01 123 /usr/bin/caplab-node
Rss:                1024 kB
55d0a1000000-55d0a2000000 rw-p 00000000 00:00 0 [heap]
Rss:                2048 kB
7f0000000000-7f0000800000 rw-p 00000000 00:00 0
Rss:                4096 kB
7f0000800000-7f0004000000 ---p 00000000 00:00 0
Rss:                   0 kB
7f0010000000-7f0010200000 rw-p 00000000 00:00 0
Rss:                 512 kB
";
        let mem = classify(&parse(smaps));
        assert_eq!(mem.rss_kib, 1024 + 2048 + 4096 + 512);
        assert_eq!(mem.file_kib, 1024);
        assert_eq!(mem.heap_kib, 2048);
        assert_eq!((mem.arenas, mem.arenas_kib), (1, 4096));
        assert_eq!(mem.other_anon_kib, 512);
    }
}
