# keras-operator developer entry points. `make demo` and `make test` are the
# README's two commands; both set up what they need from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export KERASOP_CACHE ?= $(HOME)/.cache/kerasop
EXTRAS := operator,runtime,jax,test

.PHONY: demo test test-unit test-component test-docker setup tools crds clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

# Train example (a) locally, serve it on localhost, send a prediction, print it.
demo: setup
	$(VENV)/bin/kerasop demo

# Tools the component tiers need: kube-apiserver (+ the other control-plane
# binaries) built from Go modules, etcd from Debian, static helm/kubectl.
tools:
	bash cluster/build-k8s.sh kube-apiserver kube-controller-manager
	bash cluster/get-tools.sh

# Every tier that this machine can run: unit, component (real kube-apiserver),
# docker (compose trains and serves), e2e when a cluster is up.
test: setup tools
	$(PY) -m pytest -q -ra

test-unit: setup
	$(PY) -m pytest -q -ra -m "not component and not docker and not e2e"

crds: setup
	$(PY) -m kerasop.crdgen

clean:
	rm -rf $(VENV) .kerasop .pytest_cache
