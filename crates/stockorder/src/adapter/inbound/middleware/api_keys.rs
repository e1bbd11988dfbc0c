//! API keys: the optional shared secrets a client sends as `Authorization: Bearer KEY`.

use std::path::Path;

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// The accepted keys, kept only as SHA-256 digests.
///
/// Why digests: comparing fixed-length digests in constant time reveals neither a key's
/// content nor its length through timing, and the keys themselves are not kept in memory.
#[derive(Clone)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

/// Why the configured keys are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeysError {
    /// The key file could not be read.
    #[error("cannot read API_KEYS_FILE {path}: {source}")]
    File {
        /// The file named.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A key is too short to be a secret.
    #[error("API key number {0} is shorter than {MIN_KEY_LEN} characters")]
    TooShort(usize),
    /// A key contains a character that cannot travel in an HTTP header.
    #[error("API key number {0} contains whitespace or a non-ASCII character")]
    BadCharacter(usize),
}

/// Shorter keys can be guessed; 16 characters of a random token are ~96 bits.
pub const MIN_KEY_LEN: usize = 16;

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl ApiKeys {
    /// The keys of `API_KEYS` (comma-separated) and of `API_KEYS_FILE` (one per line, `#`
    /// comments), or `None` when neither names any key: authentication is then off.
    pub fn load(list: Option<&str>, file: Option<&Path>) -> Result<Option<Self>, ApiKeysError> {
        let mut keys: Vec<String> = list
            .into_iter()
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ApiKeysError::File {
                path: path.display().to_string(),
                source,
            })?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        if keys.is_empty() {
            return Ok(None);
        }
        for (n, key) in keys.iter().enumerate() {
            if key.len() < MIN_KEY_LEN {
                return Err(ApiKeysError::TooShort(n + 1));
            }
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ApiKeysError::BadCharacter(n + 1));
            }
        }
        Ok(Some(Self {
            digests: keys.iter().map(|k| digest(k.as_bytes())).collect(),
        }))
    }

    /// Whether `headers` carry `Authorization: Bearer K` for an accepted key K. Every key is
    /// compared, in constant time, whatever matches.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = bearer(headers) else {
            return false;
        };
        let presented = digest(presented);
        let matched = self
            .digests
            .iter()
            .fold(Choice::from(0), |any, d| any | d.ct_eq(&presented));
        matched.into()
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme is case-insensitive,
/// RFC 9110 §11.1).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn admits_only_a_listed_bearer_key() {
        let keys = ApiKeys::load(Some("first-key-0123456789, second-key-0123456789"), None)
            .unwrap()
            .unwrap();
        assert!(keys.admits(&headers("Bearer first-key-0123456789")));
        assert!(keys.admits(&headers("bearer second-key-0123456789")));
        assert!(!keys.admits(&headers("Bearer first-key-012345678")));
        assert!(!keys.admits(&headers("Basic first-key-0123456789")));
        assert!(!keys.admits(&headers("Bearer ")));
        assert!(!keys.admits(&HeaderMap::new()));
    }

    #[test]
    fn no_key_means_no_authentication_and_weak_keys_are_refused() {
        assert!(ApiKeys::load(None, None).unwrap().is_none());
        assert!(ApiKeys::load(Some(" , "), None).unwrap().is_none());
        assert!(matches!(
            ApiKeys::load(Some("short"), None),
            Err(ApiKeysError::TooShort(1))
        ));
        assert!(matches!(
            ApiKeys::load(Some("0123456789abcdef,with space 0123456789"), None),
            Err(ApiKeysError::BadCharacter(2))
        ));
    }

    #[test]
    fn keys_come_from_a_file_too() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "# operators\nfile-key-0123456789\n\n").unwrap();
        let keys = ApiKeys::load(None, Some(file.path())).unwrap().unwrap();
        assert!(keys.admits(&headers("Bearer file-key-0123456789")));
        assert!(ApiKeys::load(None, Some(Path::new("/nonexistent/keys"))).is_err());
    }
}
