//! The schedule of the websites this hub owns: which slot of which site is
//! due, and what a round for it carries.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use protocol::{CheckSpec, StatusRange};
use store::{NewRound, OpenedRound, Website, WebsiteId};

use super::super::scheduler::Schedule;
use super::RoundSpec;

/// When more sites than this become ours in one reload (a start, a ring
/// change, an import), each starts at its next slot instead of running its
/// current one at once: no catch-up burst (100k sites at 60 s would
/// otherwise be 300k tasks in a second; spread over 20 s, they were still
/// three times the steady rate, and on a small cluster that burst decided
/// the schedule jitter of the whole first minute). The price: a site whose
/// current slot its previous owner had not run skips that slot. A next
/// slot more than BULK_MAX_WAIT_MS away (long intervals) is not waited
/// for: those sites run their current slot, spread over that time.
const CATCH_UP_BULK: usize = 1_000;
const BULK_MAX_WAIT_MS: i64 = 60_000;

/// How long after it became due a slot may still start: half the interval,
/// between 1 and 10 s.
fn misfire_ms(interval_ms: i64) -> i64 {
    (interval_ms / 2).clamp(1_000, 10_000)
}

struct Site {
    website: Website,
    schedule: Schedule,
    next_due_ms: i64,
}

/// Rounds due now, to be inserted (the database refuses a second round for
/// a slot).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Due {
    pub rounds: Vec<NewRound>,
    /// Slots skipped because they could not start in time (misfire).
    pub missed: u64,
}

/// The websites this hub owns and when each is next due.
pub struct Sites {
    /// Floor for a website's interval.
    min_interval_secs: u32,
    /// Time a validator has to answer a task (capped at the interval).
    task_deadline_ms: i64,
    sites: HashMap<WebsiteId, Site>,
}

impl Sites {
    pub fn new(min_interval_secs: u32, task_deadline_ms: i64) -> Self {
        Self {
            min_interval_secs,
            task_deadline_ms,
            sites: HashMap::new(),
        }
    }

    /// How many websites this hub schedules.
    pub fn owned(&self) -> usize {
        self.sites.len()
    }

    /// Takes `mine`, the enabled websites this hub owns now, as the whole
    /// set: others are dropped, a new one is due at once (or, when many
    /// arrive together, at its next slot), a changed interval moves a site
    /// to its next slot under the new schedule.
    pub fn reconcile(&mut self, mine: Vec<Website>, now: i64) {
        let new = mine
            .iter()
            .filter(|w| !self.sites.contains_key(&w.id))
            .count();
        let bulk = new > CATCH_UP_BULK;
        let mut seen = HashSet::with_capacity(mine.len());
        for w in mine {
            seen.insert(w.id);
            self.upsert(w, now, bulk);
        }
        self.sites.retain(|id, _| seen.contains(id));
    }

    /// Applies a change to the websites `changed` names: those in `mine`
    /// (enabled, owned by this hub) are taken on or updated as
    /// [`Self::reconcile`] does, the others are dropped. Sites not named
    /// are left as they are.
    pub fn reconcile_some(&mut self, changed: &[WebsiteId], mine: Vec<Website>, now: i64) {
        let new = mine
            .iter()
            .filter(|w| !self.sites.contains_key(&w.id))
            .count();
        let bulk = new > CATCH_UP_BULK;
        let kept: HashSet<WebsiteId> = mine.iter().map(|w| w.id).collect();
        for id in changed {
            if !kept.contains(id) {
                self.sites.remove(id);
            }
        }
        for w in mine {
            self.upsert(w, now, bulk);
        }
    }

    fn upsert(&mut self, w: Website, now: i64, bulk: bool) {
        let floor = self.min_interval_secs;
        let schedule = Schedule::new(w.id, (w.interval_secs.max(1) as u32).max(floor));
        match self.sites.get_mut(&w.id) {
            Some(site) if site.schedule == schedule => site.website = w,
            Some(site) => {
                site.schedule = schedule;
                site.next_due_ms = schedule.scheduled_at(schedule.slot_at(now) + 1);
                site.website = w;
            }
            None => {
                // The current slot is due; if it already ran (say, before
                // a restart) the round key skips it. Sites taken on in
                // bulk start at their next slot (CATCH_UP_BULK).
                let next_due_ms = if bulk {
                    let next_slot = schedule.scheduled_at(schedule.slot_at(now) + 1);
                    if next_slot - now <= BULK_MAX_WAIT_MS {
                        next_slot
                    } else {
                        now + schedule.phase_ms % BULK_MAX_WAIT_MS
                    }
                } else {
                    now
                };
                self.sites.insert(
                    w.id,
                    Site {
                        website: w,
                        schedule,
                        next_due_ms,
                    },
                );
            }
        }
    }

    /// The rounds to open now, at most `room` (see
    /// [`Rounds::room`](super::Rounds::room)), longest-waiting first so a
    /// shortage delays sites fairly; the rest stay due. A slot that could
    /// not start within its misfire window (validators were missing or
    /// saturated) is skipped, not run late: an overloaded cluster sheds
    /// stale checks instead of queueing them.
    pub fn due(&mut self, now: i64, room: usize) -> Due {
        let mut missed = 0u64;
        for site in self.sites.values_mut().filter(|s| s.next_due_ms <= now) {
            let slot = site.schedule.slot_at(now);
            // Late since it became due (a new site is due from when it
            // became ours, not from its slot's start).
            let late = now - site.next_due_ms;
            if late > misfire_ms(site.schedule.interval_ms) {
                site.next_due_ms = site.schedule.scheduled_at(slot + 1);
                missed += 1;
            }
        }
        let mut waiting: Vec<&Site> = self
            .sites
            .values()
            .filter(|s| s.next_due_ms <= now)
            .collect();
        if waiting.len() > room {
            waiting.sort_unstable_by_key(|s| s.next_due_ms);
            waiting.truncate(room);
        }
        let rounds = waiting
            .into_iter()
            .map(|s| {
                let slot = s.schedule.slot_at(now);
                NewRound {
                    website_id: s.website.id,
                    slot,
                    scheduled_at_ms: s.schedule.scheduled_at(slot),
                    // Room for one replacement after a missed first deadline.
                    deadline_ms: now + 2 * self.task_deadline_ms(s),
                }
            })
            .collect();
        Due { rounds, missed }
    }

    /// `due` was inserted and `opened` are the rounds the insert created
    /// (the rest were opened before, by this hub or another). Each site
    /// moves on to its next slot; returns what the new rounds' tasks carry.
    pub fn opened(&mut self, due: &[NewRound], opened: &[OpenedRound], now: i64) -> Vec<RoundSpec> {
        for r in due {
            if let Some(site) = self.sites.get_mut(&r.website_id) {
                site.next_due_ms = site.schedule.scheduled_at(r.slot + 1);
            }
        }
        let by_site: HashMap<WebsiteId, &NewRound> =
            due.iter().map(|r| (r.website_id, r)).collect();
        opened
            .iter()
            .filter_map(|o| {
                let site = self.sites.get(&o.website_id)?;
                let new = by_site.get(&o.website_id)?;
                let w = &site.website;
                Some(RoundSpec {
                    round_id: o.round_id,
                    website_id: w.id,
                    slot: new.slot,
                    scheduled_at_ms: o.scheduled_at_ms,
                    deadline_ms: new.deadline_ms,
                    task_deadline_ms: now + self.task_deadline_ms(site),
                    url: w.url.clone(),
                    check: CheckSpec {
                        timeout_ms: w.timeout_ms as u32,
                        expected_status: StatusRange {
                            min: w.expected_status_min as u16,
                            max: w.expected_status_max as u16,
                        },
                        keyword: w.keyword.clone(),
                        follow_redirects: w.follow_redirects,
                    },
                })
            })
            .collect()
    }

    /// A round opened for `website_id` that nobody could take after all
    /// (full queues): its slot is due again, to be retried rather than
    /// burnt (the caller deletes the round).
    pub fn give_back(&mut self, website_id: WebsiteId, scheduled_at_ms: i64) {
        if let Some(site) = self.sites.get_mut(&website_id) {
            site.next_due_ms = scheduled_at_ms;
        }
    }

    /// A task's time to answer for this site: the setting, capped at the
    /// interval.
    fn task_deadline_ms(&self, site: &Site) -> i64 {
        self.task_deadline_ms.min(site.schedule.interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::RoundId;

    const TD: i64 = 30_000;

    fn website(id: i64, interval_secs: i32) -> Website {
        Website {
            id: WebsiteId(id),
            url: format!("http://127.0.0.1/{id}"),
            interval_secs,
            timeout_ms: 5_000,
            expected_status_min: 200,
            expected_status_max: 299,
            keyword: Some("ok".into()),
            follow_redirects: false,
            enabled: true,
            owner: "owner".into(),
        }
    }

    fn next_due(s: &Sites, id: i64) -> i64 {
        s.sites[&WebsiteId(id)].next_due_ms
    }

    /// A time at which `id`'s current slot started `into` ms ago.
    fn into_slot(id: i64, interval_secs: u32, slot: i64, into: i64) -> i64 {
        Schedule::new(WebsiteId(id), interval_secs).scheduled_at(slot) + into
    }

    #[test]
    fn a_new_site_is_due_at_once_and_a_dropped_one_is_forgotten() {
        let mut s = Sites::new(10, TD);
        let now = 1_000_000;
        s.reconcile(vec![website(1, 60), website(2, 60)], now);
        assert_eq!(s.owned(), 2);
        assert_eq!(next_due(&s, 1), now);
        s.reconcile(vec![website(2, 60)], now + 1);
        assert_eq!(s.owned(), 1);
        assert!(!s.sites.contains_key(&WebsiteId(1)));
        // Still due from when it became ours, not from the second reload.
        assert_eq!(next_due(&s, 2), now);
    }

    #[test]
    fn a_change_to_some_sites_touches_only_those() {
        let mut s = Sites::new(10, TD);
        let now = 1_000_000;
        s.reconcile(vec![website(1, 60), website(2, 60), website(3, 60)], now);
        let due3 = next_due(&s, 3);
        // 1 was paused (not in `mine`), 2 changed its interval, 4 is new;
        // 3 was not named and stays as it was.
        s.reconcile_some(
            &[WebsiteId(1), WebsiteId(2), WebsiteId(4)],
            vec![website(2, 120), website(4, 60)],
            now + 5,
        );
        assert_eq!(s.owned(), 3);
        assert!(!s.sites.contains_key(&WebsiteId(1)));
        let sched2 = Schedule::new(WebsiteId(2), 120);
        assert_eq!(
            next_due(&s, 2),
            sched2.scheduled_at(sched2.slot_at(now + 5) + 1)
        );
        assert_eq!(next_due(&s, 3), due3);
        assert_eq!(next_due(&s, 4), now + 5);
    }

    #[test]
    fn many_sites_at_once_start_at_their_next_slot() {
        let mut s = Sites::new(10, TD);
        let now = 10_000_000;
        let n = CATCH_UP_BULK as i64 + 1;
        s.reconcile((1..=n).map(|id| website(id, 60)).collect(), now);
        for id in 1..=n {
            let sched = Schedule::new(WebsiteId(id), 60);
            assert_eq!(next_due(&s, id), sched.scheduled_at(sched.slot_at(now) + 1));
        }
        // Long intervals: a next slot more than BULK_MAX_WAIT_MS away is not
        // waited for; the current one runs, spread over that time.
        let mut s = Sites::new(10, TD);
        s.reconcile((1..=n).map(|id| website(id, 3_600)).collect(), now);
        for id in 1..=n {
            let sched = Schedule::new(WebsiteId(id), 3_600);
            let next_slot = sched.scheduled_at(sched.slot_at(now) + 1);
            let want = if next_slot - now <= BULK_MAX_WAIT_MS {
                next_slot
            } else {
                now + sched.phase_ms % BULK_MAX_WAIT_MS
            };
            assert_eq!(next_due(&s, id), want);
            assert!(next_due(&s, id) - now <= BULK_MAX_WAIT_MS);
        }
        // Exactly CATCH_UP_BULK new sites still start at once.
        let mut s = Sites::new(10, TD);
        s.reconcile((1..n).map(|id| website(id, 60)).collect(), now);
        assert!((1..n).all(|id| next_due(&s, id) == now));
    }

    #[test]
    fn a_changed_interval_moves_the_site_to_its_next_slot_and_the_floor_holds() {
        let mut s = Sites::new(10, TD);
        let now = 1_000_000;
        s.reconcile(vec![website(1, 60)], now);
        // Unchanged schedule: the site keeps its place; the row is updated.
        let mut renamed = website(1, 60);
        renamed.url = "http://127.0.0.1/new".into();
        s.reconcile(vec![renamed], now + 5);
        assert_eq!(next_due(&s, 1), now);
        assert_eq!(s.sites[&WebsiteId(1)].website.url, "http://127.0.0.1/new");
        // New interval: next slot of the new schedule.
        s.reconcile(vec![website(1, 120)], now + 10);
        let sched = Schedule::new(WebsiteId(1), 120);
        assert_eq!(s.sites[&WebsiteId(1)].schedule, sched);
        assert_eq!(
            next_due(&s, 1),
            sched.scheduled_at(sched.slot_at(now + 10) + 1)
        );
        // Below the floor (and a nonsense 0): the floor.
        s.reconcile(vec![website(1, 3), website(2, 0)], now);
        assert_eq!(
            s.sites[&WebsiteId(1)].schedule,
            Schedule::new(WebsiteId(1), 10)
        );
        assert_eq!(
            s.sites[&WebsiteId(2)].schedule,
            Schedule::new(WebsiteId(2), 10)
        );
    }

    #[test]
    fn a_due_round_carries_its_slot_and_room_for_one_replacement() {
        let mut s = Sites::new(10, TD);
        let now = into_slot(1, 60, 500, 100);
        s.reconcile(vec![website(1, 60), website(2, 20)], now);
        let due = s.due(now, 10);
        assert_eq!(due.missed, 0);
        let mut rounds = due.rounds;
        rounds.sort_by_key(|r| r.website_id);
        let sched = Schedule::new(WebsiteId(1), 60);
        assert_eq!(
            rounds[0],
            NewRound {
                website_id: WebsiteId(1),
                slot: 500,
                scheduled_at_ms: sched.scheduled_at(500),
                deadline_ms: now + 2 * TD,
            }
        );
        // The task deadline is capped at the interval.
        assert_eq!(rounds[1].deadline_ms, now + 2 * 20_000);
        // Until the rounds are opened, their sites stay due.
        assert_eq!(s.due(now + 1, 10).rounds.len(), 2);
    }

    #[test]
    fn no_more_rounds_than_room_longest_waiting_first() {
        let mut s = Sites::new(10, TD);
        let now = 1_000_000;
        s.reconcile(vec![website(1, 60)], now);
        s.reconcile(vec![website(1, 60), website(2, 60)], now + 300);
        s.reconcile(
            vec![website(1, 60), website(2, 60), website(3, 60)],
            now + 600,
        );
        let due = s.due(now + 700, 2);
        let mut ids: Vec<WebsiteId> = due.rounds.iter().map(|r| r.website_id).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![WebsiteId(1), WebsiteId(2)]);
        assert_eq!(s.due(now + 700, 0).rounds, vec![], "no room, no round");
    }

    #[test]
    fn a_slot_that_could_not_start_in_its_misfire_window_is_skipped() {
        let mut s = Sites::new(10, TD);
        let now = into_slot(1, 60, 500, 0);
        s.reconcile(vec![website(1, 60)], now);
        // Within half the interval capped at 10 s: still runs.
        assert_eq!(s.due(now + 10_000, 1).rounds.len(), 1);
        let due = s.due(now + 10_001, 1);
        assert_eq!(due.missed, 1);
        assert!(due.rounds.is_empty());
        assert_eq!(
            next_due(&s, 1),
            Schedule::new(WebsiteId(1), 60).scheduled_at(501)
        );
        // Short intervals: half the interval, at least 1 s.
        assert_eq!(misfire_ms(10_000), 5_000);
        assert_eq!(misfire_ms(1_000), 1_000);
        assert_eq!(misfire_ms(60_000), 10_000);
    }

    #[test]
    fn opened_rounds_move_their_sites_on_and_carry_the_check() {
        let mut s = Sites::new(10, TD);
        let now = into_slot(1, 60, 500, 100);
        s.reconcile(vec![website(1, 60), website(2, 60)], now);
        let due = s.due(now, 10).rounds;
        let w1 = due.iter().find(|r| r.website_id == WebsiteId(1)).unwrap();
        // Only website 1's round was created; 2's slot had a round already.
        let opened = [OpenedRound {
            round_id: RoundId(77),
            website_id: WebsiteId(1),
            scheduled_at_ms: w1.scheduled_at_ms,
        }];
        let specs = s.opened(&due, &opened, now);
        assert_eq!(
            specs,
            vec![RoundSpec {
                round_id: RoundId(77),
                website_id: WebsiteId(1),
                slot: 500,
                scheduled_at_ms: w1.scheduled_at_ms,
                deadline_ms: now + 2 * TD,
                task_deadline_ms: now + TD,
                url: "http://127.0.0.1/1".into(),
                check: CheckSpec {
                    timeout_ms: 5_000,
                    expected_status: StatusRange { min: 200, max: 299 },
                    keyword: Some("ok".into()),
                    follow_redirects: false,
                },
            }]
        );
        for id in [1, 2] {
            let sched = Schedule::new(WebsiteId(id), 60);
            let slot = sched.slot_at(now);
            assert_eq!(next_due(&s, id), sched.scheduled_at(slot + 1));
        }
        assert!(s.due(now + 1, 10).rounds.is_empty());
    }

    #[test]
    fn a_round_given_back_is_due_again_for_the_same_slot() {
        let mut s = Sites::new(10, TD);
        let now = into_slot(1, 60, 500, 100);
        s.reconcile(vec![website(1, 60)], now);
        let due = s.due(now, 1).rounds;
        let opened = [OpenedRound {
            round_id: RoundId(1),
            website_id: WebsiteId(1),
            scheduled_at_ms: due[0].scheduled_at_ms,
        }];
        s.opened(&due, &opened, now);
        s.give_back(WebsiteId(1), due[0].scheduled_at_ms);
        let again = s.due(now + 1_000, 1);
        // Due since its slot's start (100 ms before the first try).
        assert_eq!(again.rounds.len(), 1);
        assert_eq!(again.rounds[0].slot, 500);
        // Past the misfire window counted from the slot's start: skipped.
        s.give_back(WebsiteId(1), due[0].scheduled_at_ms);
        assert_eq!(s.due(due[0].scheduled_at_ms + 10_001, 1).missed, 1);
    }
}
