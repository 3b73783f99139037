// One headless Chromium, two apps behind one nginx, each with its own
// AccessPolicy and provider: sign in to app A through provider A and to app
// B through provider B, stay signed in to both, see both sessions on the
// broker's home page, sign out of B only (at B's provider too), and find A
// still open and B asking for login again.
//
// Env: BASE (nginx URL), APP_A, APP_B (paths), PROVIDER_A, PROVIDER_B
// (ns/name), and the harness's. Prints one JSON line.
import { BASE, run, signIn } from './harness.mjs';

const APP_A = process.env.APP_A;
const APP_B = process.env.APP_B;
const PROVIDER_B = process.env.PROVIDER_B;

await run('two-apps-failure.png', async (t) => {
  const { page } = t;

  async function appSays(app) {
    await page.goto(BASE + app);
    if (page.url() !== BASE + app) return { redirectedTo: page.url() };
    return JSON.parse(await page.locator('body').innerText());
  }

  t.step('app A: straight to provider A (its policy has one provider)');
  await page.goto(BASE + APP_A);
  const a = await signIn(page, APP_A);
  t.steps.push({ step: t.current, provider: a.headers['x-auth-request-provider'] });

  t.step('app B: straight to provider B');
  await page.goto(BASE + APP_B);
  const b = await signIn(page, APP_B);
  t.steps.push({ step: t.current, provider: b.headers['x-auth-request-provider'] });

  t.step('app A again: still signed in');
  const aAgain = await appSays(APP_A);
  t.steps.push({ step: t.current, provider: aAgain.headers && aAgain.headers['x-auth-request-provider'] });

  t.step('home page lists both sessions');
  await page.goto(BASE + '/');
  await page.waitForSelector('[data-page="signed-in"]');
  const sessions = await page.$$eval('[data-session]', (els) => els.map((e) => e.dataset.session));
  await t.shot('two-sessions.png');
  t.steps.push({ step: t.current, sessions });

  t.step('sign out of provider B only');
  await page.click(`[data-session="${PROVIDER_B}"] button[type=submit]`);
  // The provider's own logout confirmation, then the broker's page.
  await page.waitForSelector('button[name=logout], [data-page="logged-out"]');
  if (await page.$('button[name=logout]')) {
    await page.click('button[name=logout]');
  }
  await page.waitForSelector('[data-page="logged-out"]');
  t.steps.push({ step: t.current, url: page.url() });

  t.step('after signing out of B');
  const aAfter = await appSays(APP_A);
  const bAfter = await appSays(APP_B);
  t.steps.push({ step: t.current });

  return {
    a: a.headers, b: b.headers, aAgain: aAgain.headers, sessions,
    aAfter: aAfter.headers || aAfter, bAfter: bAfter.headers || bAfter,
  };
});
