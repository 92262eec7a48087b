//! What every binary of the workspace sets up the same way.
//!
//! # Layout
//! - [`Signals`], [`shutdown_signal`]: SIGINT (Ctrl-C) and SIGTERM (what
//!   `kill`, systemd and Kubernetes send) as one stream, saying which came.
//! - [`init_tracing`]: the `tracing` subscriber the services log through.
//! - [`Secret`]: a setting that never shows in `Debug` output.
//! - [`client_ip`], [`TrustedProxies`]: the client's address behind
//!   trusted load balancers (addresses and CIDR ranges).
//! - [`guard`]: outbound HTTP that refuses private targets (the validator's
//!   checks, the api's alert webhooks), with `protocol::target`'s rules.
//!
//! Knows nothing of the services.

mod forwarded;
pub mod guard;
mod secret;

pub use forwarded::{client_ip, BadProxy, TrustedProxies};
pub use secret::Secret;

use std::fmt;
use std::io::IsTerminal;

/// A signal that asks a process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: Ctrl-C in a terminal.
    Interrupt,
    /// SIGTERM: `kill`, systemd, Kubernetes.
    Terminate,
}

impl Signal {
    /// `SIGINT` or `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// SIGINT and SIGTERM, listened to from [`Signals::listen`] on.
///
/// Once listening, neither signal kills the process any more (for the rest
/// of its life, even after this is dropped: tokio never restores the default
/// action), so listen before the work starts: a signal sent as soon as the
/// process says it is up then stops it cleanly instead of abruptly. A
/// second signal is only seen by calling [`Signals::recv`] again.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. Needs a tokio runtime with signals enabled
    /// (`enable_all`).
    #[cfg(unix)]
    pub fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    #[cfg(not(unix))]
    pub fn listen() -> std::io::Result<Self> {
        Ok(Self {})
    }

    /// The next SIGINT or SIGTERM.
    #[cfg(unix)]
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::Interrupt,
            _ = self.term.recv() => Signal::Terminate,
        }
    }

    /// The next Ctrl-C (there is no SIGTERM here).
    #[cfg(not(unix))]
    pub async fn recv(&mut self) -> Signal {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        Signal::Interrupt
    }
}

/// Resolves on the first SIGINT or SIGTERM and says which. The handlers are
/// installed when this is first polled; use [`Signals::listen`] to install
/// them earlier, or to see a second signal.
///
/// # Panics
/// If the handlers cannot be installed (no tokio runtime with signals
/// enabled): a process that cannot be stopped cleanly should not start.
pub async fn shutdown_signal() -> Signal {
    Signals::listen()
        .unwrap_or_else(|e| panic!("listening for SIGINT and SIGTERM: {e}"))
        .recv()
        .await
}

/// Logs of `tracing` events to stderr, in tracing-subscriber's default
/// format; the filter is `RUST_LOG` (e.g. `info,hub=debug`), else
/// `default_filter`. Colours only when stderr is a terminal and `NO_COLOR`
/// is unset or empty, so log files stay plain text.
///
/// # Panics
/// If a global subscriber is already set (call it once, from `main`).
pub fn init_tracing(default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .init();
}

/// Whether to colour the logs: a terminal, and `NO_COLOR` unset or empty
/// (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }

    #[test]
    fn signals_are_named_as_kill_names_them() {
        assert_eq!(Signal::Interrupt.to_string(), "SIGINT");
        assert_eq!(Signal::Terminate.name(), "SIGTERM");
    }

    /// Real signals to this test process: each is reported once, in order,
    /// and neither kills the process.
    #[cfg(unix)]
    #[tokio::test]
    async fn reports_which_signal_came_and_survives_a_second() {
        let mut signals = Signals::listen().unwrap();
        let raise = |sig| {
            // SAFETY: kill(2) on our own pid; a handler is installed.
            assert_eq!(unsafe { libc::kill(libc::getpid(), sig) }, 0);
        };
        raise(libc::SIGTERM);
        assert_eq!(signals.recv().await, Signal::Terminate);
        raise(libc::SIGINT);
        assert_eq!(signals.recv().await, Signal::Interrupt);
    }
}
