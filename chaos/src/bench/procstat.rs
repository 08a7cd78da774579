//! What the kernel says about a process: CPU time (`/proc/<pid>/stat`),
//! peak and proportional resident memory (`/proc/<pid>/status`,
//! `/proc/<pid>/smaps_rollup`), children, and the machine itself.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Clock ticks per second of `/proc/<pid>/stat` times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// The fields of `/proc/<pid>/stat` the benchmark uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub ppid: u32,
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Same, of the children it waited for (cutime + cstime).
    pub children_ticks: u64,
}

/// Parses one `/proc/<pid>/stat` line (the command name may hold spaces
/// and parentheses: the fields start after the last `)`).
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some(ProcStat { ppid, cpu_ticks: utime + stime, children_ticks: cutime + cstime })
}

pub fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// A `kB` field (`VmHWM:`, `VmRSS:`, `Pss:`) of a `/proc` status-like file.
pub fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// Peak resident set size (VmHWM), KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    kib_field(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?, "VmHWM:")
}

/// Proportional set size (shared pages split among their users), KiB.
pub fn pss_kib(pid: u32) -> Option<u64> {
    kib_field(&std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?, "Pss:")
}

/// CPU time of a process tree that reaps its children (a PostgreSQL
/// postmaster): its own, its reaped children's, and its live children's.
/// Continuous as children come and go.
pub fn tree_cpu_ticks(pid: u32) -> Option<u64> {
    let root = stat(pid)?;
    let live: u64 = with_children(pid).into_iter().skip(1).filter_map(stat).map(|s| s.cpu_ticks).sum();
    Some(root.cpu_ticks + root.children_ticks + live)
}

/// Proportional resident memory of `pid` and its children, KiB.
pub fn tree_pss_kib(pid: u32) -> Option<u64> {
    let pids = with_children(pid);
    let total: u64 = pids.iter().filter_map(|p| pss_kib(*p)).sum();
    (total > 0).then_some(total)
}

/// `pid` and every live process whose parent is `pid`.
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if stat(child).is_some_and(|s| s.ppid == pid) {
                out.push(child);
            }
        }
    }
    out
}

/// Busy and total CPU ticks of the whole machine (`/proc/stat`, all
/// cores; idle and iowait count as not busy).
pub fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The machine a report was measured on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    pub cores: usize,
    pub cpu: String,
    pub memory_mib: u64,
    pub kernel: String,
    /// Filesystem of the data directory: `type on device (mount point)`.
    pub data_fs: String,
}

impl MachineInfo {
    pub fn probe(data_dir: &Path) -> MachineInfo {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        MachineInfo {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu,
            memory_mib: kib_field(&meminfo, "MemTotal:").unwrap_or(0) / 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
            data_fs: filesystem_of(data_dir),
        }
    }

    pub fn one_line(&self) -> String {
        format!(
            "{} cores ({}), {} MiB RAM, Linux {}, data on {}",
            self.cores, self.cpu, self.memory_mib, self.kernel, self.data_fs
        )
    }
}

/// The mount holding `path` (longest mount point that prefixes it).
fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1])).then(|| (f[1].len(), format!("{} on {} ({})", f[2], f[0], f[1])))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, s)| s)
        .unwrap_or_else(|| "unknown filesystem".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "1234 (twopc (p1) x) S 99 1234 1234 0 -1 4194560 500 0 0 0 150 25 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(line), Some(ProcStat { ppid: 99, cpu_ticks: 175, children_ticks: 0 }));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_visible() {
        let me = std::process::id();
        assert!(stat(me).is_some());
        assert!(peak_rss_kib(me).unwrap() > 0);
        assert_eq!(kib_field("VmHWM:\t  2048 kB\nVmRSS: 1 kB", "VmHWM:"), Some(2048));
        assert!(MachineInfo::probe(Path::new("/")).cores >= 1);
    }
}
