//! CORS (Fetch standard §3.2): which origins may read responses, and preflight answers.
//! Origins are allowed by `cors_origins` (none by default).

use holdfast_proto::http1::RequestHead;

use crate::config::Config;
use crate::response::Response;

/// Methods a cross-origin page may use.
const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// Request headers a cross-origin page may send (EventSource sends Last-Event-ID on reconnect).
const ALLOW_HEADERS: &str = "Content-Type, Last-Event-ID, Holdfast-Event, Cache-Control";
/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// The request's `Origin`, when CORS allows it.
pub(crate) fn allowed_origin(head: &RequestHead, config: &Config) -> Option<String> {
    let origin = std::str::from_utf8(head.header("origin")?).ok()?;
    config.allows_origin(origin).then(|| origin.to_string())
}

/// Adds the CORS fields to a response for an allowed origin.
pub(crate) fn decorate(response: Response, origin: Option<&str>) -> Response {
    match origin {
        Some(origin) => response
            .with_header("Access-Control-Allow-Origin", origin)
            .with_header("Vary", "Origin")
            .with_header("Access-Control-Expose-Headers", "Content-Type, Holdfast-Heartbeat, Holdfast-Cursor"),
        None => response,
    }
}

/// Answers `OPTIONS` preflights: 204 with the allowances for an allowed origin, 403 otherwise.
pub(crate) fn preflight(head: &RequestHead, config: &Config) -> Response {
    match allowed_origin(head, config) {
        Some(origin) => Response::new(204, "text/plain", &b""[..])
            .with_header("Access-Control-Allow-Origin", origin)
            .with_header("Vary", "Origin")
            .with_header("Access-Control-Allow-Methods", ALLOW_METHODS)
            .with_header("Access-Control-Allow-Headers", ALLOW_HEADERS)
            .with_header("Access-Control-Max-Age", PREFLIGHT_MAX_AGE),
        None => Response::error(403, "origin_not_allowed", "this origin is not in cors_origins"),
    }
}
