//! The `hub` binary's command line: website management and clear errors.

use std::process::Output;

use test_support::TestDb;
use tokio::process::Command;

async fn hub(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hub"));
    cmd.args(args)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("hub runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn sites_add_list_disable_and_status() {
    let db = TestDb::new().await.unwrap();
    let o = hub(
        &db,
        &[
            "sites",
            "add",
            "https://example.com/health",
            "--interval",
            "30",
            "--expect",
            "200-299",
            "--keyword",
            "ok",
        ],
        &[],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("added website 1 https://example.com/health"));

    let o = hub(&db, &["sites", "list"], &[]).await;
    let out = stdout(&o);
    assert!(
        out.contains("30s") && out.contains("200-299") && out.contains("\"ok\""),
        "{out}"
    );

    let o = hub(&db, &["sites", "status"], &[]).await;
    assert!(stdout(&o).contains("pending"), "{}", stdout(&o));

    let o = hub(&db, &["sites", "disable", "1"], &[]).await;
    assert!(o.status.success());
    let enabled: bool = sqlx::query_scalar("SELECT enabled FROM websites WHERE id = 1")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(!enabled);
    let o = hub(&db, &["sites", "disable", "42"], &[]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no website with id 42"));
}

#[tokio::test]
async fn a_bad_url_gets_one_clear_line_and_exit_code_2() {
    let db = TestDb::new().await.unwrap();
    for (url, why) in [
        ("ftp://example.com/", "scheme must be http or https"),
        ("not a url", "is not a URL"),
        ("http://user:pw@example.com/", "credentials"),
    ] {
        let o = hub(&db, &["sites", "add", url], &[]).await;
        assert_eq!(o.status.code(), Some(2), "{url}");
        let err = stderr(&o);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(why), "{err}");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM websites")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing written");
    let o = hub(
        &db,
        &["sites", "add", "https://example.com", "--expect", "600"],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not an HTTP status"));
}

/// `protocol::limits::MAX_KEYWORD_LEN` (256 bytes) holds at registration:
/// validators answer a task with a longer keyword as a failed check.
#[tokio::test]
async fn a_keyword_over_the_limit_is_refused_with_exit_code_2() {
    let db = TestDb::new().await.unwrap();
    let at_limit = "k".repeat(256);
    let o = hub(
        &db,
        &[
            "sites",
            "add",
            "https://example.com/",
            "--keyword",
            &at_limit,
        ],
        &[],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let over = "é".repeat(129);
    let o = hub(
        &db,
        &["sites", "add", "https://example.com/", "--keyword", &over],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("keyword") && err.contains("256"), "{err}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM websites")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, 1, "only the first was written");
}

/// Tick errors and regions come from validators, i.e. from anyone: an ANSI
/// sequence or a newline in them must reach the terminal as visible text.
#[tokio::test]
async fn sites_status_escapes_text_from_validators() {
    let db = TestDb::new().await.unwrap();
    let o = hub(&db, &["sites", "add", "https://example.com/"], &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    sqlx::raw_sql(
        "INSERT INTO validators (public_key, region) VALUES ('k', E'eu\\x1b[2J'); \
         INSERT INTO rounds (website_id, slot, scheduled_at, deadline, hub_id, status) \
           VALUES (1, 1, now(), now(), 'h', 'down'); \
         INSERT INTO ticks (task_id, round_id, website_id, validator_id, scheduled_at, \
           checked_at, status, latency_ms, error, reward_lamports, hub_id) \
           SELECT gen_random_uuid(), r.id, 1, v.id, r.scheduled_at, now(), 'down', 5, \
                  E'boom\\x1b]0;owned\\x07\\nFAKE LINE', 0, 'h' \
           FROM rounds r, validators v",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let o = hub(&db, &["sites", "status"], &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
    assert_eq!(out.lines().count(), 2, "{out:?}");
    assert!(
        out.contains(r"boom\u{1b}]0;owned\u{7}\nFAKE LINE"),
        "{out:?}"
    );
    assert!(out.contains(r"eu\u{1b}[2J"), "{out:?}");
}

/// Key material never reaches stderr (logs): a mangled HUB_TOKEN_KEYS is
/// named, its value is not.
#[tokio::test]
async fn a_malformed_token_key_is_named_but_never_printed() {
    let db = TestDb::new().await.unwrap();
    let key = "5f".repeat(32);
    for bad in [
        key.clone(),
        format!(":{key}"),
        format!("k:{key}x"),
        format!("k:{key},{key}"),
    ] {
        let o = hub(&db, &["serve"], &[("HUB_TOKEN_KEYS", &bad)]).await;
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("HUB_TOKEN_KEYS"), "{err}");
        assert!(!err.contains(&key[..16]), "{bad}: {err}");
    }
}

/// The treasury keypair is refused, naming the file and its mode, when
/// others may read it (as ssh refuses a private key).
#[cfg(unix)]
#[tokio::test]
async fn a_treasury_keypair_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new().await.unwrap();
    let dir = std::env::temp_dir().join(format!("hub-cli-keys-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("treasury.json");
    protocol::keypair::write_new(&file, &protocol::keypair::generate()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let keys = "k:0000000000000000000000000000000000000000000000000000000000000000";
    let env = [
        ("HUB_TOKEN_KEYS", keys),
        ("HUB_LISTEN", "127.0.0.1:0"),
        ("HUB_PAYOUT_TREASURY_KEYPAIR", file.to_str().unwrap()),
        ("HUB_PAYOUT_RPC_URL", "http://127.0.0.1:9/"),
    ];
    let run = hub(&db, &["serve"], &env);
    let o = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .expect("the hub stops at start");
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains(file.to_str().unwrap()) && last.contains("0644"),
        "{err}"
    );
    assert!(last.contains("HUB_ALLOW_INSECURE_KEYPAIR"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn an_invalid_setting_names_its_variable_and_exits_2() {
    let db = TestDb::new().await.unwrap();
    let keys = "k:0000000000000000000000000000000000000000000000000000000000000000";
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("HUB_TOKEN_KEYS", "short:abcd")], "HUB_TOKEN_KEYS"),
        (
            &[("HUB_TOKEN_KEYS", keys), ("HUB_VALIDATORS_PER_ROUND", "0")],
            "HUB_VALIDATORS_PER_ROUND",
        ),
        (
            &[("HUB_TOKEN_KEYS", keys), ("HUB_LISTEN", "nowhere")],
            "LISTEN",
        ),
        (
            &[
                ("HUB_TOKEN_KEYS", keys),
                ("HUB_PAYOUT_MIN_LAMPORTS", "1000"),
            ],
            "HUB_PAYOUT_MIN_LAMPORTS",
        ),
        (
            &[
                ("HUB_TOKEN_KEYS", keys),
                ("HUB_PAYOUT_TREASURY_KEYPAIR", "/nonexistent.json"),
            ],
            "HUB_PAYOUT_RPC_URL",
        ),
        (
            &[
                ("HUB_TOKEN_KEYS", keys),
                ("HUB_PAYOUT_CRASH_AT", "sometimes"),
            ],
            "HUB_PAYOUT_CRASH_AT",
        ),
    ];
    for (env, var) in cases {
        let o = hub(&db, &["serve"], env).await;
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(var), "{}", stderr(&o));
    }
}

#[tokio::test]
async fn payouts_status_and_retry_failed() {
    let db = TestDb::new().await.unwrap();
    let o = hub(&db, &["payouts", "status"], &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("failed payouts           0"),
        "{}",
        stdout(&o)
    );
    // Two failed payouts of one validator (written under the current epoch).
    let v: i64 = sqlx::query_scalar(
        "INSERT INTO validators (public_key, region) VALUES ('k', 'eu') RETURNING id",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    for lamports in [1_000_000_i64, 2_000_000] {
        sqlx::query(
            "INSERT INTO payouts (id, validator_id, lamports, state, attempts, epoch)
             VALUES (gen_random_uuid(), $1, $2, 'failed', 5,
                     (SELECT epoch FROM fencing WHERE role = 'payouts'))",
        )
        .bind(v)
        .bind(lamports)
        .execute(db.pool())
        .await
        .unwrap();
    }
    let o = hub(&db, &["payouts", "status"], &[]).await;
    assert!(
        stdout(&o).contains("failed payouts           2"),
        "{}",
        stdout(&o)
    );
    // One unfinished payout per validator: the oldest goes back first.
    let o = hub(&db, &["payouts", "retry-failed"], &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("1 failed payouts queued again"),
        "{}",
        stdout(&o)
    );
    let (state, attempts): (String, i32) =
        sqlx::query_as("SELECT state, attempts FROM payouts WHERE lamports = 1000000")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!((state.as_str(), attempts), ("claimed", 0));
    let o = hub(&db, &["payouts", "retry-failed"], &[]).await;
    assert!(
        stdout(&o).contains("0 failed payouts queued again"),
        "{}",
        stdout(&o)
    );
}
