//! The Solana CLI keypair file: a JSON array of 64 numbers, the 32-byte
//! secret seed followed by the 32-byte public key.

use std::path::Path;

use ed25519_dalek::SigningKey;

/// What the one-line refusal of a too-open key file tells the operator.
const INSECURE_HINT: &str = "readable by others or writable by group or others; \
    keys must be 0600, 0400, 0640 or 0440 (chmod 600 it), or allow it explicitly";

#[derive(Debug, thiserror::Error)]
pub enum KeypairError {
    #[error("cannot read keypair file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// `detail` says what and where, never what the file holds (it may be a
    /// secret in another format).
    #[error(
        "keypair file {path} is not a JSON array of 64 numbers 0-255 (Solana CLI format): {detail}"
    )]
    Format { path: String, detail: String },
    #[error("keypair file {path}: the public half does not match the secret half")]
    Mismatch { path: String },
    /// Refused as ssh refuses a private key others can read.
    #[error("keypair file {path} has mode {mode:04o}: {INSECURE_HINT}")]
    Insecure { path: String, mode: u32 },
    #[error("cannot write keypair file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Parses the file's text; `path` only names it in errors.
pub fn parse(text: &str, path: &str) -> Result<SigningKey, KeypairError> {
    let bytes: Vec<u8> = serde_json::from_str(text).map_err(|e| KeypairError::Format {
        path: path.into(),
        detail: describe(&e),
    })?;
    let arr: [u8; 64] = bytes
        .try_into()
        .map_err(|v: Vec<u8>| KeypairError::Format {
            path: path.into(),
            detail: format!("{} numbers", v.len()),
        })?;
    SigningKey::from_keypair_bytes(&arr).map_err(|_| KeypairError::Mismatch { path: path.into() })
}

/// serde_json's own message quotes the offending value, which may be key
/// material; this names only the kind of fault and its position.
fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "invalid JSON",
        Category::Eof => "unexpected end of file",
        Category::Data => "a value that is not a number 0-255 in an array",
        Category::Io => "read error",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// Reads a keypair file, refusing one whose mode lets others read it or
/// group or others change it ([`KeypairError::Insecure`]).
pub fn read(path: &Path) -> Result<SigningKey, KeypairError> {
    read_with(path, false)
}

/// [`read`], or with `allow_insecure` without the mode check (the
/// operator's explicit choice: `--allow-insecure-keypair`,
/// `HUB_ALLOW_INSECURE_KEYPAIR`).
pub fn read_with(path: &Path, allow_insecure: bool) -> Result<SigningKey, KeypairError> {
    use std::io::Read;
    let name = path.display().to_string();
    let err = |source| KeypairError::Read {
        path: name.clone(),
        source,
    };
    // The mode is read from the opened file, so it is the mode of what is
    // read (a Kubernetes Secret is a symlink into a directory it swaps).
    let file = std::fs::File::open(path).map_err(err)?;
    if !allow_insecure {
        check_mode(&file.metadata().map_err(err)?, &name)?;
    }
    // A keypair file is about 230 bytes; don't read /dev/zero to the end.
    let mut text = String::new();
    file.take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(err)?;
    parse(&text, &name)
}

/// Group read is allowed (a Kubernetes Secret mounted with `defaultMode:
/// 0440` and an `fsGroup`); any access by others, or group write, is not.
/// The owner is not checked: a Secret's files belong to root.
#[cfg(unix)]
fn check_mode(meta: &std::fs::Metadata, path: &str) -> Result<(), KeypairError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o027 != 0 {
        return Err(KeypairError::Insecure {
            path: path.into(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_: &std::fs::Metadata, _: &str) -> Result<(), KeypairError> {
    Ok(())
}

/// The file's text for `key`.
pub fn encode(key: &SigningKey) -> String {
    serde_json::to_string(&key.to_keypair_bytes().to_vec()).expect("a byte array serializes")
}

/// A fresh key from the operating system's CSPRNG.
pub fn generate() -> SigningKey {
    SigningKey::from_bytes(&crate::crypto::Nonce::random().0)
}

/// Writes a new keypair file readable only by its owner; refuses to
/// overwrite an existing file.
pub fn write_new(path: &Path, key: &SigningKey) -> Result<(), KeypairError> {
    use std::io::Write;
    let err = |source| KeypairError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(encode(key).as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_files() {
        let k = generate();
        let text = encode(&k);
        assert!(text.starts_with('[') && text.matches(',').count() == 63);
        assert_eq!(parse(&text, "k.json").unwrap().to_bytes(), k.to_bytes());
        assert!(matches!(
            parse("[1,2,3]", "k"),
            Err(KeypairError::Format { .. })
        ));
        assert!(matches!(parse("{}", "k"), Err(KeypairError::Format { .. })));
        let mut bytes = k.to_keypair_bytes();
        bytes[40] ^= 1;
        let bad = serde_json::to_string(&bytes.to_vec()).unwrap();
        assert!(matches!(
            parse(&bad, "k"),
            Err(KeypairError::Mismatch { .. })
        ));
        let msg = parse("[1,2,3]", "/tmp/x.json").unwrap_err().to_string();
        assert!(msg.contains("/tmp/x.json"), "{msg}");
    }

    /// A key in another format (here a base58 string, as wallets export)
    /// must not be echoed into the error, which ends up in logs.
    #[test]
    fn format_errors_never_echo_the_file() {
        let secret = "4vJ9JU1bJJE96FWSJKvHsmmFADCg4gpZQff4P3bkLKi";
        for text in [
            format!("\"{secret}\""),
            format!("[1, 2, \"{secret}\"]"),
            format!("{{\"{secret}\": 1}}"),
            format!("[{}999]", "7,".repeat(63)),
        ] {
            let msg = parse(&text, "k.json").unwrap_err().to_string();
            assert!(!msg.contains(secret) && !msg.contains("999"), "{msg}");
            assert!(msg.contains("k.json"), "{msg}");
        }
    }

    #[cfg(unix)]
    fn file_with_mode(dir: &Path, mode: u32) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("{mode:o}.json"));
        write_new(&path, &generate()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[cfg(unix)]
    fn temp_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "keypair-test-{}-{}",
            std::process::id(),
            u64::from_le_bytes(crate::crypto::Nonce::random().0[..8].try_into().unwrap())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// As ssh does: a key others can read, or group or others can change,
    /// is refused with one line naming the file and its mode. Group read
    /// stays allowed for a Kubernetes Secret (`defaultMode: 0440`, `fsGroup`).
    #[cfg(unix)]
    #[test]
    fn keys_open_to_others_are_refused() {
        let dir = temp_dir();
        for mode in [0o400, 0o600, 0o440, 0o640] {
            let path = file_with_mode(&dir, mode);
            read(&path).unwrap_or_else(|e| panic!("{mode:o}: {e}"));
        }
        for mode in [0o644, 0o604, 0o660, 0o620, 0o602, 0o666] {
            let path = file_with_mode(&dir, mode);
            let err = read(&path).expect_err(&format!("{mode:o} must be refused"));
            let msg = err.to_string();
            assert!(matches!(err, KeypairError::Insecure { .. }), "{msg}");
            assert_eq!(msg.lines().count(), 1, "{msg}");
            assert!(msg.contains(path.to_str().unwrap()), "{msg}");
            assert!(msg.contains(&format!("0{mode:o}")), "{msg}");
            read_with(&path, true).expect("allowed explicitly");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
