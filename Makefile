# Courier: the two set-up commands are `make demo` and `make test`.
# Every target installs what it needs itself, idempotently (a second run costs seconds).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

export PATH := $(HOME)/.cargo/bin:$(CURDIR)/.tools/node_modules/.bin:$(PATH)
export CARGO_TERM_COLOR ?= never

WASM_BINDGEN_VERSION := 0.2.130
WASM_PACK_VERSION := 0.15.1
BINARYEN_VERSION := 132.0.0
STAMP := .tools/stamps

.PHONY: help test demo bench lint test-rust check-wasm tools-rust tools-redis tools-postgres test-sdk-redis test-sdk-cluster sdk-suites test-postgres

help:
	@echo "make demo   - build, start the reference server, show Python -> TypeScript events"
	@echo "make test   - install what is needed, then run every check and test"
	@echo "make bench  - run the benchmarks and write docs/benchmarks.md"

## --- tools (idempotent) ---------------------------------------------------------------

$(STAMP):
	mkdir -p $(STAMP)

tools-rust: | $(STAMP)
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@rustup target list --installed | grep -q '^wasm32-unknown-unknown$$' || rustup target add wasm32-unknown-unknown

# A real redis-server for the multi-instance tests and benchmarks, and redis-cli to form the
# tests' Redis Cluster (Debian's package, Redis 7: sharded pub/sub, `cluster-port`; it
# brings redis-tools, which holds redis-cli).
tools-redis:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server; }

# A real PostgreSQL for the PostgreSQL history store's tests (Debian's package; the tests
# start their own throwaway cluster with tests/with-postgres.sh, never the system's).
tools-postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; }

## --- test -------------------------------------------------------------------------------

# Each package adds its own checks to TEST_TARGETS from its own fragment.
TEST_TARGETS := lint test-rust check-wasm
-include python/python.mk
-include npm/npm.mk
-include console/console.mk
-include tests/e2e/e2e.mk

# The SDK suites once more, against a Redis-backed server (each server its own namespace),
# and against a server on a three-master Redis Cluster.
TEST_TARGETS += test-sdk-redis test-sdk-cluster

# The PostgreSQL history store (one throwaway cluster): its own tests, the whole API suite
# with every server's history in PostgreSQL, and two instances on Redis fan-out with it.
TEST_TARGETS += test-postgres

test: tools-rust
	@$(MAKE) --no-print-directory $(TEST_TARGETS)
	@echo "make test: all checks passed"

lint: tools-rust
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

test-rust: tools-rust tools-redis
	cargo test --workspace --locked

# The core must build for browsers too.
check-wasm: tools-rust
	cargo build -p courier-core --target wasm32-unknown-unknown --locked

test-sdk-redis: tools-redis python-dev npm-build
	cargo build -p courier-server --locked
	tests/with-redis.sh $(MAKE) --no-print-directory sdk-suites

test-sdk-cluster: tools-redis python-dev npm-build
	cargo build -p courier-server --locked
	tests/with-redis-cluster.sh $(MAKE) --no-print-directory sdk-suites

test-postgres: tools-postgres tools-redis
	tests/with-postgres.sh bash -c 'cargo test -p courier-server --locked --test postgres && \
	  COURIER_TEST_HISTORY=postgres cargo test -p courier-server --locked --test api && \
	  cargo test -p courier-server --locked --test redis postgres'

sdk-suites:
	cargo test -p courier-client --test client --locked
	cd python && SKIP_COURIER_SERVER_BUILD=1 ../.venv/bin/python -m pytest -q -p no:cacheprovider tests
	cd npm && node --test --test-concurrency=1 --test-timeout=180000 test/client.test.mjs

## --- demo -------------------------------------------------------------------------------

# Builds what it needs (the server, the Python package into .venv, the npm package, the admin
# console), then runs examples/demo.sh: Python publisher -> server -> Node subscriber and
# browser dashboard, with the admin console at /admin, the history in a throwaway PostgreSQL
# (tests/with-postgres.sh).
demo: tools-rust tools-postgres python-dev npm-build console
	cargo build -p courier-server --locked
	tests/with-postgres.sh examples/demo.sh

## --- bench ------------------------------------------------------------------------------

bench: tools-rust tools-redis tools-postgres python-dev npm-build
	.venv/bin/python -m pip install -q 'matplotlib>=3.8' 'requests>=2.31' 'aiohttp>=3.9'
	.venv/bin/python tests/bench/run.py
