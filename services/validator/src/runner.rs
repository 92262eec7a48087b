//! The reconnect loop: one session at a time, rotating through the hubs,
//! backing off with jitter after failures.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use backon::{BackoffBuilder, ExponentialBuilder};
use ed25519_dalek::SigningKey;
use protocol::PublicKey;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};
use url::Url;

use crate::check::Checker;
use crate::config::RunConfig;
use crate::session::{self, Ctx, End, SHUTDOWN_GRACE};
use crate::state::{Shared, ValidatorHandle};

/// Delays start at 200 ms and double up to 5 s; backon's jitter adds 0-100%
/// on top, so no wait exceeds 10 s and a fleet of validators dropped at once
/// does not come back in lockstep.
fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}

/// Runs the validator until `shutdown` is cancelled. Fails only on an
/// invalid config; connection trouble is retried forever.
pub async fn run(
    config: RunConfig,
    key: SigningKey,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let shared = Shared::new(PublicKey::from(&key));
    run_with(shared, config, key, shutdown).await
}

/// [`run`] on a new task, with a handle to watch it.
pub fn spawn(
    config: RunConfig,
    key: SigningKey,
    shutdown: CancellationToken,
) -> (ValidatorHandle, JoinHandle<anyhow::Result<()>>) {
    let shared = Shared::new(PublicKey::from(&key));
    let handle = ValidatorHandle::new(shared.clone());
    let task = tokio::spawn(run_with(shared, config, key, shutdown));
    (handle, task)
}

async fn run_with(
    shared: Arc<Shared>,
    config: RunConfig,
    key: SigningKey,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate().context("invalid validator config")?;
    info!(
        public_key = %shared.public_key,
        hubs = ?config.hub_urls.iter().map(Url::as_str).collect::<Vec<_>>(),
        region = %config.region,
        concurrency = config.concurrency,
        "validator starting"
    );
    let ctx = Ctx {
        checker: Checker::with_user_agent(config.allow_private_targets, &config.user_agent),
        permits: Arc::new(Semaphore::new(config.concurrency as usize)),
        key: Arc::new(key),
        shared,
        checks: TaskTracker::new(),
        abort_checks: CancellationToken::new(),
        config,
    };
    let mut backoff_iter = backoff().build();
    let mut rotation = 0usize;
    let mut preferred: VecDeque<Url> = VecDeque::new();
    let mut generation = 0u64;
    loop {
        let url = preferred.pop_front().unwrap_or_else(|| {
            let hubs = &ctx.config.hub_urls;
            let u = hubs[rotation % hubs.len()].clone();
            rotation += 1;
            u
        });
        generation += 1;
        let wait = match session::run(&ctx, &url, generation, &shutdown).await {
            End::Shutdown => break,
            End::Reconnect { at, urls } => {
                backoff_iter = backoff().build();
                // Start again from the first URL (typically the load
                // balancer, which has taken the leaving hub out).
                rotation = 0;
                preferred = urls.into();
                at.saturating_duration_since(Instant::now())
            }
            End::Lost { welcomed } => {
                if welcomed {
                    backoff_iter = backoff().build();
                    rotation = 0;
                }
                backoff_iter.next().unwrap_or(Duration::from_secs(10))
            }
        };
        debug!(wait_ms = wait.as_millis() as u64, "reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    // Whatever still runs had its grace inside the session (or there was
    // no socket to send it on): stop it.
    ctx.abort_checks.cancel();
    ctx.checks.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, ctx.checks.wait()).await;
    info!("validator stopped");
    Ok(())
}
