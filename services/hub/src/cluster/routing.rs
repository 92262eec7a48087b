//! Hub-to-hub messages over Redis pub/sub, one inbox channel per hub.
//!
//! Delivery is at most once: a message to a hub that is restarting is lost,
//! and the sender finds out the normal way, by a deadline passing. Inboxes
//! are bounded on both sides: outgoing messages wait in a bounded queue for
//! the publisher task; incoming ones are handed on with `try_send`, and
//! whatever cannot be taken is counted and dropped.

use std::sync::Arc;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{EventInterface, PubsubInterface};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use protocol::{PublicKey, Task};

use crate::cluster::Keys;
use crate::metrics::Metrics;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InboxMessage {
    /// Deliver this task to the validator it names, if connected here.
    Task { task: Task },
    /// A result for a round this hub owns was committed elsewhere. The
    /// round id travels as the integer it is on every wire (the router
    /// converts it).
    Answered { round_id: i64, task_id: Uuid },
    /// A newer session for `validator` opened elsewhere: close ours if it
    /// is still this generation.
    Kick {
        validator: PublicKey,
        generation: u64,
    },
    /// A hub's probe to itself, timing the pub/sub round trip.
    Ping { sent_at_ms: i64 },
}

/// Sends to other hubs through a bounded queue drained by `run_publisher`.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<(String, InboxMessage)>,
    metrics: Arc<Metrics>,
}

impl Outbox {
    /// Queues `msg` for `hub`; false (and counted) if the queue is full.
    pub fn send(&self, hub: &str, msg: InboxMessage) -> bool {
        match self.tx.try_send((hub.to_string(), msg)) {
            Ok(()) => true,
            Err(_) => {
                self.metrics
                    .cross_hub_dropped
                    .with_label_values(&["out"])
                    .inc();
                false
            }
        }
    }
}

pub fn outbox(
    capacity: usize,
    metrics: Arc<Metrics>,
) -> (Outbox, mpsc::Receiver<(String, InboxMessage)>) {
    let (tx, rx) = mpsc::channel(capacity);
    (Outbox { tx, metrics }, rx)
}

/// Publishes queued messages until `stop` and the queue is empty.
pub async fn run_publisher(
    client: Client,
    keys: Keys,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<(String, InboxMessage)>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, PUBLISH_BATCH) => if n == 0 { return },
            // Stop only once the queue is empty: the last summaries matter.
            _ = stop.cancelled() => {
                while batch.len() < PUBLISH_BATCH {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                if batch.is_empty() {
                    return;
                }
            }
        }
        // All of a batch in flight at once: fred writes them back to back on
        // its connection (auto-pipelining), one round trip instead of one per
        // message (awaiting each PUBLISH capped this at about 1/RTT msgs/s).
        let sends = batch.drain(..).map(|(hub, msg)| {
            let body = serde_json::to_string(&msg).expect("inbox messages serialize");
            let client = &client;
            let channel = keys.hub_inbox(&hub);
            async move {
                let r: Result<i64, _> = client.publish(channel, body).await;
                (hub, r)
            }
        });
        for (hub, r) in futures_util::future::join_all(sends).await {
            match r {
                Ok(_) => metrics.cross_hub_messages.with_label_values(&["out"]).inc(),
                Err(e) => {
                    metrics.redis_errors.inc();
                    tracing::debug!(error = %e, %hub, "publishing to a hub failed");
                }
            }
        }
    }
}

/// Messages in flight at once.
const PUBLISH_BATCH: usize = 512;

/// Hands this hub's inbox messages to `deliver` until `stop`.
pub async fn run_inbox(
    subscriber: SubscriberClient,
    keys: Keys,
    hub_id: String,
    metrics: Arc<Metrics>,
    deliver: impl Fn(InboxMessage),
    stop: CancellationToken,
) {
    let channel = keys.hub_inbox(&hub_id);
    let mut messages = subscriber.message_rx();
    let mut subscribed = false;
    let mut retry = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = retry.tick(), if !subscribed => {
                match subscriber.subscribe(channel.clone()).await {
                    Ok(()) => subscribed = true,
                    Err(e) => {
                        metrics.redis_errors.inc();
                        tracing::warn!(error = %e, "subscribing to this hub's inbox failed");
                    }
                }
            }
            m = messages.recv() => match m {
                Ok(m) if m.channel == channel => {
                    metrics.cross_hub_messages.with_label_values(&["in"]).inc();
                    let Some(text) = m.value.as_str() else { continue };
                    match serde_json::from_str::<InboxMessage>(&text) {
                        Ok(msg) => deliver(msg),
                        Err(e) => tracing::warn!(error = %e, "unreadable inbox message"),
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    metrics.pubsub_lagged.inc_by(n);
                    tracing::warn!(missed = n, "fell behind on this hub's inbox");
                }
                Err(broadcast::error::RecvError::Closed) => messages = subscriber.message_rx(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_messages_round_trip_as_tagged_json() {
        let m = InboxMessage::Answered {
            round_id: 7,
            task_id: Uuid::from_u128(9),
        };
        let s = serde_json::to_string(&m).unwrap();
        assert!(s.contains(r#""kind":"answered""#), "{s}");
        assert_eq!(serde_json::from_str::<InboxMessage>(&s).unwrap(), m);
    }
}
