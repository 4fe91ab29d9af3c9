// holdfast.js against a server with authentication on, in headless Chromium, for
// crates/holdfast-server/tests/browser_token.rs: a page subscribes with a token callback whose
// tokens live a few seconds; when one expires under a link (SSE/stream notice token_expired,
// WebSocket close 4003, a held long poll's 401) the client must ask for a new one and resume from
// its cursor without losing or repeating a message.
//
// Usage: node holdfast_js_token.js SERVER_URL SECRET CHANNEL LIFETIME_SECONDS TRANSPORT...
//
// Opens the server's landing page (public) once per TRANSPORT and subscribes there with
// `token: () => window.mintToken()`, share off. Tokens are HS256, minted here with SECRET,
// granting CHANNEL, and expire LIFETIME_SECONDS after they are minted. Reports, one JSON line
// each: {"type":"ready"} once every page subscribed; per page {"page":N,"type":"message","data",
// "cursor"}, {"page":N,"type":"state","state","transport","cause"}, {"page":N,"type":"minted"};
// {"type":"page_error","page":N,"text"} on trouble. Stops when stdin closes.

const crypto = require('crypto');
const readline = require('readline');
const { emit, launch } = require('./chromium');

const [server, secret, channel, lifetime, ...transports] = process.argv.slice(2);

const b64url = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
function mint() {
  const body = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({
    sub: 'page', channels: [channel], exp: Math.floor(Date.now() / 1000) + Number(lifetime),
  })}`;
  return `${body}.${crypto.createHmac('sha256', secret).update(body).digest('base64url')}`;
}

async function main() {
  const { context, stop } = await launch();
  for (const [page, transport] of transports.entries()) {
    const tab = await context.newPage();
    tab.on('pageerror', (e) => emit({ type: 'page_error', page, text: String(e) }));
    await tab.exposeFunction('mintToken', () => {
      emit({ page, type: 'minted' });
      return mint();
    });
    await tab.exposeFunction('report', (record) => emit({ page, ...record }));
    await tab.goto(`${server}/`);
    await tab.evaluate(
      async ({ server, channel, transport }) => {
        const { subscribe } = await import(`${server}/holdfast.js`);
        subscribe(server, channel, {
          transports: [transport], share: false, heartbeat: 5,
          token: () => window.mintToken(),
          onMessage: (m) => window.report({ type: 'message', data: m.data, cursor: m.cursor }),
          onState: (s) => window.report({ type: 'state', state: s.state, transport: s.transport, cause: s.cause ?? null }),
        });
      },
      { server, channel, transport },
    );
  }
  emit({ type: 'ready' });
  readline.createInterface({ input: process.stdin }).on('close', () => stop(0));
}

main().catch((e) => {
  emit({ type: 'script_error', text: String(e && e.stack || e) });
  process.exit(1);
});
