//! `GET /metrics`: the counters of `/admin/stats` in the Prometheus text exposition format
//! (version 0.0.4), written by hand: a dozen lines do not need a metrics library.

use std::fmt::Write;

use crate::response::Response;
use crate::stats::process_rss_bytes;
use crate::Server;

pub(crate) fn render(server: &Server) -> Response {
    let snap = server.stats.snapshot();
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP holdfast_{name} {help}");
        let _ = writeln!(out, "# TYPE holdfast_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "holdfast_{name}{labels} {value}");
        }
    };
    metric("connections_open", "gauge", "Open connections.", &[("", snap.connections_open)]);
    metric(
        "connections_parked",
        "gauge",
        "Idle keep-alive connections parked outside the runtime.",
        &[("", snap.connections_parked)],
    );
    metric("connections_accepted_total", "counter", "Connections accepted.", &[("", snap.connections_accepted)]);
    let closed: Vec<(String, u64)> =
        snap.closed.iter().map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), *n)).collect();
    let closed: Vec<(&str, u64)> = closed.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    metric("connections_closed_total", "counter", "Connections closed, by reason.", &closed);
    metric("requests_total", "counter", "HTTP requests answered.", &[("", snap.requests)]);
    metric(
        "requests_reused_total",
        "counter",
        "Requests on a reused keep-alive connection.",
        &[("", snap.requests_reused)],
    );
    let subscribers: Vec<(String, u64)> =
        snap.subscribers.iter().map(|(transport, n)| (format!("{{transport=\"{transport}\"}}"), *n)).collect();
    let subscribers: Vec<(&str, u64)> = subscribers.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    metric("subscribers", "gauge", "Subscribers by transport (long polls: those being held).", &subscribers);
    metric("channels", "gauge", "Channels.", &[("", server.broker.channel_count() as u64)]);
    metric(
        "broker_up",
        "gauge",
        "1 while the broker can be reached (always, for the memory broker; Redis connections up, for Redis).",
        &[("", u64::from(server.broker.connected()))],
    );
    metric(
        "channel_bytes",
        "gauge",
        "Estimated bytes of channel structures, the channel map and the publish-order index (not histories).",
        &[("", server.broker.channel_bytes())],
    );
    metric("history_bytes", "gauge", "Bytes held by channel histories.", &[("", server.broker.history_bytes())]);
    metric("messages_published_total", "counter", "Messages published.", &[("", snap.messages_published)]);
    metric(
        "messages_delivered_total",
        "counter",
        "Message deliveries (one message to one subscriber).",
        &[("", snap.messages_delivered)],
    );
    metric("process_resident_memory_bytes", "gauge", "Resident set size.", &[("", process_rss_bytes())]);
    Response::new(200, "text/plain; version=0.0.4; charset=utf-8", out).with_header("Cache-Control", "no-store")
}
