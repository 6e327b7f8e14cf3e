#!/bin/sh
# Runs inside an image build (images/*/Dockerfile); not meant for the host.
#
#   install.sh deps   third-party requirements into the venv /opt/kerasop
#   install.sh app    the project wheel (no deps) into /build/root, a tree that the
#                     final stage copies onto / (so a code change leaves the big
#                     dependency layer cached)
#
# The venv /opt/kerasop has no pip: pip runs from a throw-away tool venv with
# `pip --python`, so no installer ends up in the image.
#
# Environment (Dockerfile ARGs): EXTRAS (comma-separated), VARIANT (cpu|gpu),
# PIP_SOURCE (wheelhouse: /build/wheels only, no network; index: PyPI, trusting
# /build/proxy-ca.pem), FORBID (distributions that must not be installed),
# PRUNE (declared dependencies never imported at run time, removed after install),
# STRIP (top-level packages whose shared libraries lose their symbol tables:
# `strip --strip-unneeded` keeps the dynamic symbols that loading needs).
set -eu

VENV=/opt/kerasop
TOOL=/opt/pip-tool

pip_() {
    case "${PIP_SOURCE:-wheelhouse}" in
        wheelhouse) set -- --no-index --find-links /build/wheels "$@" ;;
        index)
            # The proxy CA exists only in this build stage: never in the final image.
            [ -s /build/proxy-ca.pem ] && export PIP_CERT=/build/proxy-ca.pem REQUESTS_CA_BUNDLE=/build/proxy-ca.pem
            ;;
        *) echo "install.sh: PIP_SOURCE must be wheelhouse or index" >&2; exit 2 ;;
    esac
    "$TOOL/bin/pip" --python "$VENV/bin/python" --disable-pip-version-check --no-cache-dir \
        --no-input install "$@"
}

slim() {
    site="$VENV/lib/python3.11/site-packages"
    # Test suites and C headers are never imported at run time. Only whole
    # directories named tests/ (not test utilities such as numpy.testing).
    find "$site" -depth -type d \( -name tests -o -name test \) -path '*/site-packages/*/*' \
        -not -path '*/tensorflow/*' -exec rm -rf {} +
    rm -rf "$site"/tensorflow/include "$site"/*/include/third_party 2>/dev/null || true
    for dist in ${PRUNE:-}; do
        "$TOOL/bin/pip" --python "$VENV/bin/python" uninstall -y -q "$dist"
    done
    for pkg in ${STRIP:-}; do
        [ -d "$site/$pkg" ] || continue
        command -v strip >/dev/null || { echo "install.sh: no strip here; $pkg left as is" >&2; continue; }
        before=$(du -sm "$site/$pkg" | cut -f1)
        find "$site/$pkg" -type f -name '*.so*' -exec strip --strip-unneeded {} +
        echo "== stripped $pkg: ${before} MB -> $(du -sm "$site/$pkg" | cut -f1) MB"
    done
}

case "${1:?deps or app}" in
deps)
    python3 -m venv "$TOOL"
    python3 -m venv --without-pip "$VENV"
    python3 /build/requirements.py /build/pyproject.toml \
        --extras "${EXTRAS:?}" --variant "${VARIANT:-cpu}" >/build/requirements.txt
    echo "== requirements (${EXTRAS}, ${VARIANT:-cpu}, from ${PIP_SOURCE:-wheelhouse})"
    cat /build/requirements.txt
    pip_ -r /build/requirements.txt
    slim
    for dist in ${FORBID:-}; do
        if "$TOOL/bin/pip" --python "$VENV/bin/python" show -q "$dist" >/dev/null 2>&1; then
            echo "install.sh: $dist must not be in this image (pulled in by: $("$TOOL/bin/pip" --python "$VENV/bin/python" show "$dist" | sed -n 's/^Required-by: //p'))" >&2
            exit 1
        fi
    done
    "$TOOL/bin/pip" --python "$VENV/bin/python" freeze --all >"$VENV/requirements.lock"
    ;;
app)
    pip_ --no-deps --no-index --root /build/root /build/dist/*.whl
    ;;
*) echo "install.sh: unknown step $1" >&2; exit 2 ;;
esac
