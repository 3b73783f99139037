// What the browser scripts share: one headless Chromium (Debian's) on a
// fresh profile, the provider's login form, and the one JSON line a
// script prints for the Rust test to read.
//
// Env: BASE (the URL the browser starts at), LOGIN (the name for the
// provider's form), SHOT_DIR, CHROMIUM.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const BASE = process.env.BASE;
export const LOGIN = process.env.LOGIN || 'alice';
const SHOTS = process.env.SHOT_DIR || os.tmpdir();
const TIMEOUT = 15000;

// Runs `flow(t)` in one browser, then prints {ok: true, steps,
// screenshots, ...what flow returned} and exits 0; on a failure prints
// {ok: false, step, error, url, html, steps, screenshots, ...t.extra},
// with a screenshot named `failureShot`, and exits 1.
//
// t.page: the page; t.step(name): the step a failure is reported at;
// t.steps: what the script records; t.shot(name): a screenshot;
// t.extra: more to report on a failure.
export async function run(failureShot, flow) {
  fs.mkdirSync(SHOTS, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sso-chromium-'));
  const t = {
    page: null,
    current: 'launch',
    steps: [],
    screenshots: [],
    extra: {},
    step(name) {
      t.current = name;
    },
    async shot(name) {
      const file = path.join(SHOTS, name);
      await t.page.screenshot({ path: file, fullPage: true });
      t.screenshots.push(file);
    },
  };
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    t.page = context.pages()[0] || (await context.newPage());
    t.page.setDefaultTimeout(TIMEOUT);
    const result = await flow(t);
    console.log(JSON.stringify({ ok: true, steps: t.steps, screenshots: t.screenshots, ...result }));
    await context.close();
    process.exit(0);
  } catch (err) {
    let url = '';
    let html = '';
    try {
      url = t.page ? t.page.url() : '';
      html = t.page ? (await t.page.content()).slice(0, 2000) : '';
      if (t.page) await t.shot(failureShot);
    } catch {}
    console.log(JSON.stringify({
      ok: false, step: t.current, error: String((err && err.message) || err), url, html,
      steps: t.steps, screenshots: t.screenshots, ...t.extra,
    }));
    try { if (context) await context.close(); } catch {}
    process.exit(1);
  }
}

// On a provider's login form (the oidc-provider harness): log in as
// LOGIN, consent if asked (first login only), and wait to be back at
// BASE + `back`; returns that page's JSON (the echo app's).
export async function signIn(page, back) {
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
