//! `local-solana`: the dev stack's Solana chain (no internet needed). A real
//! SVM (litesvm) behind the JSON-RPC methods the hub's payouts use, on
//! loopback, with a block every `--block-ms`; see `test_support::solana`.
//!
//! ```text
//! local-solana --listen 127.0.0.1:18899 --fund <BASE58 PUBKEY>=<LAMPORTS> [--block-ms 400]
//!              [--blockhash-validity 150]
//! ```
//!
//! Prints `local-solana listening on http://ADDR` once ready; runs until
//! SIGINT or SIGTERM. Exit code 2 for an unusable argument.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use test_support::solana::{ChainConfig, SolanaRpc};

#[derive(Debug, Parser)]
#[command(
    name = "local-solana",
    about = "A local Solana chain (litesvm behind JSON-RPC) for the dev stack"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18899")]
    listen: SocketAddr,
    /// Give an account lamports at start (repeatable).
    #[arg(long, value_name = "PUBKEY=LAMPORTS", value_parser = parse_fund)]
    fund: Vec<([u8; 32], u64)>,
    /// A block every this many milliseconds.
    #[arg(long, default_value_t = 400, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    block_ms: u64,
    /// Blocks a blockhash stays valid (mainnet: 150). A payout hub waits
    /// this many blocks and 32 more after it starts before its first
    /// payment, so the dev stack uses fewer.
    #[arg(long, default_value_t = 150, value_name = "BLOCKS",
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    blockhash_validity: u64,
}

/// `BASE58_PUBKEY=LAMPORTS`.
fn parse_fund(v: &str) -> Result<([u8; 32], u64), String> {
    let (key, lamports) = v
        .split_once('=')
        .ok_or(format!("{v:?}: expected PUBKEY=LAMPORTS"))?;
    let key: [u8; 32] = bs58::decode(key)
        .into_vec()
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(format!("{key:?}: not a base58 public key"))?;
    let lamports = lamports
        .parse()
        .map_err(|_| format!("{lamports:?}: not a lamport amount"))?;
    Ok((key, lamports))
}

fn main() -> ExitCode {
    // A usage error exits with 2 (clap's code).
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let cfg = ChainConfig {
            block_interval: Some(Duration::from_millis(args.block_ms)),
            blockhash_validity: args.blockhash_validity,
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
        runtime::shutdown_signal().await;
        drop(chain);
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("local-solana").chain(args.iter().copied()))
    }

    #[test]
    fn flags_defaults_and_refusals() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.listen, SocketAddr::from(([127, 0, 0, 1], 18899)));
        assert_eq!((a.block_ms, a.fund.len()), (400, 0));
        let key = bs58::encode([7u8; 32]).into_string();
        let a = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--fund",
            &format!("{key}=1000"),
            "--fund",
            &format!("{key}=5"),
            "--block-ms",
            "10",
        ])
        .unwrap();
        assert_eq!(a.fund, vec![([7u8; 32], 1000), ([7u8; 32], 5)]);
        assert_eq!(a.block_ms, 10);
        for bad in [
            &["--block-ms", "9"][..],
            &["--block-ms", "60001"],
            &["--fund", "nokey"],
            &["--fund", "abc=1"],
            &["--fund", &format!("{key}=lots")],
            &["--listen", "localhost"],
            &["--what"],
        ] {
            let e = parse(bad).unwrap_err();
            // Usage errors exit with 2, as before clap.
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
