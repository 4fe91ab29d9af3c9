// The README's "chat room in five minutes" page in headless Chromium, served from its own origin
// as the README says, for crates/holdfast-server/tests/readme_chat.rs.
//
// Usage: node readme_chat.js PAGE_FILE PAGE_PORT
//
// Serves PAGE_FILE at http://127.0.0.1:PAGE_PORT/chat.html, opens it in two tabs, has each say
// something through the page's own form, then opens a third tab late. Reports (one JSON line
// each): {"type":"tab","tab":N,"status":…,"lines":[…],"markup":N} when a tab shows what was
// awaited (`markup`: elements inside the message list, which must stay 0: text, never HTML), and
// {"type":"done"}; {"type":"page_error"|"console_error","tab":N,"text"} on trouble.

const fs = require('fs');
const http = require('http');
const { emit, launch } = require('./chromium');

const [pageFile, pagePort] = process.argv.slice(2);
const html = fs.readFileSync(pageFile);

async function main() {
  const site = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(html);
  });
  await new Promise((resolve) => site.listen(Number(pagePort), '127.0.0.1', resolve));
  const { context, stop } = await launch();
  const url = `http://127.0.0.1:${pagePort}/chat.html?room=readme`;
  const tabs = [];

  const open = async () => {
    const tab = tabs.length;
    const page = await context.newPage();
    page.on('pageerror', (e) => emit({ type: 'page_error', tab, text: String(e) }));
    page.on('console', (m) => m.type() === 'error' && emit({ type: 'console_error', tab, text: m.text() }));
    await page.goto(url);
    tabs.push(page);
    return page;
  };
  // Waits until the tab's message list holds every line of `lines`, then reports what it shows.
  const shows = async (tab, lines) => {
    const page = tabs[tab];
    await page.waitForFunction(
      (want) => {
        const have = [...document.querySelectorAll('#messages li')].map((li) => li.textContent);
        return want.every((line) => have.includes(line));
      },
      lines,
      { timeout: 15_000 },
    );
    const seen = await page.evaluate(() => ({
      status: document.getElementById('status').textContent,
      lines: [...document.querySelectorAll('#messages li')].map((li) => li.textContent),
      markup: document.querySelectorAll('#messages li *').length,
    }));
    emit({ type: 'tab', tab, ...seen });
  };
  const connected = (page) =>
    page.waitForFunction(() => document.getElementById('status').textContent.startsWith('connected'), null, {
      timeout: 15_000,
    });
  const say = async (page, nick, text) => {
    await page.fill('#nick', nick);
    await page.fill('#text', text);
    await page.click('#send button');
  };

  const alice = await open();
  const bob = await open();
  await Promise.all([connected(alice), connected(bob)]);
  await say(alice, 'alice', 'hello from alice');
  await shows(1, ['alice: hello from alice']);
  await say(bob, 'bob', '<b>bob</b> here');
  await shows(0, ['alice: hello from alice', 'bob: <b>bob</b> here']);
  await open();
  await shows(2, ['alice: hello from alice', 'bob: <b>bob</b> here']);
  await shows(1, ['alice: hello from alice', 'bob: <b>bob</b> here']);
  emit({ type: 'done' });
  site.close();
  await stop(0);
}

main().catch((e) => {
  emit({ type: 'script_error', text: String(e && e.stack || e) });
  process.exit(1);
});
