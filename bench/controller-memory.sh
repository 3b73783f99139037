#!/usr/bin/env bash
# The controller's resident memory as a process against the test control
# plane (etcd + kube-apiserver from scripts/controlplane.sh) with N
# IdentityProviders, then N AccessPolicies too. Usage:
#   bench/controller-memory.sh [N]      (default 10000; about 5 min)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/controlplane.sh
cargo build --release --locked --bin sso-operator --example bench_controller_process
exec target/release/examples/bench_controller_process "${1:-10000}"
