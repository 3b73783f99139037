#!/usr/bin/env bash
# The local main job, no cluster needed: starts the real OpenID provider
# (npm oidc-provider) on http://127.0.0.1:9400, then `sso-operator dev`:
# the controller's validation of examples/local/ (printing the conditions
# `kubectl get idp` would show) and the broker on http://127.0.0.1:4180.
# Open that URL in a browser and log in with any name and password.
# Extra arguments go to `sso-operator dev`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "==> installing Node.js"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
bash scripts/op-deps.sh
cargo build --quiet --locked

OP_PORT="${OP_PORT:-9400}"
if curl -fsS "http://127.0.0.1:${OP_PORT}/.well-known/openid-configuration" >/dev/null 2>&1; then
  echo "==> an OpenID provider already answers on 127.0.0.1:${OP_PORT}; using it"
else
  echo "==> starting the OpenID provider on http://127.0.0.1:${OP_PORT}"
  (cd tests/op && OP_PORT="$OP_PORT" exec node server.mjs 2>/dev/null) &
  op_pid=$!
  trap 'kill "$op_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:${OP_PORT}/.well-known/openid-configuration" >/dev/null 2>&1 && break
    sleep 0.2
  done
fi

echo "==> sso-operator dev -f examples/local/ (Ctrl-C to stop)"
./target/debug/sso-operator dev -f examples/local/ "$@"
