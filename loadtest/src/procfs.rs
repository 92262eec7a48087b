//! CPU time and resident memory of the processes under test, read from
//! `/proc` (Linux only).
//!
//! CPU is `utime + stime` of `/proc/PID/stat` (clock ticks, converted with
//! `sysconf(_SC_CLK_TCK)`), diffed over a window and shown as a percentage
//! of one core; memory is `VmRSS` of `/proc/PID/status`, and `Pss` of
//! `/proc/PID/smaps_rollup` (shared pages divided among the processes that
//! map them: the sum over PostgreSQL's processes counts its shared buffers
//! once, where summed RSS counts them once per backend). A [`Group`] names
//! the processes of one role (the hubs, HAProxy, Redis, PostgreSQL, this
//! tool) either by pid or by `comm`, and is re-resolved at every sample, so
//! PostgreSQL backends that come and go are followed.

use std::collections::BTreeMap;
use std::path::Path;

/// Fields of `/proc/PID/stat` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    /// `utime + stime`, in clock ticks.
    pub cpu_ticks: u64,
}

/// Parses `/proc/PID/stat`. The command name sits in parentheses and may
/// itself contain spaces and parentheses, so the fields are counted from
/// the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // After ") ": field 3 (state) is index 0, so field N is index N - 3.
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        cpu_ticks: utime + stime,
    })
}

/// `VmRSS` from `/proc/PID/status`, in KiB (`None` for kernel threads and
/// zombies, which have none).
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix("VmRSS:")?;
        let mut parts = rest.split_whitespace();
        let n = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") | None => Some(n),
            Some(_) => None,
        }
    })
}

pub fn read_rss_kib(pid: u32) -> Option<u64> {
    parse_vm_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// `Pss` from `/proc/PID/smaps_rollup`, in KiB.
pub fn parse_pss_kib(smaps_rollup: &str) -> Option<u64> {
    smaps_rollup.lines().find_map(|l| {
        let rest = l.strip_prefix("Pss:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

pub fn read_pss_kib(pid: u32) -> Option<u64> {
    parse_pss_kib(&std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

/// Clock ticks per second for `/proc/PID/stat` times.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Every live process as (pid, stat), from one walk of `/proc`.
pub fn all_processes() -> Vec<(u32, Stat)> {
    all_processes_in(Path::new("/proc"))
}

fn all_processes_in(root: &Path) -> Vec<(u32, Stat)> {
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(st) = parse_stat(&text) {
            if st.state != 'Z' && st.state != 'X' {
                out.push((pid, st));
            }
        }
    }
    out.sort_by_key(|(pid, _)| *pid);
    out
}

/// Which processes make up one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// These pids (those still alive).
    Pids(Vec<u32>),
    /// Every process whose `comm` is exactly this.
    Comm(String),
    /// This process and its direct children (a postmaster and its backends).
    Tree(u32),
}

impl Selector {
    /// Resolves the selector against a process list.
    pub fn resolve(&self, procs: &[(u32, Stat)]) -> Vec<u32> {
        match self {
            Selector::Pids(pids) => pids
                .iter()
                .copied()
                .filter(|p| procs.iter().any(|(q, _)| q == p))
                .collect(),
            Selector::Comm(c) => procs
                .iter()
                .filter(|(_, s)| &s.comm == c)
                .map(|(p, _)| *p)
                .collect(),
            Selector::Tree(root) => procs
                .iter()
                .filter(|(p, s)| p == root || s.ppid == *root)
                .map(|(p, _)| *p)
                .collect(),
        }
    }
}

/// A named role and how to find its processes.
#[derive(Debug, Clone)]
pub struct Group {
    pub role: String,
    pub selector: Selector,
    /// Report each pid on its own as well as the sum (the hubs).
    pub per_process: bool,
}

/// One process at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    pub cpu_ticks: u64,
    pub rss_kib: u64,
    /// `None` where `smaps_rollup` is unreadable.
    pub pss_kib: Option<u64>,
}

/// One reading of a group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupSample {
    pub procs: BTreeMap<u32, Reading>,
}

impl GroupSample {
    pub fn rss_kib(&self) -> u64 {
        self.procs.values().map(|r| r.rss_kib).sum()
    }

    /// Sum of PSS, if every process had one.
    pub fn pss_kib(&self) -> Option<u64> {
        self.procs.values().map(|r| r.pss_kib).sum()
    }

    /// CPU ticks spent between `before` and `self`, over the processes alive
    /// now (a process that appeared in between counts from zero, one that
    /// exited is lost).
    pub fn cpu_ticks_since(&self, before: &GroupSample) -> u64 {
        self.procs
            .iter()
            .map(|(pid, now)| {
                let then = before.procs.get(pid).map_or(0, |r| r.cpu_ticks);
                now.cpu_ticks.saturating_sub(then)
            })
            .sum()
    }

    /// The same for one pid.
    pub fn cpu_ticks_since_for(&self, before: &GroupSample, pid: u32) -> u64 {
        let now = self.procs.get(&pid).map_or(0, |r| r.cpu_ticks);
        let then = before.procs.get(&pid).map_or(0, |r| r.cpu_ticks);
        now.saturating_sub(then)
    }
}

/// Reads every group at once (one walk of `/proc`).
pub fn sample(groups: &[Group]) -> Vec<GroupSample> {
    let procs = all_processes();
    groups
        .iter()
        .map(|g| {
            let mut s = GroupSample::default();
            for pid in g.selector.resolve(&procs) {
                let cpu = procs
                    .iter()
                    .find(|(p, _)| *p == pid)
                    .map_or(0, |(_, st)| st.cpu_ticks);
                s.procs.insert(
                    pid,
                    Reading {
                        cpu_ticks: cpu,
                        rss_kib: read_rss_kib(pid).unwrap_or(0),
                        pss_kib: read_pss_kib(pid),
                    },
                );
            }
            s
        })
        .collect()
}

/// CPU ticks over a window as a percentage of one core.
pub fn cpu_percent(ticks: u64, window_secs: f64, ticks_per_sec: u64) -> Option<f64> {
    (window_secs > 0.0).then(|| ticks as f64 / ticks_per_sec as f64 / window_secs * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line (postgres checkpointer), with the comm altered to contain
    // spaces and a parenthesis.
    const STAT: &str = "4242 (post (gres) x) S 4200 4200 4200 0 -1 4194624 1160 0 0 0 \
                        37 12 0 0 20 0 1 0 2312 219746304 2030 18446744073709551615 1 1 0 0 0 0 \
                        0 16781312 16902 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(s.comm, "post (gres) x");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 4200);
        assert_eq!(s.cpu_ticks, 37 + 12);
        assert_eq!(parse_stat("1 (x) S"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn pss_from_smaps_rollup() {
        let t = "55d0-7ffc ---p 00000000 00:00 0  [rollup]\nRss:  20480 kB\nPss:  8123 kB\nPss_Dirty: 100 kB\n";
        assert_eq!(parse_pss_kib(t), Some(8123));
        assert_eq!(parse_pss_kib("Rss: 1 kB\n"), None);
    }

    #[test]
    fn vm_rss_in_kib() {
        let status = "Name:\thub\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_kib(status), Some(12345));
        assert_eq!(parse_vm_rss_kib("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn selectors_resolve_against_a_process_list() {
        let st = |comm: &str, ppid: u32| Stat {
            comm: comm.into(),
            state: 'S',
            ppid,
            cpu_ticks: 0,
        };
        let procs = vec![
            (10, st("postgres", 1)),
            (11, st("postgres", 10)),
            (12, st("postgres", 10)),
            (20, st("postgres", 1)),
            (30, st("hub", 1)),
        ];
        assert_eq!(Selector::Tree(10).resolve(&procs), vec![10, 11, 12]);
        assert_eq!(
            Selector::Comm("postgres".into()).resolve(&procs),
            vec![10, 11, 12, 20]
        );
        assert_eq!(Selector::Pids(vec![30, 99]).resolve(&procs), vec![30]);
    }

    #[test]
    fn cpu_differences_and_percentages() {
        let r = |cpu_ticks, rss_kib, pss_kib| Reading {
            cpu_ticks,
            rss_kib,
            pss_kib,
        };
        let mut before = GroupSample::default();
        before.procs.insert(1, r(100, 10, Some(5)));
        before.procs.insert(2, r(50, 20, None));
        let mut after = GroupSample::default();
        after.procs.insert(1, r(150, 30, Some(20)));
        after.procs.insert(3, r(7, 5, Some(1))); // new process: counts from zero
        assert_eq!(after.cpu_ticks_since(&before), 50 + 7);
        assert_eq!(after.cpu_ticks_since_for(&before, 1), 50);
        assert_eq!(after.rss_kib(), 35);
        assert_eq!(after.pss_kib(), Some(21));
        assert_eq!(before.pss_kib(), None, "one process without PSS");
        // 50 ticks at 100/s over 1 s: half a core.
        assert_eq!(cpu_percent(50, 1.0, 100), Some(50.0));
        assert_eq!(cpu_percent(50, 0.0, 100), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(read_rss_kib(me).unwrap() > 0);
        assert!(read_pss_kib(me).unwrap() > 0);
        assert!(all_processes().iter().any(|(p, _)| *p == me));
        assert!(clock_ticks_per_sec() > 0);
    }
}
