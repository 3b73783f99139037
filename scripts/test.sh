#!/usr/bin/env bash
# Runs every test. Installs what the tests need first (Node.js for the real
# OpenID provider and its npm packages; Chromium, nginx, Caddy and playwright-core
# for the end-to-end browser test; helm and kubernetes-validate for the
# chart tests; dnsmasq for the domain verification tests; etcd +
# kube-apiserver built from their Go modules for the cluster tests), so it
# works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "==> installing Node.js (needed for the real OpenID provider used in tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi

if [ -f tests/op/package.json ]; then
  echo "==> installing the test OpenID provider (npm oidc-provider)"
  bash scripts/op-deps.sh
fi

echo "==> installing the browser test's parts (Chromium, nginx, Caddy, playwright-core)"
bash scripts/browser-deps.sh

if ! command -v dnsmasq >/dev/null 2>&1 && [ ! -x /usr/sbin/dnsmasq ]; then
  echo "==> installing dnsmasq (the real DNS server of the domain verification tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsmasq-base >/dev/null
fi

echo "==> installing helm and kubernetes-validate for the chart tests (into .tools/)"
bash scripts/helm-deps.sh

echo "==> building the test control plane (etcd + kube-apiserver, Go; ~8 min the first time)"
bash scripts/controlplane.sh

echo "==> cargo test"
cargo test --locked --all-targets
