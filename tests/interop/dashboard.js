// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) on Holdfast's
// dashboard, for crates/holdfast-server/tests/dashboard.rs.
//
// Usage: node dashboard.js BASE_URL
// Opens BASE_URL/admin/ at 1280×800 and reports, as one JSON line each:
//   {"type":"ready"}                                   the feed is live and the cards are drawn
//   {"type":"state","feed":"live","open":N,"sse":N,"p50":"…","top":["room",…]}
//                                                      whenever one of those changes on the page
// Commands, one JSON object per stdin line, answered in order:
//   {"cmd":"table","filter":"TEXT"}      click Refresh, type the filter → {"type":"table","rows":[[cells…]…],"info":"…","summary":"…"}
//   {"cmd":"sort","column":"Peer"}       click a column header → {"type":"sorted","sort":"ascending|descending","rows":[…]}
//   {"cmd":"big_table","rows":N}        answer GET /admin/connections with N made-up rows, load,
//                                        sort by Out, go to page 2 → {"type":"big_table","load_ms":…,
//                                        "sort_ms":…,"page_ms":…,"dom_rows":…,"info":"…","sorted":true}
//   {"cmd":"disconnect","channel":"C"}   click C's Disconnect, accept the confirm → {"type":"disconnected","text":"…","dialog":"…"}
//   {"cmd":"errors"}                     → {"type":"errors_so_far","errors":[…]}
//   {"cmd":"screenshot","path":"P","width":W,"height":H,"full":false} → {"type":"screenshot","path":"P"}
// When stdin closes: {"type":"errors","errors":[console errors and page errors]}, then it exits.

const readline = require('readline');
const { emit, launch } = require('./chromium');

const number = (text) => (text == null ? null : Number(String(text).replace(/[^0-9.]/g, '')));

async function main() {
  const base = process.argv[2];
  if (!base) throw new Error('usage: dashboard.js BASE_URL');
  const { context, stop } = await launch();
  const page = await context.newPage();
  await page.setViewportSize({ width: 1280, height: 800 });
  const errors = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`page: ${e && e.stack || e}`));
  let lastDialog = null;
  page.on('dialog', (dialog) => {
    lastDialog = dialog.message();
    dialog.accept();
  });

  const response = await page.goto(`${base}/admin/`);
  if (!response || !response.ok()) throw new Error(`cannot open the dashboard: ${response && response.status()}`);
  await page.waitForSelector('#feed-state[data-state="live"]', { timeout: 10000 });
  await page.waitForSelector('#conn-sse', { timeout: 10000 });

  // Reports what the page shows whenever it changes.
  let last = '';
  let watching = true;
  const watch = async () => {
    while (watching) {
      const state = await page
        .evaluate(() => {
          const text = (id) => document.getElementById(id)?.textContent ?? null;
          return {
            feed: document.getElementById('feed-state').dataset.state,
            open: text('conn-total'),
            sse: text('conn-sse'),
            p50: text('lat-p50'),
            top: [...document.querySelectorAll('#top-subscribers tr[data-channel]')].map((tr) => tr.dataset.channel),
            rate: [...document.querySelectorAll('#top-rate tr[data-channel]')].map((tr) => tr.dataset.channel),
          };
        })
        .catch(() => null);
      if (state) {
        const report = { type: 'state', ...state, open: number(state.open), sse: number(state.sse) };
        const key = JSON.stringify(report);
        if (key !== last) {
          last = key;
          emit(report);
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  watch().catch(() => {});
  emit({ type: 'ready' });

  const rows = () =>
    page.$$eval('#conn-table tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));

  const commands = {
    async table({ filter }) {
      await page.click('#conn-refresh');
      await page.waitForFunction(() => !document.getElementById('connections-panel').dataset.loading);
      await page.fill('#conn-filter', filter || '');
      await page.waitForTimeout(400); // the filter's debounce, then one render
      return {
        type: 'table',
        rows: await rows(),
        info: await page.textContent('#page-info'),
        summary: await page.textContent('#conn-summary'),
      };
    },
    async sort({ column }) {
      await page.click(`#conn-table thead button:text-is("${column}")`);
      const sort = await page.getAttribute(`#conn-table thead th:has(button:text-is("${column}"))`, 'aria-sort');
      return { type: 'sorted', sort, rows: await rows() };
    },
    async big_table({ rows: count }) {
      const connections = Array.from({ length: count }, (_, i) => ({
        id: i + 1,
        peer: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:${40000 + (i % 20000)}`,
        transport: ['sse', 'websocket', 'stream', 'longpoll'][i % 4],
        state: 'streaming',
        channels: [`room-${i % 997}`],
        age_seconds: (i * 7919) % 86400,
        idle_seconds: (i * 104729) % 300,
        requests: 1 + (i % 5),
        bytes_in: (i * 31) % 100000,
        bytes_out: (i * 7331) % 10000000,
        pending_bytes: 0,
        heartbeat_seconds: 25,
      }));
      const body = JSON.stringify({ connections, open: count, in_requests_or_recently_idle: 0 });
      await page.route('**/admin/connections', (route) =>
        route.fulfill({ status: 200, contentType: 'application/json', body }),
      );
      await page.fill('#conn-filter', '');
      await page.waitForTimeout(300);
      const timed = (action) =>
        page.evaluate(async (what) => {
          const started = performance.now();
          if (what === 'load') document.getElementById('conn-refresh').click();
          if (what === 'sort') [...document.querySelectorAll('#conn-table thead button')].find((b) => b.textContent === 'Out').click();
          if (what === 'page') document.getElementById('page-next').click();
          if (what === 'load') {
            while (document.getElementById('connections-panel').dataset.loading) {
              await new Promise((resolve) => setTimeout(resolve, 5));
            }
          }
          return performance.now() - started;
        }, action);
      const loadMs = await timed('load');
      const sortMs = await timed('sort');
      // Page 1 after the sort: the largest bytes_out first, in order.
      const out = new Map(connections.map((c) => [c.peer, c.bytes_out]));
      const shown = (await rows()).map((r) => out.get(r[0]));
      const largest = Math.max(...connections.map((c) => c.bytes_out));
      const sorted = shown[0] === largest && shown.every((v, i) => i === 0 || shown[i - 1] >= v);
      const pageMs = await timed('page');
      const report = {
        type: 'big_table',
        load_ms: loadMs,
        sort_ms: sortMs,
        page_ms: pageMs,
        dom_rows: await page.$$eval('#conn-table tbody tr', (trs) => trs.length),
        info: await page.textContent('#page-info'),
        sorted,
      };
      await page.unroute('**/admin/connections');
      return report;
    },
    async disconnect({ channel }) {
      lastDialog = null;
      const before = await page.textContent('#disconnect-result');
      await page.click(`#top-subscribers tr[data-channel="${channel}"] button`);
      await page.waitForFunction(
        (previous) => {
          const text = document.getElementById('disconnect-result').textContent;
          return text !== previous && !text.endsWith('…');
        },
        before,
        { timeout: 10000 },
      );
      return { type: 'disconnected', text: await page.textContent('#disconnect-result'), dialog: lastDialog };
    },
    async errors() {
      return { type: 'errors_so_far', errors: [...errors] };
    },
    async screenshot({ path, width, height, full }) {
      await page.setViewportSize({ width, height });
      await page.evaluate(() => {
        document.activeElement?.blur();
        window.scrollTo(0, 0);
      });
      await page.waitForTimeout(600); // charts redraw on resize at the next frame
      await page.screenshot({ path, fullPage: Boolean(full) });
      await page.setViewportSize({ width: 1280, height: 800 });
      return { type: 'screenshot', path };
    },
  };

  // One command at a time, in order.
  let queue = Promise.resolve();
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (!line.trim()) return;
    queue = queue.then(async () => {
      const command = JSON.parse(line);
      const run = commands[command.cmd];
      if (!run) throw new Error(`unknown command ${line}`);
      emit(await run(command));
    }).catch((e) => {
      emit({ type: 'failed', error: String(e && e.stack || e) });
    });
  });
  lines.on('close', () => {
    queue.then(async () => {
      watching = false;
      emit({ type: 'errors', errors });
      await stop(0);
    });
  });
}

main().catch((e) => {
  process.stderr.write(`dashboard.js: ${e && e.stack || e}\n`);
  process.exit(2);
});
