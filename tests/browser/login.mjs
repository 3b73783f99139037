// Drives Debian's Chromium (headless) through a real login: a protected
// page behind nginx auth_request → the broker's login page → the provider's
// login and consent forms → back to the protected page; then logout through
// the provider and a check that the page asks for login again.
//
// Env: BASE (nginx URL), APP_PATH (default /app/), PROVIDER (ns/name),
// LOGIN (name for the provider's form), SHOT_DIR, CHROMIUM.
// Prints one JSON line: {"ok":true,...} or {"ok":false,"step":...}.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.BASE;
const APP = process.env.APP_PATH || '/app/';
const PROVIDER = process.env.PROVIDER || 'default/demo';
const LOGIN = process.env.LOGIN || 'alice';
const SHOTS = process.env.SHOT_DIR || os.tmpdir();
const TIMEOUT = 15000;

fs.mkdirSync(SHOTS, { recursive: true });
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sso-chromium-'));
const steps = [];
const screenshots = [];
let step = 'launch';
let browser;
let page;

async function shot(name) {
  const file = path.join(SHOTS, name);
  await page.screenshot({ path: file, fullPage: true });
  screenshots.push(file);
}

function pathOf(url) {
  const u = new URL(url);
  return u.pathname;
}

try {
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  browser = context;
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);

  step = 'protected page redirects to the login page';
  await page.goto(BASE + APP);
  await page.waitForURL((u) => pathOf(u.toString()) === '/oauth/login');
  steps.push({ step, url: page.url() });
  await page.waitForSelector(`a.provider[data-provider="${PROVIDER}"]`);
  const providers = await page.$$eval('a.provider', (as) => as.map((a) => a.dataset.provider));
  await shot('login-page.png');

  step = 'choose the provider';
  await page.click(`a.provider[data-provider="${PROVIDER}"]`);
  await page.waitForSelector('input[name=login]');
  steps.push({ step, url: page.url() });

  step = 'provider login form';
  await page.fill('input[name=login]', LOGIN);
  await page.fill('input[name=password]', 'any-password');
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  steps.push({ step, url: page.url() });

  step = 'provider consent (first login only)';
  if (!page.url().startsWith(BASE)) {
    await page.waitForSelector('input[name=prompt][value=consent]', { state: 'attached' });
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    steps.push({ step, url: page.url() });
  }

  step = 'back at the protected page';
  await page.waitForURL((u) => u.toString() === BASE + APP);
  const protectedBody = JSON.parse(await page.locator('body').innerText());
  steps.push({ step, url: page.url() });
  await shot('protected-page.png');

  step = 'logout at the broker and the provider';
  await page.goto(BASE + '/oauth/logout');
  // A GET asks first; the button POSTs from the broker's own page.
  await page.waitForSelector('[data-page="confirm-logout"]');
  await Promise.all([page.waitForNavigation(), page.click('button[name=signout]')]);
  await page.waitForSelector('button[name=logout]');
  steps.push({ step, url: page.url() });
  await Promise.all([page.waitForNavigation(), page.click('button[name=logout]')]);
  await page.waitForSelector('[data-page="logged-out"]');
  steps.push({ step: 'logged-out page', url: page.url() });

  step = 'protected page asks for login again';
  await page.goto(BASE + APP);
  await page.waitForURL((u) => pathOf(u.toString()) === '/oauth/login');
  const afterLogout = page.url();
  steps.push({ step, url: afterLogout });

  console.log(JSON.stringify({ ok: true, steps, providers, protected: protectedBody, afterLogout, screenshots }));
  await context.close();
  process.exit(0);
} catch (err) {
  let html = '';
  let url = '';
  try {
    url = page ? page.url() : '';
    html = page ? (await page.content()).slice(0, 2000) : '';
    if (page) await shot('failure.png');
  } catch {}
  console.log(JSON.stringify({ ok: false, step, error: String(err && err.message || err), url, html, steps, screenshots }));
  try {
    if (browser) await browser.close();
  } catch {}
  process.exit(1);
}
