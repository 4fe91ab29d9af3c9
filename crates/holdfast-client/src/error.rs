//! The SDK's one error type: opaque, asked with predicates (`is_connect`, `is_timeout`, …) so
//! that its variants can change without breaking callers.

use std::fmt;

type Source = Box<dyn std::error::Error + Send + Sync>;

/// An error from publishing or subscribing.
pub struct Error {
    kind: Kind,
    source: Option<Source>,
}

#[derive(Debug)]
enum Kind {
    /// No connection could be made, or it broke (reset, EOF) before an answer was complete.
    Connect(String),
    /// Nothing came within the time allowed: connect, answer, or `heartbeat × k` of silence.
    Timeout(String),
    /// The server answered with an error status (and its JSON body), or a WebSocket error op.
    Refused { status: Option<u16>, label: Option<String>, reason: Option<String> },
    /// The server's bytes did not follow the protocol.
    Protocol(String),
    /// TLS failed: the server's certificate was not trusted (unknown CA, another name, expired),
    /// or the two sides could not agree (a plain-HTTP server, no common version or cipher).
    Tls(String),
    /// The caller's input was unusable (a bad server URL).
    Invalid(String),
}

/// A shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn connect(what: impl Into<String>, source: impl Into<Option<Source>>) -> Error {
        Error { kind: Kind::Connect(what.into()), source: source.into() }
    }

    pub(crate) fn timeout(what: impl Into<String>) -> Error {
        Error { kind: Kind::Timeout(what.into()), source: None }
    }

    pub(crate) fn refused(status: Option<u16>, label: Option<String>, reason: Option<String>) -> Error {
        Error { kind: Kind::Refused { status, label, reason }, source: None }
    }

    pub(crate) fn protocol(what: impl Into<String>) -> Error {
        Error { kind: Kind::Protocol(what.into()), source: None }
    }

    pub(crate) fn invalid(what: impl Into<String>) -> Error {
        Error { kind: Kind::Invalid(what.into()), source: None }
    }

    pub(crate) fn tls(what: impl Into<String>) -> Error {
        Error { kind: Kind::Tls(what.into()), source: None }
    }

    /// The server could not be reached, or the connection broke before the answer was complete.
    pub fn is_connect(&self) -> bool {
        matches!(self.kind, Kind::Connect(_))
    }

    /// Nothing came in the time allowed (including a link found dead by the heartbeat watch).
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::Timeout(_))
    }

    /// The server refused the request: see [`Error::status`], [`Error::label`], [`Error::reason`].
    pub fn is_refused(&self) -> bool {
        matches!(self.kind, Kind::Refused { .. })
    }

    /// The server's answer did not follow the protocol.
    pub fn is_protocol(&self) -> bool {
        matches!(self.kind, Kind::Protocol(_))
    }

    /// The caller's input was unusable (for example a server URL that is not
    /// `http[s]://host:port`, or a root certificate PEM without a certificate).
    pub fn is_invalid(&self) -> bool {
        matches!(self.kind, Kind::Invalid(_))
    }

    /// TLS with an `https://` server failed: its certificate is not trusted (a CA the client was
    /// not given, see [`TlsOptions`](crate::TlsOptions); another host name; expired), or the
    /// handshake could not complete (a plain-HTTP server on that port). Not transient.
    pub fn is_tls(&self) -> bool {
        matches!(self.kind, Kind::Tls(_))
    }

    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match &self.kind {
            Kind::Refused { status, .. } => *status,
            _ => None,
        }
    }

    /// The server's error label (`"error"` of its JSON body, or a WebSocket error op's `code`),
    /// such as `bad_channel` or `too_many_channels`. Stable: branch on it.
    pub fn label(&self) -> Option<&str> {
        match &self.kind {
            Kind::Refused { label, .. } => label.as_deref(),
            _ => None,
        }
    }

    /// The server's explanation for people (`"reason"` of its JSON body); wording may change.
    pub fn reason(&self) -> Option<&str> {
        match &self.kind {
            Kind::Refused { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }

    /// Whether trying again later can help: not for a refusal the server will repeat (a 4xx
    /// other than 408 and 429), a protocol violation, invalid input, or a TLS failure (a
    /// certificate the client does not trust is a matter of configuration, like a 403: retrying
    /// would only hide it, and stopping is the safe answer to an impostor).
    pub fn is_transient(&self) -> bool {
        match &self.kind {
            Kind::Connect(_) | Kind::Timeout(_) => true,
            Kind::Refused { status: Some(s), .. } => *s >= 500 || *s == 408 || *s == 429,
            // WebSocket error ops and refusals without a status are answers to what was asked.
            Kind::Refused { status: None, .. } => false,
            Kind::Protocol(_) | Kind::Invalid(_) | Kind::Tls(_) => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Connect(what) => write!(f, "connection failed: {what}")?,
            Kind::Timeout(what) => write!(f, "timed out: {what}")?,
            Kind::Refused { status, label, reason } => {
                f.write_str("refused")?;
                if let Some(status) = status {
                    write!(f, " ({status})")?;
                }
                if let Some(label) = label {
                    write!(f, ": {label}")?;
                }
                if let Some(reason) = reason {
                    write!(f, ": {reason}")?;
                }
            }
            Kind::Protocol(what) => write!(f, "protocol error: {what}")?,
            Kind::Invalid(what) => write!(f, "invalid: {what}")?,
            Kind::Tls(what) => write!(f, "TLS failed: {what}")?,
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
            // reqwest's own words ("error sending request") hide the cause: name the innermost.
            let mut root: &(dyn std::error::Error + 'static) = source.as_ref();
            while let Some(next) = root.source() {
                root = next;
            }
            if !std::ptr::addr_eq(root, source.as_ref()) {
                write!(f, ": {root}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Builds a refusal from an error answer: status plus the JSON body `{"error","reason"}` when
/// there is one.
pub(crate) fn from_answer(status: u16, body: &[u8]) -> Error {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| json.as_ref().and_then(|j| j[name].as_str()).map(str::to_string);
    let reason = field("reason").or_else(|| {
        let text = String::from_utf8_lossy(body).trim().to_string();
        (!text.is_empty() && json.is_none()).then(|| text.chars().take(200).collect())
    });
    Error::refused(Some(status), field("error"), reason)
}

/// Classifies a reqwest error (timeouts, TLS failures, connection failures, the rest as
/// connection trouble).
pub(crate) fn from_reqwest(what: &str, e: reqwest::Error) -> Error {
    if let Some(tls) = rustls_cause(&e) {
        return Error { kind: Kind::Tls(format!("{what}: {}", crate::tls::explain(tls))), source: Some(Box::new(e)) };
    }
    if e.is_timeout() {
        return Error { kind: Kind::Timeout(what.to_string()), source: Some(Box::new(e)) };
    }
    if e.is_builder() {
        return Error { kind: Kind::Invalid(what.to_string()), source: Some(Box::new(e)) };
    }
    Error::connect(what, Some(Box::new(e) as Source))
}

/// The rustls error somewhere in an error's chain. `io::Error::source` skips the error an
/// `io::Error` wraps (it gives that error's own source), so each `io::Error` is opened by hand
/// (hyper-util wraps rustls's `io::Error` in another).
pub(crate) fn rustls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_carries_status_label_and_reason() {
        let e = from_answer(400, br#"{"error":"bad_channel","reason":"no spaces"}"#);
        assert!(e.is_refused() && !e.is_transient());
        assert_eq!((e.status(), e.label(), e.reason()), (Some(400), Some("bad_channel"), Some("no spaces")));
        assert_eq!(e.to_string(), "refused (400): bad_channel: no spaces");
    }

    #[test]
    fn server_errors_and_overload_are_transient() {
        assert!(from_answer(503, br#"{"error":"too_many_channels"}"#).is_transient());
        assert!(from_answer(429, b"").is_transient());
        assert!(Error::timeout("x").is_transient());
    }

    #[test]
    fn a_body_that_is_not_json_becomes_the_reason() {
        let e = from_answer(502, b"Bad Gateway\n");
        assert_eq!((e.label(), e.reason()), (None, Some("Bad Gateway")));
    }
}
