// Drives Debian's Chromium (headless) through a real login: a protected
// page behind nginx auth_request → the broker's login page → the provider's
// login and consent forms → back to the protected page; then logout through
// the provider and a check that the page asks for login again.
//
// Env: BASE (nginx URL), APP_PATH (default /app/), PROVIDER (ns/name),
// and the harness's (LOGIN: the name for the provider's form).
// Prints one JSON line: {"ok":true,...} or {"ok":false,"step":...}.
import { BASE, LOGIN, run } from './harness.mjs';

const APP = process.env.APP_PATH || '/app/';
const PROVIDER = process.env.PROVIDER || 'default/demo';

function pathOf(url) {
  const u = new URL(url);
  return u.pathname;
}

await run('failure.png', async (t) => {
  const { page } = t;
  t.step('protected page redirects to the login page');
  await page.goto(BASE + APP);
  await page.waitForURL((u) => pathOf(u.toString()) === '/oauth/login');
  t.steps.push({ step: t.current, url: page.url() });
  await page.waitForSelector(`a.provider[data-provider="${PROVIDER}"]`);
  const providers = await page.$$eval('a.provider', (as) => as.map((a) => a.dataset.provider));
  await t.shot('login-page.png');

  t.step('choose the provider');
  await page.click(`a.provider[data-provider="${PROVIDER}"]`);
  await page.waitForSelector('input[name=login]');
  t.steps.push({ step: t.current, url: page.url() });

  t.step('provider login form');
  await page.fill('input[name=login]', LOGIN);
  await page.fill('input[name=password]', 'any-password');
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  t.steps.push({ step: t.current, url: page.url() });

  t.step('provider consent (first login only)');
  if (!page.url().startsWith(BASE)) {
    await page.waitForSelector('input[name=prompt][value=consent]', { state: 'attached' });
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    t.steps.push({ step: t.current, url: page.url() });
  }

  t.step('back at the protected page');
  await page.waitForURL((u) => u.toString() === BASE + APP);
  const protectedBody = JSON.parse(await page.locator('body').innerText());
  t.steps.push({ step: t.current, url: page.url() });
  await t.shot('protected-page.png');

  t.step('logout at the broker and the provider');
  await page.goto(BASE + '/oauth/logout');
  // A GET asks first; the button POSTs from the broker's own page.
  await page.waitForSelector('[data-page="confirm-logout"]');
  await Promise.all([page.waitForNavigation(), page.click('button[name=signout]')]);
  await page.waitForSelector('button[name=logout]');
  t.steps.push({ step: t.current, url: page.url() });
  await Promise.all([page.waitForNavigation(), page.click('button[name=logout]')]);
  await page.waitForSelector('[data-page="logged-out"]');
  t.steps.push({ step: 'logged-out page', url: page.url() });

  t.step('protected page asks for login again');
  await page.goto(BASE + APP);
  await page.waitForURL((u) => pathOf(u.toString()) === '/oauth/login');
  const afterLogout = page.url();
  t.steps.push({ step: t.current, url: afterLogout });

  return { providers, protected: protectedBody, afterLogout };
});
