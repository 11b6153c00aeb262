# acmezone developer entry points. `make run` starts the whole system on embedded defaults;
# `make test` installs everything the tests need (Python venv, Debian packages) and runs them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
BUF_VERSION := 1.75.0
BUF := .tools/node/node_modules/.bin/buf
# The last released contract: `buf breaking` compares the protos against it (see protos/README.md).
PROTO_RELEASE := releases/v0.1.0.binpb
NODE_CLIENT := tests/clients/node
PROTO_FILES := $(shell find protos -name '*.proto')
GEN := gen/python
SERVICES := common registry dns issuer clients
SERVICE_DIRS := $(foreach s,$(SERVICES),$(wildcard services/$(s)/pyproject.toml))
# C extensions are compiled by the editable install: a changed source needs a reinstall.
NATIVE_SOURCES := $(wildcard services/*/setup.py services/*/src/*/*.c)
# Debian packages the test suite runs against (real CA, real DNS tools, nginx); bench adds its
# own. libpcsclite1 and libzstd1 are what ../shared/bin/step-ca links against, libsqlite3-0 what
# ../shared/bin/acme-dns does; bind9 and nsd are the secondaries of the zone transfer tests,
# python3-certbot-dns-rfc2136 brings certbot and its plugin; unbound is the validating resolver
# of the DNSSEC tests, and ldnsutils, bind9-utils and dnsviz check the signed zone.
TEST_DEB_PACKAGES := pebble bind9-dnsutils lego nginx libpcsclite1 libzstd1 libsqlite3-0 bind9 nsd \
	python3-certbot-dns-rfc2136 unbound ldnsutils bind9-utils dnsviz
# Debian packages the deployment tests need (tests/deploy): promtool for the alert rules, and
# docker-compose to check docker-compose.yaml offline. Installed without recommends: docker-compose
# would bring a whole container engine.
DEPLOY_DEB_PACKAGES := prometheus docker-compose
BENCH_DEB_PACKAGES := dnsperf nsd knot
# The Pebble `make run` starts: Debian's by default; a current upstream one adds ARI and profiles.
PEBBLE_BIN ?= pebble
APT_GET := $(if $(filter 0,$(shell id -u)),,sudo) apt-get

.PHONY: help install protos run test test-fast lint fmt bench clean system-deps bench-deps
.PHONY: wheelhouse images deploy-deps
# Container images (deploy/README.md, "Images"): `make images` fills the wheelhouse from PyPI, then
# builds each image with no network at all.
WHEELHOUSE := build/wheelhouse
IMAGE_PREFIX ?= acmezone-
IMAGE_TAG ?= dev

help:
	@echo "make install   venv with pinned dependencies and generated gRPC code"
	@echo "make run       start the whole system locally on the default ports"
	@echo "make test      install what the tests need and run the whole suite"
	@echo "make lint      ruff, mypy --strict, buf lint"
	@echo "make protos    regenerate gen/python from protos/"
	@echo "make bench     run the benchmarks under bench/ and print their figures"
	@echo "make images    build the registry, dns and issuer container images (offline build)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Generated code first: the service distributions depend on acmezone-protos.
$(VENV)/.installed: $(VENV)/bin/python constraints.txt $(SERVICE_DIRS) $(NATIVE_SOURCES) \
		$(GEN)/pyproject.toml $(PROTO_FILES)
	$(PIP) install -q -c constraints.txt grpcio-tools mypy-protobuf types-protobuf
	$(MAKE) --no-print-directory protos
	$(PIP) install -q -c constraints.txt -e $(GEN) $(foreach d,$(SERVICE_DIRS),-e $(dir $(d))) \
		pytest pytest-asyncio pytest-timeout dnspython mypy ruff types-grpcio \
		kubernetes-validate PyYAML jsonschema
	touch $@

install: $(VENV)/.installed

protos: $(VENV)/bin/python
	rm -rf $(GEN)/acmezone
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I protos \
		--python_out=$(GEN) --grpc_python_out=$(GEN) \
		--mypy_out=$(GEN) --mypy_grpc_out=$(GEN) $(PROTO_FILES)
	touch $(GEN)/acmezone/py.typed

system-deps:
	@missing=$$(for p in $(TEST_DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq $$missing >/dev/null; \
	fi

system-deps: deploy-deps

deploy-deps:
	@missing=$$(for p in $(DEPLOY_DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq \
			--no-install-recommends $$missing >/dev/null; \
	fi

bench-deps:
	@missing=$$(for p in $(BENCH_DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		$(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq $$missing >/dev/null; \
	fi

$(BUF):
	npm install --silent --prefix .tools/node --no-save --no-package-lock @bufbuild/buf@$(BUF_VERSION)

run: install system-deps
	PEBBLE_BIN="$(PEBBLE_BIN)" $(PY) tools/run_local.py

$(NODE_CLIENT)/node_modules/.installed: $(NODE_CLIENT)/package.json
	cd $(NODE_CLIENT) && npm install --silent
	touch $@

test: install system-deps $(BUF) $(NODE_CLIENT)/node_modules/.installed
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install $(BUF)
	$(VENV)/bin/ruff format --check services tests bench tools deploy docker
	$(VENV)/bin/ruff check services tests bench tools deploy docker
	$(VENV)/bin/mypy $(foreach d,$(SERVICE_DIRS),$(dir $(d))src) tools
	cd protos && ../$(BUF) lint && ../$(BUF) breaking --against $(PROTO_RELEASE)

fmt: install
	$(VENV)/bin/ruff format services tests bench tools deploy docker
	$(VENV)/bin/ruff check --fix services tests bench tools deploy docker

bench: install system-deps bench-deps
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Every wheel the images install, pinned by constraints.txt: the one step of an image build that
# talks to PyPI. The acmezone wheels are dropped: the Dockerfile builds those from the sources.
wheelhouse: $(VENV)/bin/python
	rm -rf $(WHEELHOUSE)
	$(PIP) wheel -q -c constraints.txt --wheel-dir $(WHEELHOUSE) ./$(GEN) \
		$(foreach s,$(SERVICES),./services/$(s)) grpcio-tools setuptools
	rm -f $(WHEELHOUSE)/acmezone_*.whl

images: wheelhouse
	@for s in registry dns issuer; do \
		docker build --network=none --target $$s -t $(IMAGE_PREFIX)$$s:$(IMAGE_TAG) . || exit 1; \
	done

clean:
	rm -rf $(VENV) .tools $(GEN)/acmezone var .mypy_cache .ruff_cache .pytest_cache
