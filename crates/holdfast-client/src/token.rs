//! Access tokens: a fixed one, or a caller's callback asked for a fresh one when the server
//! refuses the one in hand (401) or ends a link with `token_expired`. Sent as
//! `Authorization: Bearer` on every request and on the WebSocket handshake. What to do after a
//! refusal (ask again, reconnect, give up) is the subscriber's and the publisher's.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::{Error, Result};

type Fetch = dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync;

/// Where tokens come from.
#[derive(Clone)]
pub(crate) enum TokenSource {
    /// One token for the whole life: a refusal of it is final.
    Static(String),
    /// A callback asked again after a refusal or an expiry.
    Callback(Arc<Fetch>),
}

impl TokenSource {
    /// Boxes a caller's callback (its error is kept as words only).
    pub(crate) fn callback<F, Fut, E>(f: F) -> TokenSource
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        TokenSource::Callback(Arc::new(move || {
            let fut = f();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        }))
    }

    /// Whether a refused token can be replaced by asking again.
    pub(crate) fn can_renew(&self) -> bool {
        matches!(self, TokenSource::Callback(_))
    }

    /// A token: the fixed one, or a fresh one from the callback. A callback's failure is a
    /// connection-class error (transient: the subscriber backs off and asks again).
    pub(crate) async fn fetch(&self) -> Result<String> {
        match self {
            TokenSource::Static(token) => Ok(token.clone()),
            TokenSource::Callback(f) => f().await.map_err(|e| Error::connect(format!("token source: {e}"), None)),
        }
    }
}

/// Never prints a token.
impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Static(_) => f.write_str("TokenSource::Static(..)"),
            TokenSource::Callback(_) => f.write_str("TokenSource::Callback(..)"),
        }
    }
}

/// Whether an error is the server refusing the token (401: none, bad, or expired).
pub(crate) fn is_unauthorized(e: &Error) -> bool {
    e.status() == Some(401)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_token() {
        let shown = format!("{:?}", TokenSource::Static("s3cret".into()));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!TokenSource::Static("s3cret".into()).can_renew());
    }

    #[tokio::test]
    async fn a_callback_error_is_transient_and_names_the_source() {
        let source = TokenSource::callback(|| async { Err::<String, _>("issuer down") });
        let e = source.fetch().await.unwrap_err();
        assert!(e.is_transient() && e.to_string().contains("token source: issuer down"), "{e}");
        assert!(source.can_renew());
    }
}
