// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) running the browser
// client, clients/js/holdfast.js as the server serves it, for
// crates/holdfast-server/tests/browser_client.rs.
//
// Usage: node holdfast_js.js SERVER_URL [PROXY_MODE ...]
//
// Each PROXY_MODE starts an HTTP proxy in front of SERVER_URL, on its own port (so its own
// origin); a mode is a '+'-joined list of:
//   open     forward everything, WebSocket upgrades included (alone: a plain proxy)
//   nows     refuse WebSocket upgrades (403)
//   nosse    refuse event streams (?transport=sse or Accept: text/event-stream) with 403
//   buffer   hold every response back until it has ended, then send it whole (a buffering
//            proxy: a stream that never ends never arrives)
// It prints {"type":"ready","proxies":[URL,…]} and then takes one JSON command per stdin line:
//   {"cmd":"open","url":URL,"channels":…,"options":{…},"server":BASE}  a new page (pages are
//       numbered from 0 in the order opened) at URL that runs subscribe(BASE, channels, options)
//       from import(BASE + '/holdfast.js'); BASE is the page's origin unless given (a page of
//       another origin); reports {"page":N,"type":"opened"}
//   {"cmd":"reload","page":N}        reloads it and subscribes again; {"type":"reloaded"} first
//   {"cmd":"close","page":N}         closes the page (the tab); {"type":"page_closed"}
//   {"cmd":"unsubscribe","page":N}   handle.close(); {"type":"unsubscribed"}
//   {"cmd":"publish","page":N,"channel":…,"data":…,"options":{…}}  publish() from the page:
//       {"type":"published","id":…} or {"type":"publish_error","label","status","message"}
//   {"cmd":"mode","proxy":I,"mode":MODE}  changes a proxy's mode; {"type":"mode"}
//   {"cmd":"cut","proxy":I}          drops every connection the proxy holds from the browser,
//       at once (a middlebox that resets them); {"type":"cut","count"}
//   {"cmd":"stall","proxy":I}        stops forwarding every exchange under way, in both
//       directions, without closing anything (a NAT that forgot the flow, a half-open link);
//       new ones go through. {"type":"stall","count"}
// Every report of a page or answer to a command carries `at`, the time in ms (Date.now()).
// What the client reports, per page:
//   {"page":N,"type":"state","state","transport","attempt","after","cause","heartbeat","leader"}
//   {"page":N,"type":"message","channel","event","data","json","cursor"}
//   {"page":N,"type":"gap","channel","lost","first_available"}
//   {"page":N,"type":"closed","channel","reason","cursor"}
// and each proxy what it saw: {"type":"proxy","proxy":I,"kind":"ws"|"sse"|"poll"|"other",
// "refused":bool}. It stops when stdin closes (or after 60 s, the launcher's safety net).

const http = require('http');
const net = require('net');
const readline = require('readline');
const { emit, launch } = require('./chromium');

/** A proxy in front of `target` (`http://host:port`); `mode` may change while it runs. */
function proxy(index, target, mode) {
  const upstream = new URL(target);
  // sockets: every connection from the browser (for `cut`); flows: how to stop forwarding each
  // exchange under way (for `stall`).
  const state = { mode, sockets: new Set(), flows: new Set() };
  const has = (flag) => state.mode.split('+').includes(flag);
  const agent = new http.Agent({ keepAlive: true });
  const kindOf = (req) => {
    const url = new URL(req.url, 'http://x');
    const transport = url.searchParams.get('transport');
    if (/(^|,)\s*websocket\s*(,|$)/i.test(req.headers.upgrade || '')) return 'ws';
    if (transport === 'sse' || /text\/event-stream/i.test(req.headers.accept || '')) return 'sse';
    if (url.pathname.startsWith('/sub')) return 'poll';
    return 'other';
  };
  const server = http.createServer((req, res) => {
    const kind = kindOf(req);
    const refused = kind === 'sse' && has('nosse');
    emit({ type: 'proxy', proxy: index, kind, refused });
    if (refused) {
      res.writeHead(403, { 'Content-Type': 'text/plain' });
      res.end('event streams are not allowed here');
      return;
    }
    const forward = http.request({
      host: upstream.hostname, port: upstream.port, method: req.method, path: req.url,
      headers: req.headers, agent,
    }, (answer) => {
      const headers = { ...answer.headers };
      for (const hop of ['connection', 'keep-alive', 'transfer-encoding']) delete headers[hop];
      if (has('buffer')) {
        const parts = [];
        answer.on('data', (part) => parts.push(part));
        answer.on('end', () => {
          const body = Buffer.concat(parts);
          res.writeHead(answer.statusCode, { ...headers, 'content-length': body.length });
          res.end(body);
        });
      } else {
        res.writeHead(answer.statusCode, headers);
        res.flushHeaders();
        answer.pipe(res);
        const flow = () => answer.unpipe(res);
        state.flows.add(flow);
        res.on('close', () => state.flows.delete(flow));
      }
    });
    forward.on('error', () => res.destroy());
    res.on('close', () => forward.destroy());
    req.pipe(forward);
  });
  server.on('connection', (socket) => {
    state.sockets.add(socket);
    socket.on('close', () => state.sockets.delete(socket));
  });
  server.on('upgrade', (req, socket, head) => {
    const refused = has('nows');
    emit({ type: 'proxy', proxy: index, kind: 'ws', refused });
    if (refused) {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    const out = net.connect(Number(upstream.port), upstream.hostname, () => {
      let request = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) request += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      out.write(request + '\r\n');
      if (head.length) out.write(head);
      out.pipe(socket);
      socket.pipe(out);
      const flow = () => { out.unpipe(socket); socket.unpipe(out); };
      state.flows.add(flow);
      socket.on('close', () => state.flows.delete(flow));
    });
    const drop = () => { out.destroy(); socket.destroy(); };
    out.on('error', drop);
    socket.on('error', drop);
    out.on('close', drop);
    socket.on('close', drop);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ state, url: `http://127.0.0.1:${server.address().port}` }));
  });
}

/** Subscribes in the page, reporting every callback through `holdfastReport`. `server`: the
 * Holdfast base URL, the page's own origin unless given (then holdfast.js comes from there too). */
async function subscribeIn(page, channels, options, server) {
  await page.evaluate(async ({ channels, options, server }) => {
    const base = server || location.origin;
    const { subscribe } = await import(`${base}/holdfast.js`);
    const report = (type) => (value) => holdfastReport({ type, ...value, leader: window.holdfast?.leader });
    window.holdfast = subscribe(base, channels, {
      ...options,
      onState: report('state'),
      onGap: report('gap'),
      onClosed: report('closed'),
      onMessage: (m) => holdfastReport({
        type: 'message', channel: m.channel, event: m.event, data: m.data, json: m.json, cursor: m.cursor,
      }),
    });
  }, { channels, options, server });
}

async function main() {
  const [target, ...modes] = process.argv.slice(2);
  if (!target) throw new Error('usage: holdfast_js.js SERVER_URL [PROXY_MODE ...]');
  const proxies = [];
  for (const [i, mode] of modes.entries()) proxies.push(await proxy(i, target, mode));
  const { context, stop } = await launch();
  const pages = [];

  const commands = {
    async open({ url, channels, options, server }) {
      const index = pages.length;
      const page = await context.newPage();
      const entry = { page, channels, options, server };
      pages.push(entry);
      page.on('pageerror', (e) => emit({ page: index, type: 'page_error', message: String(e && e.stack || e) }));
      await page.exposeFunction('holdfastReport', (record) => emit({ page: index, at: Date.now(), ...record }));
      const response = await page.goto(url);
      if (!response || !response.ok()) throw new Error(`cannot open ${url}: ${response && response.status()}`);
      await subscribeIn(page, channels, options, server);
      return { page: index, type: 'opened' };
    },
    async reload({ page: index }) {
      const { page, channels, options, server } = pages[index];
      emit({ page: index, type: 'reloaded' });
      await page.reload();
      await subscribeIn(page, channels, options, server);
      return { page: index, type: 'resubscribed' };
    },
    async close({ page: index }) {
      await pages[index].page.close();
      return { page: index, type: 'page_closed' };
    },
    async unsubscribe({ page: index }) {
      await pages[index].page.evaluate(() => window.holdfast.close());
      return { page: index, type: 'unsubscribed' };
    },
    async publish({ page: index, channel, data, options }) {
      const { page, server } = pages[index];
      const answer = await page.evaluate(async ({ channel, data, options, server }) => {
        const base = server || location.origin;
        const { publish } = await import(`${base}/holdfast.js`);
        try {
          return { type: 'published', id: await publish(base, channel, data, options) };
        } catch (e) {
          return { type: 'publish_error', label: e.label, status: e.status, message: e.message };
        }
      }, { channel, data, options: options || {}, server });
      return { page: index, ...answer };
    },
    async cut({ proxy: index }) {
      const { sockets } = proxies[index].state;
      const count = sockets.size;
      for (const socket of sockets) socket.destroy();
      return { type: 'cut', proxy: index, count };
    },
    async stall({ proxy: index }) {
      const { flows } = proxies[index].state;
      const count = flows.size;
      for (const flow of flows) flow();
      flows.clear();
      return { type: 'stall', proxy: index, count };
    },
    async mode({ proxy: index, mode }) {
      proxies[index].state.mode = mode;
      return { type: 'mode', proxy: index, mode };
    },
  };

  // Commands run one at a time, in order.
  let queue = Promise.resolve();
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (!line.trim()) return;
    queue = queue.then(async () => {
      const command = JSON.parse(line);
      emit({ at: Date.now(), ...await commands[command.cmd](command) });
    }).catch((e) => {
      process.stderr.write(`holdfast_js.js: ${e && e.stack || e}\n`);
      emit({ type: 'command_error', message: String(e && e.message || e) });
    });
  });
  lines.on('close', () => queue.then(() => stop(0)));
  emit({ type: 'ready', proxies: proxies.map((p) => p.url) });
}

main().catch((e) => {
  process.stderr.write(`holdfast_js.js: ${e && e.stack || e}\n`);
  process.exit(2);
});
