# nodeops.stack - one-command toolchain.
#   make demo   the lab (real podman systemd nodes): site.yml, rolling deploys v1 -> v2, fleet status
#   make test   the whole suite (lint, sanity, unit, integration, molecule)
# Every target installs what it needs; nothing has to be set up by hand.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV := $(ROOT)/.venv
BIN := $(VENV)/bin
CACHE := $(ROOT)/.cache
NODE_BIN := $(CACHE)/node/bin
SAMPLE_APP := $(ROOT)/tests/support/sample_app
# Not in `make test`: lab (a substrate check that site covers).
MOLECULE_SKIP ?= lab
MOLECULE_SCENARIOS ?= $(filter-out $(MOLECULE_SKIP),$(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard $(ROOT)/molecule/*/molecule.yml)))))
PYTEST_ARGS ?=

# PATH before the venv is put first: the venv must be built from a system Python, never from itself.
HOST_PATH := $(PATH)
export CONTAINERS_CONF := $(ROOT)/lab/containers.conf
export ANSIBLE_CONFIG := $(ROOT)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(CACHE)/collections
export PATH := $(BIN):$(NODE_BIN):$(CACHE)/bin:$(PATH)
export PYTHONDONTWRITEBYTECODE := 1

# Debian packages the lab, the tests and the demo use on the controller.
# nftables: the nft CLI only (its service stays disabled), for the tests that check this
# machine's own ruleset is untouched by the hardening role.
SYSTEM_PACKAGES := podman runc debootstrap uidmap slirp4netns git curl tar xz-utils \
	openssl redis-server nginx wrk ca-certificates shellcheck age nftables

.PHONY: help
help:  ## list targets
	@grep -E '^[a-z][a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# ---------------------------------------------------------------- setup
.PHONY: system-deps venv node-tools promtool lab-image collection-link deps
system-deps:  ## Debian packages (apt-get; needs root or sudo)
	@missing="$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done)"; \
	if [[ -n "$$missing" ]]; then \
	  sudo=""; [[ $$(id -u) -eq 0 ]] || sudo=sudo; \
	  echo "installing: $$missing"; \
	  $$sudo apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.installed: requirements/dev.txt requirements/dev-py311.txt scripts/find-python.sh
	@py="$$(PATH='$(HOST_PATH)' $(ROOT)/scripts/find-python.sh)"; \
	req=requirements/dev.txt; \
	"$$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' || req=requirements/dev-py311.txt; \
	echo "venv: $$py ($$req)"; \
	rm -rf $(VENV); "$$py" -m venv $(VENV); \
	$(BIN)/pip install -q --upgrade pip >/dev/null; \
	$(BIN)/pip install -q -r $$req; \
	touch $@

venv: $(VENV)/.installed  ## .venv on the newest Python >= 3.12, pinned requirements

node-tools: system-deps  ## Node.js 24 + PM2 for controller-side tests (.cache/node)
	@$(ROOT)/scripts/install-node-tools.sh

# promtool (alert rule tests) from Debian's prometheus package, unpacked into
# .cache/bin: installing the package would start a Prometheus on this machine.
promtool: system-deps  ## promtool from Debian's prometheus package (.cache/bin)
	@if [[ ! -x $(CACHE)/bin/promtool ]]; then \
	  tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	  (cd "$$tmp" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }; }); \
	  dpkg-deb -x "$$tmp"/prometheus_*.deb "$$tmp/root"; \
	  mkdir -p $(CACHE)/bin; install -m 0755 "$$tmp/root/usr/bin/promtool" $(CACHE)/bin/promtool; \
	fi
	@$(CACHE)/bin/promtool --version 2>&1 | head -1

lab-image: system-deps  ## build the lab node image (cached by recipe hash); raise the host's inotify limit for many systemd nodes
	@$(ROOT)/lab/image/build.sh
	@$(ROOT)/lab/host-limits.sh

collection-link:  ## expose this checkout as nodeops.stack under .cache/collections
	@mkdir -p $(CACHE)/collections/ansible_collections/nodeops
	@ln -sfn ../../../.. $(CACHE)/collections/ansible_collections/nodeops/stack

deps: system-deps venv node-tools promtool lab-image collection-link

# ---------------------------------------------------------------- lab / demo
.PHONY: lab-up lab-down lab-status demo demo-clean
lab-up: system-deps venv lab-image collection-link  ## start the lab nodes (idempotent)
	@$(BIN)/python scripts/lab.py up

lab-down: venv  ## remove the lab nodes (idempotent)
	@$(BIN)/python scripts/lab.py down

lab-status: venv
	@$(BIN)/python scripts/lab.py status

demo: lab-up node-tools  ## the main job on the built-in lab: site.yml, rolling deploys v1 -> v2, status table
	@$(ROOT)/scripts/demo.sh

demo-clean: lab-down  ## tear the demo down

.PHONY: bench
bench: venv node-tools promtool lab-image collection-link  ## every benchmark in turn (scripts/bench.sh; hours on 2 cores), tables in benchmarks/results
	@$(ROOT)/scripts/bench.sh $(BENCHMARKS)

# ---------------------------------------------------------------- tests
.PHONY: test lint yamllint ansible-lint sanity changelog-lint build unit app-test integration molecule
test: ## the whole suite: setup, then the checks (lint, sanity, unit, integration) beside molecule; prints each stage's time
	@$(ROOT)/scripts/test.sh

lint: yamllint ansible-lint changelog-lint  ## yamllint + ansible-lint (production) + changelog lint

yamllint: venv
	$(BIN)/yamllint --strict .

# A private HOME: ansible-lint must see this checkout, never a copy of the
# collection some earlier tool left in ~/.ansible/collections.
ansible-lint: venv collection-link
	@mkdir -p $(CACHE)/lint-home
	HOME=$(CACHE)/lint-home $(BIN)/ansible-lint --profile production

changelog-lint: venv
	$(BIN)/antsibull-changelog lint

build: venv  ## ansible-galaxy collection build into build/
	@mkdir -p build
	$(BIN)/ansible-galaxy collection build --force --output-path build .

sanity: venv  ## ansible-test sanity (offline-capable)
	$(ROOT)/scripts/sanity.sh

# pytest exits 5 when a directory holds no tests yet; that is not a failure.
unit: venv promtool collection-link  ## pytest unit tests (module_utils, modules)
	@mkdir -p tests/unit
	$(BIN)/python -m pytest tests/unit -q $(PYTEST_ARGS) || [[ $$? -eq 5 ]]

app-test: node-tools  ## the sample app's own tests (node --test) on Node 24
	cd $(SAMPLE_APP) && $(NODE_BIN)/node --test --test-concurrency=4 test/*.test.js

integration: venv node-tools promtool collection-link  ## pytest integration tests (real servers on loopback)
	$(BIN)/python -m pytest tests/integration -q $(PYTEST_ARGS) || [[ $$? -eq 5 ]]

# Scenarios overlap (MOLECULE_JOBS at a time): they never share containers or addresses.
molecule: venv lab-image collection-link  ## molecule scenarios (MOLECULE_SCENARIOS=..., MOLECULE_JOBS=3)
	@$(ROOT)/scripts/molecule-parallel.sh $(MOLECULE_SCENARIOS)

.PHONY: clean
clean:  ## remove build output and caches (keeps .venv and the lab image)
	rm -rf build tests/output $(CACHE)/sanity $(CACHE)/stage-times.tsv
