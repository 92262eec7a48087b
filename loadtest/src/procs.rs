//! CPU time and resident memory of the processes under test, read from
//! `/proc` with the `procfs` crate (Linux only).
//!
//! CPU is `utime + stime` of `/proc/PID/stat` (clock ticks, converted with
//! the kernel's ticks per second), diffed over a window and shown as a
//! percentage of one core; memory is `VmRSS` of `/proc/PID/status`, and
//! `Pss` of `/proc/PID/smaps_rollup` (shared pages divided among the
//! processes that map them: the sum over PostgreSQL's processes counts its
//! shared buffers once, where summed RSS counts them once per backend). A
//! [`Group`] names the processes of one role (the hubs, HAProxy, Redis,
//! PostgreSQL, this tool) either by pid or by `comm`, and is re-resolved at
//! every sample, so PostgreSQL backends that come and go are followed.

use std::collections::BTreeMap;

use procfs::process::Process;

/// What a walk of `/proc` keeps of each live process (from its `stat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub comm: String,
    pub ppid: u32,
    /// `utime + stime`, in clock ticks.
    pub cpu_ticks: u64,
}

/// `VmRSS` in KiB (`None` for kernel threads and zombies, which have none).
pub fn read_rss_kib(pid: u32) -> Option<u64> {
    Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .status()
        .ok()?
        .vmrss
}

/// `Pss` of `smaps_rollup`, in KiB.
pub fn read_pss_kib(pid: u32) -> Option<u64> {
    let rollup = Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .smaps_rollup()
        .ok()?;
    // One map, "[rollup]"; procfs gives its fields in bytes.
    let pss = rollup
        .memory_map_rollup
        .0
        .first()?
        .extension
        .map
        .get("Pss")?;
    Some(pss / 1024)
}

/// Clock ticks per second for `/proc/PID/stat` times.
pub fn clock_ticks_per_sec() -> u64 {
    procfs::ticks_per_second()
}

/// Every live process (zombies and dead ones left out), by pid, from one
/// walk of `/proc`. Processes that exit during the walk are skipped.
pub fn all_processes() -> Vec<Proc> {
    let Ok(procs) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let mut out: Vec<Proc> = procs
        .filter_map(|p| p.ok()?.stat().ok())
        .filter(|st| st.state != 'Z' && st.state != 'X')
        .filter_map(|st| {
            Some(Proc {
                pid: u32::try_from(st.pid).ok()?,
                comm: st.comm,
                ppid: u32::try_from(st.ppid).unwrap_or(0),
                cpu_ticks: st.utime + st.stime,
            })
        })
        .collect();
    out.sort_by_key(|p| p.pid);
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
    pub fn resolve(&self, procs: &[Proc]) -> Vec<u32> {
        match self {
            Selector::Pids(pids) => pids
                .iter()
                .copied()
                .filter(|p| procs.iter().any(|q| q.pid == *p))
                .collect(),
            Selector::Comm(c) => procs
                .iter()
                .filter(|p| &p.comm == c)
                .map(|p| p.pid)
                .collect(),
            Selector::Tree(root) => procs
                .iter()
                .filter(|p| p.pid == *root || p.ppid == *root)
                .map(|p| p.pid)
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
                    .find(|p| p.pid == pid)
                    .map_or(0, |p| p.cpu_ticks);
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

    /// A child whose executable name has spaces and parentheses (the
    /// `comm` field of `/proc/PID/stat` sits in parentheses itself, so a
    /// naive reader gets every later field wrong): found by name, by parent,
    /// with its parent right.
    #[test]
    fn finds_a_child_with_an_awkward_name() {
        let dir = std::env::temp_dir().join(format!("loadtest-procs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("lt (a) b");
        std::fs::copy("/bin/sleep", &exe).unwrap();
        let mut child = std::process::Command::new(&exe).arg("30").spawn().unwrap();
        let me = std::process::id();
        let procs = all_processes();
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        let found = procs.iter().find(|p| p.pid == child.id()).unwrap();
        assert_eq!(found.comm, "lt (a) b");
        assert_eq!(found.ppid, me);
        assert_eq!(
            Selector::Comm("lt (a) b".into()).resolve(&procs),
            vec![child.id()]
        );
        assert!(Selector::Tree(me).resolve(&procs).contains(&child.id()));
        assert!(procs.windows(2).all(|w| w[0].pid < w[1].pid), "sorted");
    }

    #[test]
    fn selectors_resolve_against_a_process_list() {
        let p = |pid: u32, comm: &str, ppid: u32| Proc {
            pid,
            comm: comm.into(),
            ppid,
            cpu_ticks: 0,
        };
        let procs = vec![
            p(10, "postgres", 1),
            p(11, "postgres", 10),
            p(12, "postgres", 10),
            p(20, "postgres", 1),
            p(30, "hub", 1),
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

    /// This process's own figures, in KiB, next to what `/proc` says in
    /// text (a unit slip would be off by 1024).
    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let rss = read_rss_kib(me).unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        let text: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(
            rss > 0 && rss.abs_diff(text) < text / 2 + 1024,
            "{rss} vs {line}"
        );
        let pss = read_pss_kib(me).unwrap();
        assert!(pss > 0 && pss <= rss * 2, "pss {pss} KiB, rss {rss} KiB");
        let mine = all_processes().into_iter().find(|p| p.pid == me).unwrap();
        assert_eq!(mine.ppid, std::os::unix::process::parent_id());
        assert!(clock_ticks_per_sec() > 0);
        assert_eq!(read_rss_kib(u32::MAX), None);
    }
}
