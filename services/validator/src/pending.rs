//! Signed results the hub has not acknowledged yet, kept across reconnects
//! so none is lost when a connection drops between send and ack.

use std::collections::{BTreeMap, HashMap};

use std::time::{Duration, Instant};

use protocol::CheckResult;
use uuid::Uuid;

/// Insertion-ordered and bounded: when full, the oldest entry goes first
/// (it is also the one closest to its deadline).
#[derive(Debug)]
pub(crate) struct Pending {
    cap: usize,
    next_seq: u64,
    by_id: HashMap<Uuid, Entry>,
    order: BTreeMap<u64, Uuid>,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    result: CheckResult,
    /// The connection generation it was last sent on, so a result is written
    /// once per connection however the send paths race (and again on it only
    /// by [`Pending::due_for_resend`]).
    sent_on: Option<u64>,
    /// When it was last sent.
    sent_at: Option<Instant>,
}

impl Pending {
    pub fn new(cap: usize) -> Self {
        assert!(cap > 0);
        Self {
            cap,
            next_seq: 0,
            by_id: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn contains(&self, id: &Uuid) -> bool {
        self.by_id.contains_key(id)
    }

    /// Adds (or replaces) a result; returns the task id evicted to make room.
    pub fn insert(&mut self, result: CheckResult) -> Option<Uuid> {
        let id = result.task_id;
        self.remove(&id);
        let evicted = if self.by_id.len() >= self.cap {
            self.order.pop_first().map(|(_, old)| {
                self.by_id.remove(&old);
                old
            })
        } else {
            None
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, id);
        self.by_id.insert(
            id,
            Entry {
                seq,
                result,
                sent_on: None,
                sent_at: None,
            },
        );
        evicted
    }

    pub fn remove(&mut self, id: &Uuid) -> bool {
        match self.by_id.remove(id) {
            Some(e) => {
                self.order.remove(&e.seq);
                true
            }
            None => false,
        }
    }

    /// The result to send on connection `generation`, unless it was already
    /// sent there (or acknowledged meanwhile).
    pub fn claim(&mut self, id: &Uuid, generation: u64) -> Option<CheckResult> {
        let e = self.by_id.get_mut(id)?;
        if e.sent_on == Some(generation) {
            return None;
        }
        e.sent_on = Some(generation);
        e.sent_at = Some(Instant::now());
        Some(e.result.clone())
    }

    /// Results sent on connection `generation` at least `every` before `now`
    /// and still unacknowledged, oldest first, marked as sent again now: the
    /// hub may have lost the ack (or not written the result yet: a database
    /// outage), and a resend is always safe.
    pub fn due_for_resend(
        &mut self,
        generation: u64,
        now: Instant,
        every: Duration,
    ) -> Vec<CheckResult> {
        let mut due = Vec::new();
        for id in self.order.values() {
            let e = self.by_id.get_mut(id).expect("order and by_id agree");
            if e.sent_on == Some(generation)
                && e.sent_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= every)
            {
                e.sent_at = Some(now);
                due.push(e.result.clone());
            }
        }
        due
    }

    /// Removes results whose deadline is at or before `cutoff_ms`.
    pub fn drop_expired(&mut self, cutoff_ms: i64) -> Vec<Uuid> {
        let gone: Vec<Uuid> = self
            .ids()
            .into_iter()
            .filter(|id| self.by_id[id].result.deadline_ms <= cutoff_ms)
            .collect();
        for id in &gone {
            self.remove(id);
        }
        gone
    }

    /// Task ids, oldest first.
    pub fn ids(&self) -> Vec<Uuid> {
        self.order.values().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{CheckStatus, PublicKey, Signature, TaskToken};

    fn result(n: u128, deadline_ms: i64) -> CheckResult {
        CheckResult {
            task_id: Uuid::from_u128(n),
            website_id: 1,
            round_id: 1,
            slot: 1,
            scheduled_at_ms: 0,
            deadline_ms,
            validator: PublicKey([1; 32]),
            token: TaskToken {
                kid: "k".into(),
                mac: [0; 32],
            },
            status: CheckStatus::Up,
            http_status: Some(200),
            latency_ms: 1,
            error: None,
            checked_at_ms: 0,
            evidence: None,
            signature: Signature([0; 64]),
        }
    }

    #[test]
    fn evicts_oldest_when_full_and_keeps_order() {
        let mut p = Pending::new(2);
        assert_eq!(p.insert(result(1, 10)), None);
        assert_eq!(p.insert(result(2, 10)), None);
        assert_eq!(p.insert(result(3, 10)), Some(Uuid::from_u128(1)));
        assert_eq!(p.ids(), vec![Uuid::from_u128(2), Uuid::from_u128(3)]);
        // Re-inserting moves an entry to the back without evicting anyone.
        assert_eq!(p.insert(result(2, 10)), None);
        assert_eq!(p.ids(), vec![Uuid::from_u128(3), Uuid::from_u128(2)]);
        assert!(p.remove(&Uuid::from_u128(3)));
        assert!(!p.remove(&Uuid::from_u128(3)));
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn claims_once_per_connection() {
        let mut p = Pending::new(10);
        p.insert(result(1, 10));
        let id = Uuid::from_u128(1);
        assert!(p.claim(&id, 1).is_some());
        assert!(p.claim(&id, 1).is_none());
        assert!(p.claim(&id, 2).is_some());
        assert!(p.claim(&Uuid::from_u128(9), 2).is_none());
    }

    #[test]
    fn resends_what_waited_long_enough_on_this_connection() {
        let mut p = Pending::new(10);
        p.insert(result(1, 10));
        p.insert(result(2, 10));
        p.insert(result(3, 10));
        let (one, two) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert!(p.claim(&one, 7).is_some());
        assert!(p.claim(&two, 6).is_some()); // an older connection
        let every = Duration::from_secs(10);
        let now = Instant::now();
        assert!(p.due_for_resend(7, now, every).is_empty(), "too early");
        let later = now + every + Duration::from_millis(1);
        let due: Vec<Uuid> = p
            .due_for_resend(7, later, every)
            .iter()
            .map(|r| r.task_id)
            .collect();
        assert_eq!(due, vec![one], "only what was sent on this connection");
        assert!(
            p.due_for_resend(7, later, every).is_empty(),
            "not again until `every` passes"
        );
        assert_eq!(p.due_for_resend(7, later + every, every).len(), 1);
        p.remove(&one);
        assert!(
            p.due_for_resend(7, later + every * 3, every).is_empty(),
            "acknowledged"
        );
    }

    #[test]
    fn drops_expired() {
        let mut p = Pending::new(10);
        p.insert(result(1, 100));
        p.insert(result(2, 200));
        p.insert(result(3, 50));
        assert_eq!(
            p.drop_expired(100),
            vec![Uuid::from_u128(1), Uuid::from_u128(3)]
        );
        assert_eq!(p.ids(), vec![Uuid::from_u128(2)]);
    }
}
