//! `validator`: keygen, pubkey, run. The work is in the library; this file
//! parses flags, maps errors to exit codes and turns signals into shutdown.
//!
//! Exit codes: 0 after a clean shutdown, 2 for an unusable argument (bad
//! keypair file or one others may read, hub URL, region, tags,
//! concurrency), 1 for anything else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use protocol::PublicKey;
use tokio_util::sync::CancellationToken;
use validator::{RawConfig, RunConfig};

#[derive(Parser)]
#[command(
    name = "validator",
    version,
    about = "Uptime validator node",
    after_help = "Exit codes: 0 after a clean shutdown, 2 for an unusable argument, 1 otherwise."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Read a keypair file even if others may read it or group or others
    /// may write it (refused by default, as ssh refuses such a key).
    #[arg(long, global = true, env = "VALIDATOR_ALLOW_INSECURE_KEYPAIR")]
    allow_insecure_keypair: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a new Solana CLI keypair file and print its public key.
    Keygen {
        /// Where to write it; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the base58 public key of a keypair file.
    Pubkey {
        #[arg(long, env = "VALIDATOR_KEYPAIR")]
        keypair: PathBuf,
    },
    /// Connect to the hubs and run checks until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Show earned, pending and paid lamports, with transaction signatures.
    Earnings {
        /// Any hub (ws://, wss://, http:// or https://).
        #[arg(
            long,
            env = "VALIDATOR_HUB_URLS",
            value_delimiter = ',',
            required = true
        )]
        hub: Vec<String>,
        /// Keypair file whose public key to look up.
        #[arg(
            long,
            env = "VALIDATOR_KEYPAIR",
            required_unless_present = "public_key"
        )]
        keypair: Option<PathBuf>,
        /// Or the base58 public key itself.
        #[arg(long, conflicts_with = "keypair")]
        public_key: Option<String>,
        /// Print the JSON document instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Hub WebSocket URL (ws:// or wss://); repeat for several.
    #[arg(
        long = "hub",
        env = "VALIDATOR_HUB_URLS",
        value_delimiter = ',',
        required = true
    )]
    hubs: Vec<String>,
    /// Solana CLI keypair file (JSON array of 64 numbers).
    #[arg(long, env = "VALIDATOR_KEYPAIR")]
    keypair: PathBuf,
    /// Where this validator runs: 1-32 bytes of [a-z0-9-].
    #[arg(long, env = "VALIDATOR_REGION")]
    region: String,
    /// Label sent to the hub, e.g. isp:hetzner: 1-32 bytes of [a-z0-9-_.:];
    /// at most 16. Repeat for several (comma-separated in VALIDATOR_TAGS).
    #[arg(long = "tag", env = "VALIDATOR_TAGS", value_delimiter = ',')]
    tags: Vec<String>,
    /// Most checks at once (1-1000).
    #[arg(long, env = "VALIDATOR_CONCURRENCY", default_value = "32")]
    concurrency: String,
    /// Allow checks of loopback/private/link-local addresses (tests, demos).
    #[arg(long, env = "VALIDATOR_ALLOW_PRIVATE_TARGETS")]
    allow_private_targets: bool,
    /// User-Agent for checks.
    #[arg(long, env = "VALIDATOR_USER_AGENT")]
    user_agent: Option<String>,
    /// Where earnings are paid, when not to this validator's key (a wallet
    /// whose secret is not on this server). Sent to hubs that speak
    /// protocol 2; one validator's alone.
    #[arg(long, env = "VALIDATOR_PAYOUT_ADDRESS")]
    payout_address: Option<String>,
}

/// An error with the exit code it earns.
struct Fail(u8, String);

fn usage(e: impl std::fmt::Display) -> Fail {
    Fail(2, e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let insecure_ok = cli.allow_insecure_keypair;
    let result = match cli.cmd {
        Cmd::Keygen { out } => keygen(&out),
        Cmd::Pubkey { keypair } => {
            read_keypair(&keypair, insecure_ok).map(|k| println!("{}", PublicKey::from(&k)))
        }
        Cmd::Run(args) => run(args, insecure_ok),
        Cmd::Earnings {
            hub,
            keypair,
            public_key,
            json,
        } => earnings(&hub[0], keypair, public_key, json, insecure_ok),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(code)
        }
    }
}

/// Reads `--keypair`; a file open to others is a usage error (exit 2) that
/// names the flag allowing it.
fn read_keypair(
    path: &std::path::Path,
    allow_insecure: bool,
) -> Result<ed25519_dalek::SigningKey, Fail> {
    protocol::keypair::read_with(path, allow_insecure).map_err(|e| match e {
        protocol::keypair::KeypairError::Insecure { .. } => {
            usage(format!("--keypair: {e} (--allow-insecure-keypair)"))
        }
        e => usage(format!("--keypair: {e}")),
    })
}

fn keygen(out: &std::path::Path) -> Result<(), Fail> {
    if out.exists() {
        return Err(usage(format!(
            "--out {}: file exists; refusing to overwrite a keypair",
            out.display()
        )));
    }
    let key = protocol::keypair::generate();
    protocol::keypair::write_new(out, &key).map_err(usage)?;
    println!("{}", PublicKey::from(&key));
    Ok(())
}

fn earnings(
    hub: &str,
    keypair: Option<PathBuf>,
    public_key: Option<String>,
    json: bool,
    allow_insecure_keypair: bool,
) -> Result<(), Fail> {
    let key = match (keypair, public_key) {
        (_, Some(k)) => PublicKey::from_base58(&k).ok_or_else(|| {
            usage(format!(
                "--public-key {k:?}: not a base58 ed25519 public key"
            ))
        })?,
        (Some(path), None) => {
            read_keypair(&path, allow_insecure_keypair).map(|k| PublicKey::from(&k))?
        }
        (None, None) => return Err(usage("give --keypair or --public-key")),
    };
    validator::earnings::http_base(hub).map_err(usage)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail(1, format!("cannot start the runtime: {e}")))?;
    let e = rt
        .block_on(validator::earnings::fetch(hub, &key))
        .map_err(|e| Fail(1, e.to_string()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&e).unwrap_or_default());
    } else {
        print!("{}", validator::earnings::render(&e));
    }
    Ok(())
}

fn run(args: RunArgs, allow_insecure_keypair: bool) -> Result<(), Fail> {
    let config = RunConfig::from_raw(RawConfig {
        hubs: args.hubs,
        keypair: args.keypair,
        region: args.region,
        tags: args.tags,
        concurrency: args.concurrency,
        allow_private_targets: args.allow_private_targets,
        user_agent: args.user_agent,
        payout_address: args.payout_address,
    })
    .map_err(usage)?;
    let key = read_keypair(&config.keypair, allow_insecure_keypair)?;

    runtime::init_tracing("info");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail(1, format!("cannot start the runtime: {e}")))?;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        // Listen before starting, so a signal sent as soon as we log
        // "validator starting" is never the default, abrupt kill.
        let mut signals = runtime::Signals::listen()
            .map_err(|e| Fail(1, format!("cannot listen for signals: {e}")))?;
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            let sig = signals.recv().await;
            tracing::info!("{sig}: shutting down");
            cancel.cancel();
        });
        validator::run(config, key, shutdown)
            .await
            .map_err(|e| Fail(1, format!("{e:#}")))
    })
}
