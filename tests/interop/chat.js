// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) on Holdfast's chat
// demo, for crates/holdfast-server/tests/dashboard.rs. Each page gets a browser context of its
// own (a separate profile), so holdfast.js cannot share one connection between them: every page
// is a subscriber of its own, as on separate machines.
//
// Usage: node chat.js BASE_URL ROOM
// Commands, one JSON object per stdin line, answered in order:
//   {"cmd":"open","page":"alice"}     open /demo/chat?room=ROOM, give the nickname, wait until
//                                     connected → {"type":"opened","page":"alice"}
//   {"cmd":"send","page":"alice","text":"…"} → {"type":"sent","page":"alice","error":"…"|null}
//   {"cmd":"close","page":"alice"}    close its context → {"type":"closed","page":"alice"}
// Whenever a page changes it reports
//   {"type":"page","page":"alice","state":"connected","states":[every state shown so far],
//    "online":N,"messages":["nick|text",…],"elements":N}
// (`elements`: element nodes inside the message texts; user text is never markup, so 0).
// When stdin closes: {"type":"errors","errors":[console and page errors]}, then it exits.

const readline = require('readline');
const { emit, launchBrowser } = require('./chromium');

async function main() {
  const [base, room] = process.argv.slice(2);
  if (!base || !room) throw new Error('usage: chat.js BASE_URL ROOM');
  const { browser, stop } = await launchBrowser();
  const errors = [];
  const pages = new Map();

  async function open(name) {
    const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
    const page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(`${name} console: ${m.text()}`);
    });
    page.on('pageerror', (e) => errors.push(`${name} page: ${e && e.stack || e}`));
    // Every state the pill shows, in order, however short (a MutationObserver sees them all).
    await page.addInitScript(() => {
      window.__states = [];
      document.addEventListener('DOMContentLoaded', () => {
        const pill = document.getElementById('state');
        window.__states.push(pill.dataset.state);
        new MutationObserver(() => window.__states.push(pill.dataset.state)).observe(pill, {
          attributes: true,
          attributeFilter: ['data-state'],
        });
      });
    });
    const response = await page.goto(`${base}/demo/chat?room=${encodeURIComponent(room)}`);
    if (!response || !response.ok()) throw new Error(`cannot open the chat: ${response && response.status()}`);
    await page.waitForSelector('#nick-dialog[open]');
    await page.fill('#nick-input', name);
    await page.press('#nick-input', 'Enter');
    await page.waitForSelector('#state[data-state="connected"]', { timeout: 10000 });
    const entry = { context, page, last: '', open: true };
    pages.set(name, entry);
    watch(name, entry);
  }

  async function watch(name, entry) {
    while (entry.open) {
      const seen = await entry.page
        .evaluate(() => ({
          state: document.getElementById('state').dataset.state,
          states: window.__states.filter((s, i, all) => i === 0 || s !== all[i - 1]),
          online: Number(document.getElementById('online').dataset.count ?? -1),
          messages: [...document.querySelectorAll('#messages li.message')].map(
            (li) => `${li.querySelector('.nick').textContent}|${li.lastChild.textContent}`,
          ),
          elements: document.querySelectorAll('#messages li.message > :not(.nick), #messages li.message .nick *').length,
        }))
        .catch(() => null);
      if (seen) {
        const report = { type: 'page', page: name, ...seen };
        const key = JSON.stringify(report);
        if (key !== entry.last) {
          entry.last = key;
          emit(report);
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  const commands = {
    async open({ page }) {
      await open(page);
      return { type: 'opened', page };
    },
    async send({ page, text }) {
      const { page: p } = pages.get(page);
      await p.fill('#text', text);
      await p.click('#send');
      await p.waitForFunction(
        () => document.getElementById('text').value === '' || document.getElementById('error').textContent !== '',
      );
      const error = await p.textContent('#error');
      return { type: 'sent', page, error: error || null };
    },
    async close({ page }) {
      const entry = pages.get(page);
      entry.open = false;
      await entry.context.close();
      pages.delete(page);
      return { type: 'closed', page };
    },
  };

  emit({ type: 'ready' });
  let queue = Promise.resolve();
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (!line.trim()) return;
    queue = queue
      .then(async () => {
        const command = JSON.parse(line);
        const run = commands[command.cmd];
        if (!run) throw new Error(`unknown command ${line}`);
        emit(await run(command));
      })
      .catch((e) => emit({ type: 'failed', error: String(e && e.stack || e) }));
  });
  lines.on('close', () => {
    queue.then(async () => {
      for (const entry of pages.values()) entry.open = false;
      emit({ type: 'errors', errors });
      await stop(0);
    });
  });
}

main().catch((e) => {
  process.stderr.write(`chat.js: ${e && e.stack || e}\n`);
  process.exit(2);
});
