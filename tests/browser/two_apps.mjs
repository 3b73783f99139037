// One headless Chromium, two apps behind one nginx, each with its own
// AccessPolicy and provider: sign in to app A through provider A and to app
// B through provider B, stay signed in to both, see both sessions on the
// broker's home page, sign out of B only (at B's provider too), and find A
// still open and B asking for login again.
//
// Env: BASE (nginx URL), APP_A, APP_B (paths), PROVIDER_A, PROVIDER_B
// (ns/name), LOGIN, SHOT_DIR, CHROMIUM. Prints one JSON line.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.BASE;
const APP_A = process.env.APP_A;
const APP_B = process.env.APP_B;
const PROVIDER_A = process.env.PROVIDER_A;
const PROVIDER_B = process.env.PROVIDER_B;
const LOGIN = process.env.LOGIN || 'alice';
const SHOTS = process.env.SHOT_DIR || os.tmpdir();
const TIMEOUT = 15000;

fs.mkdirSync(SHOTS, { recursive: true });
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sso-chromium-'));
const steps = [];
let step = 'launch';
let context;
let page;

async function shot(name) {
  await page.screenshot({ path: path.join(SHOTS, name), fullPage: true });
}

// From a page that redirected to a provider's login form: log in, consent
// if asked, and wait to be back at `back`.
async function signIn(back) {
  await page.waitForSelector('input[name=login]');
  await page.fill('input[name=login]', LOGIN);
  await page.fill('input[name=password]', 'any-password');
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  if (!page.url().startsWith(BASE)) {
    await page.waitForSelector('input[name=prompt][value=consent]', { state: 'attached' });
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  }
  await page.waitForURL((u) => u.toString() === BASE + back);
  return JSON.parse(await page.locator('body').innerText());
}

async function appSays(app) {
  await page.goto(BASE + app);
  if (page.url() !== BASE + app) return { redirectedTo: page.url() };
  return JSON.parse(await page.locator('body').innerText());
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

  step = 'app A: straight to provider A (its policy has one provider)';
  await page.goto(BASE + APP_A);
  const a = await signIn(APP_A);
  steps.push({ step, provider: a.headers['x-auth-request-provider'] });

  step = 'app B: straight to provider B';
  await page.goto(BASE + APP_B);
  const b = await signIn(APP_B);
  steps.push({ step, provider: b.headers['x-auth-request-provider'] });

  step = 'app A again: still signed in';
  const aAgain = await appSays(APP_A);
  steps.push({ step, provider: aAgain.headers && aAgain.headers['x-auth-request-provider'] });

  step = 'home page lists both sessions';
  await page.goto(BASE + '/');
  await page.waitForSelector('[data-page="signed-in"]');
  const sessions = await page.$$eval('[data-session]', (els) => els.map((e) => e.dataset.session));
  await shot('two-sessions.png');
  steps.push({ step, sessions });

  step = 'sign out of provider B only';
  await page.click(`[data-session="${PROVIDER_B}"] button[type=submit]`);
  // The provider's own logout confirmation, then the broker's page.
  await page.waitForSelector('button[name=logout], [data-page="logged-out"]');
  if (await page.$('button[name=logout]')) {
    await page.click('button[name=logout]');
  }
  await page.waitForSelector('[data-page="logged-out"]');
  steps.push({ step, url: page.url() });

  step = 'after signing out of B';
  const aAfter = await appSays(APP_A);
  const bAfter = await appSays(APP_B);
  steps.push({ step });

  console.log(JSON.stringify({
    ok: true, steps,
    a: a.headers, b: b.headers, aAgain: aAgain.headers, sessions,
    aAfter: aAfter.headers || aAfter, bAfter: bAfter.headers || bAfter,
  }));
  await context.close();
  process.exit(0);
} catch (err) {
  let url = '';
  let html = '';
  try {
    url = page ? page.url() : '';
    html = page ? (await page.content()).slice(0, 2000) : '';
    if (page) await shot('two-apps-failure.png');
  } catch {}
  console.log(JSON.stringify({ ok: false, step, error: String((err && err.message) || err), url, html, steps }));
  try { if (context) await context.close(); } catch {}
  process.exit(1);
}
