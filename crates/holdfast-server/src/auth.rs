//! Access control with JSON Web Tokens: who may subscribe to, publish on and administer what.
//!
//! Off unless `jwt_secret` (HS256) or `jwt_public_key` (a PEM file: RS256, ES256/ES384 or EdDSA,
//! the algorithm following from the key) is set; then every request but the public ones
//! (`/healthz`, the embedded page files, CORS preflights) needs a token. A token comes as
//! `Authorization: Bearer …`, else `?token=…` (EventSource and browser WebSockets cannot set
//! headers), else the cookie `holdfast_token`. Its claims grant:
//! - `channels`: subscribe rights, exact names or prefixes (`chat:*`; `*` is every channel);
//! - `publish`: publish rights, the same form;
//! - `admin: true`: `/admin/*`, `DELETE /pub/…` and `/metrics` (unless `metrics_public`);
//! - `exp` (required unless `jwt_allow_no_exp`) and `nbf` (checked when present).
//!
//! Answers: 401 with `WWW-Authenticate: Bearer …` (RFC 6750 §3) when there is no token or it is
//! not valid, 403 `forbidden` when a valid token does not grant what the request needs.
//!
//! What this module does not do: close subscriptions whose token expires (the connection
//! carries the deadline, `ConnState::token_deadline`, and the push shards enforce it), or log a
//! token (nothing here logs; request targets are never logged).

use holdfast_proto::http1::RequestHead;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;
use std::borrow::Cow;

use crate::config::Config;
use crate::query::{self, percent_decode};
use crate::response::Response;
use crate::router::Route;
use crate::Server;

/// Clock skew allowed on `nbf`: a token minted on an issuer whose clock runs ahead of ours is
/// accepted that much early. 30 s covers NTP-synchronised machines with room to spare while
/// keeping a token's window what its issuer meant. `exp` gets none: it is enforced exactly, at
/// the door and on open connections alike, so the two never disagree (a token accepted at the
/// door is never one the connection then closes at once).
pub const NBF_LEEWAY_SECS: u64 = 30;

/// The cookie a token may come in.
pub const TOKEN_COOKIE: &str = "holdfast_token";

/// The configured keys, built once at start.
pub(crate) struct Auth {
    /// Each key with what it verifies (the algorithms of its family only: an HS256 token is never
    /// checked against a public key used as a shared secret).
    keys: Vec<(DecodingKey, Validation)>,
    metrics_public: bool,
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grants {
    // pub(crate): read by `fuzzing`.
    pub(crate) subscribe: Box<[Box<str>]>,
    pub(crate) publish: Box<[Box<str>]>,
    pub(crate) admin: bool,
    /// Unix seconds at which the token expires (`exp`), 0 if it has none; saturates in 2106.
    pub deadline: u32,
}

impl Grants {
    /// Whether the token grants subscribing to `channel`.
    pub fn can_subscribe(&self, channel: &str) -> bool {
        self.subscribe.iter().any(|pattern| matches(pattern, channel))
    }

    /// Whether the token grants publishing on `channel`.
    pub fn can_publish(&self, channel: &str) -> bool {
        self.publish.iter().any(|pattern| matches(pattern, channel))
    }
}

/// `chat:*` matches every name starting with `chat:`; `*` every name; anything else itself.
pub(crate) fn matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

/// The claims Holdfast reads; others are ignored.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// No token at all.
    Missing,
    /// Not a token we accept (the reason is for people).
    Invalid(String),
    /// Past its `exp`.
    Expired,
}

impl Rejection {
    /// The 401 answer (RFC 6750 §3: no `error` attribute when the request had no token).
    pub fn response(&self) -> Response {
        let (label, reason, challenge) = match self {
            Rejection::Missing => (
                "unauthorized",
                "a token is required: Authorization: Bearer, ?token= or the holdfast_token cookie".to_string(),
                "Bearer realm=\"holdfast\"".to_string(),
            ),
            Rejection::Invalid(reason) => (
                "invalid_token",
                reason.clone(),
                format!("Bearer realm=\"holdfast\", error=\"invalid_token\", error_description=\"{reason}\""),
            ),
            Rejection::Expired => (
                "token_expired",
                "the token has expired (exp)".to_string(),
                "Bearer realm=\"holdfast\", error=\"invalid_token\", error_description=\"the token has expired\""
                    .to_string(),
            ),
        };
        Response::error(401, label, &reason).with_header("WWW-Authenticate", challenge)
    }
}

/// 403 for a valid token that lacks a right (`what`: "subscribe on chat:x", "admin").
pub(crate) fn forbidden(what: &str) -> Response {
    Response::error(403, "forbidden", &format!("token does not grant {what}"))
        .with_header("WWW-Authenticate", "Bearer realm=\"holdfast\", error=\"insufficient_scope\"")
}

impl Auth {
    /// The keys `config` names; `None` when neither is set (no access control). A key file that
    /// cannot be used is an error naming it (`config` already checked it when it was set).
    pub fn from_config(config: &Config) -> Result<Option<Auth>, String> {
        let mut keys = Vec::new();
        let with_claims = |mut validation: Validation| {
            // `exp` is checked by the library, exactly (see NBF_LEEWAY_SECS); `nbf` here, with
            // its leeway. No audience is configured, so none is checked.
            validation.leeway = 0;
            validation.validate_nbf = false;
            validation.validate_aud = false;
            if config.jwt_allow_no_exp {
                validation.required_spec_claims.clear();
            }
            validation
        };
        if !config.jwt_secret.is_empty() {
            let key = DecodingKey::from_secret(config.jwt_secret.expose().as_bytes())
                .map_err(|e| format!("jwt_secret: {e}"))?;
            keys.push((key, with_claims(Validation::new(Algorithm::HS256))));
        }
        if !config.jwt_public_key.is_empty() {
            let path = &config.jwt_public_key;
            let (key, family) = load_public_key(path).map_err(|e| format!("jwt_public_key {path:?} {e}"))?;
            keys.push((key, with_claims(Validation::new_for_family(family))));
        }
        Ok((!keys.is_empty()).then_some(Auth { keys, metrics_public: config.metrics_public }))
    }

    /// Checks a token's signature and claims.
    pub fn verify(&self, token: &str) -> Result<Grants, Rejection> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Rejection::Invalid("the token is not a JWT (header.payload.signature)".into()))?;
        let Some((key, validation)) = self.keys.iter().find(|(_, v)| v.algorithms.contains(&header.alg)) else {
            return Err(Rejection::Invalid(format!("algorithm {:?} is not accepted here", header.alg)));
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => Rejection::Expired,
                ErrorKind::InvalidSignature => Rejection::Invalid("bad signature".into()),
                ErrorKind::MissingRequiredClaim(claim) => Rejection::Invalid(format!("the token has no {claim} claim")),
                ErrorKind::InvalidClaimFormat(claim) => Rejection::Invalid(format!("the {claim} claim is malformed")),
                _ => Rejection::Invalid("the token cannot be verified".into()),
            })?
            .claims;
        let now = jsonwebtoken::get_current_timestamp();
        let deadline = claims.exp.map_or(0, |exp| exp.clamp(1.0, f64::from(u32::MAX)) as u32);
        // The library lets a token through while `exp`, rounded to whole seconds, is not below
        // now: `exp = now`, or `now - 0.4` rounded up. The connection is closed by `is_expired`
        // (`now >= deadline`, `exp` truncated), so such a token would be accepted and its stream
        // closed at once. Judging here by the connection's rule keeps the two the same.
        if is_expired(deadline, now) {
            return Err(Rejection::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > (now + NBF_LEEWAY_SECS) as f64) {
            return Err(Rejection::Invalid("the token is not valid yet (nbf)".into()));
        }
        let patterns = |list: Vec<String>| list.into_iter().map(String::into_boxed_str).collect();
        Ok(Grants {
            subscribe: patterns(claims.channels),
            publish: patterns(claims.publish),
            admin: claims.admin,
            deadline,
        })
    }
}

/// Reads a PEM public key: RSA (RS256…, PS256…), EC (ES256, ES384) or Ed25519 (EdDSA), told
/// apart by the key itself. The error is one readable line, to follow the file's name.
pub fn load_public_key(path: &str) -> Result<(DecodingKey, AlgorithmFamily), String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, AlgorithmFamily::Rsa));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((key, AlgorithmFamily::Ec));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok((key, AlgorithmFamily::Ed));
    }
    Err("is not a PEM public key (RSA, EC P-256/P-384 or Ed25519)".to_string())
}

/// The token a request carries: `Authorization: Bearer`, else `?token=`, else the cookie.
pub(crate) fn token_of(head: &RequestHead) -> Option<Cow<'_, str>> {
    if let Some(value) = head.header("authorization").and_then(|v| std::str::from_utf8(v).ok()) {
        let value = value.trim();
        // RFC 6750 §2.1: the scheme is case-insensitive. `get`, not `[..7]`: a header value may
        // hold UTF-8 (obs-text), and byte 7 may fall inside a character (a panic, found by fuzzing).
        if value.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer ")) {
            return Some(Cow::Borrowed(value[7..].trim()));
        }
    }
    if let Some(Ok(token)) = query::param(head.query(), "token") {
        return Some(token);
    }
    let cookies = head.header("cookie").and_then(|v| std::str::from_utf8(v).ok())?;
    cookies.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == TOKEN_COOKIE).then(|| Cow::Borrowed(value.trim().trim_matches('"')))
    })
}

/// What a route needs from a token.
enum Need {
    /// Public.
    Nothing,
    /// Any valid token.
    Token,
    Admin,
    /// Subscribe rights on each channel.
    Subscribe(Vec<String>),
    Publish(String),
    /// `GET /pub/{channel}`: subscribe or publish rights.
    SubscribeOrPublish(String),
}

fn need(route: Route, head: &RequestHead, auth: &Auth) -> Need {
    let pub_channel = || {
        let raw = head.path().strip_prefix("/pub/").unwrap_or("");
        percent_decode(raw, false).map_or_else(|| raw.to_string(), Cow::into_owned)
    };
    match route {
        // (`OriginRefused`: already a 403 from the origin check, with or without a token.)
        Route::Healthz
        | Route::Asset(_)
        | Route::Preflight
        | Route::NotFound
        | Route::MethodNotAllowed(_)
        | Route::OriginRefused => Need::Nothing,
        Route::Metrics if auth.metrics_public => Need::Nothing,
        Route::Metrics
        | Route::AdminStats
        | Route::AdminConnections
        | Route::AdminEvents
        | Route::AdminDisconnect
        | Route::AdminDrain
        | Route::DeleteChannel => Need::Admin,
        Route::Echo | Route::EchoWebSocket => Need::Token,
        Route::Publish => Need::Publish(pub_channel()),
        Route::ChannelInfo => Need::SubscribeOrPublish(pub_channel()),
        Route::Subscribe => {
            let list = head.path().strip_prefix("/sub").unwrap_or("");
            let list = list.strip_prefix('/').unwrap_or(list);
            let list = percent_decode(list, false).unwrap_or(Cow::Borrowed(list));
            Need::Subscribe(list.split(',').filter(|name| !name.is_empty()).map(str::to_string).collect())
        }
    }
}

/// Whether the request may proceed: `Ok(None)` with access control off (or a public route),
/// `Ok(Some(grants))` with a token that grants what the route needs, else the 401/403 answer.
pub(crate) fn admit(route: Route, head: &RequestHead, server: &Server) -> Result<Option<Grants>, Response> {
    let Some(auth) = server.auth.as_ref() else { return Ok(None) };
    let need = need(route, head, auth);
    if matches!(need, Need::Nothing) {
        return Ok(None);
    }
    let token = token_of(head).ok_or(Rejection::Missing).map_err(|r| r.response())?;
    let grants = auth.verify(&token).map_err(|r| r.response())?;
    let refused = match &need {
        Need::Nothing | Need::Token => None,
        Need::Admin => (!grants.admin).then(|| "admin".to_string()),
        Need::Subscribe(names) => {
            names.iter().find(|name| !grants.can_subscribe(name)).map(|name| format!("subscribe on {name}"))
        }
        Need::Publish(name) => (!grants.can_publish(name)).then(|| format!("publish on {name}")),
        Need::SubscribeOrPublish(name) => {
            (!grants.can_subscribe(name) && !grants.can_publish(name)).then(|| format!("subscribe on {name}"))
        }
    };
    match refused {
        Some(what) => Err(forbidden(&what)),
        None => Ok(Some(grants)),
    }
}

/// Whether access control is on (then a long poll's next request is served by the runtime, where
/// the token is checked, not in the shard).
pub(crate) fn is_enabled(server: &Server) -> bool {
    server.auth.is_some()
}

/// Unix seconds now, on the clock `exp` is read against.
pub(crate) fn unix_now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Whether a connection whose token expires at `deadline` (unix seconds, 0 = never) is past it.
pub(crate) fn is_expired(deadline: u32, now: u64) -> bool {
    deadline != 0 && now >= u64::from(deadline)
}

/// A WebSocket op's check: `Err` with the `forbidden` refusal when the connection's token does
/// not grant `what` on `channel` (`grants` is `None` only with access control off).
pub(crate) fn check_op(
    server: &Server,
    grants: Option<&Grants>,
    publish: bool,
    channel: &str,
) -> Result<(), crate::subscription::Refusal> {
    if server.auth.is_none() {
        return Ok(());
    }
    let granted = grants.is_some_and(|g| if publish { g.can_publish(channel) } else { g.can_subscribe(channel) });
    if granted {
        Ok(())
    } else {
        let action = if publish { "publish" } else { "subscribe" };
        Err(crate::subscription::Refusal {
            status: 403,
            code: "forbidden",
            reason: format!("token does not grant {action} on {channel}"),
        })
    }
}

/// Whether `method` on `path` is allowed to anyone (for docs and tests of the public set).
#[cfg(test)]
fn is_public_path(method: holdfast_proto::http1::Method, path: &str) -> bool {
    method == holdfast_proto::http1::Method::Get && (path == "/healthz" || crate::assets::find(path).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_proto::http1::Method;

    #[test]
    fn patterns_match_exact_names_and_prefixes() {
        assert!(matches("chat:*", "chat:lobby"));
        assert!(matches("chat:*", "chat:"));
        assert!(!matches("chat:*", "chatroom"));
        assert!(matches("*", "anything"));
        assert!(matches("room", "room"));
        assert!(!matches("room", "room2"));
    }

    #[test]
    fn the_page_files_and_healthz_are_public() {
        assert!(is_public_path(Method::Get, "/healthz"));
        assert!(is_public_path(Method::Get, "/holdfast.js"));
        assert!(is_public_path(Method::Get, "/"));
        assert!(!is_public_path(Method::Get, "/admin/stats"));
    }

    fn head(wire: &str) -> RequestHead {
        let mut buf = bytes::BytesMut::from(wire.as_bytes());
        holdfast_proto::http1::parse_request(&mut buf, &holdfast_proto::Limits::default()).unwrap().unwrap()
    }

    /// Fuzz finding (fuzz/seeds/token/regression-bearer-scheme-utf8): a multi-byte character
    /// across byte 7 of the Authorization value panicked the scheme check.
    #[test]
    fn a_non_ascii_authorization_value_is_not_a_bearer_token() {
        let wire = "GET /sub/a?token=q HTTP/1.1\r\nHost: h\r\nAuthorization: Beareré x\r\n\r\n";
        assert_eq!(token_of(&head(wire)).as_deref(), Some("q"));
        let wire = "GET /sub/a HTTP/1.1\r\nHost: h\r\nAuthorization: bEaReR  é.x \r\n\r\n";
        assert_eq!(token_of(&head(wire)).as_deref(), Some("é.x"));
    }

    fn hs256(claims: serde_json::Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_secret(b"s").unwrap();
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    }

    /// Fuzz finding (fuzz/seeds/token/regression-exp-rounded-up): the library rounds `exp` and
    /// accepts it while not below now, so `exp = now` or `now + 0.6` was accepted at the door
    /// with a deadline the connection was already past.
    #[test]
    fn a_token_is_expired_at_the_door_exactly_when_its_connection_would_be() {
        let config = Config { jwt_secret: crate::config::Secret::from("s"), ..Config::default() };
        let auth = Auth::from_config(&config).unwrap().unwrap();
        // Retried over a second boundary, so `now` is the same second throughout.
        loop {
            let now = unix_now();
            let verdicts = [-0.4, 0.0, 0.6, 2.0]
                .map(|offset| auth.verify(&hs256(serde_json::json!({ "exp": now as f64 + offset }))));
            if unix_now() != now {
                continue;
            }
            assert_eq!(verdicts[0], Err(Rejection::Expired));
            assert_eq!(verdicts[1], Err(Rejection::Expired));
            assert_eq!(verdicts[2], Err(Rejection::Expired));
            let grants = verdicts[3].as_ref().unwrap();
            assert_eq!(u64::from(grants.deadline), now + 2);
            assert!(!is_expired(grants.deadline, now));
            break;
        }
    }

    #[test]
    fn expiry_is_checked_against_the_deadline() {
        assert!(!is_expired(0, u64::MAX));
        assert!(!is_expired(100, 99));
        assert!(is_expired(100, 100));
    }
}
