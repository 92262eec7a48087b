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
