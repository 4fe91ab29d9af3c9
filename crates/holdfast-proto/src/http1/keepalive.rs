//! Whether a connection persists after a response: RFC 9112 §9.3, in one function.
//!
//! The peer can only turn persistence off (or, on 1.0, opt in); the server turns it off when the
//! request cap is reached or it is draining. The response then says what was decided.

use super::request::{trim_ows, Version};

/// The tokens of a request's `Connection` fields that matter here (RFC 9110 §7.6.1: a
/// comma-separated, case-insensitive token list, possibly over several fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// `close` was listed.
    pub close: bool,
    /// `keep-alive` was listed (the HTTP/1.0 opt-in).
    pub keep_alive: bool,
    /// `upgrade` was listed (WebSocket handshakes need it).
    pub upgrade: bool,
}

impl ConnectionOptions {
    /// Adds the tokens of one `Connection` field value.
    pub fn add_field(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',') {
            let token = trim_ows(token);
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            }
        }
    }

    /// Whether the client asks for the connection to persist: 1.1 unless `close`; 1.0 only with
    /// `keep-alive` (and not `close`).
    pub fn wants_keep_alive(&self, version: Version) -> bool {
        if self.close {
            return false;
        }
        match version {
            Version::Http11 => true,
            Version::Http10 => self.keep_alive,
        }
    }
}

/// What the response to a request says about the connection, and what the server then does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Keep the connection open. The response carries `Keep-Alive: timeout=…, max=<requests_left>`
    /// and, on HTTP/1.0, `Connection: keep-alive`.
    KeepAlive {
        /// How many more requests the connection may carry after this one (≥ 1).
        requests_left: u32,
    },
    /// The response carries `Connection: close` and the server closes after sending it.
    Close,
}

impl Persistence {
    /// Decides persistence for the response to a request.
    ///
    /// `served` counts requests on this connection including the current one; `max_requests` is
    /// the cap (`keepalive_requests`); `server_allows` is false while draining or after an error.
    pub fn decide(
        version: Version,
        options: &ConnectionOptions,
        served: u32,
        max_requests: u32,
        server_allows: bool,
    ) -> Persistence {
        let requests_left = max_requests.saturating_sub(served);
        if server_allows && requests_left > 0 && options.wants_keep_alive(version) {
            Persistence::KeepAlive { requests_left }
        } else {
            Persistence::Close
        }
    }

    /// Whether the connection stays open after the response.
    pub fn is_keep_alive(&self) -> bool {
        matches!(self, Persistence::KeepAlive { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(fields: &[&str]) -> ConnectionOptions {
        let mut options = ConnectionOptions::default();
        for field in fields {
            options.add_field(field.as_bytes());
        }
        options
    }

    #[test]
    fn persistence_matrix() {
        use Version::*;
        let cases: &[(Version, &[&str], bool)] = &[
            (Http11, &[], true),
            (Http11, &["keep-alive"], true),
            (Http11, &["close"], false),
            (Http11, &["Close"], false),
            (Http11, &["foo, CLOSE"], false),
            (Http11, &["keep-alive", "close"], false),
            (Http10, &[], false),
            (Http10, &["keep-alive"], true),
            (Http10, &["Keep-Alive"], true),
            (Http10, &["upgrade,  keep-alive "], true),
            (Http10, &["close"], false),
            (Http10, &["keep-alive, close"], false),
            // A token that merely contains "close" is not close.
            (Http11, &["closed"], true),
            (Http10, &["keep-alive-ish"], false),
        ];
        for (version, fields, want) in cases {
            assert_eq!(options(fields).wants_keep_alive(*version), *want, "{version:?} {fields:?}");
        }
    }

    #[test]
    fn request_cap_closes_on_the_last_request() {
        let opts = options(&[]);
        let decide = |served| Persistence::decide(Version::Http11, &opts, served, 3, true);
        assert_eq!(decide(1), Persistence::KeepAlive { requests_left: 2 });
        assert_eq!(decide(2), Persistence::KeepAlive { requests_left: 1 });
        assert_eq!(decide(3), Persistence::Close);
        assert_eq!(Persistence::decide(Version::Http11, &opts, 1, 3, false), Persistence::Close);
    }
}
