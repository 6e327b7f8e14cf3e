# keras-operator developer entry points. `make demo` and `make test` are the
# README's two commands; both set up what they need from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export KERASOP_CACHE ?= $(HOME)/.cache/kerasop
# Entry points (kerasop, kerasop-train, ...) of this checkout's venv come first.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
EXTRAS := operator,runtime,test,lint

CLUSTER_DIR ?= /var/tmp/kerasop-cluster
export KERASOP_CLUSTER_DIR := $(CLUSTER_DIR)

.PHONY: $(TOOLS) prebuild-python prebuild-go prebuild-tiers demo test test-no-cluster test-unit test-docker test-lowest lint setup system-deps docker-engine prebuild tools crds protos clean images node-image cluster-up cluster-down e2e

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
# binaries) built from Go modules, etcd from Debian, static helm/kubectl; promtool and
# prometheus (the chart's alert rules and dashboard, docs/monitoring.md) from Go modules;
# SeaweedFS's weed and fake-gcs-server, the S3 and GCS servers of the object-storage tests
# (docs/model-store.md); ghz (the gRPC load generator of bench/serving_peers.py and its smoke
# test) from its Go module.
# One target each, so that `make -j` builds them side by side.
TOOLS := tool-k8s tool-prometheus tool-seaweedfs tool-fake-gcs tool-helm-kubectl tool-ghz
tools: $(TOOLS)
tool-k8s:
	bash cluster/build-k8s.sh kube-apiserver kube-controller-manager
tool-prometheus:
	bash cluster/build-prometheus.sh
tool-seaweedfs:
	bash cluster/build-seaweedfs.sh
tool-fake-gcs:
	bash cluster/build-fake-gcs.sh
tool-helm-kubectl:
	bash cluster/get-tools.sh
tool-ghz:
	bash bench/build_ghz.sh

# The Go builds (the tools and the node image) are made for running, not debugging, and on 2 cores
# their compile CPU is most of a cold `make test`: no DWARF from the compiler (the links' -s -w
# dropped it anyway) and the compiler's GC at 400% (650 MB at most per compile instead of 370;
# GOMEMLIMIT holds the largest packages, such as the generated OpenAPI, to 3 GiB each).
# Measured with a fresh GOCACHE: no DWARF 7% less CPU (`go build std`), then GOGC=400 19% less
# (k8s.io/api/core/v1 and its dependencies). The build scripts add their own flags to GOFLAGS.
$(TOOLS) node-image: export GOGC := 400
$(TOOLS) node-image: export GOMEMLIMIT := 3GiB
$(TOOLS) node-image: export GOFLAGS := $(strip $(GOFLAGS) -gcflags=all=-dwarf=false)

# Debian packages the component, docker and e2e tiers need (etcd, Docker,
# containerd, ...): installed when missing (as root), else the command is printed.
system-deps:
	bash scripts/install-system-deps.sh

# The tiers below the cluster run on two pytest-xdist workers, a test file each at a time
# (--dist loadfile: a file's module fixtures, such as its servers, start once): much of their time
# is waiting on subprocesses: on 2 cores 22 minutes in series, 12.6 on two workers.
PYTEST_PARALLEL := -n 2 --dist loadfile

# Every tier: unit, component (real kube-apiserver + etcd), docker (compose
# trains and serves), then e2e on a three-node kind cluster. Needs root (the
# Docker engine and the cluster's node). Static checks first (they take seconds), and the
# operator's tests once more on the lowest supported dependency versions.
# Only e2e needs the node image, so it is built beside the other tiers at nice 19: on 2 cores its
# Go compiles take the CPU that the other builds and the tests leave idle instead of delaying them
# (measured cold: 68.0 minutes in all against 80.5 when it came first; docs/e2e.md, "Cold and
# warm"). Its log is printed when it is awaited, before e2e (a failed tier waits for it too).
NODE_IMAGE_LOG := $(CLUSTER_DIR)/node-image-build.log
test: system-deps docker-engine
	+@mkdir -p $(CLUSTER_DIR); \
	echo "node image: building at nice 19 beside the other tiers (log: $(NODE_IMAGE_LOG))"; \
	nice -n 19 $(MAKE) $(ENGINE_UP) node-image >$(NODE_IMAGE_LOG) 2>&1 & node_image=$$!; \
	status=0; $(MAKE) $(ENGINE_UP) test-no-cluster || status=$$?; \
	if wait $$node_image; then tail -n 25 $(NODE_IMAGE_LOG); \
	else cat $(NODE_IMAGE_LOG); echo "node image build failed (log above)"; status=1; fi; \
	[ $$status -eq 0 ] && $(MAKE) $(ENGINE_UP) e2e

# The tiers that need no cluster: static checks, unit, component, docker, and the lowest versions.
test-no-cluster: prebuild-tiers
	$(MAKE) lint
	$(PY) -m pytest -q -ra -m "not e2e" $(PYTEST_PARALLEL) --durations=15
	$(MAKE) test-lowest

# Everything the tiers build, in three lanes side by side: kind and its node image (kind, the
# add-ons and Kueue from Go modules, the longest chain), the venv then the project's images then
# the small Go tools, and the component tiers' large Go builds. Lanes rather than one flat `-j3`
# list, so the node image does not wait behind the tools. Every step is cached, so a warm run
# passes through in seconds. The engine is started first (-o: the lanes do not start it again).
# `make test` runs the node image's lane at low priority instead (above).
ENGINE_UP := -o system-deps -o docker-engine
LANE := $(MAKE) -j1 $(ENGINE_UP)
TIER_LANES := prebuild-python prebuild-go
prebuild: docker-engine
	$(MAKE) -j3 $(ENGINE_UP) node-image $(TIER_LANES)
prebuild-tiers: docker-engine
	$(MAKE) -j2 $(ENGINE_UP) $(TIER_LANES)
prebuild-python:
	+$(LANE) setup images tool-ghz tool-fake-gcs tool-helm-kubectl
prebuild-go:
	+$(LANE) tool-k8s tool-prometheus tool-seaweedfs

# The tiers that need no cluster, no Go and no Docker (a few minutes): Python, plus
# helm (fetched and cached by cluster/get-tools.sh on first use) for the chart tests and
# a Lua 5.1 interpreter (Debian: lua5.1) for the Argo CD health-check tests.
test-unit: setup
	$(PY) -m pytest -q -ra -m "not component and not prometheus and not ghz and not docker and not e2e"

# Static checks: ruff, the layer contracts (import-linter), mypy strict on the core and
# the operator (configuration in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# Container images, built with no registry (docs/docker.md), saved as tars
# for loading into the cluster's node (serving: the slim model-server image).
images: setup docker-engine
	bash scripts/images.sh save runtime operator serving

# The Docker engine the image builds, the docker tier and kind run on (started once if not running).
docker-engine: system-deps
	bash scripts/start-dockerd.sh

# kind's binary and the node image its three nodes run (cluster/kind/README.md).
node-image: docker-engine
	bash cluster/kind/build-kind.sh >/dev/null
	bash cluster/kind/node-image.sh >/dev/null

# The e2e tier's kind cluster (3 nodes), and its removal.
cluster-up:
	bash cluster/kind/up.sh
cluster-down:
	bash cluster/kind/down.sh

# The end-to-end suite on kind: one control plane and two workers, node image built here with no
# registry (cluster/kind/README.md), the project's images loaded into the workers.
e2e: setup images node-image
	bash cluster/kind/up.sh
	bash cluster/kind/load-images.sh
	KUBECONFIG=$(CLUSTER_DIR)/kubeconfig $(PY) -m pytest -m e2e tests/e2e -ra --durations=15

# Images built from a local Debian root; docker compose trains and serves.
test-docker: setup docker-engine
	$(PY) -m pytest -q -ra -m docker

crds: setup
	$(PY) -m tools.crdgen

# The model server's OIP gRPC descriptor from its .proto (tools/protogen.py says why a
# descriptor and not generated modules); tests/server checks it is current.
protos: setup
	$(PY) -m tools.protogen

clean:
	rm -rf $(VENV) .kerasop .pytest_cache

# The operator's unit and component tests on the lowest supported kopf, lightkube and
# pydantic (ci/constraints-lowest.txt), in a venv of their own.
LOWEST := .venv-lowest
test-lowest: tools
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip
	$(LOWEST)/bin/python -m pip install --quiet -c ci/constraints-lowest.txt -e ".[operator,test]"
	$(LOWEST)/bin/python -m pip list 2>/dev/null | grep -Ei '^(kopf|lightkube|pydantic) '
	$(LOWEST)/bin/python -m pytest -q -ra -p no:cacheprovider $(PYTEST_PARALLEL) tests/operator tests/component
