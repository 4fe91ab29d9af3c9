// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) as an EventSource
// client of Holdfast, for crates/holdfast-server/tests/push_interop.rs.
//
// Usage: node browser_eventsource.js PAGE_URL EVENTSOURCE_URL [PAGE_URL EVENTSOURCE_URL ...]
// For each pair it opens a page at PAGE_URL (its origin is the page's origin) and runs
// `new EventSource(EVENTSOURCE_URL)` there. Every EventSource event goes to stdout as one JSON line:
//   {"page":0,"type":"open"} | {"page":0,"type":"message","data":"…","id":"…"}
//   {"page":0,"type":"error","readyState":0|2}
// After all pages are set up it prints {"type":"ready"}. It stops (closing the browser) when its
// stdin closes, or after 60 s as a safety net.

const { emit, launch } = require('./chromium');

async function main() {
  const pairs = process.argv.slice(2);
  if (pairs.length === 0 || pairs.length % 2 !== 0) {
    throw new Error('usage: browser_eventsource.js PAGE_URL EVENTSOURCE_URL [...]');
  }
  const { context, stop } = await launch();
  process.stdin.on('end', () => stop(0));
  process.stdin.resume();

  for (let i = 0; i < pairs.length; i += 2) {
    const page = await context.newPage();
    const index = i / 2;
    await page.exposeFunction('holdfastReport', (record) => emit({ page: index, ...record }));
    const response = await page.goto(pairs[i]);
    if (!response || !response.ok()) throw new Error(`cannot open ${pairs[i]}: ${response && response.status()}`);
    await page.evaluate((url) => {
      const source = new EventSource(url);
      source.onopen = () => holdfastReport({ type: 'open' });
      source.onmessage = (e) => holdfastReport({ type: 'message', data: e.data, id: e.lastEventId });
      source.onerror = () => holdfastReport({ type: 'error', readyState: source.readyState });
      window.holdfastSource = source;
    }, pairs[i + 1]);
  }
  emit({ type: 'ready' });
}

main().catch((e) => {
  process.stderr.write(`browser_eventsource.js: ${e && e.stack || e}\n`);
  process.exit(2);
});
