#!/usr/bin/env bash
# The soak: the release broker binary under sustained forward-auth and
# logins for SSO_SOAK_SECONDS (default 600), its config file rewritten
# every 5 s. Fails on any failed request, RSS growth over 10% after
# warm-up, or file descriptor growth. Prints RSS and fds every minute.
set -euo pipefail
cd "$(dirname "$0")/.."
export SSO_SOAK_SECONDS="${SSO_SOAK_SECONDS:-600}"
exec cargo test --locked --release --test load -- --ignored --exact soak --nocapture
