// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) as a WebSocket client
// of Holdfast, for crates/holdfast-server/tests/ws_interop.rs.
//
// Usage: node browser_websocket.js PAGE_URL [PAGE_URL ...]
// Opens one page per PAGE_URL (its origin is the page's origin), prints {"type":"ready"}, then
// takes commands on stdin, one JSON object a line:
//   {"page":0,"socket":"a","open":"/sub/room"}   new WebSocket(URL); a path starting with "/" means
//                                                'ws://' (or 'wss://' on an https page) +
//                                                location.host + path (same origin)
//   {"page":0,"socket":"a","send":"text"}        socket.send(text)
// Every WebSocket event goes to stdout as one JSON line:
//   {"page":0,"socket":"a","type":"open","extensions":"…"} (the negotiated extensions, usually "")
//   {...,"type":"message","data":"…"} (text frames)
//   {...,"type":"message","binary":"<hex>"} | {...,"type":"error"}
//   {...,"type":"close","code":1006,"reason":"","wasClean":false}
// It stops (closing the browser) when its stdin closes, or after 60 s as a safety net.

const readline = require('readline');
const { emit, launch } = require('./chromium');

async function main() {
  const urls = process.argv.slice(2);
  if (urls.length === 0) throw new Error('usage: browser_websocket.js PAGE_URL [...]');
  const { context, stop } = await launch();

  const pages = [];
  for (const [index, url] of urls.entries()) {
    const page = await context.newPage();
    await page.exposeFunction('holdfastReport', (record) => emit({ page: index, ...record }));
    const response = await page.goto(url);
    if (!response || !response.ok()) throw new Error(`cannot open ${url}: ${response && response.status()}`);
    await page.evaluate(() => {
      window.holdfastSockets = {};
      window.holdfastOpen = (name, url) => {
        const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
        const target = url.startsWith('/') ? `${scheme}://${location.host}${url}` : url;
        const socket = new WebSocket(target);
        socket.binaryType = 'arraybuffer';
        const report = (record) => holdfastReport({ socket: name, ...record });
        socket.onopen = () => report({ type: 'open', extensions: socket.extensions });
        socket.onmessage = (e) => {
          if (typeof e.data === 'string') return report({ type: 'message', data: e.data });
          const hex = [...new Uint8Array(e.data)].map((b) => b.toString(16).padStart(2, '0')).join('');
          report({ type: 'message', binary: hex });
        };
        socket.onerror = () => report({ type: 'error' });
        socket.onclose = (e) => report({ type: 'close', code: e.code, reason: e.reason, wasClean: e.wasClean });
        window.holdfastSockets[name] = socket;
      };
    });
    pages.push(page);
  }

  // Commands run one after another, in the order they came.
  let queue = Promise.resolve();
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (!line.trim()) return;
    queue = queue.then(async () => {
      const command = JSON.parse(line);
      const page = pages[command.page];
      if (command.open !== undefined) {
        await page.evaluate(([name, url]) => holdfastOpen(name, url), [command.socket, command.open]);
      } else if (command.send !== undefined) {
        await page.evaluate(([name, text]) => holdfastSockets[name].send(text), [command.socket, command.send]);
      } else {
        throw new Error(`unknown command ${line}`);
      }
    }).catch((e) => {
      process.stderr.write(`browser_websocket.js: ${e && e.stack || e}\n`);
      stop(3);
    });
  });
  lines.on('close', () => queue.then(() => stop(0)));
  emit({ type: 'ready' });
}

main().catch((e) => {
  process.stderr.write(`browser_websocket.js: ${e && e.stack || e}\n`);
  process.exit(2);
});
