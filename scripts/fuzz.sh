#!/usr/bin/env bash
# Fuzzes everything that parses attacker input, each target for a fixed
# budget (seconds, default 60; FUZZ_SECONDS=600 scripts/fuzz.sh for longer).
# Installs a nightly toolchain and cargo-fuzz when missing. A crash stops
# the run and leaves its input in fuzz/artifacts/<target>/; turn it into a
# case in tests/fuzz_regressions.rs once fixed.
#
#   scripts/fuzz.sh                 all targets
#   scripts/fuzz.sh requests        one target
#
# cargo fuzz's default build is optimised with debug assertions and
# overflow checks on, so an integer overflow is a crash here, not a
# silently wrong value.
set -euo pipefail
cd "$(dirname "$0")/.."

budget="${FUZZ_SECONDS:-60}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cookies redirect id_token broker_config requests)

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "==> installing the nightly toolchain (cargo fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
if ! command -v cc >/dev/null 2>&1 || ! command -v c++ >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential >/dev/null
fi

cd fuzz
cargo +nightly fuzz build
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  seeds=()
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  echo "==> fuzzing $t for ${budget}s"
  log="artifacts/$t.log"
  mkdir -p artifacts
  status=0
  cargo +nightly fuzz run "$t" "corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$budget" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '(DONE|stat::number_of_executed_units|stat::peak_rss_mb|panicked|SUMMARY|Test unit written)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log"
    echo "fuzz target $t failed (exit $status): input in fuzz/artifacts/$t/, log in fuzz/$log"
    exit 1
  fi
done
echo "==> all fuzz targets ran ${budget}s each without a crash"
