// Home-realm discovery in one headless Chromium: an app whose policy
// offers two providers sends the browser to the login page; an address in
// a domain no provider has verified brings the page back saying so; the
// user's work address sends it to the provider that verified its domain,
// and the login ends at the app.
//
// Env: BASE (nginx URL), APP (path), UNKNOWN_EMAIL, EMAIL, LOGIN,
// SHOT_DIR, CHROMIUM. Prints one JSON line.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.BASE;
const APP = process.env.APP;
const LOGIN = process.env.LOGIN || 'alice';
const SHOTS = process.env.SHOT_DIR || os.tmpdir();
const TIMEOUT = 15000;

fs.mkdirSync(SHOTS, { recursive: true });
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sso-chromium-'));
const steps = [];
let step = 'launch';
let context;
let page;

async function typeEmail(email) {
  await page.waitForSelector('form[data-form=email]');
  await page.fill('input[name=login_hint]', email);
  // Redirects follow (the broker, then maybe a provider): the caller
  // waits for what it expects to see.
  await page.click('form[data-form=email] button[type=submit]');
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  const requests = [];
  page.on('request', (r) => requests.push(r.method() + ' ' + r.url()));
  page.on('requestfailed', (r) => requests.push('FAILED ' + r.url() + ' ' + (r.failure() && r.failure().errorText)));
  // Shown when the flow fails (a blocked redirect shows as FAILED).
  globalThis.requests = requests;

  step = 'the app sends the browser to the login page (two providers)';
  await page.goto(BASE + APP);
  await page.waitForSelector('[data-page="login"]');
  steps.push({ step, url: page.url() });

  step = 'an address no provider speaks for';
  await typeEmail(process.env.UNKNOWN_EMAIL);
  await page.waitForSelector('[data-notice="unknown-domain"]');
  const notice = await page.locator('[data-notice="unknown-domain"]').innerText();
  await page.screenshot({ path: path.join(SHOTS, 'realm-unknown.png'), fullPage: true });
  steps.push({ step, notice });

  step = 'the work address goes to its provider';
  await typeEmail(process.env.EMAIL);
  await page.waitForURL((u) => !u.toString().startsWith(BASE + '/oauth/login'));
  await page.waitForSelector('input[name=login]');
  const providerUrl = page.url();
  steps.push({ step, providerUrl });

  step = 'log in there and land on the app';
  await page.fill('input[name=login]', LOGIN);
  await page.fill('input[name=password]', 'any-password');
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  if (!page.url().startsWith(BASE)) {
    await page.waitForSelector('input[name=prompt][value=consent]', { state: 'attached' });
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  }
  await page.waitForURL((u) => u.toString() === BASE + APP);
  const app = JSON.parse(await page.locator('body').innerText());
  steps.push({ step });

  console.log(JSON.stringify({ ok: true, steps, notice, providerUrl, app: app.headers }));
  await context.close();
  process.exit(0);
} catch (err) {
  let url = '';
  let html = '';
  try {
    url = page ? page.url() : '';
    html = page ? (await page.content()).slice(0, 2000) : '';
    if (page) await page.screenshot({ path: path.join(SHOTS, 'realm-failure.png'), fullPage: true });
  } catch {}
  console.log(JSON.stringify({ ok: false, step, error: String((err && err.message) || err), url, html, requests: globalThis.requests, steps }));
  try { if (context) await context.close(); } catch {}
  process.exit(1);
}
