//! `api serve`, and the operator's commands: accounts and quotas, and the
//! OpenAPI document.

use std::io::BufRead;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use utoipa::OpenApi;

use crate::app::{self, AppState};
use crate::auth::{random_token, Passwords};
use crate::config::Config;
use crate::routes::accounts::{check_email, check_password};

#[derive(Debug, Parser)]
#[command(name = "api", version, about = "Website owners' REST API")]
pub struct Cli {
    /// TOML settings file; `API_*` environment variables override it.
    #[arg(long, global = true, env = "API_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API until SIGTERM or Ctrl-C.
    Serve,
    /// Operator's account commands.
    #[command(subcommand)]
    Accounts(Accounts),
    /// Operator's API key commands.
    #[command(subcommand)]
    Keys(Keys),
    /// Print the OpenAPI document (the one served at /openapi.json).
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum Keys {
    /// Create an API key for an account and print it (once), e.g. to
    /// bootstrap automation or a local demo.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "created by the operator")]
        name: String,
        /// `read` or `write`.
        #[arg(long, default_value = "read")]
        scope: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Accounts {
    /// Create an account (works while sign-up is closed). Without
    /// `--password-stdin` a random password is generated and printed once.
    Create {
        #[arg(long)]
        email: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        max_sites: Option<i32>,
        #[arg(long)]
        min_interval_secs: Option<i32>,
    },
    /// Set an account's quotas.
    Quota {
        #[arg(long)]
        email: String,
        #[arg(long)]
        max_sites: Option<i32>,
        #[arg(long)]
        min_interval_secs: Option<i32>,
    },
}

/// Bad input on the command line (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Openapi = cli.command {
        println!("{}", crate::openapi::ApiDoc::openapi().to_pretty_json()?);
        return Ok(());
    }
    let settings = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(settings.listen).await?;
            tracing::info!(addr = %listener.local_addr()?, "api listening");
            let state = AppState::new(settings).await?;
            app::serve(state, listener, async {
                let s = runtime::shutdown_signal().await;
                tracing::info!(signal = s.name(), "stopping");
            })
            .await
        }
        Command::Accounts(a) => {
            let store = store::Store::connect(&settings.database_url, 2).await?;
            store.migrate().await?;
            accounts(&store, &settings, a).await
        }
        Command::Keys(Keys::Create { email, name, scope }) => {
            let scope = match scope.as_str() {
                "read" => store::KeyScope::Read,
                "write" => store::KeyScope::Write,
                _ => return Err(UsageError("--scope must be read or write".into()).into()),
            };
            let store = store::Store::connect(&settings.database_url, 2).await?;
            store.migrate().await?;
            let account = store
                .account_by_email(&email)
                .await?
                .ok_or_else(|| UsageError(format!("no account with email {email:?}")))?;
            let (key, prefix) = crate::auth::new_api_key();
            let mac = crate::auth::key_mac(&settings.key_secret.0, &key);
            match store
                .create_api_key(
                    account.id,
                    &prefix,
                    &mac,
                    &name,
                    scope,
                    crate::routes::keys::MAX_LIVE_KEYS,
                )
                .await?
            {
                store::NewKey::Created(_) => println!("{key}"),
                store::NewKey::TooMany => {
                    return Err(UsageError(format!(
                        "{email} has {} live keys already; revoke one first",
                        crate::routes::keys::MAX_LIVE_KEYS
                    ))
                    .into())
                }
                store::NewKey::PrefixTaken => {
                    anyhow::bail!("key prefix collision; run the command again")
                }
            }
            Ok(())
        }
        Command::Openapi => unreachable!("handled above"),
    }
}

fn check_quotas(max_sites: Option<i32>, min_interval: Option<i32>) -> Result<(), UsageError> {
    if max_sites.is_some_and(|n| n < 0) {
        return Err(UsageError("--max-sites must be 0 or more".into()));
    }
    if min_interval.is_some_and(|n| !(1..=86_400).contains(&n)) {
        return Err(UsageError("--min-interval-secs must be 1 to 86400".into()));
    }
    Ok(())
}

async fn accounts(
    store: &store::Store,
    settings: &crate::config::Settings,
    a: Accounts,
) -> anyhow::Result<()> {
    match a {
        Accounts::Create {
            email,
            password_stdin,
            max_sites,
            min_interval_secs,
        } => {
            check_quotas(max_sites, min_interval_secs)?;
            check_email(&email).map_err(|e| UsageError(format!("--email: {}", e.message)))?;
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_string(), false)
            } else {
                (random_token(), true)
            };
            check_password(&password)
                .map_err(|e| UsageError(format!("password: {}", e.message)))?;
            let hash = Passwords::new(1)
                .hash(password.clone())
                .await
                .map_err(|e| anyhow::anyhow!(e.message))?;
            let account = store
                .create_account(&store::NewAccount {
                    email: &email,
                    password_hash: &hash,
                    max_sites: max_sites.unwrap_or(settings.default_max_sites),
                    min_interval_secs: min_interval_secs
                        .unwrap_or(settings.default_min_interval_secs),
                })
                .await?
                .ok_or_else(|| UsageError(format!("an account with email {email:?} exists")))?;
            println!(
                "account {} created: {} (max_sites {}, min_interval_secs {})",
                account.id, account.email, account.max_sites, account.min_interval_secs
            );
            if generated {
                println!("password (shown once): {password}");
            }
            Ok(())
        }
        Accounts::Quota {
            email,
            max_sites,
            min_interval_secs,
        } => {
            check_quotas(max_sites, min_interval_secs)?;
            let account = store
                .set_account_quota(&email, max_sites, min_interval_secs)
                .await?
                .ok_or_else(|| UsageError(format!("no account with email {email:?}")))?;
            println!(
                "account {}: max_sites {}, min_interval_secs {}",
                account.id, account.max_sites, account.min_interval_secs
            );
            Ok(())
        }
    }
}
