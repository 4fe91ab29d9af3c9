// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) as the page of a site
// that tries to make its visitor's browser publish to Holdfast, for
// crates/holdfast-server/tests/origin.rs.
//
// Usage: node browser_csrf.js PAGE_URL SERVER_URL CHANNEL [PAGE_URL SERVER_URL CHANNEL ...]
// For each triple it opens a page at PAGE_URL (its origin is the page's origin) and there, one
// after the other, sends POST SERVER_URL/pub/CHANNEL as
//   1. fetch(…, {method: 'POST', mode: 'no-cors', body: 'no-cors'})   (no preflight)
//   2. a <form method=post enctype=text/plain> submitted into an iframe (no preflight)
//   3. fetch(…, {method: 'POST', body: 'cors'}) in CORS mode (text/plain: no preflight)
//   4. the form again after <meta name=referrer content=no-referrer> (Origin: null)
// Each step reports one JSON line on stdout, {"page":0,"step":"no-cors","status":…} (a CORS
// failure as "error"); after every page is done it prints {"type":"ready"}. It stops when its
// stdin closes, or after 60 s as a safety net.

const { emit, launch } = require('./chromium');

async function main() {
  const args = process.argv.slice(2);
  if (args.length === 0 || args.length % 3 !== 0) {
    throw new Error('usage: browser_csrf.js PAGE_URL SERVER_URL CHANNEL [...]');
  }
  const { context, stop } = await launch();
  process.stdin.on('end', () => stop(0));
  process.stdin.resume();

  for (let i = 0; i < args.length; i += 3) {
    const page = await context.newPage();
    const index = i / 3;
    const response = await page.goto(args[i]);
    if (!response || !response.ok()) throw new Error(`cannot open ${args[i]}: ${response && response.status()}`);
    const steps = await page.evaluate(async ([server, channel]) => {
      const url = `${server}/pub/${channel}`;
      const results = [];
      const attempt = async (step, send) => {
        try {
          results.push({ step, status: await send() });
        } catch (e) {
          results.push({ step, error: String(e) });
        }
      };
      const formPost = (value) => new Promise((resolve, reject) => {
        const name = `target${Math.random().toString(36).slice(2)}`;
        const frame = Object.assign(document.createElement('iframe'), { name });
        document.body.append(frame);
        const form = Object.assign(document.createElement('form'), {
          method: 'post', enctype: 'text/plain', action: url, target: name,
        });
        form.append(Object.assign(document.createElement('input'), { name: 'x', value }));
        document.body.append(form);
        frame.addEventListener('load', () => resolve('loaded'), { once: true });
        setTimeout(() => reject(new Error('the form post never loaded')), 10000);
        form.submit();
      });
      await attempt('no-cors', async () => (await fetch(url, { method: 'POST', mode: 'no-cors', body: 'no-cors' })).status);
      await attempt('form', () => formPost('form'));
      await attempt('cors', async () => (await fetch(url, { method: 'POST', body: 'cors' })).status);
      document.head.append(Object.assign(document.createElement('meta'), { name: 'referrer', content: 'no-referrer' }));
      await attempt('null-form', () => formPost('null-form'));
      return results;
    }, [args[i + 1], args[i + 2]]);
    for (const step of steps) emit({ page: index, ...step });
  }
  emit({ type: 'ready' });
}

main().catch((e) => {
  process.stderr.write(`browser_csrf.js: ${e && e.stack || e}\n`);
  process.exit(2);
});
