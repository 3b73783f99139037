#!/usr/bin/env bash
# Installs the test OpenID provider's npm packages (oidc-provider) from the
# committed lockfile, when they are missing or the lockfile changed.
set -euo pipefail
cd "$(dirname "$0")/../tests/op"
if [ ! -d node_modules/oidc-provider ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
