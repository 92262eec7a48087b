//! `local-solana`: the dev stack's Solana chain (no internet needed). A real
//! SVM (litesvm) behind the JSON-RPC methods the hub's payouts use, on
//! loopback, with a block every `--block-ms`; see `test_support::solana`.
//!
//! ```text
//! local-solana --listen 127.0.0.1:18899 --fund <BASE58 PUBKEY>=<LAMPORTS> [--block-ms 400]
//! ```
//!
//! Prints `local-solana listening on http://ADDR` once ready; runs until
//! SIGINT or SIGTERM. Exit code 2 for an unusable argument.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use test_support::solana::{ChainConfig, SolanaRpc};

struct Args {
    listen: SocketAddr,
    fund: Vec<([u8; 32], u64)>,
    block_ms: u64,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 18899)),
        fund: Vec::new(),
        block_ms: 400,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                args.listen = v
                    .parse()
                    .map_err(|_| format!("--listen {v:?}: not an address"))?;
            }
            "--fund" => {
                let v = value()?;
                let (key, lamports) = v
                    .split_once('=')
                    .ok_or(format!("--fund {v:?}: expected PUBKEY=LAMPORTS"))?;
                let key: [u8; 32] = bs58::decode(key)
                    .into_vec()
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or(format!("--fund {key:?}: not a base58 public key"))?;
                let lamports = lamports
                    .parse()
                    .map_err(|_| format!("--fund {lamports:?}: not a lamport amount"))?;
                args.fund.push((key, lamports));
            }
            "--block-ms" => {
                let v = value()?;
                args.block_ms = v
                    .parse()
                    .ok()
                    .filter(|ms| (10..=60_000).contains(ms))
                    .ok_or(format!("--block-ms {v:?}: must be 10..=60000"))?;
            }
            "-h" | "--help" => {
                return Err(
                    "usage: local-solana [--listen 127.0.0.1:PORT] [--fund PUBKEY=LAMPORTS]... [--block-ms MS]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let cfg = ChainConfig {
            block_interval: Some(Duration::from_millis(args.block_ms)),
            ..ChainConfig::default()
        };
        let chain = match SolanaRpc::start_on(args.listen, cfg).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        };
        for (key, lamports) in &args.fund {
            chain.airdrop(*key, *lamports);
        }
        println!("local-solana listening on {}", chain.url());
        // The same chain through a node 4 blocks behind with 32 slots of
        // history, and through a pool of both (see test_support::solana).
        println!(
            "lagging node: {}; pool: {}",
            chain.lagging_url(),
            chain.pool_url()
        );
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        drop(chain);
        ExitCode::SUCCESS
    })
}
