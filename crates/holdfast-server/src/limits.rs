//! Limits per client IP: open connections (`max_connections_per_ip`), new connections a second
//! (`new_connections_per_ip_per_second`) and publishes a second (`publishes_per_ip_per_second`),
//! each a token bucket; and who the client is behind a trusted proxy (`trusted_proxies`,
//! `X-Forwarded-For`, `Forwarded: for=`).
//!
//! What it owns: the table of clients (one entry per IPv4 address or IPv6 /64), the buckets, the
//! CIDR lists, and the verdicts. What it does not own: the answers (the listener writes the 429
//! at accept, `conn` answers a publish, the push shard a WebSocket op) and the counting of
//! refusals (`stats`).
//!
//! Memory stays bounded whatever clients do: an entry exists only while its client has open
//! connections (counted only when `max_connections_per_ip` is on) or a bucket that is not full,
//! is removed when its last connection closes with full buckets, or by the sweep once a second
//! when its buckets have refilled; and there are at most [`MAX_TRACKED_CLIENTS`] entries. A
//! client new to a full table is refused as if over its limit (see [`MAX_TRACKED_CLIENTS`] for
//! why that rather than evicting someone).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use holdfast_proto::http1::RequestHead;

use crate::config::Config;
use crate::response::Response;

/// Clients tracked at once (about 40 B each with the map's overhead: 5 MB at most). Beyond it a
/// client not yet tracked is refused as over the limit (fail closed) rather than evicting an
/// entry: evicting one with open connections would lose its count (letting it open more than
/// its limit), evicting an emptied bucket would forgive its debt, and either is what a client
/// spraying source addresses would want. Every tracked client holds a connection or refilled
/// recently, so the table frees itself within `burst / rate` seconds once a spray stops; clients
/// already tracked are served meanwhile.
pub(crate) const MAX_TRACKED_CLIENTS: usize = 131_072;
/// While the table is full, the least time between two sweeps for idle entries made to admit a
/// new client: a spray of new addresses costs at most ten sweeps a second, not one per accept.
const FULL_SWEEP_EVERY_MS: u32 = 100;
/// A client that keeps publishing while refused is flooding once it has asked for this many
/// times its burst beyond what it was allowed (refusals count against its bucket, down to
/// `-(FLOOD_FACTOR - 1) × burst`): a WebSocket doing so is closed (1008 `rate_limited`). At a
/// steady three times its rate, that is about a second and a half after its burst ran out.
const FLOOD_FACTOR: f32 = 3.0;

/// One of the limits, as `/admin/stats` and `/metrics` label its refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientLimit {
    /// `max_connections_per_ip`.
    Connections,
    /// `new_connections_per_ip_per_second`.
    NewConnections,
    /// `publishes_per_ip_per_second`.
    Publishes,
}

impl ClientLimit {
    /// Every limit, in the order `/admin/stats` lists them.
    pub const ALL: [ClientLimit; 3] = [ClientLimit::Connections, ClientLimit::NewConnections, ClientLimit::Publishes];

    /// The label of its refusals in `/admin/stats` (`limited`) and `/metrics` (`limit`).
    pub fn label(self) -> &'static str {
        match self {
            ClientLimit::Connections => "connections_per_ip",
            ClientLimit::NewConnections => "new_connections_per_ip",
            ClientLimit::Publishes => "publishes_per_ip",
        }
    }
}

/// An address block (`10.0.0.0/8`, `2001:db8::/32`, or one address), for `trusted_proxies`.
/// Its `Debug` form is its `Display` form, as the reload's log line shows a changed list.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address, its host bits cleared.
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDRESS` or `ADDRESS/PREFIX`, IPv4 or IPv6. Host bits below the prefix are
    /// ignored (`10.1.2.3/8` is `10.0.0.0/8`), as nginx's `set_real_ip_from` does.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let net: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an address or a block like 10.0.0.0/8 or fd00::/8"))?;
        let net = net.to_canonical();
        let width = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= width => p,
                _ => return Err(format!("{text:?} has a prefix length that is not 0 to {width}")),
            },
        };
        Ok(Cidr { net: mask(net, prefix), prefix })
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == self.net
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `ip` with the bits below `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & keep).into())
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & keep).into())
        }
    }
}

/// Parses `trusted_proxies`: a comma-separated list of blocks.
pub(crate) fn parse_cidrs(value: &str) -> Result<Vec<Cidr>, String> {
    value.split(',').map(str::trim).filter(|c| !c.is_empty()).map(Cidr::parse).collect()
}

/// The key a client is counted under: an IPv4 address, or the /64 of an IPv6 address. One host
/// is given a whole /64 (SLAAC, privacy addresses) and can use any address in it, so limits per
/// IPv6 address would limit nothing; the /64 is used for every limit, connections included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ClientKey {
    V4(u32),
    V6(u64),
}

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(v4.into()),
            IpAddr::V6(v6) => ClientKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// A rate: tokens a second, and how many may be saved up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rate {
    pub per_second: f32,
    pub burst: f32,
}

impl Rate {
    /// The rate a `…_per_second` key and its `…_burst` key describe; `None` when off (0). A burst
    /// of 0 means one second's worth (at least 1).
    pub fn from_config(per_second: f64, burst: u32) -> Option<Rate> {
        if per_second <= 0.0 {
            return None;
        }
        let burst = if burst == 0 { per_second.ceil().max(1.0) } else { f64::from(burst) };
        Some(Rate { per_second: per_second as f32, burst: burst as f32 })
    }
}

/// A token bucket, refilled lazily: 8 bytes.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Below zero: refusals owed (see [`FLOOD_FACTOR`]).
    tokens: f32,
    /// When `tokens` was last brought up to date, in milliseconds since the table's start
    /// (wrapping: a gap longer than 49 days would look shorter, and a bucket refills in seconds).
    at: u32,
}

/// What a bucket says to one more event.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Take {
    Allowed,
    /// Over the rate: a token is there again after this long.
    Limited(Duration),
    /// Over the rate and far past it (see [`FLOOD_FACTOR`]).
    Flooding(Duration),
}

impl Bucket {
    fn full(rate: Rate, now: u32) -> Bucket {
        Bucket { tokens: rate.burst, at: now }
    }

    fn refill(&mut self, rate: Rate, now: u32) {
        let elapsed = now.wrapping_sub(self.at) as f32 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.at = now;
    }

    fn is_full(&self, rate: Rate, now: u32) -> bool {
        let mut refilled = *self;
        refilled.refill(rate, now);
        refilled.tokens >= rate.burst
    }

    /// Takes a token. With `owe`, a refusal costs one too, down to the flooding floor.
    fn take(&mut self, rate: Rate, now: u32, owe: bool) -> Take {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Take::Allowed;
        }
        let floor = -(FLOOD_FACTOR - 1.0) * rate.burst;
        let flooding = owe && self.tokens - 1.0 < floor;
        if owe {
            self.tokens = (self.tokens - 1.0).max(floor);
        }
        let wait = Duration::from_secs_f32(((1.0 - self.tokens) / rate.per_second).max(0.001));
        if flooding {
            Take::Flooding(wait)
        } else {
            Take::Limited(wait)
        }
    }
}

/// What one client has: 20 bytes.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Open connections (counted only while `max_connections_per_ip` is on).
    open: u32,
    connect: Bucket,
    publish: Bucket,
}

/// Whether a new connection may be served.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Admission {
    /// Served (and counted, when connections are counted: release it when it closes).
    Admitted,
    /// Its client has `max_connections_per_ip` open (or the table is full).
    TooManyConnections,
    /// Its client opened connections faster than `new_connections_per_ip_per_second`: retry after.
    RateLimited(Duration),
}

/// Whether a publish may go ahead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PublishCheck {
    Allowed,
    /// Over `publishes_per_ip_per_second`: retry after.
    Limited(Duration),
    /// Over it and still going at several times the rate: a WebSocket is closed.
    Flooding(Duration),
}

/// The limits themselves, from the configuration: replaced whole by a SIGHUP reload.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    /// 0 = off.
    max_connections: u32,
    connect: Option<Rate>,
    publish: Option<Rate>,
    trusted: Vec<Cidr>,
}

impl Settings {
    fn of(config: &Config) -> Settings {
        Settings {
            max_connections: config.max_connections_per_ip,
            connect: Rate::from_config(config.new_connections_per_ip_per_second, config.new_connections_per_ip_burst),
            publish: Rate::from_config(config.publishes_per_ip_per_second, config.publishes_per_ip_burst),
            trusted: config.trusted_proxies.clone(),
        }
    }

    fn limits_connections(&self) -> bool {
        self.max_connections > 0 || self.connect.is_some()
    }

    fn is_idle(&self, entry: &Entry, now: u32) -> bool {
        entry.open == 0
            && self.connect.is_none_or(|r| entry.connect.is_full(r, now))
            && self.publish.is_none_or(|r| entry.publish.is_full(r, now))
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|cidr| cidr.contains(ip))
    }
}

/// The per-client limits of one server.
pub(crate) struct ClientLimits {
    /// Read once per accept, publish or proxied request, written only by a SIGHUP reload: an
    /// `ArcSwap` load is a few uncontended atomic operations on a slot of the reading thread's
    /// own, where a lock (even a read lock) would bounce one cache line between every core on
    /// every accept.
    settings: ArcSwap<Settings>,
    start: Instant,
    table: Mutex<Table>,
    /// Streaming connections from a trusted proxy, by connection id: the client the proxy named
    /// (for `/admin/connections`, the logs, a WebSocket's publish limit). Bounded by the open
    /// connections; empty unless `trusted_proxies` is or was set.
    clients: Mutex<HashMap<u64, IpAddr>>,
    /// Whether `clients` was ever written to: once `trusted_proxies` is emptied by a reload, the
    /// clients remembered before still have to be forgotten when their connections close.
    remembered_any: AtomicBool,
}

#[derive(Default)]
struct Table {
    entries: HashMap<ClientKey, Entry>,
    /// When a full table was last swept to admit a client (ms since start).
    full_sweep_at: Option<u32>,
}

impl ClientLimits {
    pub fn new(config: &Config) -> ClientLimits {
        ClientLimits {
            settings: ArcSwap::from_pointee(Settings::of(config)),
            start: Instant::now(),
            table: Mutex::default(),
            clients: Mutex::default(),
            remembered_any: AtomicBool::new(false),
        }
    }

    /// Takes the limits of a reloaded configuration; they apply from the next accept or publish.
    /// Connections open when counting starts (`max_connections_per_ip` from 0) were not counted
    /// and are not: their client may have that many more until they close. When it stops, the
    /// counts are dropped; a rate turned on starts each tracked client with a full bucket.
    pub fn reconfigure(&self, config: &Config) {
        let new = Settings::of(config);
        let old = self.settings.load_full();
        if *old == new {
            return;
        }
        let now = self.now_ms();
        // Under the table's lock, so an accept or publish sees the table and the settings agree.
        let mut table = self.lock();
        for entry in table.entries.values_mut() {
            if new.max_connections == 0 {
                entry.open = 0;
            }
            if let (None, Some(rate)) = (old.connect, new.connect) {
                entry.connect = Bucket::full(rate, now);
            }
            if let (None, Some(rate)) = (old.publish, new.publish) {
                entry.publish = Bucket::full(rate, now);
            }
        }
        table.entries.retain(|_, entry| !new.is_idle(entry, now));
        self.settings.store(Arc::new(new));
    }

    fn now_ms(&self) -> u32 {
        self.start.elapsed().as_millis() as u32
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides on a new connection from `peer` (always the TCP peer: a proxy's connections are
    /// its own) and counts it when admitted. Both checks in one look-up; a refused connection
    /// costs no token.
    pub fn admit(&self, peer: IpAddr) -> Admission {
        let settings = self.settings.load();
        if !settings.limits_connections() {
            return Admission::Admitted;
        }
        let now = self.now_ms();
        let mut table = self.lock();
        let Some(entry) = Self::entry(&settings, &mut table, ClientKey::of(peer), now) else {
            return Admission::TooManyConnections;
        };
        if settings.max_connections > 0 && entry.open >= settings.max_connections {
            return Admission::TooManyConnections;
        }
        if let Some(rate) = settings.connect {
            if let Take::Limited(wait) | Take::Flooding(wait) = entry.connect.take(rate, now, false) {
                return Admission::RateLimited(wait);
            }
        }
        if settings.max_connections > 0 {
            entry.open += 1;
        }
        Admission::Admitted
    }

    /// A connection [`ClientLimits::admit`] admitted has closed. The client's entry goes when it
    /// has no connection left and full buckets.
    pub fn release(&self, peer: IpAddr) {
        let settings = self.settings.load();
        if settings.max_connections == 0 {
            return;
        }
        let now = self.now_ms();
        let key = ClientKey::of(peer);
        let mut table = self.lock();
        if let Some(entry) = table.entries.get_mut(&key) {
            entry.open = entry.open.saturating_sub(1);
            if settings.is_idle(entry, now) {
                table.entries.remove(&key);
            }
        }
    }

    /// Decides on a publish by `client` (see [`ClientLimits::client_ip`]).
    pub fn publish(&self, client: IpAddr) -> PublishCheck {
        let settings = self.settings.load();
        let Some(rate) = settings.publish else { return PublishCheck::Allowed };
        let now = self.now_ms();
        let mut table = self.lock();
        let Some(entry) = Self::entry(&settings, &mut table, ClientKey::of(client), now) else {
            return PublishCheck::Limited(Duration::from_secs(1));
        };
        match entry.publish.take(rate, now, true) {
            Take::Allowed => PublishCheck::Allowed,
            Take::Limited(wait) => PublishCheck::Limited(wait),
            Take::Flooding(wait) => PublishCheck::Flooding(wait),
        }
    }

    /// Whether publishes are limited (else the client's address need not be worked out).
    pub fn limits_publishes(&self) -> bool {
        self.settings.load().publish.is_some()
    }

    /// Whether any proxy is trusted (else the client is always the TCP peer).
    pub fn trusts_proxies(&self) -> bool {
        !self.settings.load().trusted.is_empty()
    }

    /// The client's entry, made (full) if new; `None` when the table is full even after a sweep.
    fn entry<'t>(settings: &Settings, table: &'t mut Table, key: ClientKey, now: u32) -> Option<&'t mut Entry> {
        if !table.entries.contains_key(&key) && table.entries.len() >= MAX_TRACKED_CLIENTS {
            let recently = table.full_sweep_at.is_some_and(|at| now.wrapping_sub(at) < FULL_SWEEP_EVERY_MS);
            if recently {
                return None;
            }
            table.full_sweep_at = Some(now);
            table.entries.retain(|_, entry| !settings.is_idle(entry, now));
            if table.entries.len() >= MAX_TRACKED_CLIENTS {
                return None;
            }
        }
        Some(table.entries.entry(key).or_insert_with(|| Entry {
            open: 0,
            connect: settings.connect.map_or(Bucket { tokens: 0.0, at: now }, |r| Bucket::full(r, now)),
            publish: settings.publish.map_or(Bucket { tokens: 0.0, at: now }, |r| Bucket::full(r, now)),
        }))
    }

    /// Drops the entries of clients with no connection and refilled buckets (once a second).
    pub fn sweep(&self) {
        let settings = self.settings.load();
        if settings.max_connections == 0 && settings.connect.is_none() && settings.publish.is_none() {
            return;
        }
        let now = self.now_ms();
        let mut table = self.lock();
        table.entries.retain(|_, entry| !settings.is_idle(entry, now));
        if table.entries.capacity() > 4 * table.entries.len().max(1024) {
            table.entries.shrink_to_fit();
        }
    }

    /// Clients tracked now.
    pub fn tracked(&self) -> usize {
        self.lock().entries.len()
    }

    /// Who sent a request that came over a connection from `peer`: `peer` itself, unless it is
    /// a trusted proxy; then the right-most address of `X-Forwarded-For` that is not itself a
    /// trusted proxy (every field of that name, in order), or without that header the same in
    /// `Forwarded: for=` (RFC 7239). A hop that is not an address (`unknown`, an obfuscated
    /// name, garbage) ends the walk: the last trusted hop is the client then.
    pub fn client_ip(&self, peer: IpAddr, head: &RequestHead) -> IpAddr {
        let settings = self.settings.load();
        let peer = peer.to_canonical();
        if !settings.is_trusted(peer) {
            return peer;
        }
        let mut hops: Vec<&[u8]> =
            head.headers_named("x-forwarded-for").flat_map(|v| v.split(|&b| b == b',')).collect();
        let forwarded = hops.is_empty();
        if forwarded {
            hops = head
                .headers_named("forwarded")
                .flat_map(|v| v.split(|&b| b == b','))
                .filter_map(forwarded_for)
                .collect();
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = std::str::from_utf8(hop).ok().and_then(parse_hop) else { break };
            client = ip;
            if !settings.is_trusted(ip) {
                break;
            }
        }
        client
    }

    /// Remembers the client a trusted proxy named for the stream that connection `id` from `peer`
    /// begins with `head` (nothing when `peer` is the client).
    pub fn remember_client(&self, id: u64, peer: IpAddr, head: &RequestHead) {
        if !self.trusts_proxies() {
            return;
        }
        let client = self.client_ip(peer, head);
        if client != peer.to_canonical() {
            self.remembered_any.store(true, Ordering::Relaxed);
            self.clients.lock().unwrap_or_else(|e| e.into_inner()).insert(id, client);
        }
    }

    /// The client remembered for connection `id`.
    pub fn remembered_client(&self, id: u64) -> Option<IpAddr> {
        if !self.remembered_any.load(Ordering::Relaxed) {
            return None;
        }
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).get(&id).copied()
    }

    /// Connection `id` closed: forgets its client, and gives it.
    pub fn forget_client(&self, id: u64) -> Option<IpAddr> {
        if !self.remembered_any.load(Ordering::Relaxed) {
            return None;
        }
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
    }

    /// The peer to show for connection `id`: the client a trusted proxy named, else the TCP peer.
    pub fn shown_peer(&self, id: u64, peer: std::net::SocketAddr) -> String {
        self.remembered_client(id).map_or_else(|| peer.to_string(), |client| client.to_string())
    }
}

/// The `for=` value of one `Forwarded` element (`for=192.0.2.60;proto=http`), quotes included.
fn forwarded_for(element: &[u8]) -> Option<&[u8]> {
    element.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let (name, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
        name.eq_ignore_ascii_case(b"for").then(|| &value[1..])
    })
}

/// One hop: `192.0.2.60`, `192.0.2.60:4711`, `2001:db8::1`, `[2001:db8::1]:4711`, quoted or not.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse::<IpAddr>().ok()).map(|ip| ip.to_canonical());
    }
    hop.parse::<std::net::SocketAddr>().ok().map(|addr| addr.ip().to_canonical())
}

/// 429 `rate_limited` with `Retry-After`: the client is over one of its rates.
pub(crate) fn rate_limited(wait: Duration, reason: &str) -> Response {
    let secs = retry_after_secs(wait);
    Response::error(429, "rate_limited", &format!("{reason}; retry in {secs} s"))
        .with_header("Retry-After", secs.to_string())
}

/// Whole seconds to announce in `Retry-After` for a wait (rounded up, at least 1).
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_v4_and_v6_blocks_and_single_addresses() {
        let block = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(block.contains("10.255.1.2".parse().unwrap()));
        assert!(!block.contains("11.0.0.1".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.2.3".parse().unwrap()), "IPv4-mapped counts as IPv4");
        assert_eq!(Cidr::parse("10.1.2.3/8").unwrap(), block, "host bits are ignored");
        assert_eq!(block.to_string(), "10.0.0.0/8");

        let one = Cidr::parse(" 127.0.0.1 ").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()) && !one.contains("127.0.0.2".parse().unwrap()));

        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));

        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()) && !all.contains("::1".parse().unwrap()));
        assert!(Cidr::parse("::/0").unwrap().contains("2001:db8::1".parse().unwrap()));

        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0/8", "example.com", "10.0.0.0/-1", "fe80::1%eth0"]
        {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_cidrs("10.0.0.0/8, ::1,").unwrap().len(), 2);
        assert!(parse_cidrs("").unwrap().is_empty());
        assert!(parse_cidrs("10.0.0.0/8,nope").is_err());
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a = ClientKey::of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ClientKey::of("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = ClientKey::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(ClientKey::of("::ffff:1.2.3.4".parse().unwrap()), ClientKey::of("1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let rate = Rate { per_second: 10.0, burst: 5.0 };
        let mut bucket = Bucket::full(rate, 0);
        for _ in 0..5 {
            assert_eq!(bucket.take(rate, 0, false), Take::Allowed);
        }
        let Take::Limited(wait) = bucket.take(rate, 0, false) else { panic!("over the burst") };
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(101), "{wait:?}");
        // 100 ms later, one token.
        assert_eq!(bucket.take(rate, 100, false), Take::Allowed);
        assert!(matches!(bucket.take(rate, 100, false), Take::Limited(_)));
        // A long quiet refills it to the burst, no further.
        assert!(bucket.is_full(rate, 10_000));
        bucket.refill(rate, 10_000);
        assert_eq!(bucket.tokens, 5.0);
        // The clock wraps.
        let mut late = Bucket::full(rate, u32::MAX - 50);
        late.tokens = 0.0;
        assert_eq!(late.take(rate, 60, false), Take::Allowed, "110 ms across the wrap is a token");
    }

    #[test]
    fn refusals_owed_turn_into_flooding_at_three_times_the_burst() {
        let rate = Rate { per_second: 10.0, burst: 10.0 };
        let mut bucket = Bucket::full(rate, 0);
        let takes: Vec<Take> = (0..40).map(|_| bucket.take(rate, 0, true)).collect();
        assert!(takes[..10].iter().all(|t| *t == Take::Allowed));
        assert!(takes[10..30].iter().all(|t| matches!(t, Take::Limited(_))), "{takes:?}");
        assert!(takes[30..].iter().all(|t| matches!(t, Take::Flooding(_))), "{takes:?}");
        // Owing makes the wait longer: 21 tokens to come back to one, at 10 a second.
        let Take::Flooding(wait) = bucket.take(rate, 0, true) else { panic!() };
        assert_eq!(retry_after_secs(wait), 3);
        // Without owing, refusals cost nothing.
        let mut plain = Bucket::full(rate, 0);
        for _ in 0..100 {
            plain.take(rate, 0, false);
        }
        assert_eq!(plain.take(rate, 100, false), Take::Allowed);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }

    fn limits(configure: impl FnOnce(&mut Config)) -> ClientLimits {
        let mut config = Config::default();
        configure(&mut config);
        ClientLimits::new(&config)
    }

    #[test]
    fn connections_are_counted_per_client_and_entries_go_when_idle() {
        let limits = limits(|c| c.max_connections_per_ip = 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(limits.admit(a), Admission::Admitted);
        assert_eq!(limits.admit(a), Admission::Admitted);
        assert_eq!(limits.admit(a), Admission::TooManyConnections);
        assert_eq!(limits.admit(b), Admission::Admitted);
        assert_eq!(limits.tracked(), 2);
        limits.release(a);
        assert_eq!(limits.admit(a), Admission::Admitted);
        limits.release(a);
        limits.release(a);
        limits.release(b);
        assert_eq!(limits.tracked(), 0, "no connection and no rate: nothing is kept");
    }

    #[test]
    fn off_limits_admit_everyone_and_keep_nothing() {
        let limits = limits(|_| {});
        for i in 0..1000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            assert_eq!(limits.admit(ip), Admission::Admitted);
            assert_eq!(limits.publish(ip), PublishCheck::Allowed);
        }
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn a_spray_of_addresses_fills_the_table_no_further() {
        let limits = limits(|c| c.new_connections_per_ip_per_second = 0.001);
        let mut refused = 0;
        for i in 0..(MAX_TRACKED_CLIENTS as u32 + 1000) {
            if limits.admit(IpAddr::from((0x0a00_0000 + i).to_be_bytes())) != Admission::Admitted {
                refused += 1;
            }
        }
        assert_eq!(limits.tracked(), MAX_TRACKED_CLIENTS);
        assert_eq!(refused, 1000, "clients beyond the cap are refused, the tracked ones kept");
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let limits = limits(|c| c.trusted_proxies = parse_cidrs("127.0.0.1, 10.0.0.0/8").unwrap());
        let head = |fields: &str| {
            let text = format!("GET / HTTP/1.1\r\nHost: t\r\n{fields}\r\n");
            let mut buf = bytes::BytesMut::from(text.as_bytes());
            holdfast_proto::http1::parse_request(&mut buf, &holdfast_proto::Limits::default()).unwrap().unwrap()
        };
        let trusted: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger: IpAddr = "192.0.2.9".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();

        let xff = head("X-Forwarded-For: 203.0.113.7\r\n");
        assert_eq!(limits.client_ip(trusted, &xff), ip("203.0.113.7"));
        assert_eq!(limits.client_ip(stranger, &xff), stranger, "not from a trusted peer");
        // The right-most untrusted hop: what a client wrote on the left is not believed.
        let chain = head("X-Forwarded-For: 1.1.1.1, 203.0.113.7, 10.1.1.1\r\n");
        assert_eq!(limits.client_ip(trusted, &chain), ip("203.0.113.7"));
        let split = head("X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 203.0.113.8:5555\r\n");
        assert_eq!(limits.client_ip(trusted, &split), ip("203.0.113.8"));
        let all_trusted = head("X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n");
        assert_eq!(limits.client_ip(trusted, &all_trusted), ip("10.0.0.1"));
        let garbage = head("X-Forwarded-For: 203.0.113.7, unknown\r\n");
        assert_eq!(limits.client_ip(trusted, &garbage), trusted);
        assert_eq!(limits.client_ip(trusted, &head("")), trusted);

        let forwarded = head("Forwarded: for=192.0.2.60;proto=http;by=10.0.0.1, For=\"[2001:db8:cafe::17]:4711\"\r\n");
        assert_eq!(limits.client_ip(trusted, &forwarded), ip("2001:db8:cafe::17"));
        let hidden = head("Forwarded: for=_hidden\r\n");
        assert_eq!(limits.client_ip(trusted, &hidden), trusted);
        // X-Forwarded-For wins over Forwarded when a proxy sent both.
        let both = head("Forwarded: for=192.0.2.60\r\nX-Forwarded-For: 203.0.113.7\r\n");
        assert_eq!(limits.client_ip(trusted, &both), ip("203.0.113.7"));
    }
}
