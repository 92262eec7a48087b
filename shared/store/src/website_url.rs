//! A check target, validated once where it enters the system.

use std::fmt;

use protocol::limits::{BLOCKED_PORTS, MAX_KEYWORD_LEN};

/// Longest URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?} is not a URL: {1}")]
    Parse(String, String),
    #[error("{0:?}: scheme must be http or https")]
    Scheme(String),
    #[error("{0:?}: URL has no host")]
    NoHost(String),
    #[error("{0:?}: credentials in URLs are not allowed")]
    Credentials(String),
    #[error("URL is longer than {MAX_URL_LEN} bytes")]
    TooLong,
    #[error("{0:?}: port {1} is reserved for another protocol and not checked")]
    Port(String, u16),
}

/// A keyword validators would refuse, refused where it is registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeywordError {
    #[error("keyword is {0} bytes; at most {MAX_KEYWORD_LEN} are allowed")]
    TooLong(usize),
    #[error("keyword must not contain a NUL character")]
    Nul,
}

/// At most [`MAX_KEYWORD_LEN`] bytes, no NUL (PostgreSQL text cannot hold it).
pub fn check_keyword(k: &str) -> Result<(), KeywordError> {
    if k.len() > MAX_KEYWORD_LEN {
        return Err(KeywordError::TooLong(k.len()));
    }
    if k.contains('\0') {
        return Err(KeywordError::Nul);
    }
    Ok(())
}

/// An absolute http(s) URL with a host and no credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebsiteUrl(String);

impl WebsiteUrl {
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let s = s.trim();
        if s.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        let u = url::Url::parse(s).map_err(|e| UrlError::Parse(s.into(), e.to_string()))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(UrlError::Scheme(s.into()));
        }
        if u.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::NoHost(s.into()));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(UrlError::Credentials(s.into()));
        }
        if let Some(port) = u
            .port_or_known_default()
            .filter(|p| BLOCKED_PORTS.contains(p))
        {
            return Err(UrlError::Port(s.into(), port));
        }
        // Percent-encoding can make the stored form longer than the input.
        if u.as_str().len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        Ok(Self(u.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WebsiteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_and_normalises() {
        assert_eq!(
            WebsiteUrl::parse(" https://Example.com ").unwrap().as_str(),
            "https://example.com/"
        );
        assert!(WebsiteUrl::parse("http://127.0.0.1:8080/up").is_ok());
    }

    #[test]
    fn rejects_each_bad_url_with_its_reason() {
        let cases = [
            ("example.com", "not a URL"),
            ("ftp://example.com/", "scheme"),
            ("file:///etc/passwd", "scheme"),
            ("http://user:pw@example.com/", "credentials"),
            ("http://", "not a URL"),
        ];
        for (input, want) in cases {
            let e = WebsiteUrl::parse(input).unwrap_err().to_string();
            assert!(e.contains(want), "{input}: {e}");
        }
        let encoded = format!("https://example.com/{}", "é".repeat(1000));
        assert!(encoded.len() <= MAX_URL_LEN, "short as given");
        assert_eq!(
            WebsiteUrl::parse(&encoded),
            Err(UrlError::TooLong),
            "long once encoded"
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(WebsiteUrl::parse(&long), Err(UrlError::TooLong));
    }

    #[test]
    fn keywords_are_bounded() {
        assert_eq!(check_keyword(&"k".repeat(MAX_KEYWORD_LEN)), Ok(()));
        assert_eq!(
            check_keyword(&"é".repeat(129)),
            Err(KeywordError::TooLong(258))
        );
        assert_eq!(check_keyword("a\0b"), Err(KeywordError::Nul));
    }

    /// Validators refuse these ports, so registering one would only make a
    /// website that is never checked.
    #[test]
    fn rejects_ports_validators_refuse() {
        for input in ["http://example.com:25/", "https://example.com:6667/x"] {
            let e = WebsiteUrl::parse(input).unwrap_err().to_string();
            assert!(
                e.contains("port") && e.contains("not checked"),
                "{input}: {e}"
            );
        }
        for input in ["http://example.com:8080/", "https://example.com:443/"] {
            WebsiteUrl::parse(input).unwrap();
        }
    }
}
