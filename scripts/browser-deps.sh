#!/usr/bin/env bash
# Installs what the end-to-end browser test needs: Debian's Chromium,
# nginx (with auth_request) and Caddy (forward_auth, for the access policy
# tests), and the npm driver (playwright-core, which
# drives the system Chromium and downloads no browser) from the committed
# lockfile. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -x /usr/bin/caddy ] || missing+=(caddy)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing ${missing[*]} (Debian packages, for the browser test)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The tests run their own nginx with a generated config; they need the
# auth_request module.
if ! /usr/sbin/nginx -V 2>&1 | grep -q http_auth_request_module; then
  echo "nginx lacks the auth_request module" >&2
  exit 1
fi

cd tests/browser
if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
