// Launching Debian's Chromium (never a downloaded browser) and opening the app as one user.

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '../..');
export const SCREENSHOTS = path.join(HERE, 'screenshots');
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Launch Chromium headless; each launch gets a fresh temporary user-data directory. */
export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install Debian's Chromium (apt-get install -y chromium); the tests never download a browser`);
  }
  // Pages fulfilled from disk have no address, so Chromium's local-network checks would treat
  // them as public and block their socket to 127.0.0.1: off in that development mode only.
  const args = process.env.NATTER_WEB_FROM_DISK ? [...ARGS, '--disable-features=LocalNetworkAccessChecks'] : ARGS;
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.webmanifest': 'application/manifest+json' };

/**
 * With NATTER_WEB_FROM_DISK=1 the app's files come from the work tree instead of the binary, so
 * that a change to web/ or the SDK can be tried without rebuilding the server.
 * @param {import('playwright-core').BrowserContext} context
 * @param {string} url
 */
async function serveFromDisk(context, url) {
  await context.route(`${url}/**`, (route) => {
    const { pathname } = new URL(route.request().url());
    let file;
    if (pathname === '/') file = path.join(ROOT, 'web/index.html');
    else if (pathname.startsWith('/sdk/')) file = path.join(ROOT, 'clients/js/src', pathname.slice(5));
    else if (!pathname.startsWith('/v1/')) file = path.join(ROOT, 'web', pathname.slice(1));
    if (!file || !existsSync(file)) return route.continue();
    return route.fulfill({ body: readFileSync(file), contentType: TYPES[/** @type {keyof TYPES} */ (path.extname(file))] ?? 'application/octet-stream' });
  });
}

/**
 * A browser context (one person) with a page on the app.
 * @param {import('playwright-core').Browser} browser
 * @param {string} url
 * @param {{viewport?: {width: number, height: number}, notifications?: boolean}} [options]
 */
export async function openApp(browser, url, options = {}) {
  const context = await browser.newContext({ viewport: options.viewport ?? { width: 1280, height: 800 }, colorScheme: 'light' });
  if (process.env.NATTER_WEB_FROM_DISK) await serveFromDisk(context, url);
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  /** @type {string[]} */
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/.test(m.text())) errors.push(m.text());
  });
  await page.goto(url);
  return { context, page, errors };
}

/** @param {import('playwright-core').Page} page @param {string} name */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
}

/**
 * Wait until `check()` resolves truthy.
 * @param {() => Promise<any>} check
 * @param {string} what
 * @param {number} [timeoutMs]
 */
export async function until(check, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
