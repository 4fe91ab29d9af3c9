// holdfast.js: the browser client of Holdfast. Subscribe to channels over WebSocket,
// Server-Sent Events or long polling, falling back from one to the next when a network refuses
// one; resume from the last cursor after every break; share one connection between the tabs of
// a browser. Publish. One ES module, no dependencies, no build step. The API is documented in
// holdfast.d.ts; the wire protocol in the server's docs/protocol.md.

const TRANSPORTS = ['ws', 'sse', 'longpoll'];
// The server's default longpoll_timeout (seconds): how long a long poll may be held before its
// answer has announced the real value.
const LONGPOLL_TIMEOUT = 30;
// Cursors of recent messages remembered by each tab, to drop one that comes twice around a
// change of leader tab (the old leader's last broadcast, the new leader's first read).
const SEEN = 256;
// localStorage key prefix (plus the base URL) of the transport that last worked.
const KEPT = 'holdfast:transport:';

/**
 * Subscribes to `channels` (a name, `a,b`, or a list) on the Holdfast server at `baseUrl`.
 * Returns a handle: `close()`, and the `cursor`, `transport`, `state` and `leader` getters.
 */
export function subscribe(baseUrl, channels, options = {}) {
  const o = { ...options, backoff: { base: 1, cap: 30, ...options.backoff } };
  o.transports ||= TRANSPORTS;
  o.heartbeat ||= 25;
  o.share ??= true;
  const list = typeof channels == 'string' ? channels.split(',') : [...channels];
  const s = new Sub(base(baseUrl), [...new Set(list)].sort(), o);
  // Start once the caller holds the handle: callbacks never run inside subscribe().
  queueMicrotask(() => s.start());
  return {
    get cursor() { return s.cursor; },
    get transport() { return s.transport; },
    get state() { return s.state; },
    get leader() { return s.leader; },
    close: () => s.close(),
  };
}

/**
 * Publishes `data` to `channel`; resolves to the message's id (the cursor right after it).
 * Rejects with an Error carrying the server's `status`, `label` and `reason`.
 */
export async function publish(baseUrl, channel, data, { event, json, token } = {}) {
  // Strings, Blobs and bytes go as they are; anything else as JSON.
  json ??= !(typeof data == 'string' || data instanceof Blob || data instanceof ArrayBuffer || ArrayBuffer.isView(data));
  const q = new URLSearchParams();
  if (event) q.set('event', event);
  token = typeof token == 'function' ? await token() : token;
  if (token) q.set('token', token);
  const query = q.size ? `?${q}` : '';
  const r = await fetch(`${base(baseUrl)}/pub/${encodeURIComponent(channel)}${query}`, {
    method: 'POST',
    headers: json ? { 'Content-Type': 'application/json' } : {},
    body: json ? JSON.stringify(data) : data,
  });
  if (!r.ok) throw await refusal(r);
  return (await r.json()).id;
}

/** `http://host:7700/` → `http://host:7700`; relative URLs resolve against the page. */
const base = (url) => new URL(url || '/', location.href).href.replace(/\/+$/, '');

/** An Error from a refused request; `fatal` when retrying cannot cure it (a 400 from Holdfast:
 * a bad channel name or cursor; a 403: the token does not grant it), not for a proxy's refusal
 * or a 503; `auth` for a 401 (no token, a bad or an expired one: a new token may cure it). */
async function refusal(r) {
  const j = await r.json().catch(() => ({}));
  const why = j.error ? `${j.error}${j.reason ? ': ' + j.reason : ''}` : r.statusText;
  return Object.assign(new Error(`${r.status} ${why}`), {
    status: r.status, label: j.error, reason: j.reason,
    fatal: (r.status == 400 || r.status == 403) && !!j.error, auth: r.status == 401,
  });
}

/** GET with the link's abort signal; a refusal throws. */
async function get(url, signal) {
  const r = await fetch(url, { signal, cache: 'no-store' });
  if (!r.ok) throw await refusal(r);
  return r;
}

/** A gap object as onGap gets it. */
const gap = (g, label) => ({ channel: g.channel || label, lost: g.lost ?? null, first_available: g.first_available });

/** What onMessage gets. `data` and `json` are worked out when read, so a page that uses one
 * never pays for the other; `r` is what travels between tabs. */
function message(r) {
  return {
    channel: r.channel, event: r.event, cursor: r.id,
    get data() { return r.json !== undefined ? JSON.stringify(r.json) : r.data; },
    get json() {
      if (r.json !== undefined) return r.json;
      try { return typeof r.data == 'string' ? JSON.parse(r.data) : undefined; } catch { return undefined; }
    },
  };
}

/** Calls a page's callback; what it throws is reported, not allowed to break the link. */
function call(fn, arg) {
  try { fn?.(arg); } catch (e) { setTimeout(() => { throw e; }); }
}

function kept(base) {
  try { return localStorage.getItem(KEPT + base); } catch { return null; }
}

function keep(base, transport) {
  try {
    if (transport) localStorage.setItem(KEPT + base, transport);
    else localStorage.removeItem(KEPT + base);
  } catch { /* storage refused (private mode, sandbox): nothing is remembered */ }
}

/** One subscription in this tab. Events go through `on` whoever received them: this tab's own
 * link (then they are also broadcast to the other tabs) or the leader tab's broadcast. */
class Sub {
  constructor(base, chans, o) {
    this.base = base;
    this.chans = chans;
    this.label = chans.join(',');
    this.o = o;
    this.cursor = o.cursor || null;
    this.state = 'connecting';
    this.transport = null;
    this.leader = false;
    this.done = false;
    this.seen = new Set();
    this.ac = new AbortController(); // aborts the lock request and a follower's catch-up poll
  }

  start() {
    if (this.done) return;
    if (!this.o.share || typeof BroadcastChannel != 'function' || !navigator.locks) return this.lead();
    // One lock and one broadcast channel per server and channel set: the tab holding the lock
    // (the leader) keeps the only connection; the others wait for the lock and hear the leader.
    const name = `holdfast ${this.base}/sub/${this.label}`;
    this.bc = new BroadcastChannel(name);
    this.bc.onmessage = ({ data }) => (this.q ? this.q.push(data) : this.heard(data));
    navigator.locks.request(name, { ifAvailable: true }, (lock) => (lock ? this.lead() : this.follow(name)));
  }

  /** A tab that found the lock taken: catch up on its own history or cursor, then wait to lead. */
  async follow(name) {
    if (this.done) return;
    this.q = []; // the leader's broadcasts wait until the catch-up is delivered
    this.bc.postMessage({ k: 'h' }); // hello: the leader answers with its state and cursor
    if (this.cursor || this.o.history) {
      try {
        const a = await (await get(this.url('poll'), this.ac.signal)).json();
        this.answer(a, false);
      } catch { /* the live stream goes on without the catch-up */ }
    }
    const q = this.q;
    this.q = null;
    q.forEach((e) => this.heard(e));
    navigator.locks.request(name, { signal: this.ac.signal }, () => this.lead()).catch(() => {});
  }

  /** Something another tab broadcast. */
  heard(e) {
    if (e.k == 'h') {
      if (this.leader) this.bc.postMessage({ k: 'w', s: this.last, c: this.cursor });
    } else if (e.k == 'w') {
      // A welcome answers every follower's hello: only one that has heard nothing yet uses it.
      if (this.leader || this.welcomed) return;
      this.welcomed = true;
      this.cursor ||= e.c; // a catch-up may have gone further already
      if (e.s) this.on({ k: 's', s: e.s });
    } else if (!(this.leader && e.k == 's')) {
      if (e.k == 's') this.welcomed = true;
      this.on(e);
    }
  }

  /** One event: k = m (message), g (gap), x (closed notice), s (state), p (position). `own`:
   * from this tab's link, so broadcast it. Every tab keeps the latest cursor it saw, so a new
   * leader resumes exactly where the old one was. */
  on(e, own) {
    if (this.done) return;
    if (e.k == 'm') {
      if (this.seen.has(e.c)) return;
      this.seen.add(e.c);
      if (this.seen.size > SEEN) this.seen.delete(this.seen.values().next().value);
    }
    if (own) this.bc?.postMessage(e);
    if (e.c) this.cursor = e.c;
    const o = this.o;
    if (e.k == 'm') call(o.onMessage, message(e.r));
    else if (e.k == 'g') call(o.onGap, e.g);
    else if (e.k == 'x') call(o.onClosed, e.x);
    else if (e.k == 's') {
      this.state = e.s.state;
      this.transport = e.s.transport;
      call(o.onState, e.s);
    }
  }

  emit(state, fields) {
    this.last = { state, transport: this.transport, ...fields };
    this.on({ k: 's', s: this.last }, state != 'closed'); // a tab's closing is its own business
  }

  /** Where the subscription starts, from the head of a stream: taken only before any cursor. */
  startAt(c) {
    if (c && !this.cursor) this.on({ k: 'p', c }, true);
  }

  /** An envelope (WebSocket, poll answers), or an SSE event made into one. */
  envelope(v, own = true) {
    const j = v.json, c = v.id || j?.cursor;
    if (v.event == 'holdfast.gap') return this.on({ k: 'g', g: gap(j, this.label), c }, own);
    if (v.event == 'holdfast.closed') {
      if (this.L) this.L.note = j.reason;
      return this.on({ k: 'x', x: { channel: v.channel || this.label, reason: j.reason, cursor: c }, c }, own);
    }
    const r = { channel: v.channel || this.label, event: v.event || 'message', id: v.id };
    if (j !== undefined) r.json = j;
    else if (v.data_b64 != null) r.data = Uint8Array.from(atob(v.data_b64), (ch) => ch.charCodeAt(0));
    else r.data = v.data;
    this.on({ k: 'm', c: v.id, r }, own);
  }

  /** A poll answer `{messages, cursor, gap, deleted}`: gaps come before the messages. */
  answer(a, own = true) {
    for (const g of a.gap || []) this.on({ k: 'g', g: gap(g, this.label) }, own);
    for (const channel of a.deleted || []) this.on({ k: 'x', x: { channel, reason: 'channel_deleted' } }, own);
    for (const m of a.messages) this.envelope(m, own);
    this.on({ k: 'p', c: a.cursor }, own); // where the next poll continues
  }

  /** The /sub URL for transport `t` (`poll` too), resuming from the cursor. */
  url(t, heartbeat) {
    const q = new URLSearchParams();
    if (t != 'ws') q.set('transport', t);
    if (this.cursor) q.set('cursor', this.cursor);
    else if (this.o.history) q.set('history', this.o.history);
    if (heartbeat) q.set('heartbeat', heartbeat);
    // In the query, not an Authorization field: EventSource-style streams and WebSocket cannot
    // set fields, and a cross-origin fetch with one would need a preflight per connection.
    if (this.tok) q.set('token', this.tok);
    const url = `${this.base}/sub/${this.chans.map(encodeURIComponent).join(',')}?${q}`;
    return t == 'ws' ? url.replace(/^http/, 'ws') : url;
  }

  /** The connection loop of the tab that connects (the leader, or every tab without sharing). */
  async lead() {
    this.leader = true;
    const o = this.o, list = o.transports.filter((t) => LINKS[t]), first = kept(this.base);
    if (!list.length) list.push(...TRANSPORTS);
    // What worked last time (on this page or another of this origin) goes first.
    if (list.includes(first)) list.unshift(...list.splice(list.indexOf(first), 1));
    let i = 0, n = 0; // i: the transport in use; n: waits since the last healthy link
    let renew = false; // the last link ended for want of a (valid) token
    while (!this.done) {
      const t = list[i];
      this.transport = t;
      this.emit('connecting', { attempt: n });
      const L = (await this.authorize(renew)) || (await this.link(t));
      if (this.done) break;
      // A static token the server refused cannot get better; a token callback is asked again.
      if (L.auth && typeof o.token != 'function') L.fatal = true;
      if (L.fatal) {
        this.emit('closed', { cause: L.cause });
        break;
      }
      renew = !!L.auth;
      let after = 0;
      if (L.healthy) n = 0;
      else if (kept(this.base) == t && !L.auth) keep(this.base, null); // it failed: forget it
      if (L.auth && L.healthy) {
        // The token expired under a working link: come back at once with a new one.
      } else if (L.auth || L.healthy || i == list.length - 1) {
        // A link that worked broke (come back on it), or every transport failed (the server is
        // down, most likely: start the list again). Full jitter: a random wait in
        // [0, min(cap, base·2^n)], so clients cut together do not come back together.
        if (!L.healthy) i = 0;
        after = Math.random() * Math.min(o.backoff.cap, o.backoff.base * 2 ** n++);
      } else {
        i++; // it never delivered a byte: a proxy in the way, maybe; the next one at once
      }
      this.emit('reconnecting', { attempt: n, after, cause: L.cause });
      await new Promise((wake) => setTimeout((this.wake = wake), after * 1000));
    }
    this.done = true;
    this.bc?.close();
  }

  /** Takes the token for the next link: the `token` option's value, or what its callback gives
   * (called again when `renew`: the server refused or expired the last one). Nothing, or a
   * failed link ({cause, auth}) when the callback failed. */
  async authorize(renew) {
    const tk = this.o.token;
    if (typeof tk != 'function') return void (this.tok = tk);
    if (this.tok && !renew) return;
    try {
      this.tok = await tk();
    } catch (e) {
      return { cause: `the token callback failed: ${e?.message || e}`, auth: true };
    }
  }

  /** Runs one link over transport `t` until it ends; gives {healthy, cause, fatal, auth}. */
  async link(t) {
    const ac = new AbortController();
    const L = (this.L = {
      signal: ac.signal,
      healthy: false,
      // The heartbeat watch: no byte for two intervals and the link is dead (a half-open
      // connection, a NAT that forgot the flow, a proxy that holds a stream back).
      watch: (sec) => {
        clearTimeout(L.timer);
        L.timer = setTimeout(() => L.end(`no byte for ${2 * sec} s (heartbeat ${sec} s): the link is dead`), sec * 2000);
      },
      // A byte came: the link works (the first one makes it "connected").
      alive: (sec) => {
        L.watch(sec);
        if (L.healthy) return;
        L.healthy = true;
        keep(this.base, t);
        this.emit('connected', { heartbeat: sec });
      },
      end: (cause, fatal, auth) => {
        if (!L.cause) Object.assign(L, { cause, fatal, auth });
        ac.abort();
      },
    });
    L.watch(this.o.heartbeat); // also bounds the opening: a link must answer within the watch
    try {
      await LINKS[t](this, L);
    } catch (e) {
      L.end(e.message, e.fatal, e.auth);
    }
    clearTimeout(L.timer);
    if (L.note && !L.fatal) L.cause = `closed by the server: ${L.note}`;
    if (L.note == 'token_expired') L.auth = true;
    return L;
  }

  close() {
    if (this.done) return;
    this.emit('closed', { cause: 'closed by the page' });
    this.done = true;
    this.ac.abort();
    this.L?.end('closed by the page');
    this.wake?.();
    this.bc?.close();
  }
}

/** The transports. Each runs until its link ends, and throws why. */
const LINKS = {
  /** WebSocket, one envelope per text frame. Browsers answer the server's pings without telling
   * the page, so the watch needs frames of its own: a ping op after an interval of quiet. */
  ws: (s, L) => new Promise((_, fail) => {
    const h = s.o.heartbeat, w = new WebSocket(s.url('ws', h));
    const send = (op) => w.readyState == 1 && w.send(JSON.stringify(op));
    let open = false, ping;
    // The next ping is armed from each frame (a network event), not by a repeating timer, which
    // background tabs throttle to once a minute.
    const quiet = () => {
      clearTimeout(ping);
      ping = setTimeout(() => send({ op: 'ping' }), h * 1000);
    };
    L.signal.onabort = () => {
      clearTimeout(ping);
      w.close();
      fail(new Error('aborted'));
    };
    w.onopen = () => {
      open = true;
      // Subscribing to no further channel is answered with the cursor where the subscription
      // stands: the start position (a page cannot read the 101's Holdfast-Cursor), and the
      // link's first byte.
      send({ op: 'subscribe', channels: [] });
      quiet();
    };
    w.onmessage = ({ data }) => {
      L.alive(h);
      quiet();
      const v = JSON.parse(data);
      if (v.op == 'subscribed') s.startAt(v.cursor);
      else if (!v.op) s.envelope(v); // pong and error answers only prove the link alive
    };
    w.onclose = (e) => {
      clearTimeout(ping);
      const why = open ? `WebSocket closed (${e.code}${e.reason ? ' ' + e.reason : ''})` : 'WebSocket refused';
      fail(Object.assign(new Error(why), { auth: e.code == 4003 })); // 4003: token_expired
    };
  }),

  /** Server-Sent Events read with fetch(), not EventSource: EventSource hides the heartbeat
   * comments (the watch needs every byte) and the response's Holdfast-Cursor. */
  async sse(s, L) {
    const r = await get(s.url('sse', s.o.heartbeat), L.signal);
    // The interval in force: what we asked for, clamped by the server.
    const h = +r.headers.get('Holdfast-Heartbeat') || s.o.heartbeat;
    s.startAt(r.headers.get('Holdfast-Cursor'));
    L.watch(h);
    const reader = r.body.getReader(), text = new TextDecoder();
    let rest = '', ev = {};
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error('the event stream ended');
      L.alive(h); // `retry:` first, then events and `:` heartbeats
      const lines = (rest + text.decode(value, { stream: true })).split('\n');
      rest = lines.pop();
      for (let line of lines) {
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (!line) {
          if (ev.data != null) {
            const notice = ev.event?.startsWith('holdfast.');
            s.envelope({
              id: ev.id, event: ev.event,
              [ev.b64 ? 'data_b64' : 'data']: ev.data,
              json: notice ? JSON.parse(ev.data) : undefined,
            });
          }
          ev = {};
          continue;
        }
        const i = line.indexOf(':'), field = i < 0 ? line : line.slice(0, i);
        const value = i < 0 ? '' : line.slice(line[i + 1] == ' ' ? i + 2 : i + 1);
        if (field == 'data') ev.data = ev.data == null ? value : `${ev.data}\n${value}`;
        else if (field == 'id' || field == 'event') ev[field] = value;
        else if (line == ': data is base64') ev.b64 = true; // a payload that is not UTF-8
      }
    }
  },

  /** Long polling: first a short poll (answered at once: the start position, anything missed,
   * proof that the path works), then polls the server holds until there is a message. */
  async longpoll(s, L) {
    let held = 0; // the server's longpoll_timeout, once an answer announced it
    for (let t = 'poll'; ; t = 'longpoll') {
      L.watch(held || (t == 'poll' ? s.o.heartbeat : Math.max(s.o.heartbeat, LONGPOLL_TIMEOUT)));
      const r = await get(s.url(t), L.signal);
      held = +r.headers.get('Holdfast-Heartbeat') || held;
      const a = await r.json();
      L.alive(held || s.o.heartbeat);
      s.answer(a);
    }
  },
};
