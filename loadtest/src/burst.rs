//! The `burst` scenario's arithmetic: every simulated website due in the
//! same second, without changing how the hubs schedule.
//!
//! A hub runs a website every interval at `phase = store::schedule_phase_ms(id,
//! interval)` past each multiple of the interval (Unix ms), the phase a hash
//! of the id. So the tool picks the ids: it chooses the second the burst is
//! due, `due_ms` (a whole second a little after the ramp will have ended),
//! which is at phase `W = due_ms mod interval`, and scans ids from
//! [`store::SIMULATED_BURST_FIRST_ID`] up for those whose phase falls in
//! `[W, W + 1000)`. About one id in `interval_secs` does, so 33,334 sites at
//! 60 s scan some two million ids (milliseconds). The same `W` gives the
//! same ids, so rows are reused by later runs whose burst falls in the same
//! second of the minute.
//!
//! The hubs take more than 1,000 new websites at once at their next slot
//! (`CATCH_UP_BULK` in services/hub/src/rounds/machine/sites.rs), which for
//! these is `due_ms` as long as they are written less than an interval
//! before it. Fewer would run their current slot at once, before any
//! validator is there: hence the scenario's floor on `--sites`.

use store::{schedule_phase_ms, WebsiteId, SIMULATED_BURST_FIRST_ID};

use crate::report::{BurstReport, BurstSecond};
use crate::stats::SecondCounts;

/// From writing the websites until the ramp starts at the latest: the hubs'
/// reload and `websites_owned` reaching them all.
pub const OWN_MARGIN_MS: i64 = 10_000;
/// From the end of the ramp until the burst is due.
pub const LEAD_MS: i64 = 5_000;
/// Every site's slot starts within this of `due_ms`.
pub const WINDOW_MS: i64 = 1_000;
/// More new websites than this at once start at their next slot on a hub.
pub const HUB_CATCH_UP_BULK: u32 = 1_000;

/// The burst's due second: the first whole second at least `lead_ms` after
/// `now_ms`.
pub fn due_ms(now_ms: i64, lead_ms: i64) -> i64 {
    (now_ms + lead_ms + WINDOW_MS - 1).div_euclid(WINDOW_MS) * WINDOW_MS
}

/// The first `count` ids from [`SIMULATED_BURST_FIRST_ID`] up whose slots
/// at `interval_secs` start in `[due_ms, due_ms + 1000)` (each interval).
pub fn website_ids(due_ms: i64, interval_secs: u32, count: u32) -> Vec<WebsiteId> {
    let interval_ms = i64::from(interval_secs.max(1)) * 1000;
    let w = due_ms.rem_euclid(interval_ms);
    (SIMULATED_BURST_FIRST_ID..)
        .map(WebsiteId)
        .filter(|id| (w..w + WINDOW_MS).contains(&schedule_phase_ms(*id, interval_secs)))
        .take(count as usize)
        .collect()
}

/// The per-second counts, in seconds from the due second.
pub fn per_second(seconds: &[SecondCounts], due_ms: i64) -> Vec<BurstSecond> {
    let due_sec = due_ms.div_euclid(1000);
    seconds
        .iter()
        .map(|c| BurstSecond {
            t: c.sec - due_sec,
            tasks: c.tasks,
            results: c.results,
            acks: c.acks,
        })
        .collect()
}

/// Hub RSS from `(Unix ms, KiB)` samples: the last one before `due_ms`, and
/// the largest from it on.
pub fn rss_before_and_peak(samples: &[(i64, u64)], due_ms: i64) -> (Option<u64>, Option<u64>) {
    let before = samples.iter().rev().find(|(t, _)| *t < due_ms).map(|s| s.1);
    let peak = samples
        .iter()
        .filter(|(t, _)| *t >= due_ms)
        .map(|s| s.1)
        .max();
    (before, peak)
}

/// Why a burst fails, if it does: any result lost; no burst seen at all;
/// fewer ticks in PostgreSQL than acks said stored (when no other website
/// could account for the acks).
pub fn failures(b: &BurstReport, other_enabled: u64) -> Vec<String> {
    let mut f = Vec::new();
    if b.lost > 0 {
        f.push(format!("{} results never acknowledged (lost)", b.lost));
    }
    if b.tasks == 0 {
        f.push("no task arrived: the burst did not happen".into());
    }
    if let Some(ticks) = b.ticks_stored_db {
        if other_enabled == 0 && ticks < b.acks_stored {
            f.push(format!(
                "{} acks said stored, {ticks} ticks of the burst's slot in PostgreSQL",
                b.acks_stored
            ));
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_count_from_the_due_second() {
        let c = |sec, tasks, acks| SecondCounts {
            sec,
            tasks,
            results: tasks,
            acks,
        };
        let got = per_second(&[c(99, 1, 0), c(100, 7, 2), c(103, 0, 5)], 100_000);
        let t: Vec<(i64, u64, u64)> = got.iter().map(|s| (s.t, s.tasks, s.acks)).collect();
        assert_eq!(t, [(-1, 1, 0), (0, 7, 2), (3, 0, 5)]);
    }

    #[test]
    fn rss_before_is_the_last_sample_before_due_and_peak_the_largest_after() {
        let s = [(1_000, 50), (2_000, 40), (3_000, 90), (4_000, 70)];
        assert_eq!(rss_before_and_peak(&s, 3_000), (Some(40), Some(90)));
        assert_eq!(rss_before_and_peak(&s, 500), (None, Some(90)));
        assert_eq!(rss_before_and_peak(&s, 9_000), (Some(70), None));
    }

    #[test]
    fn a_burst_fails_on_lost_results_on_no_tasks_and_on_missing_ticks() {
        let ok = BurstReport {
            tasks: 9,
            acks_stored: 9,
            ticks_stored_db: Some(9),
            ..Default::default()
        };
        assert!(failures(&ok, 0).is_empty());
        let lost = BurstReport {
            lost: 2,
            ..ok.clone()
        };
        assert_eq!(failures(&lost, 0), ["2 results never acknowledged (lost)"]);
        let none = BurstReport {
            tasks: 0,
            acks_stored: 0,
            ticks_stored_db: Some(0),
            ..Default::default()
        };
        assert_eq!(failures(&none, 0).len(), 1);
        let short = BurstReport {
            ticks_stored_db: Some(8),
            ..ok.clone()
        };
        assert_eq!(failures(&short, 0).len(), 1);
        // With other websites enabled their acks count too: not judged.
        assert!(failures(&short, 3).is_empty());
        let unknown = BurstReport {
            ticks_stored_db: None,
            ..ok
        };
        assert!(failures(&unknown, 0).is_empty());
    }

    #[test]
    fn due_is_a_whole_second_at_least_the_lead_away() {
        assert_eq!(due_ms(1_000, 5_000), 6_000);
        assert_eq!(due_ms(1_001, 5_000), 7_000);
        assert_eq!(due_ms(1_999, 5_000), 7_000);
        assert_eq!(due_ms(1_700_000_000_123, 0), 1_700_000_001_000);
    }

    /// What a hub does with a website taken on in bulk at `now`: its next
    /// slot (services/hub/src/rounds: `Schedule`, `Sites::upsert`).
    fn next_slot_after(id: WebsiteId, interval_secs: u32, now: i64) -> i64 {
        let interval = i64::from(interval_secs) * 1000;
        let phase = schedule_phase_ms(id, interval_secs);
        phase + ((now - phase).div_euclid(interval) + 1) * interval
    }

    #[test]
    fn every_chosen_site_is_next_due_in_the_burst_second() {
        let written = 1_764_000_012_345;
        let due = due_ms(written, 30_000);
        let ids = website_ids(due, 60, 500);
        assert_eq!(ids.len(), 500);
        assert!(ids.windows(2).all(|p| p[0] < p[1]), "ascending, distinct");
        assert!(ids[0].0 >= SIMULATED_BURST_FIRST_ID);
        for id in &ids {
            let next = next_slot_after(*id, 60, written);
            assert!((due..due + WINDOW_MS).contains(&next), "{id}: {next}");
        }
        // About one id in 60 qualifies.
        let scanned = ids[499].0 - SIMULATED_BURST_FIRST_ID;
        assert!((15_000..60_000).contains(&scanned), "{scanned}");
        // Same second of the minute, same ids; another second, none shared.
        assert_eq!(website_ids(due + 120_000, 60, 500), ids);
        let other = website_ids(due + 1_000, 60, 500);
        assert!(other.iter().all(|id| !ids.contains(id)));
    }
}
