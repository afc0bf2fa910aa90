//! Bearer-token authentication: static tokens and HS256 JWTs.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Shortest secret accepted (static tokens and the JWT secret): shorter ones can be guessed.
pub const MIN_SECRET_BYTES: usize = 16;

/// Longest JWT `sub` accepted, in bytes (record owners are stored as text).
const MAX_SUBJECT_BYTES: usize = 255;

/// How bearer tokens map to users.
///
/// A token is first looked up among the static tokens; otherwise, when a JWT secret is set, it is
/// decoded as an HS256 JWT whose `sub` claim is the user (`exp` is required, `nbf` and the
/// configured issuer and audience are checked, an unknown `crit` header is refused).
#[derive(Clone, Default)]
pub struct Auth {
    tokens: HashMap<String, String>,
    jwt: Option<Jwt>,
}

#[derive(Clone)]
struct Jwt {
    key: DecodingKey,
    validation: Validation,
    /// A JWT subject that names a static-token user is that user only when configured so.
    shares_static_users: bool,
}

/// Settings of JWT authentication besides the secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JwtSettings {
    /// Required `iss` claim, when set.
    pub issuer: Option<String>,
    /// Required `aud` claim, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (default 60).
    pub leeway_secs: Option<u64>,
    /// Let a JWT whose `sub` equals a static-token user act as that user (share its records).
    /// Off by default: such a token is refused.
    pub subjects_share_static_users: bool,
}

/// An authenticated user, and when its token stops being valid (JWTs: `exp` plus the leeway,
/// in Unix seconds; static tokens do not expire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) user: String,
    pub(crate) expires_at: Option<u64>,
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
    exp: u64,
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
        if secret.len() < MIN_SECRET_BYTES {
            return Err(Error::Config(format!(
                "the token secret of user {user:?} is {} bytes; use at least {MIN_SECRET_BYTES} \
                 random bytes",
                secret.len()
            )));
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

    /// Sets the HS256 secret of JWTs and how their claims are checked.
    pub(crate) fn set_jwt(&mut self, secret: &[u8], settings: &JwtSettings) -> Result<()> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(Error::Config(format!(
                "the JWT secret is {} bytes; use at least {MIN_SECRET_BYTES} random bytes",
                secret.len()
            )));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        if let Some(leeway) = settings.leeway_secs {
            validation.leeway = leeway;
        }
        if let Some(issuer) = &settings.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        if let Some(audience) = &settings.audience {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".into());
        }
        self.jwt = Some(Jwt {
            key: DecodingKey::from_secret(secret),
            validation,
            shares_static_users: settings.subjects_share_static_users,
        });
        Ok(())
    }

    /// Returns the user a bearer token belongs to, or `None` if the token is unknown or invalid.
    #[must_use]
    pub fn authenticate(&self, token: &str) -> Option<String> {
        self.session(token).map(|session| session.user)
    }

    /// The session a bearer token opens, or `None` if the token is unknown or invalid.
    pub(crate) fn session(&self, token: &str) -> Option<Session> {
        if let Some(user) = self.tokens.get(token) {
            return Some(Session {
                user: user.clone(),
                expires_at: None,
            });
        }
        let jwt = self.jwt.as_ref()?;
        let data = match jsonwebtoken::decode::<Claims>(token, &jwt.key, &jwt.validation) {
            Ok(data) => data,
            Err(err) => {
                tracing::debug!(%err, "rejected JWT");
                return None;
            }
        };
        if data
            .header
            .crit
            .as_ref()
            .is_some_and(|crit| !crit.is_empty())
        {
            tracing::debug!(
                "rejected JWT: it names critical header extensions this server does not know"
            );
            return None;
        }
        let sub = data.claims.sub;
        if sub.is_empty() || sub.len() > MAX_SUBJECT_BYTES || sub.chars().any(char::is_control) {
            tracing::debug!("rejected JWT: `sub` is empty, longer than {MAX_SUBJECT_BYTES} bytes or has control characters");
            return None;
        }
        if !jwt.shares_static_users && self.tokens.values().any(|user| *user == sub) {
            tracing::warn!(
                user = %sub,
                "rejected JWT: its `sub` names a static-token user; allow it with \
                 --jwt-subjects-share-static-users if they are the same person"
            );
            return None;
        }
        Some(Session {
            user: sub,
            expires_at: Some(data.claims.exp.saturating_add(jwt.validation.leeway)),
        })
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
    fn short_secrets_are_refused() {
        let mut auth = Auth::default();
        assert!(auth.add_token("a".into(), "x".repeat(15)).is_err());
        assert!(auth.add_token("a".into(), "x".repeat(16)).is_ok());
        assert!(auth
            .set_jwt(b"fifteen-bytes!!", &JwtSettings::default())
            .is_err());
        assert!(auth
            .set_jwt(b"sixteen-bytes!!!", &JwtSettings::default())
            .is_ok());
    }

    #[test]
    fn token_pairs() {
        assert!(parse_token_pair("alice:s3cret").is_ok());
        assert!(parse_token_pair("alice").is_err());
        assert!(parse_token_pair(":x").is_err());
    }
}
