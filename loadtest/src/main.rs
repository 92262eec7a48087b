//! `loadtest`: drives the hubs with simulated validators and websites and
//! reports what every process involved did.
//!
//! - N validators: real WebSocket connections (through the load balancer by
//!   default), real ed25519 keys, the real protocol; each result is signed
//!   over its own task token; configurable check latency and failure rate.
//! - M websites: rows in PostgreSQL that point nowhere; tasks are answered
//!   without HTTP, so the hubs, Redis and PostgreSQL are what is measured.
//! - Ramp up, hold (the measured window), ramp down; bounded in time;
//!   loopback only; a progress line on stderr every few seconds; a human
//!   summary on stdout and the same report as JSON with `--json`.
//!
//! Scenarios: `connections`, `ingest`, `schedule`, `soak`, `burst` (see
//! `--help`). `scripts/loadtest.sh` starts a private stack (PostgreSQL,
//! Redis, hubs, HAProxy) and runs this against it.
//!
//! Hub CPU per tick is also given in `verify_result`s timed on this machine
//! before the load and after it ([`calibrate`]), on the main thread while
//! the runtime is not running.
//!
//! Exit status: 0 completed, 2 bad arguments, 1 a setup failure (database,
//! report file), 3 a burst that completed and failed its verdict (results
//! lost), 130 interrupted (SIGINT/SIGTERM) and 124 stopped by
//! `--max-secs`; the last three still print the report.
//!
//! # Modules
//! - [`cli`]: flags, scenario defaults, the checked [`cli::Plan`];
//! - [`burst`]: the burst's due second and the website ids that land in it;
//! - [`calibrate`]: `verify_result` timed on this machine, the CPU model;
//! - [`validator`]: one simulated validator;
//! - [`run`]: the phases of a run and the report assembly;
//! - [`stats`]: counters and tool-side histograms;
//! - [`prom`]: hub metrics (read with `prometheus-parse`) summed over hubs,
//!   histogram differences, quantiles;
//! - [`procs`]: CPU and RSS from `/proc` (read with `procfs`);
//! - [`sites`]: the simulated websites and the tick count in PostgreSQL;
//! - [`net`]: loopback checks, source-address binding, the open-file limit,
//!   the `/metrics` GET;
//! - [`report`]: the report, as text and JSON.

mod burst;
mod calibrate;
mod cli;
mod net;
mod procs;
mod prom;
mod report;
mod run;
mod sites;
mod stats;
mod validator;

use std::process::ExitCode;

use clap::Parser;

use crate::run::{log, Exit};

fn main() -> ExitCode {
    let plan = match cli::Cli::parse().plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Each connection is one descriptor here (two more in HAProxy and one in
    // a hub, which are other processes with their own limits).
    let want = plan.validators as u64 + 4096;
    match net::raise_nofile(want) {
        Ok(n) if n < want => log(format!(
            "warning: open-file limit is {n}, below the {want} this run may need; raise the hard limit (ulimit -Hn)"
        )),
        Ok(_) => {}
        Err(e) => log(format!("warning: {e:#}")),
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = plan.threads {
        rt.worker_threads(n);
    }
    let calibrate = plan.calibrate;
    let before = calibrate.then(|| {
        log("timing verify_result before the load (--no-calibrate skips it)");
        calibrate::verify_result_timing()
    });
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json = plan.json.clone();
    let result = rt.block_on(run::run(plan));
    // Validators still closing are not waited for any longer.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    let (mut report, exit) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            return ExitCode::from(1);
        }
    };
    // Every connection is closed now. Not after an interruption: whoever
    // pressed Ctrl-C wants the report now.
    let after = (calibrate && exit != Exit::Interrupted).then(|| {
        log("timing verify_result after the load");
        calibrate::verify_result_timing()
    });
    report.cpu_model = calibrate::read_cpu_model();
    report.hub_cpu_per_tick_in_verify_results = calibrate::in_verify_results(
        report.hub_cpu_us_per_tick,
        [before.as_ref(), after.as_ref()],
    );
    report.verify_result_us_before = before;
    report.verify_result_us_after = after;
    print!("{}", report.render());
    log(format!(
        "{}: {}",
        run::describe_exit(exit),
        run::headline(&report)
    ));
    if let Some(path) = json {
        if let Err(e) = report.write_json(&path) {
            eprintln!("loadtest: {e:#}");
            return ExitCode::from(1);
        }
        log(format!("report written to {}", path.display()));
    }
    let failed = report
        .burst
        .as_ref()
        .is_some_and(|b| !b.failures.is_empty());
    match exit {
        Exit::Completed if failed => ExitCode::from(3),
        Exit::Completed => ExitCode::SUCCESS,
        Exit::Interrupted => ExitCode::from(130),
        Exit::TimedOut => ExitCode::from(124),
    }
}
