//! CORS (Fetch standard §3.2): which origins may read responses, and preflight answers; and
//! which origins may change state (publish, delete, the admin actions) or open a WebSocket.
//! Origins are allowed by `cors_origins` (none by default; entries are matched in `origin`).

use holdfast_proto::http1::{Method, RequestHead};

use crate::config::Config;
use crate::origin;
use crate::response::Response;

/// Methods a cross-origin page may use.
const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// Request headers a cross-origin page may send (EventSource sends Last-Event-ID on reconnect).
/// `Authorization`: a page of an allowed origin may send its access token as a Bearer field.
const ALLOW_HEADERS: &str = "Content-Type, Last-Event-ID, Holdfast-Event, Cache-Control, Authorization";
/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// The request's `Origin`, when CORS allows it.
pub(crate) fn allowed_origin(head: &RequestHead, config: &Config) -> Option<String> {
    let origin = std::str::from_utf8(head.header("origin")?).ok()?;
    config.allows_origin(origin).then(|| origin.to_string())
}

/// Adds the CORS fields to a response for an allowed origin.
///
/// Never `Access-Control-Allow-Credentials`: browsers then withhold the response from pages that
/// sent cookies or HTTP authentication cross-origin. Should it ever be sent, it must be for a
/// listed origin only, never when `cors_origins` is `*` (that would hand every site the
/// answers to its visitors' credentials).
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

/// Whether a request may change state: any method but the safe ones (RFC 9110 §9.2.1). That is
/// `POST`/`DELETE /pub/…` and `POST /admin/disconnect` today, and whatever action comes next,
/// wherever it lives.
pub(crate) fn changes_state(head: &RequestHead) -> bool {
    !matches!(head.method(), Method::Get | Method::Head | Method::Options)
}

/// Whether the page that sent this request (its `Origin`) may change state here or open a
/// WebSocket: no `Origin` (curl, servers, SDKs), the server's own origin, or one `cors_origins`
/// allows. `null` never may: it is what sandboxed frames, `data:` pages and form posts under
/// `Referrer-Policy: no-referrer` send, so it names no page that could be trusted, and `*`
/// does not cover it here.
///
/// `Origin` alone is enough: browsers send it on every cross-origin request but a GET or HEAD
/// (and on every WebSocket handshake), so a cross-site POST or DELETE without it does not come
/// from a browser; `Sec-Fetch-Site` would add nothing (and older browsers lack it).
pub(crate) fn origin_may_act(head: &RequestHead, config: &Config) -> bool {
    let Some(origin) = head.header("origin") else { return true };
    let Ok(origin) = std::str::from_utf8(origin) else { return false };
    if origin.eq_ignore_ascii_case("null") {
        return false;
    }
    let host = head.header("host").and_then(|h| std::str::from_utf8(h).ok()).unwrap_or("");
    origin::is_own(origin, origin::served_scheme(config), host) || config.allows_origin(origin)
}

/// The answer to a state change (or a WebSocket handshake) from an origin that may not act.
pub(crate) fn origin_refusal(what: &str) -> Response {
    Response::error(
        403,
        "origin_not_allowed",
        &format!(
            "a page of this Origin may not {what} here: only this server's own pages and those cors_origins allows may (never Origin: null)"
        ),
    )
}
