//! Which handler answers a request, decided from the head alone (before any body is read), and
//! the small handlers of the core: health, stats, 404/405, the conformance echo.

use bytes::Bytes;
use holdfast_proto::http1::{Method, RequestHead};

use crate::response::Response;
use crate::stats::process_rss_bytes;
use crate::Server;
use crate::{cors, publish};

/// A routed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Healthz,
    AdminStats,
    Metrics,
    /// `POST /_conformance/echo`: answers with the request body (only when enabled).
    Echo,
    /// `GET /_conformance/echo` with `Upgrade: websocket`: a WebSocket echo (only when enabled).
    EchoWebSocket,
    /// `POST /pub/{channel}`.
    Publish,
    /// `GET /pub/{channel}`.
    ChannelInfo,
    /// `DELETE /pub/{channel}`.
    DeleteChannel,
    /// `GET /sub/{channels}`: answered by a transport, maybe taking the connection over.
    Subscribe,
    /// `OPTIONS` on a CORS-enabled path.
    Preflight,
    /// `POST /admin/disconnect?channel=NAME`: close that channel's streaming subscribers.
    AdminDisconnect,
    /// `POST /admin/drain`: drain the node, as SIGTERM does.
    AdminDrain,
    /// `GET /admin/connections`: answered in the connection task (it asks the push shards).
    AdminConnections,
    /// `GET /admin/events`: the dashboard's feed, an SSE stream handed to a push shard
    /// (see `admin_feed`).
    AdminEvents,
    /// An embedded file (`/`, `/holdfast.js`, `/admin/`, `/demo/chat`, …): its index in
    /// [`assets::ASSETS`](crate::assets::ASSETS).
    Asset(usize),
    NotFound,
    /// The path exists but not for this method; the value is the `Allow` field.
    MethodNotAllowed(&'static str),
    /// A state change (not GET, HEAD or OPTIONS) sent by a page whose `Origin` may not act here
    /// (`cors::origin_may_act`): 403, whatever the path and whatever credentials it carries.
    OriginRefused,
}

const GET_HEAD: &str = "GET, HEAD";

impl Route {
    /// Whether the handler needs the request body (else it is drained or the connection closed).
    pub fn wants_body(self) -> bool {
        matches!(self, Route::Echo | Route::Publish)
    }
}

pub(crate) fn route(head: &RequestHead, server: &Server) -> Route {
    // First, before any credential is looked at: a cross-site page must not act with the
    // browser's cookies (SECURITY.md, "Cross-site requests").
    if cors::changes_state(head) && !cors::origin_may_act(head, &server.config()) {
        return Route::OriginRefused;
    }
    let method = head.method();
    let get_or_head = matches!(method, Method::Get | Method::Head);
    let path = head.path();
    if let Some(rest) = path.strip_prefix("/pub/") {
        return match method {
            _ if rest.is_empty() => Route::NotFound,
            Method::Post => Route::Publish,
            Method::Get | Method::Head => Route::ChannelInfo,
            Method::Delete => Route::DeleteChannel,
            Method::Options => Route::Preflight,
            _ => Route::MethodNotAllowed("GET, HEAD, POST, DELETE, OPTIONS"),
        };
    }
    let is_upgrade = holdfast_proto::ws::handshake::is_upgrade_request(head);
    if (path == "/sub" || path == "/sub/") && method == Method::Get && is_upgrade {
        // A WebSocket that subscribes later by op.
        return Route::Subscribe;
    }
    if let Some(rest) = path.strip_prefix("/sub/") {
        return match method {
            _ if rest.is_empty() => Route::NotFound,
            Method::Get => Route::Subscribe,
            Method::Options => Route::Preflight,
            _ => Route::MethodNotAllowed("GET, OPTIONS"),
        };
    }
    if let Some(index) = crate::assets::find(if path == "/admin" { "/admin/" } else { path }) {
        return if get_or_head { Route::Asset(index) } else { Route::MethodNotAllowed(GET_HEAD) };
    }
    match path {
        "/healthz" if get_or_head => Route::Healthz,
        "/admin/stats" if get_or_head => Route::AdminStats,
        "/metrics" if get_or_head => Route::Metrics,
        "/healthz" | "/admin/stats" | "/metrics" => Route::MethodNotAllowed(GET_HEAD),
        "/admin/disconnect" if method == Method::Post => Route::AdminDisconnect,
        "/admin/drain" if method == Method::Post => Route::AdminDrain,
        "/admin/connections" if get_or_head => Route::AdminConnections,
        "/admin/connections" => Route::MethodNotAllowed(GET_HEAD),
        "/admin/events" if method == Method::Get => Route::AdminEvents,
        "/admin/events" => Route::MethodNotAllowed("GET"),
        "/admin/disconnect" | "/admin/drain" => Route::MethodNotAllowed("POST"),
        "/_conformance/echo" if server.config().enable_conformance_echo => match method {
            Method::Post => Route::Echo,
            Method::Get if holdfast_proto::ws::handshake::is_upgrade_request(head) => Route::EchoWebSocket,
            _ => Route::MethodNotAllowed("POST, or GET with Upgrade: websocket"),
        },
        _ => Route::NotFound,
    }
}

pub(crate) async fn respond(route: Route, head: &RequestHead, body: Bytes, server: &Server) -> Response {
    match route {
        Route::Healthz if server.is_draining() => {
            draining_refusal(server, "this node is draining; send traffic elsewhere")
        }
        Route::Healthz => Response::new(200, "text/plain; charset=utf-8", &b"ok\n"[..]),
        Route::AdminStats => admin_stats(server),
        Route::Metrics => crate::metrics::render(server, head),
        Route::Echo => Response::new(200, "application/octet-stream", body),
        Route::Asset(index) => crate::assets::serve(index, head),
        Route::Publish => cors::decorate(
            publish::publish(head, body, &*server.broker, &server.stats).await,
            cors::allowed_origin(head, &server.config()).as_deref(),
        ),
        Route::ChannelInfo => cors::decorate(
            publish::info(head, &*server.broker).await,
            cors::allowed_origin(head, &server.config()).as_deref(),
        ),
        Route::DeleteChannel => cors::decorate(
            publish::delete(head, &*server.broker).await,
            cors::allowed_origin(head, &server.config()).as_deref(),
        ),
        Route::Preflight => cors::preflight(head, &server.config()),
        Route::AdminDrain => admin_drain(server),
        Route::AdminDisconnect => admin_disconnect(head, server),
        // Answered in conn::exchange (they wait on transports or shards); never routed here.
        Route::Subscribe | Route::AdminConnections | Route::AdminEvents | Route::EchoWebSocket => {
            Response::error(500, "internal", "subscription routed to the plain responder")
        }
        Route::OriginRefused => cors::origin_refusal("publish, delete or act"),
        Route::NotFound => Response::error(404, "not_found", &format!("no resource at {}", head.path())),
        Route::MethodNotAllowed(allow) => Response::error(
            405,
            "method_not_allowed",
            &format!("{} is not allowed on {}; allowed: {allow}", head.method_str(), head.path()),
        )
        .with_header("Allow", allow),
    }
}

/// `GET /admin/connections`: streaming subscribers (from the push shards) and parked keep-alive
/// connections, one object each; connections busy in a request are counted, not listed.
/// `idle_seconds` is the time since the last byte either way (for a parked connection, since its
/// last request), `bytes_in` what the peer sent since it became a subscriber (WebSocket frames;
/// HTTP streaming subscribers send nothing after their request).
pub(crate) async fn admin_connections(server: &Server) -> Response {
    let subscribers = server.push.list().await;
    let parked = server.parking.list();
    let mut list: Vec<serde_json::Value> = subscribers
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "peer": server.client_limits.shown_peer(s.id, s.peer),
                "transport": s.transport,
                "state": if s.blocked { "blocked" } else { "streaming" },
                "channels": s.channels,
                "age_seconds": s.age.as_secs_f64(),
                "idle_seconds": s.idle.as_secs_f64(),
                "requests": s.requests,
                "bytes_in": s.bytes_in,
                "bytes_out": s.bytes_out,
                "pending_bytes": s.pending_bytes,
                "heartbeat_seconds": s.heartbeat.as_secs_f64(),
                "shard": s.shard,
            })
        })
        .collect();
    let keepalive = server.config().keepalive_timeout;
    list.extend(parked.iter().map(|(conn, expires_in)| {
        serde_json::json!({
            "id": conn.id,
            "peer": conn.peer().to_string(),
            "transport": "http",
            "state": "idle",
            "channels": [],
            "requests": conn.served,
            "idle_seconds": keepalive.saturating_sub(*expires_in).as_secs_f64(),
            "expires_in_seconds": expires_in.as_secs_f64(),
        })
    }));
    let open = server.stats.connections_open();
    let listed = list.len() as u64;
    Response::json(
        200,
        &serde_json::json!({
            "connections": list,
            "open": open,
            "in_requests_or_recently_idle": open.saturating_sub(listed),
        }),
    )
    .with_header("Cache-Control", "no-store")
}

/// 503 `draining` with a `Retry-After` spread over the drain (`/healthz`, and new subscriptions
/// while the node drains): load balancers take the node out, clients come back elsewhere.
pub(crate) fn draining_refusal(server: &Server, reason: &str) -> Response {
    let retry_after = crate::drain::retry_after_secs(server.config().drain_spread());
    Response::error(503, "draining", reason).with_header("Retry-After", retry_after.to_string())
}

/// `POST /admin/drain`: the graceful drain SIGTERM starts (`run` returns when it ends; `holdfast
/// serve` exits). Asking again while it drains changes nothing.
fn admin_drain(server: &Server) -> Response {
    let already = server.is_draining();
    if !already {
        server.request_drain();
    }
    let spread = server.config().drain_spread();
    Response::json(
        202,
        &serde_json::json!({
            "draining": true,
            "already": already,
            "drain_seconds": spread.as_secs_f64(),
            "shutdown_timeout_seconds": server.config().shutdown_timeout.as_secs_f64(),
            "connections_open": server.stats.connections_open(),
        }),
    )
}

fn admin_disconnect(head: &RequestHead, server: &Server) -> Response {
    let name = match crate::query::param(head.query(), "channel") {
        Some(Ok(name)) => name,
        _ => return Response::error(400, "bad_query", "give the channel: /admin/disconnect?channel=NAME"),
    };
    match server.broker.channel(&name) {
        Some(channel) => {
            let subscribers = channel.subscribers.load(std::sync::atomic::Ordering::Relaxed);
            server.push.disconnect(&channel);
            Response::json(200, &serde_json::json!({ "channel": name, "disconnecting": subscribers }))
        }
        None => Response::error(404, "no_channel", &format!("channel {name:?} does not exist")),
    }
}

fn admin_stats(server: &Server) -> Response {
    Response::json(200, &stats_json(server)).with_header("Cache-Control", "no-store")
}

/// What `GET /admin/stats` answers; the dashboard's feed sends it too (`admin_feed`), so a field
/// added here shows in both.
pub(crate) fn stats_json(server: &Server) -> serde_json::Value {
    let snap = server.stats.snapshot();
    let subscribers: serde_json::Map<String, serde_json::Value> =
        snap.subscribers.iter().map(|(label, n)| (label.to_string(), (*n).into())).collect();
    let closed: serde_json::Map<String, serde_json::Value> =
        snap.closed.iter().map(|(label, n)| (label.to_string(), (*n).into())).collect();
    let limited: serde_json::Map<String, serde_json::Value> =
        snap.limited.iter().map(|(label, n)| (label.to_string(), (*n).into())).collect();
    serde_json::json!({
            "connections_open": snap.connections_open,
            "connections_accepted": snap.connections_accepted,
            "connections_parked": snap.connections_parked,
            "push_deadlines": snap.push_deadlines,
            "max_connections": server.max_connections,
            "requests_total": snap.requests,
            "requests_reused": snap.requests_reused,
            "closed": closed,
            "limited": limited,
            "clients_tracked": server.client_limits.tracked(),
            "subscribers": subscribers,
            "broker": server.broker.kind(),
            "broker_connected": server.broker.connected(),
            "channels": server.broker.channel_count(),
            "channel_bytes": server.broker.channel_bytes(),
            "history_bytes": server.broker.history_bytes(),
            "messages_published": snap.messages_published,
            "messages_delivered": snap.messages_delivered,
            "rss_bytes": process_rss_bytes(),
            "uptime_seconds": server.started.elapsed().as_secs(),
            "draining": server.is_draining(),
            "requests_by_status": snap.requests_by_status,
            "connections_by_transport": snap.connections_by_transport,
            "bytes_in": snap.bytes_in,
            "bytes_out": snap.bytes_out,
            "latency_seconds": snap.latency,
            "store": server.broker.store().map(|store| store_json(&store)),
    })
}

/// `/admin/stats`'s `store` object (a disk history store).
fn store_json(store: &holdfast_hub::StoreStats) -> serde_json::Value {
    let recovered = &store.recovered;
    serde_json::json!({
        "path": store.path,
        "durability": store.durability,
        "disk_bytes": store.disk_bytes,
        "channels": store.channels,
        "messages": store.messages,
        "pending_writes": store.pending,
        "syncs": store.syncs,
        "recovered": {
            "channels": recovered.channels,
            "messages": recovered.messages,
            "bytes": recovered.bytes,
            "millis": recovered.millis,
            "read_back": recovered.read_back,
            "read_back_millis": recovered.read_back_millis,
            "closed_cleanly": recovered.clean,
            "new_epochs": recovered.continued,
        },
    })
}
