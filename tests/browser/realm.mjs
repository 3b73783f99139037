// Home-realm discovery in one headless Chromium: an app whose policy
// offers two providers sends the browser to the login page; an address in
// a domain no provider has verified brings the page back saying so; the
// user's work address sends it to the provider that verified its domain,
// and the login ends at the app.
//
// Env: BASE (nginx URL), APP (path), UNKNOWN_EMAIL, EMAIL, and the
// harness's. Prints one JSON line.
import { BASE, run, signIn } from './harness.mjs';

const APP = process.env.APP;

await run('realm-failure.png', async (t) => {
  const { page } = t;
  // Shown when the flow fails (a blocked redirect shows as FAILED).
  const requests = [];
  t.extra.requests = requests;
  page.on('request', (r) => requests.push(r.method() + ' ' + r.url()));
  page.on('requestfailed', (r) => requests.push('FAILED ' + r.url() + ' ' + (r.failure() && r.failure().errorText)));

  // Redirects follow (the broker, then maybe a provider): the caller
  // waits for what it expects to see.
  async function typeEmail(email) {
    await page.waitForSelector('form[data-form=email]');
    await page.fill('input[name=login_hint]', email);
    await page.click('form[data-form=email] button[type=submit]');
  }

  t.step('the app sends the browser to the login page (two providers)');
  await page.goto(BASE + APP);
  await page.waitForSelector('[data-page="login"]');
  t.steps.push({ step: t.current, url: page.url() });

  t.step('an address no provider speaks for');
  await typeEmail(process.env.UNKNOWN_EMAIL);
  await page.waitForSelector('[data-notice="unknown-domain"]');
  const notice = await page.locator('[data-notice="unknown-domain"]').innerText();
  await t.shot('realm-unknown.png');
  t.steps.push({ step: t.current, notice });

  t.step('the work address goes to its provider');
  await typeEmail(process.env.EMAIL);
  await page.waitForURL((u) => !u.toString().startsWith(BASE + '/oauth/login'));
  await page.waitForSelector('input[name=login]');
  const providerUrl = page.url();
  t.steps.push({ step: t.current, providerUrl });

  t.step('log in there and land on the app');
  const app = await signIn(page, APP);
  t.steps.push({ step: t.current });
  return { notice, providerUrl, app: app.headers };
});
