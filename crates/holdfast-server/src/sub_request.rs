//! What a `GET /sub/{ch1,ch2,…}` request asks for: the transport, where each channel starts,
//! the gaps to report, the heartbeat interval (DESIGN §1, "Transport selection" and "Cursors,
//! history and resume"). A leaf: the connection loop and the push shards (which serve a long-poll
//! client's next poll themselves) both parse requests with it.

use std::sync::Arc;
use std::time::Duration;

use holdfast_proto::http1::RequestHead;

use crate::config::Config;
use crate::query::{self, percent_decode};
use crate::response::Response;
use crate::subscription::{self, Positions, Refusal};
use holdfast_hub::{Broker, Channel, Cursor, Gap};

/// How a subscriber wants messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transport {
    LongPoll,
    Poll,
    Sse,
    Stream,
    Iframe {
        callback: String,
    },
    /// `Upgrade: websocket`; `raw` for `?format=raw` (payloads instead of envelopes).
    WebSocket {
        raw: bool,
    },
}

/// A parsed, resolved subscription request.
pub(crate) struct Subscription {
    pub transport: Transport,
    /// Each channel with the last sequence number the subscriber has (it gets what follows).
    pub positions: Positions,
    pub gaps: Vec<Gap>,
    /// The CORS origin to allow in the answer, if any.
    pub origin: Option<String>,
    /// The heartbeat interval (streaming transports and WebSocket): `heartbeat_interval`, or
    /// what the subscriber asked for with `?heartbeat=SECONDS`, clamped to
    /// `[heartbeat_min, heartbeat_max]`. Announced in `Holdfast-Heartbeat`.
    pub heartbeat: Duration,
}

/// A subscription request before its channels are opened.
pub(crate) struct Request {
    pub transport: Transport,
    names: Vec<String>,
    cursor: Option<Cursor>,
    history: Option<u64>,
    origin: Option<String>,
    heartbeat: Duration,
}

impl Request {
    fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// The subscription, its channels opened.
    fn resolve(self, channels: Vec<Arc<Channel>>) -> Subscription {
        let (positions, gaps) = subscription::start(channels, self.cursor.as_ref(), self.history);
        Subscription { transport: self.transport, positions, gaps, origin: self.origin, heartbeat: self.heartbeat }
    }
}

/// Parses `GET /sub/…` and opens its channels (a network broker may need a round trip for
/// that); a refusal is a ready 400 (or 501, 503) response.
pub(crate) async fn parse(head: &RequestHead, broker: &dyn Broker, config: &Config) -> Result<Subscription, Response> {
    let request = parse_request(head, config)?;
    let channels = subscription::open(broker, &request.names()).await.map_err(|r| r.response())?;
    Ok(request.resolve(channels))
}

/// [`parse`] without waiting: `None` when a channel must be opened first (a shard thread then
/// hands the request to the runtime).
pub(crate) fn parse_ready(
    head: &RequestHead,
    broker: &dyn Broker,
    config: &Config,
) -> Option<Result<Subscription, Response>> {
    let request = match parse_request(head, config) {
        Ok(request) => request,
        Err(response) => return Some(Err(response)),
    };
    Some(match subscription::ready(broker, &request.names())? {
        Ok(channels) => Ok(request.resolve(channels)),
        Err(refusal) => Err(refusal.response()),
    })
}

/// Reads what `GET /sub/…` asks for; a refusal is a ready 400 (or 501) response.
///
/// A WebSocket may name no channel (`GET /sub` with `Upgrade: websocket`) and subscribe later
/// with ops; every other transport needs at least one.
fn parse_request(head: &RequestHead, config: &Config) -> Result<Request, Response> {
    let bad = |code: &'static str, reason: String| Refusal::bad(code, reason).response();
    let list = head.path().strip_prefix("/sub").unwrap_or("");
    let list = list.strip_prefix('/').unwrap_or(list);
    let list = percent_decode(list, false)
        .ok_or_else(|| bad("bad_channel", "channel list is not valid percent-encoded UTF-8".into()))?;

    let query = head.query();
    let param = |name: &str| -> Result<Option<String>, Response> {
        match query::param(query, name) {
            None => Ok(None),
            Some(Ok(value)) => Ok(Some(value.into_owned())),
            Some(Err(())) => {
                Err(bad("bad_query", format!("query parameter {name} is not valid percent-encoded UTF-8")))
            }
        }
    };
    let transport = choose_transport(head, param("transport")?, param("callback")?, param("format")?)?;
    let names = if list.is_empty() && matches!(transport, Transport::WebSocket { .. }) {
        Vec::new()
    } else {
        let names = subscription::new_channel_names(list.split(','), &[]).map_err(|r| r.response())?;
        names.into_iter().map(str::to_string).collect()
    };

    // DESIGN: the Last-Event-ID header (sent by browsers on reconnect) wins over ?cursor=.
    let header_cursor = head.header("last-event-id").and_then(|v| std::str::from_utf8(v).ok()).map(str::trim);
    let cursor_text = match header_cursor.filter(|c| !c.is_empty()) {
        Some(text) => Some(text.to_string()),
        None => param("cursor")?.filter(|c| !c.is_empty()),
    };
    let cursor = cursor_text.map(|text| subscription::parse_cursor(&text)).transpose().map_err(|r| r.response())?;
    let history = match param("history")? {
        Some(n) => Some(
            n.parse::<u64>().map_err(|_| bad("bad_history", format!("history must be a whole number, got {n:?}")))?,
        ),
        None => None,
    };
    let heartbeat = match param("heartbeat")? {
        Some(asked) => heartbeat_asked(&asked, config).map_err(|reason| bad("bad_heartbeat", reason))?,
        None => config.heartbeat_interval,
    };
    Ok(Request { transport, names, cursor, history, origin: crate::cors::allowed_origin(head, config), heartbeat })
}

/// `?heartbeat=SECONDS` (a number, fractions allowed), clamped to `[heartbeat_min,
/// heartbeat_max]`: a client may pick the interval its network needs (a NAT that drops idle
/// flows early wants a short one; a phone on battery a long one), within what the operator allows.
fn heartbeat_asked(asked: &str, config: &Config) -> Result<Duration, String> {
    let seconds: f64 = asked
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
        .ok_or_else(|| format!("heartbeat must be a number of seconds above 0, got {asked:?}"))?;
    let asked = Duration::from_secs_f64(seconds.min(1e6));
    Ok(asked.clamp(config.heartbeat_min, config.heartbeat_max.max(config.heartbeat_min)))
}

/// The `Holdfast-Heartbeat` value: seconds, with a decimal fraction (to the millisecond) when
/// the interval is not whole, so sub-second intervals are not announced as 0.
pub(crate) fn heartbeat_header(interval: Duration) -> String {
    if interval.subsec_millis() == 0 {
        interval.as_secs().to_string()
    } else {
        format!("{:.3}", interval.as_secs_f64()).trim_end_matches('0').to_string()
    }
}

fn choose_transport(
    head: &RequestHead,
    transport: Option<String>,
    callback: Option<String>,
    format: Option<String>,
) -> Result<Transport, Response> {
    if holdfast_proto::ws::handshake::is_upgrade_request(head) {
        return match format.as_deref() {
            None | Some("json") => Ok(Transport::WebSocket { raw: false }),
            Some("raw") => Ok(Transport::WebSocket { raw: true }),
            Some(other) => {
                Err(Response::error(400, "bad_format", &format!("unknown format {other:?}; use json or raw")))
            }
        };
    }
    let wants_event_stream = head
        .headers_named("accept")
        .any(|accept| accept.windows(17).any(|w| w.eq_ignore_ascii_case(b"text/event-stream")));
    match transport.as_deref() {
        Some("sse") => Ok(Transport::Sse),
        Some("stream") => Ok(Transport::Stream),
        Some("poll") => Ok(Transport::Poll),
        Some("longpoll") => Ok(Transport::LongPoll),
        Some("iframe") => {
            let callback = callback.unwrap_or_default();
            if is_valid_callback(&callback) {
                Ok(Transport::Iframe { callback })
            } else {
                Err(Response::error(
                    400,
                    "bad_callback",
                    "transport=iframe needs callback=NAME matching [A-Za-z_$][A-Za-z0-9_$.]{0,63}",
                ))
            }
        }
        Some(other) => Err(Response::error(
            400,
            "bad_transport",
            &format!("unknown transport {other:?}; use sse, stream, iframe, poll or longpoll"),
        )),
        None if wants_event_stream => Ok(Transport::Sse),
        None => Ok(Transport::LongPoll),
    }
}

/// `[A-Za-z_$][A-Za-z0-9_$.]{0,63}` (DESIGN §1): a JavaScript name path, nothing that could
/// close the script or call anything else.
fn is_valid_callback(name: &str) -> bool {
    let bytes = name.as_bytes();
    let Some((&first, rest)) = bytes.split_first() else { return false };
    (first.is_ascii_alphabetic() || first == b'_' || first == b'$')
        && rest.len() <= 63
        && rest.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asked_heartbeats_are_clamped_and_announced() {
        let config = Config::default();
        assert_eq!(heartbeat_asked("1", &config), Ok(config.heartbeat_min));
        assert_eq!(heartbeat_asked("42", &config), Ok(Duration::from_secs(42)));
        assert_eq!(heartbeat_asked("7.5", &config), Ok(Duration::from_millis(7500)));
        assert_eq!(heartbeat_asked("100000", &config), Ok(config.heartbeat_max));
        for bad in ["", "0", "-3", "x", "NaN", "inf"] {
            assert!(heartbeat_asked(bad, &config).is_err(), "{bad}");
        }
        assert_eq!(heartbeat_header(Duration::from_secs(25)), "25");
        assert_eq!(heartbeat_header(Duration::from_millis(1500)), "1.5");
        assert_eq!(heartbeat_header(Duration::from_millis(100)), "0.1");
        assert_eq!(heartbeat_header(Duration::from_millis(12_300)), "12.3");
    }

    #[test]
    fn callbacks_are_javascript_name_paths() {
        for good in ["cb", "_x", "$", "parent.app.on_msg", &format!("a{}", "b".repeat(63))] {
            assert!(is_valid_callback(good), "{good}");
        }
        for bad in ["", "1cb", "a(b)", "a;alert(1)", "a</script>", "x y", &format!("a{}", "b".repeat(64))] {
            assert!(!is_valid_callback(bad), "{bad}");
        }
    }
}
