//! The smallest surface of the access-control code the fuzz target `token` (fuzz/) drives: the
//! real functions, wrapped, never copies. Not an API: hidden from the docs and free to change
//! with the fuzz target.
//!
//! Compiled always (not behind a feature or `cfg(fuzzing)`) so that the ordinary build and clippy
//! check it: a change in `auth` that breaks it breaks `cargo build`, not only the nightly fuzz
//! build nobody runs locally. It holds no state and reaches nothing a request cannot already reach.
#![doc(hidden)]

use std::borrow::Cow;

use holdfast_proto::http1::RequestHead;

use crate::auth;
use crate::config::{Config, Secret};

pub use crate::auth::{NBF_LEEWAY_SECS, TOKEN_COOKIE};

/// The token a request head carries (`Authorization: Bearer`, else `?token=`, else the cookie),
/// as the server reads it.
pub fn token_of(head: &RequestHead) -> Option<Cow<'_, str>> {
    auth::token_of(head)
}

/// Whether a grant `pattern` (`chat:*`, `*`, or a name) covers `channel`.
pub fn pattern_matches(pattern: &str, channel: &str) -> bool {
    auth::matches(pattern, channel)
}

/// Whether a connection whose token expires at `deadline` (0 = never) is past it at `now`: the
/// rule the push shards close connections by.
pub fn is_expired(deadline: u32, now: u64) -> bool {
    auth::is_expired(deadline, now)
}

/// Unix seconds on the clock tokens are checked against.
pub fn unix_now() -> u64 {
    auth::unix_now()
}

/// The server's token checker, built from a configuration the way `run` builds it.
pub struct Verifier(auth::Auth);

/// What a valid token grants (the server's `Grants`, readable).
pub struct Granted(auth::Grants);

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Missing,
    Invalid(String),
    Expired,
}

impl Verifier {
    /// A checker for an HS256 `secret` (empty: none) and a PEM public key file (empty: none),
    /// with `jwt_allow_no_exp` as given.
    pub fn new(secret: &str, public_key_path: &str, allow_no_exp: bool) -> Result<Option<Verifier>, String> {
        let config = Config {
            jwt_secret: Secret::from(secret),
            jwt_public_key: public_key_path.to_string(),
            jwt_allow_no_exp: allow_no_exp,
            ..Config::default()
        };
        Ok(auth::Auth::from_config(&config)?.map(Verifier))
    }

    /// Checks a token's signature and claims.
    pub fn verify(&self, token: &str) -> Result<Granted, Refused> {
        self.0.verify(token).map(Granted).map_err(|rejection| {
            // The 401 answer is built for every refusal in the server too.
            let _ = rejection.response();
            match rejection {
                auth::Rejection::Missing => Refused::Missing,
                auth::Rejection::Invalid(reason) => Refused::Invalid(reason),
                auth::Rejection::Expired => Refused::Expired,
            }
        })
    }
}

impl Granted {
    pub fn can_subscribe(&self, channel: &str) -> bool {
        self.0.can_subscribe(channel)
    }

    pub fn can_publish(&self, channel: &str) -> bool {
        self.0.can_publish(channel)
    }

    /// The `channels` claim's patterns.
    pub fn subscribe_patterns(&self) -> impl Iterator<Item = &str> {
        self.0.subscribe.iter().map(|p| &**p)
    }

    /// The `publish` claim's patterns.
    pub fn publish_patterns(&self) -> impl Iterator<Item = &str> {
        self.0.publish.iter().map(|p| &**p)
    }

    pub fn admin(&self) -> bool {
        self.0.admin
    }

    /// `exp` as the connection keeps it (unix seconds, 0 = none).
    pub fn deadline(&self) -> u32 {
        self.0.deadline
    }
}
