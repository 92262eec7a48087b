//! The one task that writes to a connection's socket. Everyone else sends
//! [`Out`] into a bounded channel, so a check task never holds the socket and
//! the reader never waits on a write.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt};
use protocol::{Limits, ValidatorMessage};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::state::{Out, Shared};

/// Writes until both channels close, a [`Out::Close`] is written, or the
/// socket fails. `urgent` (heartbeats, pings) goes ahead of `frames` so a
/// long backlog of results cannot starve the liveness signal.
pub(crate) async fn write_loop<S>(
    mut sink: S,
    mut urgent: mpsc::Receiver<Out>,
    mut frames: mpsc::Receiver<Out>,
    mut pacer: Option<Pacer>,
    shared: Arc<Shared>,
    // Protocol 1 session: results go without their evidence, signed again
    // with this key.
    downgrade: Option<Arc<ed25519_dalek::SigningKey>>,
) -> Result<(), WsError>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    loop {
        let out = tokio::select! {
            biased;
            Some(o) = urgent.recv() => o,
            Some(o) = frames.recv() => o,
            else => return Ok(()),
        };
        match out {
            Out::Close => {
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "validator closing".into(),
                };
                return sink.send(Message::Close(Some(frame))).await;
            }
            Out::Ping => sink.send(Message::Ping(Default::default())).await?,
            Out::Msg(mut m) => {
                if let Some(p) = pacer.as_mut() {
                    p.take().await;
                }
                if let (Some(key), ValidatorMessage::Result(r)) = (&downgrade, m.as_mut()) {
                    if r.evidence.take().is_some() {
                        protocol::crypto::sign_result(key, r);
                    }
                }
                sink.send(Message::text(m.encode())).await?;
                match *m {
                    ValidatorMessage::Result(_) => shared.result_sent(),
                    ValidatorMessage::Heartbeat(_) => shared.heartbeat_sent(),
                    ValidatorMessage::Hello(_) => {}
                }
            }
        }
    }
}

/// A token bucket that keeps us under the rate the hub announced, with a
/// margin: a resend of many pending results after a reconnect would
/// otherwise trip the hub's limiter.
#[derive(Debug)]
pub(crate) struct Pacer {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    /// `None` (no pacing) if the hub announced no rate.
    pub fn for_limits(l: &Limits) -> Option<Self> {
        if l.max_messages_per_sec == 0 {
            return None;
        }
        let burst = f64::from((l.message_burst / 2).max(1));
        Some(Self {
            per_sec: f64::from(l.max_messages_per_sec) * 0.9,
            burst,
            tokens: burst,
            last: Instant::now(),
        })
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let secs = now.duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + secs * self.per_sec).min(self.burst);
        self.last = now;
    }

    pub async fn take(&mut self) {
        self.refill();
        if self.tokens < 1.0 {
            let wait = (1.0 - self.tokens) / self.per_sec;
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            self.refill();
        }
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pacer_allows_a_burst_then_the_rate() {
        let limits = Limits {
            max_frame_bytes: 16 * 1024,
            max_messages_per_sec: 10,
            message_burst: 20,
            auth_timeout_ms: 10_000,
        };
        let mut p = Pacer::for_limits(&limits).unwrap();
        let start = Instant::now();
        for _ in 0..10 {
            p.take().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        for _ in 0..9 {
            p.take().await;
        }
        // 9 more at 9 per second.
        let took = start.elapsed().as_secs_f64();
        assert!((0.99..1.01).contains(&took), "{took}");
        let unlimited = Limits {
            max_messages_per_sec: 0,
            ..limits
        };
        assert!(Pacer::for_limits(&unlimited).is_none());
    }
}
