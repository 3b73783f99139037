#!/usr/bin/env bash
# The side-by-side benchmark: installs its parts (Apache 2.4 with Debian's
# mod_auth_openidc, nginx, wrk, matplotlib for the plot, Node.js and the test
# OpenID provider), builds the broker in release mode, then runs
# bench/bench.py, which writes bench/results/latest.{md,json,png}.
# Not part of the test command: it measures, it does not pass or fail.
# Arguments go to bench.py (--duration, --connections, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in apache2 libapache2-mod-auth-openidc wrk python3-matplotlib nginx-light; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
# Node.js may come from elsewhere than Debian's packages (a nodejs build that
# bundles npm conflicts with Debian's npm), so look for the commands.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  need+=(nodejs npm)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian package starts a system Apache on port 80; the benchmark runs
# its own instance and wants the cores to itself.
if command -v apache2ctl >/dev/null && pgrep -x apache2 >/dev/null; then
  apache2ctl stop >/dev/null 2>&1 || true
fi

bash scripts/op-deps.sh
echo "==> cargo build --release"
cargo build --locked --release --bin sso-operator --example bench_client --example bench_ceiling
exec /usr/bin/python3 bench/bench.py "$@"
