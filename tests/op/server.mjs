// A real, certified OpenID provider (npm oidc-provider) for sso-operator's
// tests and local development. Listens on 127.0.0.1 only.
//
// Environment:
//   OP_PORT           port (required)
//   OP_ISSUER_PATH    path the provider is mounted under, e.g. /realms/demo
//   OP_CLIENTS        JSON array of client metadata (default: one confidential
//                     client "demo" / "demo-secret", see defaultClients)
//   OP_JWKS_FILE      private JWKS (JSON) to sign with, instead of fresh keys
//   OP_CONFORM=1      keep profile claims out of the ID token (userinfo only),
//                     as oidc-provider does by default
//
// Prints "OP READY <issuer>" once listening.
import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import Provider from 'oidc-provider';

const port = Number(process.env.OP_PORT);
if (!port) {
  console.error('OP_PORT is required');
  process.exit(2);
}
// No trailing slash; a leading one is added if missing ("realms/demo" works too).
const mount = (process.env.OP_ISSUER_PATH || '').replace(/\/+$/, '').replace(/^(?=[^/])/, '/');
const issuer = `http://127.0.0.1:${port}${mount}`;

const defaultClients = [
  {
    client_id: 'demo',
    client_secret: 'demo-secret',
    redirect_uris: [
      'http://127.0.0.1:4180/oauth/callback/default/demo',
      'http://localhost:4180/oauth/callback/default/demo',
    ],
    post_logout_redirect_uris: ['http://127.0.0.1:4180/oauth/logged-out', 'http://localhost:4180/oauth/logged-out'],
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
  },
];
const clients = process.env.OP_CLIENTS ? JSON.parse(process.env.OP_CLIENTS) : defaultClients;

function freshKeys() {
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return {
    keys: [
      { ...rsa, kid: `rsa-${crypto.randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' },
      { ...ec, kid: `ec-${crypto.randomBytes(4).toString('hex')}`, use: 'sig', alg: 'ES256' },
    ],
  };
}
const jwks = process.env.OP_JWKS_FILE ? JSON.parse(fs.readFileSync(process.env.OP_JWKS_FILE, 'utf8')) : freshKeys();

// Claims derive from the login name typed into the login form.
function claimsFor(login) {
  const claims = {
    sub: login,
    preferred_username: login,
    name: login.charAt(0).toUpperCase() + login.slice(1),
    given_name: login.charAt(0).toUpperCase() + login.slice(1),
    family_name: 'Tester',
    email: `${login}@example.com`,
    groups: ['users'],
  };
  if (login.startsWith('unverified')) claims.email_verified = false;
  else if (!login.startsWith('noemailverified')) claims.email_verified = true;
  if (login.startsWith('admin')) claims.groups.push('admins');
  if (login.startsWith('manygroups')) {
    claims.groups = Array.from({ length: 200 }, (_, i) => `group-${String(i).padStart(3, '0')}`);
  }
  return claims;
}

const provider = new Provider(issuer, {
  clients,
  jwks,
  cookies: { keys: ['sso-operator-test-op-cookie-key'] },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    userinfo: { enabled: true },
    revocation: { enabled: true },
  },
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    groups: ['groups'],
  },
  conformIdTokenClaims: process.env.OP_CONFORM === '1',
  // oidc-provider's default issues a refresh token only when the client may
  // use the refresh_token grant AND offline_access was granted (which it only
  // grants with prompt=consent). Here: whenever the client may use the grant,
  // offline_access or not, so the broker's refresh path can be tested with a
  // plain "openid email profile groups" login. The default "demo" client may.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  findAccount: async (ctx, id) => ({
    accountId: id,
    async claims() {
      return claimsFor(id);
    },
  }),
});
provider.proxy = false; // plain http on 127.0.0.1, no X-Forwarded-* trust
provider.on('server_error', (ctx, err) => console.error('server_error', err));

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (mount) {
    if (req.url !== mount && !req.url.startsWith(`${mount}/`) && !req.url.startsWith(`${mount}?`)) {
      res.writeHead(404).end();
      return;
    }
    // As a router mounting the provider would: keep originalUrl, strip the prefix.
    req.originalUrl = req.url;
    req.url = req.url.slice(mount.length) || '/';
  }
  callback(req, res);
});
server.on('error', (err) => {
  console.error('OP failed to listen:', err.message);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => console.log(`OP READY ${issuer}`));
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections(); // don't wait for keep-alive clients
  });
}
