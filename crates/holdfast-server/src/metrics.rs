//! `GET /metrics`: the counters of `/admin/stats` and the latency histograms, encoded by
//! prometheus-client: OpenMetrics 1.0 text for a scraper that asks for it (`Accept:
//! application/openmetrics-text`, as Prometheus does), the Prometheus text format 0.0.4
//! otherwise (curl, older scrapers). The sample names are the same in both.
//!
//! Every figure comes from one [`StatsSnapshot`] (the same source as `/admin/stats`) and the
//! broker, read once per scrape: a registry is built around that snapshot (a collector of typed
//! constant metrics) and encoded, so nothing on the server's paths touches prometheus-client.
//!
//! What it does not own: the counting (`stats`, `histogram`).

use std::fmt;

use holdfast_proto::http1::RequestHead;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelValue, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::response::Response;
use crate::stats::{process_rss_bytes, StatsSnapshot};
use crate::Server;

/// The OpenMetrics text format's media type (OpenMetrics 1.0 §"Overall structure").
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format's media type.
const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

pub(crate) fn render(server: &Server, head: &RequestHead) -> Response {
    let figures = Figures {
        snap: server.stats.snapshot(),
        channels: server.broker.channel_count() as u64,
        broker_up: server.broker.connected(),
        channel_bytes: server.broker.channel_bytes(),
        history_bytes: server.broker.history_bytes(),
        rss_bytes: process_rss_bytes(),
        clients_tracked: server.client_limits.tracked() as u64,
    };
    let mut registry = Registry::with_prefix("holdfast");
    registry.register_collector(Box::new(figures));
    let mut out = String::with_capacity(8 * 1024);
    let openmetrics = wants_openmetrics(head);
    let encoded = if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
    };
    if encoded.is_err() {
        return Response::error(500, "internal", "the metrics could not be encoded");
    }
    let content_type = if openmetrics { OPENMETRICS } else { PROMETHEUS_TEXT };
    Response::new(200, content_type, out).with_header("Cache-Control", "no-store").with_header("Vary", "Accept")
}

/// Whether the scraper accepts OpenMetrics text (Prometheus asks for it first by default).
fn wants_openmetrics(head: &RequestHead) -> bool {
    head.header("accept").is_some_and(|accept| {
        accept.split(|&b| b == b',').any(|range| {
            let media_type = range.split(|&b| b == b';').next().unwrap_or(b"");
            media_type.trim_ascii().eq_ignore_ascii_case(b"application/openmetrics-text")
        })
    })
}

/// What one scrape reports.
#[derive(Debug)]
struct Figures {
    snap: StatsSnapshot,
    channels: u64,
    broker_up: bool,
    channel_bytes: u64,
    history_bytes: u64,
    rss_bytes: u64,
    clients_tracked: u64,
}

impl Collector for Figures {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let s = &self.snap;
        let counter = ConstCounter::new;
        let gauge = ConstGauge::new;
        one(&mut out, "connections_open", "Open connections.", None, gauge(s.connections_open))?;
        one(
            &mut out,
            "connections_parked",
            "Idle keep-alive connections parked outside the runtime.",
            None,
            gauge(s.connections_parked),
        )?;
        one(
            &mut out,
            "push_deadlines",
            "Deadlines queued in the push shards (held long polls; answered ones awaiting their next request).",
            None,
            gauge(s.push_deadlines),
        )?;
        one(
            &mut out,
            "connections_by_transport",
            "Open connections by what they serve: http (a request, or idle between requests), or a subscriber \
             transport (long polls: those being held).",
            None,
            family("transport", s.connections_by_transport.iter().map(|(t, n)| (*t, gauge(*n)))),
        )?;
        one(&mut out, "connections_accepted", "Connections accepted.", None, counter(s.connections_accepted))?;
        one(
            &mut out,
            "connections_closed",
            "Connections closed, by reason.",
            None,
            family("reason", s.closed.iter().map(|(reason, n)| (*reason, counter(*n)))),
        )?;
        one(
            &mut out,
            "client_limit_refusals",
            "Connections (429 at accept) and publishes (429, WebSocket error op) refused by a limit per client IP, \
             by limit.",
            None,
            family("limit", s.limited.iter().map(|(limit, n)| (*limit, counter(*n)))),
        )?;
        one(
            &mut out,
            "clients_tracked",
            "Client IPs (IPv6: /64s) the limits per client hold an entry for.",
            None,
            gauge(self.clients_tracked),
        )?;
        one(&mut out, "requests", "HTTP requests answered.", None, counter(s.requests))?;
        one(
            &mut out,
            "requests_reused",
            "Requests on a reused keep-alive connection.",
            None,
            counter(s.requests_reused),
        )?;
        one(
            &mut out,
            "requests_by_status",
            "HTTP responses sent, by status code (streaming heads and 101 included).",
            None,
            family("code", s.requests_by_status.iter().map(|(code, n)| (*code, counter(*n)))),
        )?;
        one(&mut out, "received", "Bytes read from client sockets.", Some(Unit::Bytes), counter(s.bytes_in))?;
        one(&mut out, "sent", "Bytes written to client sockets.", Some(Unit::Bytes), counter(s.bytes_out))?;
        one(
            &mut out,
            "subscribers",
            "Subscribers by transport (long polls: those being held).",
            None,
            family("transport", s.subscribers.iter().map(|(transport, n)| (*transport, gauge(*n)))),
        )?;
        one(&mut out, "channels", "Channels.", None, gauge(self.channels))?;
        one(
            &mut out,
            "broker_up",
            "1 while the broker can be reached (always, for the memory broker; Redis connections up, for Redis).",
            None,
            gauge(u64::from(self.broker_up)),
        )?;
        one(
            &mut out,
            "channel",
            "Estimated bytes of channel structures, the channel map and the publish-order index (not histories).",
            Some(Unit::Bytes),
            gauge(self.channel_bytes),
        )?;
        one(&mut out, "history", "Bytes held by channel histories.", Some(Unit::Bytes), gauge(self.history_bytes))?;
        one(&mut out, "messages_published", "Messages published.", None, counter(s.messages_published))?;
        one(
            &mut out,
            "messages_delivered",
            "Message deliveries (one message to one subscriber).",
            None,
            counter(s.messages_delivered),
        )?;
        one(
            &mut out,
            "delivery_latency",
            "Publish to the message's bytes written to a subscriber's socket, for messages published while it \
             was subscribed (not history or resumed catch-up).",
            Some(Unit::Seconds),
            s.latency.delivery.clone(),
        )?;
        one(
            &mut out,
            "publish_latency",
            "A publish (POST /pub or the WebSocket publish op) received to answered, the broker's round trip \
             included.",
            Some(Unit::Seconds),
            s.latency.publish.clone(),
        )?;
        one(
            &mut out,
            "request_latency",
            "An HTTP request's head read to its response written, for every request but subscriptions.",
            Some(Unit::Seconds),
            s.latency.request.clone(),
        )?;
        one(&mut out, "process_resident_memory", "Resident set size.", Some(Unit::Bytes), gauge(self.rss_bytes))?;
        Ok(())
    }
}

/// Encodes one metric family: its descriptor (`holdfast_<name>[_<unit>]`, help, type) and its
/// samples.
fn one<M: EncodeMetric + TypedMetric>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: M,
) -> fmt::Result {
    let encoder = out.encode_descriptor(name, help, unit.as_ref(), M::TYPE)?;
    metric.encode(encoder)
}

/// Metrics of one type that differ by one label (`reason`, `transport`, `code`).
struct Family<V, M> {
    label: &'static str,
    members: Vec<(V, M)>,
}

fn family<V, M>(label: &'static str, members: impl Iterator<Item = (V, M)>) -> Family<V, M> {
    Family { label, members: members.collect() }
}

impl<V: EncodeLabelValue + Copy, M: EncodeMetric + TypedMetric> EncodeMetric for Family<V, M> {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        for (value, metric) in &self.members {
            metric.encode(encoder.encode_family(&[(self.label, *value)])?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

impl<V, M: TypedMetric> TypedMetric for Family<V, M> {
    const TYPE: MetricType = M::TYPE;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(openmetrics: bool) -> String {
        let stats = crate::Stats::default();
        stats.responded(200);
        stats.latency.request.observe(std::time::Duration::from_millis(2));
        let figures = Figures {
            snap: stats.snapshot(),
            channels: 1,
            broker_up: true,
            channel_bytes: 10,
            history_bytes: 20,
            rss_bytes: 30,
            clients_tracked: 4,
        };
        let mut registry = Registry::with_prefix("holdfast");
        registry.register_collector(Box::new(figures));
        let mut out = String::new();
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        }
        out
    }

    #[test]
    fn prometheus_text_keeps_the_names_it_always_had() {
        let text = encode(false);
        for line in [
            "# TYPE holdfast_connections_accepted_total counter\n",
            "holdfast_connections_closed_total{reason=\"slow_consumer\"} 0\n",
            "# TYPE holdfast_subscribers gauge\n",
            "holdfast_subscribers{transport=\"longpoll\"} 0\n",
            "holdfast_channels 1\n",
            "holdfast_channel_bytes 10\n",
            "holdfast_history_bytes 20\n",
            "holdfast_broker_up 1\n",
            "holdfast_process_resident_memory_bytes 30\n",
            "holdfast_requests_by_status_total{code=\"200\"} 1\n",
            "holdfast_connections_by_transport{transport=\"http\"} 0\n",
            "holdfast_client_limit_refusals_total{limit=\"publishes_per_ip\"} 0\n",
            "holdfast_clients_tracked 4\n",
            "# TYPE holdfast_request_latency_seconds histogram\n",
            "holdfast_request_latency_seconds_bucket{le=\"0.0025\"} 1\n",
            "holdfast_request_latency_seconds_bucket{le=\"+Inf\"} 1\n",
            "holdfast_request_latency_seconds_count 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let text = encode(true);
        assert!(text.contains("# TYPE holdfast_connections_accepted counter\n"), "{text}");
        assert!(text.contains("\nholdfast_connections_accepted_total 0\n"), "{text}");
        assert!(text.contains("# UNIT holdfast_delivery_latency_seconds seconds\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
