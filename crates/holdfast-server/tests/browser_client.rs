//! The browser client, `clients/js/holdfast.js`, as the server serves it, in headless Chromium
//! (Debian's `/usr/bin/chromium`, driven by `playwright-core` from
//! `tests/interop/holdfast_js.js`): every transport, the fallback through proxies that refuse or
//! buffer, resume after a server-side disconnect, a reset and a silent link, one connection
//! shared by seven tabs, publish from a page, a page of another origin. Plus how the file itself
//! is served (no browser).
//!
//! The pages are the server's own landing page (or the same page through a proxy written in the
//! node script, on its own port), where `import('/holdfast.js')` loads the client. The tests
//! publish over real HTTP and read what the page's callbacks report, one JSON line each.
//! `scripts/setup.sh` installs node, Chromium and playwright-core; a missing one fails the test
//! with a hint (never a silent skip).

use std::io::Read;
use std::time::{Duration, Instant};

use holdfast_testkit::interop::{browser_command, cors_pages, Client, Reports};
use holdfast_testkit::{fast_pacing, TestServer, IO_TIMEOUT};
use serde_json::{json, Value};

/// The client as embedded (what `GET /holdfast.js` must answer).
const HOLDFAST_JS: &[u8] = include_bytes!("../../../clients/js/holdfast.js");

/// Browser tests run one at a time: two Chromiums at once on a small machine make the timing
/// checks (a takeover within about a second, a fallback within a few heartbeats) unreliable.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `holdfast_js.js` and what it reported so far.
struct Browser {
    client: Client,
    reports: Reports,
    /// Pages opened so far (they are numbered in that order).
    pages: u64,
    /// The proxies' base URLs, in the order of the modes given.
    proxies: Vec<String>,
}

impl Browser {
    /// Starts the script against `server`, with a proxy in front of it for each of `modes`
    /// (`nows`, `nosse`, `buffer`, `open`, joined by `+`).
    async fn start(server: &TestServer, modes: &[&str]) -> Browser {
        let mut node = browser_command("holdfast_js.js");
        node.arg(server.url("")).args(modes);
        let mut browser =
            Browser { client: Client::spawn(node), reports: Reports::new(), pages: 0, proxies: Vec::new() };
        browser.wait("the script's start", |r| r.seen.iter().any(|x| x["type"] == "ready")).await;
        let ready = browser.reports.seen.iter().find(|x| x["type"] == "ready").unwrap();
        browser.proxies =
            ready["proxies"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
        browser
    }

    /// Reads reports until `done` holds (at most [`IO_TIMEOUT`]).
    async fn wait(&mut self, what: &str, done: impl Fn(&Reports) -> bool) {
        self.reports.until(&mut self.client, what, done).await;
        let trouble = self.reports.filter(|r| r["type"] == "page_error" || r["type"] == "command_error");
        assert!(trouble.is_empty(), "the page or the script failed: {trouble:?}\nstderr:\n{}", self.client.stderr());
    }

    /// Keeps reading reports for `period` (whatever comes late, a duplicate say, is then seen).
    async fn settle(&mut self, period: Duration) {
        let deadline = tokio::time::Instant::now() + period;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.client.next_within(left).await {
                Some(report) => self.reports.seen.push(report),
                None => return,
            }
        }
    }

    /// Sends a command and waits for its answer (a report of type `answer`).
    async fn command(&mut self, command: Value, answer: &str) -> Value {
        let before = self.reports.filter(|r| r["type"] == answer).len();
        self.client.command(command);
        self.wait(answer, |r| r.filter(|x| x["type"] == answer).len() > before).await;
        self.reports.filter(|r| r["type"] == answer)[before].clone()
    }

    /// Opens a page at `url` that subscribes to `channels` with `options`; gives its number.
    async fn open(&mut self, url: &str, channels: &str, options: Value) -> u64 {
        let command = json!({"cmd": "open", "url": url, "channels": channels, "options": options});
        let answer = self.command(command, "opened").await;
        self.pages += 1;
        answer["page"].as_u64().unwrap()
    }

    /// Reports of one page, of one type.
    fn of(&self, page: u64, kind: &str) -> Vec<&Value> {
        of(&self.reports, page, kind)
    }

    /// Waits until `page` reported `n` `connected` states.
    async fn connected(&mut self, page: u64, n: usize) {
        self.wait(&format!("connected #{n} on page {page}"), |r| states(r, page, "connected").len() >= n).await;
    }

    /// Waits until `page` got `n` messages.
    async fn messages(&mut self, page: u64, n: usize) {
        self.wait(&format!("{n} messages on page {page}"), |r| of(r, page, "message").len() >= n).await;
    }

    /// The data of `page`'s messages, in order.
    fn data(&self, page: u64) -> Vec<String> {
        self.of(page, "message").iter().map(|m| m["data"].as_str().unwrap_or("?").to_string()).collect()
    }

    /// The cursors of `page`'s messages, in order.
    fn cursors(&self, page: u64) -> Vec<String> {
        self.of(page, "message").iter().map(|m| m["cursor"].as_str().unwrap_or("?").to_string()).collect()
    }

    /// Stops the browser, checking that no page threw and no command failed until the end.
    async fn finish(mut self) {
        let rest = self.client.finish().await;
        self.reports.seen.extend(rest);
        let trouble = self.reports.filter(|r| r["type"] == "page_error" || r["type"] == "command_error");
        assert!(trouble.is_empty(), "the page or the script failed: {trouble:?}");
    }
}

fn of<'a>(reports: &'a Reports, page: u64, kind: &str) -> Vec<&'a Value> {
    reports.filter(|r| r["page"] == page && r["type"] == kind)
}

/// `page`'s state reports with that `state`.
fn states<'a>(reports: &'a Reports, page: u64, state: &str) -> Vec<&'a Value> {
    reports.filter(|r| r["page"] == page && r["type"] == "state" && r["state"] == state)
}

/// `m{from}` … `m{to}`.
fn names(from: u32, to: u32) -> Vec<String> {
    (from..=to).map(|i| format!("m{i}")).collect()
}

/// Publishes `m{from}` … `m{to}` to `channel`; gives their ids.
async fn publish_range(server: &TestServer, channel: &str, from: u32, to: u32) -> Vec<String> {
    let mut ids = Vec::new();
    for name in names(from, to) {
        ids.push(server.publish(channel, None, name.as_bytes()).await);
    }
    ids
}

/// `GET path` on a fresh connection, with extra header lines.
async fn get(server: &TestServer, path: &str, extra: &str) -> holdfast_testkit::RawResponse {
    let mut conn = server.connect().await;
    conn.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n").as_bytes()).await;
    conn.response().await
}

/// Streaming subscribers (`GET /admin/connections`) whose channels include `channel`.
async fn subscribers_of(server: &TestServer, channel: &str) -> Vec<Value> {
    let answer = get(server, "/admin/connections", "").await.json();
    let list = answer["connections"].as_array().cloned().unwrap_or_default();
    list.into_iter().filter(|c| c["channels"].as_array().is_some_and(|l| l.iter().any(|n| n == channel))).collect()
}

#[tokio::test]
async fn each_transport_forced_in_turn_delivers_20_messages_in_order_exactly_once() {
    let _one = ONE_BROWSER.lock().await;
    let mut server = TestServer::start(|_| {}).await;
    let mut browser = Browser::start(&server, &[]).await;
    let transports = ["ws", "sse", "longpoll"];
    for transport in transports {
        browser.open(&server.url("/"), "forced", json!({"transports": [transport], "share": false})).await;
    }
    for page in 0..3 {
        browser.connected(page, 1).await;
    }
    let live: Vec<String> =
        subscribers_of(&server, "forced").await.iter().map(|c| c["transport"].to_string()).collect();
    assert!(live.contains(&"\"websocket\"".into()) && live.contains(&"\"sse\"".into()), "{live:?}");

    let ids = publish_range(&server, "forced", 1, 20).await;
    for page in 0..3 {
        browser.messages(page, 20).await;
    }
    browser.settle(Duration::from_millis(500)).await;
    for (page, transport) in (0..).zip(transports) {
        assert_eq!(browser.data(page), names(1, 20), "{transport}: every message once, in order");
        assert_eq!(browser.cursors(page), ids, "{transport}: each message's cursor is its publish id");
        let used: Vec<&Value> = browser.of(page, "state").iter().map(|s| &s["transport"]).collect();
        assert!(used.iter().all(|t| *t == transport), "{transport} only: {used:?}");
        assert!(browser.of(page, "gap").is_empty(), "{transport}: no gap");
    }
    browser.finish().await;
    server.stop().await;
}

#[tokio::test]
async fn fallback_lands_on_sse_then_long_polling_and_a_reload_starts_with_the_remembered_transport() {
    let _one = ONE_BROWSER.lock().await;
    let mut server = TestServer::start(|_| {}).await;
    let mut browser = Browser::start(&server, &["nows", "nows+nosse"]).await;
    let proxies = browser.proxies.clone();
    let (sse, poll) = (0, 1);
    browser.open(&format!("{}/", proxies[0]), "fallback", json!({})).await;
    browser.open(&format!("{}/", proxies[1]), "fallback", json!({})).await;
    browser.connected(sse, 1).await;
    browser.connected(poll, 1).await;
    let tried = |b: &Browser, page: u64| -> Vec<Value> {
        states(&b.reports, page, "connecting").iter().map(|s| s["transport"].clone()).collect()
    };
    assert_eq!(
        tried(&browser, sse),
        ["ws", "sse"],
        "no WebSocket through the first proxy: {:?}",
        browser.of(sse, "state")
    );
    assert_eq!(tried(&browser, poll), ["ws", "sse", "longpoll"], "{:?}", browser.of(poll, "state"));
    assert_eq!(states(&browser.reports, sse, "connected")[0]["transport"], "sse");
    assert_eq!(states(&browser.reports, poll, "connected")[0]["transport"], "longpoll");

    publish_range(&server, "fallback", 1, 5).await;
    browser.messages(sse, 5).await;
    browser.messages(poll, 5).await;

    // The proxies let everything through now: only the remembered transport keeps the pages off
    // WebSocket after a reload.
    for proxy in 0..2 {
        browser.command(json!({"cmd": "mode", "proxy": proxy, "mode": "open"}), "mode").await;
    }
    let before_reload = browser.reports.seen.len();
    for page in [sse, poll] {
        browser.command(json!({"cmd": "reload", "page": page}), "resubscribed").await;
    }
    browser.connected(sse, 2).await;
    browser.connected(poll, 2).await;
    let after: Vec<&Value> = browser.reports.seen[before_reload..].iter().collect();
    for (page, remembered) in [(sse, "sse"), (poll, "longpoll")] {
        let first = after.iter().find(|r| r["page"] == page && r["type"] == "state").expect("a state after reload");
        assert_eq!((&first["state"], &first["transport"]), (&json!("connecting"), &json!(remembered)), "{after:?}");
        let connected = after.iter().find(|r| r["page"] == page && r["state"] == "connected").unwrap();
        assert_eq!(connected["transport"], remembered, "{after:?}");
    }
    let upgrades = after.iter().filter(|r| r["type"] == "proxy" && r["kind"] == "ws").count();
    assert_eq!(upgrades, 0, "no WebSocket attempt after the reload: {after:?}");

    publish_range(&server, "fallback", 6, 10).await;
    browser.messages(sse, 10).await;
    browser.messages(poll, 10).await;
    browser.settle(Duration::from_millis(300)).await;
    for page in [sse, poll] {
        assert_eq!(browser.data(page), names(1, 10), "page {page}");
    }
    browser.finish().await;
    server.stop().await;
}

#[tokio::test]
async fn a_proxy_that_buffers_the_event_stream_moves_the_client_to_long_polling_within_a_few_heartbeats() {
    let _one = ONE_BROWSER.lock().await;
    let mut server = TestServer::start(fast_pacing).await;
    let mut browser = Browser::start(&server, &["nows+buffer"]).await;
    let url = format!("{}/", browser.proxies[0]);
    let page = browser.open(&url, "buffered", json!({"heartbeat": 1})).await;
    browser.connected(page, 1).await;
    let connecting = states(&browser.reports, page, "connecting");
    let tried: Vec<&Value> = connecting.iter().map(|s| &s["transport"]).collect();
    assert_eq!(tried, ["ws", "sse", "longpoll"], "{:?}", browser.of(page, "state"));
    let connected = states(&browser.reports, page, "connected")[0].clone();
    assert_eq!(connected["transport"], "longpoll");
    let waited = connected["at"].as_u64().unwrap() - connecting[1]["at"].as_u64().unwrap();
    // The watch gives a stream two heartbeats (2 s) to deliver its first byte.
    assert!((1500..5000).contains(&waited), "moved on from SSE after {waited} ms: {:?}", browser.of(page, "state"));
    let gave_up = states(&browser.reports, page, "reconnecting");
    assert!(
        gave_up.iter().any(|s| s["transport"] == "sse" && s["cause"].as_str().unwrap_or("").contains("no byte")),
        "{gave_up:?}"
    );

    publish_range(&server, "buffered", 1, 10).await;
    browser.messages(page, 10).await;
    browser.settle(Duration::from_millis(300)).await;
    assert_eq!(browser.data(page), names(1, 10));
    browser.finish().await;
    server.stop().await;
}

#[tokio::test]
async fn admin_disconnect_is_survived_on_websocket_and_sse_without_loss_or_duplicates() {
    let _one = ONE_BROWSER.lock().await;
    let mut server = TestServer::start(|_| {}).await;
    let mut browser = Browser::start(&server, &[]).await;
    let pages = [(0, "ws"), (1, "sse")];
    for (_, transport) in pages {
        browser.open(&server.url("/"), "outage", json!({"transports": [transport], "share": false})).await;
    }
    for (page, _) in pages {
        browser.connected(page, 1).await;
    }
    // Cut before the first message: the pages resume from the position the stream's head named.
    // Publish at once, while they are away (they wait up to a second before coming back). A page
    // is "connected" at its link's first byte, which the server writes before the push shard
    // takes the subscriber in: wait until both count.
    server.wait_for_subscribers("outage", 2).await;
    assert_eq!(server.disconnect("outage").await, 2);
    let mut ids = publish_range(&server, "outage", 1, 3).await;
    for (page, _) in pages {
        browser.connected(page, 2).await;
    }
    ids.extend(publish_range(&server, "outage", 4, 6).await);
    for (page, _) in pages {
        browser.messages(page, 6).await;
    }
    // And cut again after some messages.
    server.wait_for_subscribers("outage", 2).await;
    assert_eq!(server.disconnect("outage").await, 2);
    ids.extend(publish_range(&server, "outage", 7, 9).await);
    for (page, _) in pages {
        browser.connected(page, 3).await;
    }
    ids.extend(publish_range(&server, "outage", 10, 12).await);
    for (page, _) in pages {
        browser.messages(page, 12).await;
    }
    browser.settle(Duration::from_millis(500)).await;
    for (page, transport) in pages {
        assert_eq!(browser.data(page), names(1, 12), "{transport}: every message exactly once, in order");
        assert_eq!(browser.cursors(page), ids, "{transport}");
        let closed: Vec<&Value> = browser.of(page, "closed").iter().map(|c| &c["reason"]).collect();
        assert_eq!(closed, ["admin_disconnect", "admin_disconnect"], "{transport}: the notices reached onClosed");
        let lost = states(&browser.reports, page, "reconnecting");
        assert!(
            lost.iter().all(|s| s["cause"].as_str().unwrap_or("").contains("admin_disconnect")),
            "{transport}: {lost:?}"
        );
        assert!(browser.of(page, "gap").is_empty(), "{transport}: nothing was lost");
    }
    browser.finish().await;
    server.stop().await;
}

#[tokio::test]
async fn a_link_dropped_before_the_first_message_resumes_from_where_its_stream_began() {
    let _one = ONE_BROWSER.lock().await;
    let mut server = TestServer::start(|_| {}).await;
    let mut browser = Browser::start(&server, &["open"]).await;
    let url = format!("{}/", browser.proxies[0]);
    let transports = ["ws", "sse", "longpoll"];
    for transport in transports {
        browser.open(&url, "dropped", json!({"transports": [transport], "share": false})).await;
    }
    for page in 0..3 {
        browser.connected(page, 1).await;
    }
    // The long poll held too (it counts as a subscriber while it waits).
    server.wait_for_subscribers("dropped", 3).await;
    // No notice, no message yet: only the position the stream's head named (the WebSocket's
    // `subscribed` answer, SSE's Holdfast-Cursor, the first poll's cursor) says where to resume.
    let cut = browser.command(json!({"cmd": "cut", "proxy": 0}), "cut").await;
    assert!(cut["count"].as_u64() >= Some(3), "{cut}");
    publish_range(&server, "dropped", 1, 3).await;
    // (Chromium itself sends a long poll again when its reused connection fails before the
    // answer: that page may see no break at all.)
    for page in 0..2 {
        browser.connected(page, 2).await;
    }
    publish_range(&server, "dropped", 4, 6).await;
    for page in 0..3 {
        browser.messages(page, 6).await;
    }
    browser.settle(Duration::from_millis(300)).await;
    for (page, transport) in (0..).zip(transports) {
        assert_eq!(browser.data(page), names(1, 6), "{transport}: nothing lost, nothing twice");
        assert!(browser.of(page, "gap").is_empty(), "{transport}");
    }
    browser.finish().await;
    server.stop().await;
}

#[tokio::test]
async fn a_link_gone_silent_is_dropped_after_two_heartbeats_and_resumed_without_loss() {
    let _one = ONE_BROWSER.lock().await;
    let mut server = TestServer::start(fast_pacing).await;
    let mut browser = Browser::start(&server, &["open"]).await;
    let url = format!("{}/", browser.proxies[0]);
    let pages = [(0, "ws"), (1, "sse")];
    for (_, transport) in pages {
        let options = json!({"transports": [transport], "share": false, "heartbeat": 1});
        browser.open(&url, "silent", options).await;
    }
    for (page, _) in pages {
        browser.connected(page, 1).await;
    }
    publish_range(&server, "silent", 1, 3).await;
    for (page, _) in pages {
        browser.messages(page, 3).await;
    }
    // A quiet link lives: heartbeats (SSE comments; on WebSocket the answers to the client's
    // ping ops, as a page never sees the server's pings) keep the watch from firing.
    browser.settle(Duration::from_secs(3)).await;
    for (page, transport) in pages {
        assert!(
            states(&browser.reports, page, "reconnecting").is_empty(),
            "{transport}: {:?}",
            browser.of(page, "state")
        );
    }
    // Nothing closes: the links just stop carrying bytes.
    let stall = browser.command(json!({"cmd": "stall", "proxy": 0}), "stall").await;
    assert!(stall["count"].as_u64() >= Some(2), "{stall}");
    publish_range(&server, "silent", 4, 6).await;
    for (page, _) in pages {
        browser.connected(page, 2).await;
    }
    publish_range(&server, "silent", 7, 9).await;
    for (page, _) in pages {
        browser.messages(page, 9).await;
    }
    browser.settle(Duration::from_millis(300)).await;
    let stalled_at = stall["at"].as_u64().unwrap();
    for (page, transport) in pages {
        assert_eq!(browser.data(page), names(1, 9), "{transport}: nothing lost, nothing twice");
        let dead = states(&browser.reports, page, "reconnecting");
        assert_eq!(dead.len(), 1, "{transport}: {dead:?}");
        assert!(dead[0]["cause"].as_str().unwrap_or("").contains("no byte"), "{transport}: {dead:?}");
        // Two heartbeats (2 s) after the last byte, which came up to one heartbeat before.
        let after = dead[0]["at"].as_u64().unwrap() - stalled_at;
        assert!((900..3500).contains(&after), "{transport}: declared dead {after} ms after the stall");
    }
    browser.finish().await;
    server.stop().await;
}

#[tokio::test]
async fn seven_tabs_share_one_connection_and_another_takes_over_when_the_leader_closes() {
    let _one = ONE_BROWSER.lock().await;
    let mut server = TestServer::start(|_| {}).await;
    let mut browser = Browser::start(&server, &[]).await;
    let leader = browser.open(&server.url("/"), "tabs", json!({})).await;
    browser.connected(leader, 1).await;
    for _ in 1..7 {
        let page = browser.open(&server.url("/"), "tabs", json!({})).await;
        browser.connected(page, 1).await;
    }
    assert!(states(&browser.reports, leader, "connected").iter().all(|s| s["leader"] == true));
    for page in 1..7 {
        let heard = states(&browser.reports, page, "connected");
        assert!(heard.iter().all(|s| s["leader"] == false), "page {page} follows: {heard:?}");
    }
    // Give any extra connection time to show up before counting.
    browser.settle(Duration::from_millis(300)).await;
    let connections = subscribers_of(&server, "tabs").await;
    assert_eq!(connections.len(), 1, "one connection for seven tabs: {connections:?}");

    publish_range(&server, "tabs", 1, 5).await;
    for page in 0..7 {
        browser.messages(page, 5).await;
    }

    browser.command(json!({"cmd": "close", "page": leader}), "page_closed").await;
    let closed_at = Instant::now();
    // At once: the new leader must resume from the cursor it shared, not from "now".
    publish_range(&server, "tabs", 6, 10).await;
    let took_over =
        |r: &Reports| r.filter(|s| s["type"] == "state" && s["state"] == "connected" && s["leader"] == true).len() >= 2;
    browser.wait("a new leader", took_over).await;
    let takeover = closed_at.elapsed();
    for page in 1..7 {
        browser.messages(page, 10).await;
    }
    browser.settle(Duration::from_millis(500)).await;
    assert!(takeover < Duration::from_millis(1500), "another tab took over after {takeover:?}");
    for page in 1..7 {
        assert_eq!(browser.data(page), names(1, 10), "page {page}: every message exactly once, in order");
    }
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let connections = subscribers_of(&server, "tabs").await;
        if connections.len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "still not one connection after the takeover: {connections:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.finish().await;
    server.stop().await;
}

#[tokio::test]
async fn publish_from_a_page_resolves_to_the_id_and_a_bad_channel_is_refused_with_its_label() {
    let _one = ONE_BROWSER.lock().await;
    let mut server = TestServer::start(|_| {}).await;
    let mut browser = Browser::start(&server, &[]).await;
    let page = browser.open(&server.url("/"), "pubs", json!({})).await;
    browser.connected(page, 1).await;

    let publish = |channel: &str, data: Value, options: Value| json!({"cmd": "publish", "page": page, "channel": channel, "data": data, "options": options});
    let text = browser.command(publish("pubs", json!("hello"), json!({"event": "chat"})), "published").await;
    let object = browser.command(publish("pubs", json!({"a": [1, "b"]}), json!({})), "published").await;
    let refused = browser.command(publish("no spaces", json!("x"), json!({})), "publish_error").await;
    assert_eq!((&refused["label"], &refused["status"]), (&json!("bad_channel"), &json!(400)), "{refused}");

    browser.messages(page, 2).await;
    let got = browser.of(page, "message");
    assert_eq!((&got[0]["data"], &got[0]["event"], &got[0]["cursor"]), (&json!("hello"), &json!("chat"), &text["id"]));
    assert_eq!(got[1]["json"], json!({"a": [1, "b"]}), "published as JSON: {}", got[1]);
    assert_eq!(got[1]["cursor"], object["id"]);
    let info = get(&server, "/pub/pubs", "").await.json();
    assert_eq!(info["last_id"], object["id"], "{info}");

    // Two more tabs that ask for history: they follow the first tab's connection, but catch up
    // on the last two messages by themselves first.
    for _ in 0..2 {
        let follower = browser.open(&server.url("/"), "pubs", json!({"history": 2})).await;
        browser.messages(follower, 2).await;
    }
    let last =
        browser.command(json!({"cmd": "publish", "page": 2, "channel": "pubs", "data": "bye"}), "published").await;
    for page in 0..3 {
        browser.messages(page, 3).await;
    }
    browser.settle(Duration::from_millis(300)).await;
    for page in 0..3 {
        let cursors = browser.cursors(page);
        assert_eq!(
            cursors,
            [text["id"].clone(), object["id"].clone(), last["id"].clone()],
            "page {page}: each message once, in order"
        );
        let leaders: Vec<&Value> = browser.of(page, "state").iter().map(|s| &s["leader"]).collect();
        assert!(leaders.iter().all(|l| **l == (page == 0)), "only page 0 connects: page {page}: {leaders:?}");
    }
    assert_eq!(subscribers_of(&server, "pubs").await.len(), 1);

    // Subscribing to a bad name is refused for good: no retrying what cannot work.
    let bad = browser.open(&server.url("/"), "no spaces", json!({"share": false})).await;
    browser.wait("the end of a bad subscription", |r| !states(r, bad, "closed").is_empty()).await;
    browser.settle(Duration::from_millis(1500)).await;
    let end = states(&browser.reports, bad, "closed");
    assert!(end[0]["cause"].as_str().unwrap_or("").contains("bad_channel"), "{end:?}");
    assert!(states(&browser.reports, bad, "connected").is_empty());
    let after_end = browser.of(bad, "state").into_iter().skip_while(|s| s["state"] != "closed").count();
    assert_eq!(after_end, 1, "nothing after the end: {:?}", browser.of(bad, "state"));
    browser.finish().await;
    server.stop().await;
}

#[tokio::test]
async fn a_page_of_another_origin_allowed_by_cors_origins_subscribes_on_every_transport_and_publishes() {
    let _one = ONE_BROWSER.lock().await;
    let (mut server, allowed, _) = cors_pages().await;
    let mut browser = Browser::start(&server, &[]).await;
    let base = server.url("");
    let transports = ["ws", "sse", "longpoll"];
    for transport in transports {
        // Asks for 1 s; the server clamps it to heartbeat_min (5 s) and says so in a field only
        // readable cross-origin because the answer exposes it.
        let options = json!({"transports": [transport], "share": false, "heartbeat": 1});
        let command = json!({"cmd": "open", "url": format!("{allowed}/"), "channels": "cors", "options": options, "server": base});
        browser.command(command, "opened").await;
    }
    for page in 0..3 {
        browser.connected(page, 1).await;
    }
    assert_eq!(states(&browser.reports, 1, "connected")[0]["heartbeat"], 5, "SSE read Holdfast-Heartbeat");

    // Text goes without a preflight, JSON after one.
    let publish = |data: Value| json!({"cmd": "publish", "page": 0, "channel": "cors", "data": data});
    let text = browser.command(publish(json!("hello")), "published").await;
    let object = browser.command(publish(json!({"n": 1})), "published").await;
    for page in 0..3 {
        browser.messages(page, 2).await;
    }
    browser.settle(Duration::from_millis(300)).await;
    for (page, transport) in (0..).zip(transports) {
        let got = browser.of(page, "message");
        assert_eq!((&got[0]["data"], &got[0]["cursor"]), (&json!("hello"), &text["id"]), "{transport}");
        assert_eq!((&got[1]["json"], &got[1]["cursor"]), (&json!({"n": 1}), &object["id"]), "{transport}");
        assert_eq!(got.len(), 2, "{transport}");
    }
    browser.finish().await;
    server.stop().await;
}

#[tokio::test]
async fn holdfast_js_is_served_with_etag_and_cache_control_and_is_under_8_kib_gzipped() {
    let mut server = TestServer::start(|_| {}).await;
    let plain = get(&server, "/holdfast.js", "").await;
    assert_eq!(plain.status, 200, "{}", plain.head);
    assert_eq!(plain.body, HOLDFAST_JS, "the embedded client");
    assert!(plain.header("content-type").is_some_and(|t| t.starts_with("text/javascript")), "{}", plain.head);
    assert_eq!(plain.header("cache-control"), Some("public, max-age=300"), "{}", plain.head);
    let etag = plain.header("etag").expect("an ETag").to_string();

    let fresh = get(&server, "/holdfast.js", &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!(fresh.status, 304, "{}", fresh.head);
    assert_eq!(fresh.header("etag"), Some(etag.as_str()));

    let zipped = get(&server, "/holdfast.js", "Accept-Encoding: gzip\r\n").await;
    assert_eq!(zipped.header("content-encoding"), Some("gzip"), "{}", zipped.head);
    let length: usize = zipped.header("content-length").expect("Content-Length").parse().unwrap();
    assert_eq!(length, zipped.body.len());
    assert!(length < 8192, "holdfast.js is {length} bytes gzipped");
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped.body[..]).read_to_end(&mut unzipped).unwrap();
    assert_eq!(unzipped, HOLDFAST_JS);

    let types = get(&server, "/holdfast.d.ts", "").await;
    assert_eq!(types.status, 200);
    assert!(types.text().contains("export declare function subscribe"), "{}", types.text());
    server.stop().await;
}
