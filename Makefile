# agentkeys — two commands for a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Debian packages: swtpm for the TPM, libtss2-dev + pkg-config to build
# tpm2-pytss, iproute2 for the network-namespace tests, chromium for the
# passkey-page browser test, postgresql for the broker's shared state store (replica tests),
# nginx as the peer baseline of `make bench`.
APT_PACKAGES := swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config iproute2 curl gcc chromium \
	postgresql nginx python3.11 python3.11-venv

.PHONY: setup system-deps test lint typecheck pytest demo bench fuzz soak contracts clean

setup: system-deps $(BIN)/.installed node_modules/.installed

system-deps:
	@deploy/dev/ensure-apt.sh $(APT_PACKAGES)

$(BIN)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

node_modules/.installed: package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest $(PYTEST_ARGS)

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

demo: setup
	$(BIN)/agentkeys dev demo

bench: setup
	$(BIN)/python -m bench

# Longer fuzzing than make test's bounded run: each atheris harness for FUZZ_SECONDS,
# then the hypothesis "fuzz" profile (many more examples; tens of minutes).
FUZZ_SECONDS ?= 60
fuzz: setup
	$(BIN)/python -m tests.fuzz --seconds $(FUZZ_SECONDS)
	$(BIN)/pytest tests/fuzz --hypothesis-profile=fuzz -q

# The daemon under 64 concurrent clients for SOAK_MINUTES, loopback only (JSON summary;
# exit 1 on any failed request, memory growth or descriptor leak).
SOAK_MINUTES ?= 10
soak: setup
	$(BIN)/python -m tests.soak --minutes $(SOAK_MINUTES) --clients 64

contracts: setup
	$(BIN)/python contracts/build.py

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
