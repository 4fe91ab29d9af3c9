// The Holdfast dashboard. Everything live comes from one Server-Sent Events feed,
// GET /admin/events: a `stats` event a second with the counters of /admin/stats, the top
// channels and the recent closes. The page keeps 15 minutes of those snapshots and derives the
// rates, latency percentiles and ratios from the differences between them; nothing is polled.
// The connection list (GET /admin/connections) is loaded on demand: at open, on "Refresh", and
// with "Auto-refresh" at most every 5 s while the feed shows the connection count changing.
//
// User-supplied text (channel names, peers, close reasons) only ever goes in via textContent.

import { LineChart } from './chart.js';
import { ConnectionTable } from './connections.js';
import { fmt } from './format.js';

/** What the charts show. */
const SPAN_MS = 15 * 60 * 1000;
/** What latency percentiles and the reuse ratio are computed over. */
const WINDOW_MS = 10 * 1000;
/** Shortest time between two automatic reloads of the connection list. */
const AUTO_REFRESH_MS = 5000;
/** No event for this long on an open feed: it is stalled (a silent network); reconnect. */
const STALL_MS = 5000;
const RECONNECT_STALLED_MS = 10000;

const TRANSPORTS = [
  ['http', 'HTTP', 'requests, polls, idle keep-alive'],
  ['sse', 'SSE', 'Server-Sent Events'],
  ['websocket', 'WebSocket', 'streaming and ops'],
  ['stream', 'NDJSON', 'chunked stream'],
  ['iframe', 'Iframe', 'forever-iframe'],
  ['longpoll', 'Long polls', 'held now'],
];

const $ = (id) => document.getElementById(id);

/** Snapshots, oldest first: {t, open, published, delivered, requests, reused, delivery}. */
const samples = [];

const charts = {
  connections: new LineChart($('chart-connections'), {
    series: [{ color: '--accent', fill: true }],
    spanMs: SPAN_MS,
    integer: true,
  }),
  messages: new LineChart($('chart-messages'), {
    series: [{ color: '--accent', fill: true }, { color: '--series-2' }],
    spanMs: SPAN_MS,
  }),
};

const table = new ConnectionTable({
  table: $('conn-table'),
  filter: $('conn-filter'),
  prev: $('page-prev'),
  next: $('page-next'),
  pageInfo: $('page-info'),
});

// ---- the feed -------------------------------------------------------------------------------

let source = null;
let feedState = 'connecting';
let lastEvent = 0;

function setFeed(state) {
  feedState = state;
  const pill = $('feed-state');
  const [text, tone] = {
    connecting: ['connecting…', 'warn'],
    live: ['live', 'good'],
    reconnecting: ['reconnecting…', 'warn'],
    stalled: ['no data — reconnecting…', 'warn'],
    offline: ['offline — retrying', 'bad'],
  }[state];
  pill.textContent = text;
  pill.className = `pill ${tone}`;
  pill.dataset.state = state;
}

function connectFeed() {
  if (source) source.close();
  setFeed(samples.length ? 'reconnecting' : 'connecting');
  source = new EventSource('/admin/events');
  source.addEventListener('stats', (event) => {
    lastEvent = Date.now();
    if (feedState !== 'live') setFeed('live');
    try {
      onStats(JSON.parse(event.data));
    } catch (e) {
      console.warn('dashboard: a stats event could not be shown', e);
    }
  });
  source.onopen = () => {
    lastEvent = Date.now();
    setFeed('live');
  };
  source.onerror = () => {
    // CONNECTING: the browser retries by itself (the server's retry: interval). CLOSED: it gave
    // up (an error status); try again ourselves.
    if (source.readyState === EventSource.CLOSED) {
      setFeed('offline');
      setTimeout(connectFeed, 3000);
    } else {
      setFeed('reconnecting');
    }
  };
}

setInterval(() => {
  const quiet = Date.now() - lastEvent;
  if (feedState === 'live' && quiet > STALL_MS) setFeed('stalled');
  if (feedState === 'stalled' && quiet > RECONNECT_STALLED_MS) connectFeed();
}, 1000);

// ---- a snapshot -----------------------------------------------------------------------------

function onStats(stats) {
  const t = stats.at_ms ?? Date.now();
  samples.push({
    t,
    open: stats.connections_open,
    published: stats.messages_published,
    delivered: stats.messages_delivered,
    requests: stats.requests_total,
    reused: stats.requests_reused,
    delivery: deliveryHistogram(stats),
  });
  while (samples.length && samples[0].t < t - SPAN_MS - WINDOW_MS) samples.shift();

  showConnections(stats);
  showHealth(stats);
  showCharts();
  showTop(stats.top_channels);
  showCloses(stats.recent_closes || []);
  latestOpen = stats.connections_open;
  maybeAutoRefresh();
}

/** Connections by transport: the server's own split when it sends one, else derived. */
function byTransport(stats) {
  const given = stats.connections_by_transport;
  if (given && typeof given === 'object' && !Array.isArray(given)) return given;
  const subscribers = stats.subscribers || {};
  const streaming = Object.values(subscribers).reduce((sum, n) => sum + n, 0);
  return { http: Math.max(0, stats.connections_open - streaming), ...subscribers };
}

function showConnections(stats) {
  $('conn-total').textContent = fmt.int(stats.connections_open);
  $('conn-max').textContent = `of ${fmt.int(stats.max_connections)} allowed`;
  document.title = `Holdfast · ${fmt.int(stats.connections_open)} connections`;
  const counts = byTransport(stats);
  const known = TRANSPORTS.map(([key]) => key);
  const extra = Object.keys(counts).filter((key) => !known.includes(key));
  for (const [key, label, sub] of [...TRANSPORTS, ...extra.map((key) => [key, key, ''])]) {
    let card = $(`card-${key}`);
    if (!card) {
      card = document.createElement('div');
      card.className = 'card';
      card.id = `card-${key}`;
      const l = document.createElement('div');
      l.className = 'label';
      l.textContent = label;
      const v = document.createElement('div');
      v.className = 'value';
      v.id = `conn-${key}`;
      const s = document.createElement('div');
      s.className = 'sub';
      s.textContent = sub || '\u00a0';
      card.append(l, v, s);
      $('transport-cards').append(card);
    }
    const n = counts[key] ?? 0;
    const value = $(`conn-${key}`);
    value.textContent = fmt.int(n);
    value.classList.toggle('muted', n === 0);
  }
  const broker = $('broker');
  const up = stats.broker_connected !== false;
  broker.textContent = stats.broker === 'memory' ? 'memory broker' : `${stats.broker} · ${up ? 'connected' : 'unreachable'}`;
  broker.className = `pill ${up ? 'good' : 'bad'}`;
  $('draining').hidden = !stats.draining;
}

/** The delivery latency histogram, if the server reports one. */
function deliveryHistogram(stats) {
  const h = stats.latency_seconds && stats.latency_seconds.delivery;
  return h && Array.isArray(h.bounds) && Array.isArray(h.counts) ? h : null;
}

/** The newest snapshot at least WINDOW_MS older than the last one (else the oldest). */
function windowBase() {
  const last = samples[samples.length - 1];
  for (let i = samples.length - 2; i >= 0; i--) {
    if (samples[i].t <= last.t - WINDOW_MS) return samples[i];
  }
  return samples.length > 1 ? samples[0] : null;
}

/**
 * The q-quantile of the deliveries between two histograms (non-cumulative bucket counts; the
 * last bucket is +Inf), interpolated within its bucket: {value, over} (over: beyond the last
 * bound), or null.
 */
function quantile(bounds, deltas, total, q) {
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < deltas.length; i++) {
    const d = deltas[i];
    if (d <= 0) continue;
    if (seen + d >= rank) {
      const lower = i === 0 ? 0 : bounds[i - 1];
      const upper = bounds[i];
      if (upper == null || !Number.isFinite(upper)) return { value: lower, over: true };
      return { value: lower + (upper - lower) * ((rank - seen) / d), over: false };
    }
    seen += d;
  }
  return null;
}

function showLatency() {
  const last = samples[samples.length - 1];
  const base = windowBase();
  const p50 = $('lat-p50');
  const p99 = $('lat-p99');
  const note = $('lat-count');
  const set = (el, q) => {
    el.textContent = q ? (q.over ? `> ${fmt.latency(q.value)}` : fmt.latency(q.value)) : '—';
    el.classList.toggle('muted', !q);
  };
  if (!last.delivery) {
    set(p50, null);
    set(p99, null);
    note.textContent = 'not reported by this server';
    return;
  }
  const from = base && base.delivery && base.delivery.counts.length === last.delivery.counts.length ? base.delivery.counts : null;
  if (!from) {
    set(p50, null);
    set(p99, null);
    note.textContent = 'measuring…';
    return;
  }
  const deltas = last.delivery.counts.map((n, i) => n - from[i]);
  const total = deltas.reduce((sum, n) => sum + n, 0);
  if (deltas.some((n) => n < 0) || total <= 0) {
    set(p50, null);
    set(p99, null);
    note.textContent = 'nothing delivered';
    return;
  }
  set(p50, quantile(last.delivery.bounds, deltas, total, 0.5));
  set(p99, quantile(last.delivery.bounds, deltas, total, 0.99));
  note.textContent = `${fmt.int(total)} deliveries`;
}

function showHealth(stats) {
  showLatency();
  const last = samples[samples.length - 1];
  const base = windowBase();
  const requests = base ? last.requests - base.requests : 0;
  const reused = base ? last.reused - base.reused : 0;
  const overall = stats.requests_total ? stats.requests_reused / stats.requests_total : null;
  const reuse = $('reuse');
  if (requests > 0 && reused >= 0) {
    reuse.textContent = fmt.percent(reused / requests);
    reuse.classList.remove('muted');
    $('reuse-note').textContent = `${fmt.int(reused)} of ${fmt.int(requests)} requests`;
  } else {
    reuse.textContent = '—';
    reuse.classList.add('muted');
    $('reuse-note').textContent = overall == null ? 'no requests yet' : `none in 10 s · ${fmt.percent(overall)} since start`;
  }
  $('channels').textContent = fmt.int(stats.channels);
  $('history').textContent = `${fmt.bytes(stats.history_bytes)} of history`;
  $('rss').textContent = fmt.bytes(stats.rss_bytes);
  $('parked').textContent = `${fmt.int(stats.connections_parked)} idle parked`;
  $('uptime').textContent = fmt.duration(stats.uptime_seconds);
  $('requests').textContent = `${fmt.int(stats.requests_total)} requests`;
}

function showCharts() {
  const times = samples.map((s) => s.t);
  charts.connections.set(times, [samples.map((s) => s.open)]);
  const rate = (key) =>
    samples.map((s, i) => {
      const p = samples[i - 1];
      if (!p) return null;
      const dt = (s.t - p.t) / 1000;
      const d = s[key] - p[key];
      return dt > 0 && d >= 0 ? d / dt : null;
    });
  const published = rate('published');
  const delivered = rate('delivered');
  charts.messages.set(times, [published, delivered]);
  const last = samples[samples.length - 1];
  $('now-connections').replaceChildren(bold(fmt.int(last.open)), ' now');
  const now = $('now-messages');
  now.replaceChildren(bold(fmt.rate(published[published.length - 1])), ' in · ', bold(fmt.rate(delivered[delivered.length - 1])), ' out');
}

function bold(text) {
  const b = document.createElement('b');
  b.textContent = text;
  return b;
}

// ---- top channels ---------------------------------------------------------------------------

/** Updates a top list in place, row per channel, so a button under the pointer stays put. */
function showTopList(tbody, entries, empty, cells) {
  const rows = new Map([...tbody.querySelectorAll('tr[data-channel]')].map((tr) => [tr.dataset.channel, tr]));
  const wanted = [];
  for (const entry of entries) {
    let tr = rows.get(entry.channel);
    if (!tr) {
      tr = document.createElement('tr');
      tr.dataset.channel = entry.channel;
      const name = document.createElement('td');
      name.className = 'mono channels';
      name.textContent = entry.channel;
      name.title = entry.channel;
      tr.append(name);
      for (let i = 0; i < cells.length; i++) {
        const td = document.createElement('td');
        td.className = `num${i === cells.length - 1 ? ' hide-narrow' : ''}`;
        tr.append(td);
      }
      const action = document.createElement('td');
      action.className = 'num';
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'btn danger';
      button.textContent = 'Disconnect';
      button.dataset.channel = entry.channel;
      button.title = `Close the streaming subscribers of ${entry.channel} on this node`;
      action.append(button);
      tr.append(action);
    }
    cells.forEach((cell, i) => {
      tr.cells[i + 1].textContent = cell(entry);
    });
    wanted.push(tr);
  }
  if (wanted.length === 0) {
    const tr = document.createElement('tr');
    const td = document.createElement('td');
    td.colSpan = cells.length + 2;
    td.className = 'empty';
    td.textContent = empty;
    tr.append(td);
    wanted.push(tr);
  }
  const same = wanted.length === tbody.rows.length && wanted.every((tr, i) => tbody.rows[i] === tr);
  if (!same) tbody.replaceChildren(...wanted);
}

function showTop(top) {
  if (!top) return;
  const subscribers = (e) => fmt.int(e.subscribers);
  const rate = (e) => fmt.rate(e.messages_per_second);
  const published = (e) => fmt.int(e.published);
  showTopList($('top-subscribers').tBodies[0], top.by_subscribers || [], 'No subscribers yet.', [subscribers, rate, published]);
  showTopList($('top-rate').tBodies[0], top.by_rate || [], 'Nothing published lately.', [rate, subscribers, published]);
  if (top.window_seconds) $('rate-window').textContent = `last ${Math.round(top.window_seconds)} s`;
}

function disconnectStatus(text, tone) {
  const line = $('disconnect-result');
  line.textContent = text;
  line.className = `status-line ${tone || ''}`;
}

async function disconnect(channel, button) {
  const question = `Disconnect every streaming subscriber of “${channel}” on this node?\n\nThey reconnect by themselves and resume from their cursors.`;
  if (!window.confirm(question)) return;
  button.disabled = true;
  disconnectStatus(`Disconnecting the subscribers of “${channel}”…`);
  try {
    const response = await fetch(`/admin/disconnect?channel=${encodeURIComponent(channel)}`, { method: 'POST' });
    const body = await response.json().catch(() => ({}));
    if (response.ok) {
      const n = body.disconnecting ?? 0;
      disconnectStatus(`Disconnected ${fmt.int(n)} subscriber${n === 1 ? '' : 's'} of “${channel}”; they reconnect and resume from their cursors.`, 'good');
    } else {
      disconnectStatus(`Could not disconnect “${channel}”: ${body.reason || `HTTP ${response.status}`}`, 'bad');
    }
  } catch (e) {
    disconnectStatus(`Could not disconnect “${channel}”: ${e.message}`, 'bad');
  } finally {
    button.disabled = false;
  }
}

for (const id of ['top-subscribers', 'top-rate']) {
  $(id).addEventListener('click', (event) => {
    const button = event.target.closest('button[data-channel]');
    if (button) disconnect(button.dataset.channel, button);
  });
}

// ---- recent closes --------------------------------------------------------------------------

const CLOSE_TONES = {
  slow_consumer: 'warn', send_timeout: 'warn', flooding: 'bad', heartbeat_timeout: 'warn', protocol_error: 'bad',
  bad_request: 'bad', io_error: 'bad', over_capacity: 'bad', history_lost: 'warn',
  admin_disconnect: 'info', channel_deleted: 'info', shutdown: 'info', token_expired: 'info',
};
let closesKey = '';

function showCloses(closes) {
  const key = closes.length ? `${closes.length}:${closes[0].at_ms}:${closes[0].peer}:${closes[0].reason}` : '';
  if (key === closesKey) return;
  closesKey = key;
  const tbody = $('closes').tBodies[0];
  if (closes.length === 0) {
    const tr = document.createElement('tr');
    const td = document.createElement('td');
    td.colSpan = 4;
    td.className = 'empty';
    td.textContent = 'No connection has closed yet.';
    tr.append(td);
    tbody.replaceChildren(tr);
    return;
  }
  const rows = closes.map((close) => {
    const tr = document.createElement('tr');
    const cell = (text, cls) => {
      const td = document.createElement('td');
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
      return td;
    };
    cell(fmt.time(close.at_ms), 'num');
    cell(close.peer, 'mono');
    cell(close.transport);
    const reason = document.createElement('span');
    reason.className = `tag ${CLOSE_TONES[close.reason] || ''}`;
    reason.textContent = close.reason;
    cell('').append(reason);
    return tr;
  });
  tbody.replaceChildren(...rows);
}

// ---- live connections -----------------------------------------------------------------------

let loading = false;
let lastLoad = 0;
let loadedOpen = null;
let latestOpen = null;
let autoTimer = 0;

async function loadConnections() {
  if (loading) return;
  loading = true;
  $('conn-refresh').disabled = true;
  $('connections-panel').dataset.loading = 'true';
  try {
    const response = await fetch('/admin/connections', { cache: 'no-store' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    table.load(body.connections);
    loadedOpen = latestOpen ?? body.open;
    const busy = body.in_requests_or_recently_idle;
    $('conn-summary').textContent =
      `${fmt.int(body.connections.length)} listed` +
      (busy ? ` · ${fmt.int(busy)} in a request or just idle (not listed)` : '') +
      ` · loaded ${fmt.time(Date.now())}`;
  } catch (e) {
    $('conn-summary').textContent = `could not load the list: ${e.message}`;
  } finally {
    loading = false;
    lastLoad = Date.now();
    $('conn-refresh').disabled = false;
    delete $('connections-panel').dataset.loading;
  }
}

function maybeAutoRefresh() {
  if (!$('conn-auto').checked || loading || autoTimer || latestOpen === loadedOpen) return;
  const wait = Math.max(0, lastLoad + AUTO_REFRESH_MS - Date.now());
  autoTimer = setTimeout(() => {
    autoTimer = 0;
    if ($('conn-auto').checked && latestOpen !== loadedOpen) loadConnections();
  }, wait);
}

$('conn-refresh').addEventListener('click', () => loadConnections());
$('conn-auto').addEventListener('change', () => {
  localStorage.setItem('holdfast.admin.auto', $('conn-auto').checked ? '1' : '0');
  maybeAutoRefresh();
});
$('conn-auto').checked = localStorage.getItem('holdfast.admin.auto') === '1';

loadConnections();
connectFeed();
