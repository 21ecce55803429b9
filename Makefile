# The one entry point for humans and CI.  `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup demo demo-sim test test-unit test-e2e test-contracts lint crds crds-check \
        contracts contracts-check dev-up dev-down bench clean images debs

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,chain,triton]'
	touch $(STAMP)

contracts/node_modules/.installed: contracts/package.json contracts/package-lock.json
	cd contracts && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian packages: perf_analyzer's libb64; the real node (containerd, runc, CNI plugins, iptables,
# socat relays); registry-free images (buildah, mmdebstrap). One `apt-get update`, only when needed.
DEBS := libb64-0d containerd runc containernetworking-plugins iptables conntrack socat \
        buildah mmdebstrap

debs: ## install the Debian packages the stack and the image builds need (root, once)
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

setup: $(STAMP) contracts/node_modules/.installed debs ## install everything the project needs (idempotent)
	bash e2e/build-control-plane.sh >/dev/null
	bash images/build.sh >/dev/null

images: debs ## build the images in images/ (buildah, no registry) into ~/.cache/cocoon-images
	bash images/build.sh

demo: setup ## the chart on a real node: paid calls served by a real pool pod, the provider paid on chain (root; README)
	$(PY) -m cocoon.cli dev demo $(DEMO_ARGS)

demo-sim: $(STAMP) contracts/node_modules/.installed ## the whole money story (top-up, close, refund) on kwok nodes, stand-in pool processes; no root
	bash e2e/build-control-plane.sh >/dev/null
	$(PY) -m cocoon.cli dev demo-sim $(DEMO_ARGS)

test: setup crds-check contracts-check test-contracts ## everything CI runs: checks, contract tests, unit and e2e tests
	$(PY) -m pytest -q -p no:cacheprovider

test-unit: $(STAMP) ## fast tests only (no control plane)
	$(PY) -m pytest -q tests -m 'not e2e'

test-e2e: setup ## end-to-end tests on the real local control plane
	$(PY) -m pytest -q e2e

test-contracts: contracts/node_modules/.installed ## the channel contract's sandbox tests (real TVM)
	cd contracts && npm test --silent

lint: $(STAMP) ## ruff, mypy --strict, helm lint --strict, hadolint
	$(BIN)/ruff check operator tests e2e bench
	$(BIN)/ruff format --check operator/cocoon/api operator/cocoon/placement operator/cocoon/controllers
	$(BIN)/mypy
	"$$(bash e2e/build-control-plane.sh)/helm" lint --strict charts/cocoon --kube-version 1.34.4
	$(BIN)/hadolint images/Dockerfile images/chain-emulator.Dockerfile images/triton.Dockerfile

CRD_DIRS := -o crds -o charts/cocoon/files/crds

crds: $(STAMP) ## regenerate crds/ (and the Helm chart's copy) from the pydantic models
	$(PY) -m cocoon.cli crds $(CRD_DIRS)

crds-check: $(STAMP) ## fail when crds/ or the chart's copy differs from the models
	$(PY) -m cocoon.cli crds $(CRD_DIRS) --check

contracts: contracts/node_modules/.installed ## compile the Tolk contract and refresh the committed code
	cd contracts && npm run --silent build

contracts-check: contracts/node_modules/.installed ## fail when the committed contract code does not reproduce
	cd contracts && npm run --silent check

dev-up: setup ## start the local control plane; prints a KUBECONFIG
	$(PY) -m cocoon.cli dev up

dev-down: ## stop the local control plane
	$(PY) -m cocoon.cli dev down

bench: setup ## run the benchmarks; results land in bench/results/
	for b in bench/bench_*.py; do $(PY) $$b; done

clean: ## remove the virtualenv and node modules (the control-plane cache stays)
	rm -rf $(VENV) contracts/node_modules
