//! Bearer-token authentication: static tokens and HS256 JWTs.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::error::{Error, Result};

/// How bearer tokens map to users.
///
/// A token is first looked up among the static tokens; otherwise, when a JWT secret is set, it is
/// decoded as an HS256 JWT whose `sub` claim is the user (`exp` is required and checked).
#[derive(Clone, Default)]
pub struct Auth {
    tokens: HashMap<String, String>,
    jwt: Option<DecodingKey>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        f.debug_struct("Auth")
            .field("static_tokens", &self.tokens.len())
            .field("jwt", &self.jwt.is_some())
            .finish()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Auth {
    /// Whether any way to authenticate is configured.
    #[must_use]
    pub fn is_configured(&self) -> bool {
        !self.tokens.is_empty() || self.jwt.is_some()
    }

    /// Adds a static token for `user`.
    pub(crate) fn add_token(&mut self, user: String, secret: String) -> Result<()> {
        if user.is_empty() || secret.is_empty() {
            return Err(Error::Config(
                "a static token needs a user and a secret, as USER:SECRET".into(),
            ));
        }
        if let Some(other) = self.tokens.get(&secret) {
            if *other != user {
                return Err(Error::Config(format!(
                    "the same token secret is given to users {other:?} and {user:?}; give each user its own"
                )));
            }
        }
        self.tokens.insert(secret, user);
        Ok(())
    }

    /// Sets the HS256 secret of JWTs.
    pub(crate) fn set_jwt_secret(&mut self, secret: &[u8]) -> Result<()> {
        if secret.is_empty() {
            return Err(Error::Config("the JWT secret is empty".into()));
        }
        self.jwt = Some(DecodingKey::from_secret(secret));
        Ok(())
    }

    /// Returns the user a bearer token belongs to, or `None` if the token is unknown or invalid.
    #[must_use]
    pub fn authenticate(&self, token: &str) -> Option<String> {
        if let Some(user) = self.tokens.get(token) {
            return Some(user.clone());
        }
        let key = self.jwt.as_ref()?;
        let validation = Validation::new(Algorithm::HS256);
        match jsonwebtoken::decode::<Claims>(token, key, &validation) {
            Ok(data) if !data.claims.sub.is_empty() => Some(data.claims.sub),
            Ok(_) => None,
            Err(err) => {
                tracing::debug!(%err, "rejected JWT");
                None
            }
        }
    }
}

/// Parses one `USER:SECRET` pair.
pub(crate) fn parse_token_pair(pair: &str) -> Result<(String, String)> {
    match pair.split_once(':') {
        Some((user, secret)) if !user.is_empty() && !secret.is_empty() => {
            Ok((user.to_owned(), secret.to_owned()))
        }
        _ => Err(Error::Config(format!(
            "token {pair:?} is not of the form USER:SECRET"
        ))),
    }
}

/// Reads a tokens file: one `USER:SECRET` per line; blank lines and lines starting with `#` are
/// skipped.
pub(crate) fn read_tokens_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::TokensFile {
        path: path.to_owned(),
        source,
    })?;
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let pair = parse_token_pair(line).map_err(|_| {
            Error::Config(format!(
                "{}:{}: expected USER:SECRET",
                path.display(),
                n + 1
            ))
        })?;
        pairs.push(pair);
    }
    Ok(pairs)
}

/// Extracts the token of an `Authorization: Bearer <token>` header value.
pub(crate) fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        let token = token.trim();
        (!token.is_empty()).then_some(token)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }

    #[test]
    fn token_pairs() {
        assert!(parse_token_pair("alice:s3cret").is_ok());
        assert!(parse_token_pair("alice").is_err());
        assert!(parse_token_pair(":x").is_err());
    }
}
