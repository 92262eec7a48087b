//! The Solana CLI keypair file: a JSON array of 64 numbers, the 32-byte
//! secret seed followed by the 32-byte public key.

use std::path::Path;

use ed25519_dalek::SigningKey;

#[derive(Debug, thiserror::Error)]
pub enum KeypairError {
    #[error("cannot read keypair file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "keypair file {path} is not a JSON array of 64 numbers 0-255 (Solana CLI format): {detail}"
    )]
    Format { path: String, detail: String },
    #[error("keypair file {path}: the public half does not match the secret half")]
    Mismatch { path: String },
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
        detail: e.to_string(),
    })?;
    let arr: [u8; 64] = bytes
        .try_into()
        .map_err(|v: Vec<u8>| KeypairError::Format {
            path: path.into(),
            detail: format!("{} numbers", v.len()),
        })?;
    SigningKey::from_keypair_bytes(&arr).map_err(|_| KeypairError::Mismatch { path: path.into() })
}

pub fn read(path: &Path) -> Result<SigningKey, KeypairError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeypairError::Read {
        path: name.clone(),
        source,
    })?;
    parse(&text, &name)
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
}
