//! The binary's contract: keygen output, and exit code 2 with a one-line
//! error naming the culprit for unusable arguments.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn validator(args: &[&str]) -> Output {
    validator_with_env(args, &[])
}

/// `validator(args)` with `env` set (after the caller's VALIDATOR_* are removed).
fn validator_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_validator"));
    cmd.args(args);
    // The flags under test must not be satisfied from the caller's environment.
    for var in [
        "VALIDATOR_HUB_URLS",
        "VALIDATOR_KEYPAIR",
        "VALIDATOR_REGION",
        "VALIDATOR_TAGS",
        "VALIDATOR_CONCURRENCY",
        "VALIDATOR_ALLOW_PRIVATE_TARGETS",
        "VALIDATOR_USER_AGENT",
        "VALIDATOR_ALLOW_INSECURE_KEYPAIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("the validator binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A fresh directory under the target dir, removed by the caller's test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "validator-cli-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `validator run` with `keypair` and `hub`, expecting exit code 2 and
/// exactly one stderr line that contains every string in `mentions`.
#[track_caller]
fn check_usage_error(keypair: &Path, hub: &str, extra: &[&str], mentions: &[&str]) {
    let kp = keypair.to_str().unwrap();
    let mut args = vec!["run", "--hub", hub, "--keypair", kp];
    if !extra.contains(&"--region") {
        args.extend_from_slice(&["--region", "eu-west"]);
    }
    args.extend_from_slice(extra);
    let o = validator(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("error: "), "{err}");
    for m in mentions {
        assert!(err.contains(m), "{err:?} should mention {m:?}");
    }
}

#[test]
fn keygen_writes_a_solana_keypair_and_prints_its_public_key() {
    let dir = temp_dir("keygen");
    let path = dir.join("id.json");
    let o = validator(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = stdout(&o).trim().to_string();

    let text = std::fs::read_to_string(&path).unwrap();
    let bytes: Vec<u8> = serde_json::from_str(&text).expect("a JSON array of numbers 0-255");
    assert_eq!(bytes.len(), 64);
    let decoded = bs58_decode(&printed);
    assert_eq!(
        decoded.as_slice(),
        &bytes[32..],
        "stdout is the public half, base58"
    );
    let key = protocol::keypair::read(&path).unwrap();
    assert_eq!(protocol::PublicKey::from(&key).to_base58(), printed);

    let o = validator(&["pubkey", "--keypair", path.to_str().unwrap()]);
    assert!(o.status.success());
    assert_eq!(stdout(&o).trim(), printed);

    // A second keygen must not replace the key.
    let o = validator(&["keygen", "--out", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("refusing to overwrite"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    std::fs::remove_dir_all(dir).unwrap();
}

fn bs58_decode(s: &str) -> Vec<u8> {
    protocol::PublicKey::from_base58(s)
        .expect("valid base58 key")
        .0
        .to_vec()
}

#[test]
fn run_rejects_unusable_arguments_with_exit_code_2() {
    let dir = temp_dir("run");
    let missing = dir.join("missing.json");
    check_usage_error(
        &missing,
        "ws://127.0.0.1:1/ws",
        &[],
        &["--keypair", missing.to_str().unwrap()],
    );

    let malformed = dir.join("malformed.json");
    protocol::keypair::write_new(&malformed, &protocol::keypair::generate()).unwrap();
    std::fs::write(&malformed, "[1, 2, 3]").unwrap();
    check_usage_error(
        &malformed,
        "ws://127.0.0.1:1/ws",
        &[],
        &[malformed.to_str().unwrap(), "64 numbers"],
    );

    let good = dir.join("good.json");
    protocol::keypair::write_new(&good, &protocol::keypair::generate()).unwrap();
    check_usage_error(
        &good,
        "http://x",
        &[],
        &[r#"--hub "http://x": scheme must be ws or wss"#],
    );
    check_usage_error(&good, "::nonsense", &[], &["--hub", "::nonsense"]);
    check_usage_error(
        &good,
        "ws://127.0.0.1:1/ws",
        &["--concurrency", "0"],
        &["--concurrency", "\"0\""],
    );
    check_usage_error(
        &good,
        "ws://127.0.0.1:1/ws",
        &["--region", "Not A Region"],
        &["--region", "Not A Region"],
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A tag outside the documented `[a-z0-9-_.:]` is refused with the rule the
/// hub applies, from the flag and from `VALIDATOR_TAGS` alike; `isp:hetzner`
/// beside it is not what is named. (That good tags reach the hub is in
/// tests/session.rs.)
#[test]
fn a_bad_tag_is_refused_with_the_documented_rule() {
    let dir = temp_dir("tags");
    let key = dir.join("id.json");
    protocol::keypair::write_new(&key, &protocol::keypair::generate()).unwrap();
    let want = r#"error: --tag: each tag must be 1-32 bytes of [a-z0-9-_.:], got "ISP Hetzner""#;
    let k = key.to_str().unwrap();
    let run = vec![
        "run",
        "--hub",
        "ws://127.0.0.1:1/ws",
        "--keypair",
        k,
        "--region",
        "eu-west",
    ];

    let mut flags = run.clone();
    flags.extend(["--tag", "isp:hetzner", "--tag", "ISP Hetzner"]);
    let o = validator(&flags);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim_end(), want);

    let o = validator_with_env(&run, &[("VALIDATOR_TAGS", "isp:hetzner,ISP Hetzner")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim_end(), want);
    std::fs::remove_dir_all(dir).unwrap();
}

/// As ssh does: a keypair file others can read (or group or others can
/// write) is refused with one line naming it and its mode, unless
/// `--allow-insecure-keypair`. Group read passes (Kubernetes Secrets).
#[cfg(unix)]
#[test]
fn keypair_files_open_to_others_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("modes");
    let key = dir.join("id.json");
    let o = validator(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let public = stdout(&o).trim().to_string();
    let k = key.to_str().unwrap();
    for mode in [0o400, 0o600, 0o440, 0o640] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let o = validator(&["pubkey", "--keypair", k]);
        assert_eq!(stdout(&o).trim(), public, "{mode:o}: {}", stderr(&o));
    }
    for mode in [0o644, 0o604, 0o660, 0o620, 0o602] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let o = validator(&["pubkey", "--keypair", k]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{mode:o}: {err}");
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(
            err.contains(k) && err.contains(&format!("0{mode:o}")),
            "{err}"
        );
        assert!(err.contains("--allow-insecure-keypair"), "{err}");
        check_usage_error(
            &key,
            "ws://127.0.0.1:1/ws",
            &[],
            &["--keypair", k, &format!("0{mode:o}")],
        );
        let o = validator(&["pubkey", "--keypair", k, "--allow-insecure-keypair"]);
        assert_eq!(stdout(&o).trim(), public, "{}", stderr(&o));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn sigterm_shuts_down_cleanly_with_exit_code_0() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;

    let dir = temp_dir("sigterm");
    let key = dir.join("id.json");
    protocol::keypair::write_new(&key, &protocol::keypair::generate()).unwrap();
    // Nobody listens here, so the validator sits in its reconnect loop.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["run", "--hub", &format!("ws://127.0.0.1:{port}/ws")])
        .args(["--keypair", key.to_str().unwrap(), "--region", "local"])
        .env("RUST_LOG", "info")
        .env_remove("VALIDATOR_HUB_URLS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    // Both waits end when the line shows up, or at the latest when the
    // process exits and its stderr closes, or after 10 s.
    let wait_for = |what: &str| loop {
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(l) if l.contains(what) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    };
    assert!(
        wait_for("validator starting"),
        "the validator logged its start"
    );

    let pid = child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let status = done
        .recv_timeout(Duration::from_secs(10))
        .expect("the validator exits within 10 s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(wait_for("SIGTERM: shutting down"), "logged why it stopped");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Serves `responses` (status, body) to successive HTTP requests on
/// 127.0.0.1, one per connection; returns the base URL.
fn one_shot_http(responses: Vec<(u16, String)>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (status, body) in responses {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let req = String::from_utf8_lossy(&buf);
            assert!(req.starts_with("GET /v1/validators/"), "{req}");
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    base
}

#[test]
fn earnings_prints_the_hubs_document_and_names_errors() {
    let dir = temp_dir("earnings");
    let kp = dir.join("v.json");
    let o = validator(&["keygen", "--out", kp.to_str().unwrap()]);
    let key = stdout(&o).trim().to_string();
    let key = key.as_str();
    let doc = format!(
        r#"{{"public_key":"{key}","earned_lamports":2000000,"settling_lamports":1000,
        "unclaimed_lamports":100000,"pending_lamports":900000,"paid_lamports":1000000,
        "failed_lamports":0,"earning_ticks":20,
        "agreement":{{"agreed":19,"disagreed":1,"rate":0.95}},
        "payouts":[{{"id":"0193a1b2-0000-7000-8000-000000000001","lamports":1000000,
        "state":"paid","attempts":0,"signature":"5VfYsig","last_error":null,
        "created_at_ms":1,"paid_at_ms":2}}]}}"#
    );
    let not_found =
        r#"{"code":"unknown_validator","message":"no validator with this key has connected"}"#;
    // JSON escapes: the decoded code holds ESC, the message a newline.
    let hostile = r#"{"code":"unavailable\u001b[2J","message":"down\nerror: FAKE"}"#;
    let base = one_shot_http(vec![
        (200, doc),
        (404, not_found.into()),
        (503, hostile.into()),
    ]);
    let ws = base.replace("http://", "ws://") + "/ws";

    let o = validator(&["earnings", "--hub", &ws, "--public-key", key]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for want in [key, "2000000", "1000000", "95.00%", "5VfYsig", "paid"] {
        assert!(out.contains(want), "{out} should contain {want}");
    }

    let o = validator(&["earnings", "--hub", &base, "--public-key", key]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown_validator"), "{}", stderr(&o));

    // Text from the hub reaches the terminal escaped.
    let o = validator(&["earnings", "--hub", &base, "--public-key", key]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(!err.contains('\x1b'), "{err:?}");
    assert!(
        err.contains(r"unavailable\u{1b}[2J") && err.contains(r"down\nerror: FAKE"),
        "{err:?}"
    );

    let o = validator(&["earnings", "--hub", &base, "--public-key", "not-a-key"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--public-key"), "{}", stderr(&o));
    std::fs::remove_dir_all(dir).unwrap();
}
