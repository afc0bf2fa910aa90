//! Expiring credentials: a [`TokenProvider`] gives bearer tokens; the default remote and the
//! WebSocket ask it for a fresh one when the remote answers 401, once per refused token (one
//! refresh serves every request that was refused with the same token), and retry once. When
//! no fresh token can be had (the provider fails, or the remote refuses the fresh one too) the
//! manager needs authentication: its status says [`SyncState::NeedsAuth`], nothing is sent
//! automatically (no retry storm), the queue is kept, and the next explicit sync, or
//! [`SyncManager::refresh_credentials`], asks the provider again before sending anything.
//!
//! [`SyncState::NeedsAuth`]: crate::SyncState::NeedsAuth
//! [`SyncManager::refresh_credentials`]: crate::SyncManager::refresh_credentials

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::remote::RemoteError;

/// The error a [`TokenProvider`] gives.
pub type TokenError = Box<dyn StdError + Send + Sync>;

/// Gives bearer tokens for `Authorization: Bearer <token>`, e.g. by refreshing an OAuth token.
/// Implemented for async closures `Fn() -> impl Future<Output = Result<String, E>>`.
#[async_trait]
pub trait TokenProvider: Send + Sync + 'static {
    /// A token to use now. `refused` is the token the remote just refused (`None` for the
    /// first token): a provider that caches should not return it again.
    async fn token(&self, refused: Option<&str>) -> Result<String, TokenError>;
}

#[async_trait]
impl<F, Fut, E> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, E>> + Send,
    E: Into<TokenError>,
{
    async fn token(&self, _refused: Option<&str>) -> Result<String, TokenError> {
        (self)().await.map_err(Into::into)
    }
}

/// A token and its generation (how many tokens came before it).
#[derive(Clone)]
pub(crate) struct Token {
    pub(crate) generation: u64,
    pub(crate) value: String,
}

/// The token state one manager's remote and WebSocket share.
pub(crate) struct TokenAuth {
    provider: Arc<dyn TokenProvider>,
    current: RwLock<Option<Token>>,
    /// One provider call at a time.
    refresh: tokio::sync::Mutex<()>,
    needs_auth: watch::Sender<bool>,
}

impl fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAuth")
            .field("needs_auth", &*self.needs_auth.borrow())
            .finish_non_exhaustive()
    }
}

fn no_token(err: &TokenError) -> RemoteError {
    RemoteError::Refused {
        status: 401,
        message: format!("no valid credentials: the token provider failed: {err}"),
    }
}

impl TokenAuth {
    pub(crate) fn new(provider: Arc<dyn TokenProvider>) -> Arc<TokenAuth> {
        Arc::new(TokenAuth {
            provider,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            needs_auth: watch::channel(false).0,
        })
    }

    fn read(&self) -> Option<Token> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The token to send now (asking the provider for the first one).
    pub(crate) async fn token(&self) -> Result<Token, RemoteError> {
        if let Some(token) = self.read() {
            return Ok(token);
        }
        self.renew(None).await
    }

    /// A token newer than `refused` (the one the remote answered 401 to): the provider is
    /// asked only if nobody renewed it meanwhile.
    pub(crate) async fn renew(&self, refused: Option<&Token>) -> Result<Token, RemoteError> {
        let _one_at_a_time = self.refresh.lock().await;
        let now = self.read();
        if let Some(now) = &now {
            if refused.is_none_or(|r| r.generation != now.generation) {
                return Ok(now.clone());
            }
        }
        match self.provider.token(refused.map(|t| t.value.as_str())).await {
            Ok(value) => {
                let generation = now.map_or(0, |t| t.generation.wrapping_add(1));
                let token = Token { generation, value };
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token.clone());
                Ok(token)
            }
            Err(err) => {
                tracing::warn!(error = %err, "the token provider failed");
                self.needs_auth.send_replace(true);
                Err(no_token(&err))
            }
        }
    }

    /// The remote answered a request sent with `token`: 401 even after a renewal means no
    /// valid credentials; anything else means they are fine.
    pub(crate) fn answered(&self, unauthorized: bool) {
        self.needs_auth.send_if_modified(|n| {
            let changed = *n != unauthorized;
            *n = unauthorized;
            changed
        });
    }

    pub(crate) fn needs_auth(&self) -> bool {
        *self.needs_auth.borrow()
    }

    /// Asks the provider for a fresh token (whatever the current one is).
    pub(crate) async fn force_renew(&self) -> Result<Token, RemoteError> {
        let current = self.read();
        let token = self.renew(current.as_ref()).await?;
        Ok(token)
    }
}
