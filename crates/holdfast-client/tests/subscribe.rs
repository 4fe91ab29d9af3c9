//! The subscriber against real servers on ephemeral ports: resume after the server cuts the link
//! (every transport), restarts (gap), failover, half-open links, the adaptive heartbeat through a
//! proxy that black-holes idle flows, and backoff jitter over many subscribers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use holdfast_client::{Event, Gap, Heartbeat, Message, State, Subscriber, SubscriberBuilder, Transport};
use holdfast_testkit::fast_pacing as fast;
use holdfast_testkit::proxy::TestProxy;
use holdfast_testkit::TestServer;

/// Longest wait for one expected event.
const WAIT: Duration = Duration::from_secs(15);

/// A subscriber with test pacing: 1 s heartbeats watched with k = 2, 50 ms backoff base.
fn subscriber(servers: &[String], channel: &str, transport: Transport) -> SubscriberBuilder {
    Subscriber::builder()
        .servers(servers.iter().cloned())
        .channel(channel)
        .transport(transport)
        .heartbeat(Heartbeat::Fixed(Duration::from_secs(1)))
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .connect_timeout(Duration::from_secs(2))
        .poll_interval(Duration::from_millis(100))
}

/// The next event, or a panic after `WAIT`.
async fn next(sub: &mut Subscriber) -> Event {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("subscriber failed: {e}"),
        Ok(None) => panic!("subscriber ended"),
        Err(_) => panic!("no event within {WAIT:?}"),
    }
}

/// Events until `want` matches one (returned with everything before it).
async fn until(sub: &mut Subscriber, want: impl Fn(&Event) -> bool) -> (Event, Vec<Event>) {
    let mut before = Vec::new();
    loop {
        let event = next(sub).await;
        if want(&event) {
            return (event, before);
        }
        before.push(event);
    }
}

async fn connected(sub: &mut Subscriber) -> (String, Duration) {
    match until(sub, |e| matches!(e, Event::State(State::Connected { .. }))).await.0 {
        Event::State(State::Connected { server, heartbeat, .. }) => (server, heartbeat),
        _ => unreachable!(),
    }
}

/// The next `n` messages; panics on a gap (nothing may be lost here).
async fn messages(sub: &mut Subscriber, n: usize) -> Vec<Message> {
    messages_and_states(sub, n).await.0
}

/// The next `n` messages and the other events among them; panics on a gap.
async fn messages_and_states(sub: &mut Subscriber, n: usize) -> (Vec<Message>, Vec<Event>) {
    let mut got = Vec::new();
    let mut others = Vec::new();
    while got.len() < n {
        match next(sub).await {
            Event::Message(m) => got.push(m),
            Event::Gap(gap) => panic!("unexpected gap {gap:?} after {got:?}"),
            other => others.push(other),
        }
    }
    (got, others)
}

fn texts(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.text().unwrap().to_string()).collect()
}

async fn publish_range(server: &TestServer, channel: &str, range: std::ops::RangeInclusive<u32>) {
    for i in range {
        server.publish(channel, None, i.to_string().as_bytes()).await;
    }
}

fn numbers(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

/// The server cuts the subscription (`POST /admin/disconnect`) between two bursts: every message
/// comes exactly once, in order, and the subscriber says it reconnected.
async fn resumes_after_the_server_cuts(transport: Transport) {
    let server = TestServer::start(fast).await;
    let channel = format!("cut-{transport}");
    let mut sub = subscriber(&[server.url("")], &channel, transport).build().unwrap();
    connected(&mut sub).await;
    publish_range(&server, &channel, 1..=3).await;
    let mut got = messages(&mut sub, 3).await;
    if transport.is_streaming() {
        server.wait_for_subscribers(&channel, 1).await;
        assert_eq!(server.disconnect(&channel).await, 1);
    }
    publish_range(&server, &channel, 4..=6).await;
    let (after, others) = messages_and_states(&mut sub, 3).await;
    got.extend(after);
    assert_eq!(texts(&got), numbers(1..=6));
    if transport.is_streaming() {
        // The cut was seen: the notice, then a reconnection (if the shard delivered 4..6 on the old
        // link before closing it, they come after those messages).
        let mut others = others;
        if !others.iter().any(|e| matches!(e, Event::State(State::Reconnecting { .. }))) {
            let (reconnecting, before) =
                until(&mut sub, |e| matches!(e, Event::State(State::Reconnecting { .. }))).await;
            assert!(!before.iter().any(|e| matches!(e, Event::Message(_) | Event::Gap(_))), "{before:?}");
            others.extend(before);
            others.push(reconnecting);
        }
        let closed = others.iter().any(|e| matches!(e, Event::Closed { reason, .. } if reason == "admin_disconnect"));
        assert!(closed, "{others:?}");
    }
    let cursors: Vec<&str> = got.iter().map(|m| m.cursor.as_str()).collect();
    assert!(cursors.windows(2).all(|w| w[0] != w[1]), "every message has its own cursor: {cursors:?}");
}

#[tokio::test]
async fn ws_resumes_after_the_server_cuts_exactly_once_in_order() {
    resumes_after_the_server_cuts(Transport::Ws).await;
}

#[tokio::test]
async fn sse_resumes_after_the_server_cuts_exactly_once_in_order() {
    resumes_after_the_server_cuts(Transport::Sse).await;
}

#[tokio::test]
async fn stream_resumes_after_the_server_cuts_exactly_once_in_order() {
    resumes_after_the_server_cuts(Transport::Stream).await;
}

#[tokio::test]
async fn longpoll_resumes_after_the_server_cuts_exactly_once_in_order() {
    resumes_after_the_server_cuts(Transport::LongPoll).await;
}

#[tokio::test]
async fn poll_resumes_after_the_server_cuts_exactly_once_in_order() {
    resumes_after_the_server_cuts(Transport::Poll).await;
}

#[tokio::test]
async fn a_cut_is_reported_as_a_closed_notice_then_a_reconnection() {
    let server = TestServer::start(fast).await;
    let mut sub = subscriber(&[server.url("")], "notice", Transport::Sse).build().unwrap();
    connected(&mut sub).await;
    server.wait_for_subscribers("notice", 1).await;
    server.disconnect("notice").await;
    let (closed, _) = until(&mut sub, |e| matches!(e, Event::Closed { .. })).await;
    assert_eq!(closed, Event::Closed { channel: "notice".into(), reason: "admin_disconnect".into() });
    let (reconnecting, _) = until(&mut sub, |e| matches!(e, Event::State(State::Reconnecting { .. }))).await;
    assert!(
        matches!(&reconnecting, Event::State(State::Reconnecting { attempt: 1, cause, .. }) if cause.contains("admin_disconnect")),
        "{reconnecting:?}"
    );
    connected(&mut sub).await;
}

/// The server restarts on the same port with nothing of its past: the subscriber backs off while
/// it is away, comes back, and says what it lost (a gap in the new epoch) before new messages.
async fn a_restart_yields_a_gap(transport: Transport) {
    let mut server = TestServer::start(fast).await;
    let addr = server.addr;
    let channel = format!("restart-{transport}");
    let mut sub = subscriber(&[server.url("")], &channel, transport)
        .backoff(Duration::from_millis(100), Duration::from_secs(1))
        .build()
        .unwrap();
    connected(&mut sub).await;
    publish_range(&server, &channel, 1..=1).await;
    assert_eq!(texts(&messages(&mut sub, 1).await), ["1"]);
    server.stop().await;
    // While it is down, attempts back off with growing windows.
    let mut attempts = 0;
    while attempts < 3 {
        if let Event::State(State::Reconnecting { attempt, .. }) = next(&mut sub).await {
            attempts = attempt;
        }
    }
    let server = TestServer::start_on(addr, fast).await;
    let (event, before) = until(&mut sub, |e| matches!(e, Event::Gap(_) | Event::Message(_))).await;
    assert!(
        matches!(&event, Event::Gap(Gap { channel: c, lost: None, .. }) if *c == channel),
        "a gap first (unknown count: new epoch), got {event:?} after {before:?}"
    );
    publish_range(&server, &channel, 2..=2).await;
    assert_eq!(texts(&messages(&mut sub, 1).await), ["2"]);
}

#[tokio::test]
async fn sse_restart_yields_a_gap_never_silence() {
    a_restart_yields_a_gap(Transport::Sse).await;
}

#[tokio::test]
async fn ws_restart_yields_a_gap_never_silence() {
    a_restart_yields_a_gap(Transport::Ws).await;
}

#[tokio::test]
async fn longpoll_restart_yields_a_gap_never_silence() {
    a_restart_yields_a_gap(Transport::LongPoll).await;
}

/// Two servers; the first stops: the subscriber is on the second within heartbeat × k plus the
/// backoff cap, and gets what is published there.
#[tokio::test]
async fn failover_moves_to_the_second_server_when_the_first_stops() {
    let mut first = TestServer::start(fast).await;
    let second = TestServer::start(fast).await;
    let servers = [first.url(""), second.url("")];
    let mut sub = subscriber(&servers, "fo", Transport::Sse).build().unwrap();
    let (server, heartbeat) = connected(&mut sub).await;
    assert_eq!(server, servers[0]);
    let stopped = Instant::now();
    first.stop().await;
    let (server, _) = connected(&mut sub).await;
    let took = stopped.elapsed();
    assert_eq!(server, servers[1]);
    assert!(took < heartbeat * 2 + Duration::from_millis(500) + Duration::from_secs(1), "took {took:?}");
    second.publish("fo", None, b"there").await;
    let (event, _) = until(&mut sub, |e| matches!(e, Event::Message(_))).await;
    assert!(matches!(&event, Event::Message(m) if m.text() == Some("there")));
}

/// A link that stops carrying bytes without closing (the proxy freezes): found dead within
/// heartbeat × k (+1 s), without waiting for TCP.
async fn a_half_open_link_is_found_dead(transport: Transport) {
    let server = TestServer::start(fast).await;
    let proxy = TestProxy::start(server.addr).await;
    let mut sub = subscriber(&[proxy.url()], "half", transport).build().unwrap();
    let (_, heartbeat) = connected(&mut sub).await;
    assert_eq!(heartbeat, Duration::from_secs(1));
    // A heartbeat or two go through first: the link is healthy.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.freeze();
    let frozen = Instant::now();
    let (event, _) = until(&mut sub, |e| matches!(e, Event::State(State::Reconnecting { .. }))).await;
    let took = frozen.elapsed();
    assert!(matches!(&event, Event::State(State::Reconnecting { cause, .. }) if cause.contains("dead")), "{event:?}");
    assert!(took <= heartbeat * 2 + Duration::from_secs(1), "took {took:?}");
}

#[tokio::test]
async fn sse_half_open_link_is_found_dead_within_heartbeat_times_k() {
    a_half_open_link_is_found_dead(Transport::Sse).await;
}

#[tokio::test]
async fn ws_half_open_link_is_found_dead_within_heartbeat_times_k() {
    a_half_open_link_is_found_dead(Transport::Ws).await;
}

#[tokio::test]
async fn stream_half_open_link_is_found_dead_within_heartbeat_times_k() {
    a_half_open_link_is_found_dead(Transport::Stream).await;
}

/// The same probe steps for both NAT timeouts: 1 s (safe), then 4 s (max).
const ADAPTIVE: Heartbeat =
    Heartbeat::Adaptive { min: Duration::from_secs(1), max: Duration::from_secs(4), step: Duration::from_secs(3) };

/// Subscribes through a proxy that black-holes flows idle longer than `nat_timeout`; gives the
/// subscriber once its heartbeat settled, and the interval.
async fn settle_behind_a_nat(server: &TestServer, proxy: &TestProxy, transport: Transport) -> (Subscriber, Duration) {
    let _ = server;
    let mut sub = subscriber(&[proxy.url()], "nat", transport).heartbeat(ADAPTIVE).build().unwrap();
    let (_, first) = connected(&mut sub).await;
    assert_eq!(first, Duration::from_secs(1), "starts at min");
    let (event, _) = tokio::time::timeout(
        Duration::from_secs(30),
        until(&mut sub, |e| matches!(e, Event::State(State::HeartbeatSettled { .. }))),
    )
    .await
    .expect("the heartbeat settles within 30 s");
    let Event::State(State::HeartbeatSettled { interval }) = event else { unreachable!() };
    (sub, interval)
}

#[tokio::test]
async fn adaptive_heartbeat_settles_below_a_3s_nat_timeout_and_then_loses_nothing() {
    let server = TestServer::start(fast).await;
    let proxy = TestProxy::start(server.addr).await;
    proxy.drop_idle_after(Some(Duration::from_secs(3)));
    let (mut sub, interval) = settle_behind_a_nat(&server, &proxy, Transport::Sse).await;
    assert!(interval < Duration::from_secs(3), "settled at {interval:?}");
    assert!(proxy.dropped() >= 1, "the 4 s probe died behind the NAT");
    // Held: the link now survives idle periods longer than the NAT timeout.
    let (_, heartbeat) = connected(&mut sub).await;
    assert_eq!(heartbeat, interval);
    let mut got = Vec::new();
    for i in 1..=3u32 {
        server.publish("nat", None, i.to_string().as_bytes()).await;
        got.extend(messages(&mut sub, 1).await);
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    assert_eq!(texts(&got), numbers(1..=3));
    let dropped = proxy.dropped();
    server.publish("nat", None, b"4").await;
    assert_eq!(texts(&messages(&mut sub, 1).await), ["4"]);
    assert_eq!(proxy.dropped(), dropped, "no flow died once settled");
}

#[tokio::test]
async fn adaptive_heartbeat_settles_higher_behind_an_8s_nat_timeout() {
    let server = TestServer::start(fast).await;
    let proxy = TestProxy::start(server.addr).await;
    proxy.drop_idle_after(Some(Duration::from_secs(8)));
    let (mut sub, interval) = settle_behind_a_nat(&server, &proxy, Transport::Ws).await;
    assert_eq!(interval, Duration::from_secs(4), "the 4 s probe survives an 8 s NAT timeout");
    assert_eq!(proxy.dropped(), 0);
    server.publish("nat", None, b"after").await;
    let (event, _) = until(&mut sub, |e| matches!(e, Event::Message(_))).await;
    assert!(matches!(&event, Event::Message(m) if m.text() == Some("after")));
}

/// 100 subscribers cut by one restart come back spread over the backoff window (full jitter),
/// not all at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnections_after_a_restart_spread_over_at_least_a_second() {
    const SUBSCRIBERS: usize = 100;
    let mut server = TestServer::start(fast).await;
    let addr: SocketAddr = server.addr;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut ready = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mut sub = subscriber(&[server.url("")], "herd", Transport::Sse)
            .backoff(Duration::from_secs(2), Duration::from_secs(4))
            .build()
            .unwrap();
        let tx = tx.clone();
        let (up_tx, up_rx) = tokio::sync::oneshot::channel();
        ready.push(up_rx);
        tokio::spawn(async move {
            let _ = i;
            connected(&mut sub).await;
            let _ = up_tx.send(());
            connected(&mut sub).await;
            let _ = tx.send(Instant::now());
            // Keep the subscriber until the test ends.
            let _ = sub.next().await;
        });
    }
    for up in ready {
        up.await.expect("every subscriber connects");
    }
    server.wait_for_subscribers("herd", SUBSCRIBERS as u64).await;
    server.stop().await;
    let _server = TestServer::start_on(addr, fast).await;
    let mut times = Vec::new();
    while times.len() < SUBSCRIBERS {
        let at = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("all reconnect").unwrap();
        times.push(at);
    }
    let spread = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    assert!(spread >= Duration::from_secs(1), "reconnections spread over {spread:?} only");
}

/// A refusal on a streaming link (read from its error answer's body by the SDK's own HTTP reader)
/// ends the stream with the server's label, and a shared `HttpPool` serves the position polls.
#[tokio::test]
async fn streaming_refusals_carry_the_servers_label_and_shared_pools_work() {
    let server = TestServer::start(fast).await;
    let url = server.url("");
    for transport in [Transport::Sse, Transport::Stream] {
        let mut sub =
            subscriber(std::slice::from_ref(&url), "refused", transport).cursor("not-a-cursor!").build().unwrap();
        let started = Instant::now();
        let err = loop {
            match tokio::time::timeout(WAIT, sub.next()).await.expect("an answer in time") {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break e,
                None => panic!("ended without the refusal"),
            }
        };
        assert!(err.is_refused() && err.status() == Some(400), "{transport}: {err}");
        assert!(err.label().is_some(), "{transport}: {err}");
        // The answer's body is read as far as its length, not until the connection ends.
        assert!(started.elapsed() < Duration::from_secs(2), "{transport}: {:?}", started.elapsed());
        assert!(tokio::time::timeout(WAIT, sub.next()).await.unwrap().is_none(), "ends after a refusal");
    }
    let pool = holdfast_client::HttpPool::new().unwrap();
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut sub =
            subscriber(std::slice::from_ref(&url), "pooled", Transport::Sse).http_pool(&pool).build().unwrap();
        connected(&mut sub).await;
        subs.push(sub);
    }
    server.publish("pooled", None, b"hello").await;
    for sub in &mut subs {
        assert_eq!(texts(&messages(sub, 1).await), ["hello"]);
    }
}

/// A fresh subscriber (no cursor) whose link dies silently before its first message: what was
/// published meanwhile still arrives, from the position the server named on the head
/// (`Holdfast-Cursor`), with no gap.
async fn a_fresh_subscriber_loses_nothing_before_its_first_message(transport: Transport) {
    let server = TestServer::start(fast).await;
    let proxy = TestProxy::start(server.addr).await;
    let mut sub = subscriber(&[proxy.url()], "fresh", transport).build().unwrap();
    connected(&mut sub).await;
    proxy.freeze();
    server.publish("fresh", None, b"while-dead").await;
    let (event, _) = until(&mut sub, |e| matches!(e, Event::State(State::Reconnecting { .. }))).await;
    assert!(matches!(&event, Event::State(State::Reconnecting { cause, .. }) if cause.contains("dead")), "{event:?}");
    proxy.thaw();
    let got = messages(&mut sub, 1).await;
    assert_eq!(got[0].text(), Some("while-dead"));
}

#[tokio::test]
async fn sse_fresh_subscriber_loses_nothing_before_its_first_message() {
    a_fresh_subscriber_loses_nothing_before_its_first_message(Transport::Sse).await;
}

#[tokio::test]
async fn ws_fresh_subscriber_loses_nothing_before_its_first_message() {
    a_fresh_subscriber_loses_nothing_before_its_first_message(Transport::Ws).await;
}
