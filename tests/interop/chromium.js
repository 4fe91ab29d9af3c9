// Shared by the browser interop scripts: launches Debian's /usr/bin/chromium (or
// HOLDFAST_CHROMIUM) through playwright-core with a fresh user-data dir, and stops it cleanly.
// Never downloads a browser.

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const CHROMIUM = process.env.HOLDFAST_CHROMIUM || '/usr/bin/chromium';
// The flags this machine needs: no sandbox as root, and no background networking (the network
// is closed; Chromium's own connections would only fail, many at a time).
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** One JSON line on stdout: the report format the Rust tests read. */
const emit = (record) => process.stdout.write(JSON.stringify(record) + '\n');

/**
 * Launches the browser. Returns { context, stop }: `stop(code)` closes it, removes the profile
 * and exits with `code`. A 60 s safety net stops a script whose test forgot it.
 */
async function launch() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-chromium-'));
  // launchPersistentContext is how playwright passes --user-data-dir (a fresh one per run).
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    // TLS tests serve a certificate from a throw-away CA the browser cannot know; the handshake
    // and the encryption are the same, only the chain is not checked.
    ignoreHTTPSErrors: process.env.HOLDFAST_IGNORE_HTTPS_ERRORS === '1',
  });
  let stopping = false;
  const stop = async (code) => {
    if (stopping) return;
    stopping = true;
    await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
    process.exit(code);
  };
  setTimeout(() => { emit({ type: 'timeout' }); stop(1); }, 60_000).unref();
  return { context, stop };
}

/**
 * Launches the browser for pages that must not share storage (each `browser.newContext()` is
 * a fresh profile: its own localStorage, BroadcastChannel and workers, as separate browsers would
 * have). Returns { browser, stop }, with the same 60 s safety net as `launch`.
 */
async function launchBrowser() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  let stopping = false;
  const stop = async (code) => {
    if (stopping) return;
    stopping = true;
    await browser.close().catch(() => {});
    process.exit(code);
  };
  setTimeout(() => { emit({ type: 'timeout' }); stop(1); }, 60_000).unref();
  return { browser, stop };
}

module.exports = { emit, launch, launchBrowser };
