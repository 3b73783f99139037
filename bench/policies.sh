#!/usr/bin/env bash
# Forward-auth at an AccessPolicy's URL with 1 vs 1,000 policies, and the
# broker's memory with 10,000 (examples/bench_policies.rs). Installs wrk,
# builds the broker and the bench in release mode, writes
# bench/results/policies.md. Not part of the test command: it measures.
# Arguments go to bench_policies (--duration, --rounds, --connections).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cargo build --release --locked --bin sso-operator --example bench_policies
exec target/release/examples/bench_policies "$@"
