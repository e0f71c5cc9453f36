## --- npm: the TypeScript package courier-client (WASM) ----------------------------------
# Included by the top Makefile. `make test-npm` installs what it needs (idempotently), builds
# the WASM once (wasm-pack, size profile), compiles the TypeScript and runs every Node and
# Chromium test against the real reference server.

TEST_TARGETS += test-npm

NPM_TARGET_DIR := $(CURDIR)/target/wasm
NPM_WASM := npm/pkg/courier_wasm_bg.wasm
NPM_WASM_INPUTS := $(shell find crates/courier-wasm/src crates/courier-core/src -name '*.rs' 2>/dev/null) \
	crates/courier-wasm/Cargo.toml crates/courier-core/Cargo.toml Cargo.toml
NPM_TS_INPUTS := $(wildcard npm/src/*.ts) npm/tsconfig.json npm/scripts/build.mjs npm/package.json

.PHONY: npm-tools npm-build test-npm lint-wasm

# wasm-bindgen-cli must match the crate's `=0.2.130` exactly; wasm-opt comes from the npm
# package binaryen (Debian's is too old); Chromium for the browser test from Debian.
npm-tools: tools-rust
	@wasm-bindgen --version 2>/dev/null | grep -qx 'wasm-bindgen $(WASM_BINDGEN_VERSION)' \
		|| cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION)
	@wasm-pack --version 2>/dev/null | grep -qx 'wasm-pack $(WASM_PACK_VERSION)' \
		|| cargo install --locked wasm-pack --version $(WASM_PACK_VERSION)
	@[ -x /usr/bin/chromium ] || (apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver)
	@$(MAKE) --no-print-directory npm/node_modules/.installed

npm/node_modules/.installed: npm/package.json npm/package-lock.json
	cd npm && npm ci --no-audit --no-fund
	@touch $@

$(NPM_WASM): $(NPM_WASM_INPUTS) | npm-tools
	PATH="$(CURDIR)/npm/node_modules/.bin:$$PATH" CARGO_TARGET_DIR="$(NPM_TARGET_DIR)" \
		wasm-pack build crates/courier-wasm --target web --out-dir ../../npm/pkg --no-pack \
		--profile wasm-release
	@touch $@

# The subscriber entry's WASM (`courier-client/subscriber`): the same crate without its
# `publish` feature, so without the core's publish queue.
NPM_SUB_WASM := npm/pkg-sub/courier_wasm_bg.wasm
$(NPM_SUB_WASM): $(NPM_WASM_INPUTS) | npm-tools
	PATH="$(CURDIR)/npm/node_modules/.bin:$$PATH" CARGO_TARGET_DIR="$(NPM_TARGET_DIR)" \
		wasm-pack build crates/courier-wasm --target web --out-dir ../../npm/pkg-sub --no-pack \
		--profile wasm-release -- --no-default-features
	@touch $@

# Test-only WASM for the TypeScript vector runner: the `conformance` feature (the vector
# evaluator), which the shipped WASM does not carry. A dev build (no wasm-opt): quick to build, fast enough for the vectors.
NPM_TEST_WASM := npm/pkg-test/courier_wasm_bg.wasm
$(NPM_TEST_WASM): $(NPM_WASM_INPUTS) | npm-tools
	PATH="$(CURDIR)/npm/node_modules/.bin:$$PATH" CARGO_TARGET_DIR="$(NPM_TARGET_DIR)" \
		wasm-pack build crates/courier-wasm --target web --out-dir ../../npm/pkg-test --no-pack \
		--dev --features conformance
	@touch $@

npm/dist/.built: $(NPM_WASM) $(NPM_SUB_WASM) $(NPM_TS_INPUTS)
	cd npm && node scripts/build.mjs
	@touch $@

# The package, built once per change of its inputs (plus the test-only WASM).
npm-build: npm-tools
	@$(MAKE) --no-print-directory npm/dist/.built $(NPM_TEST_WASM)

# The glue only compiles for wasm32, so the workspace clippy run skips it: lint it here.
lint-wasm: tools-rust
	CARGO_TARGET_DIR="$(NPM_TARGET_DIR)" cargo clippy -p courier-wasm --target wasm32-unknown-unknown --locked -- -D warnings
	CARGO_TARGET_DIR="$(NPM_TARGET_DIR)" cargo clippy -p courier-wasm --features conformance --target wasm32-unknown-unknown --locked -- -D warnings
	CARGO_TARGET_DIR="$(NPM_TARGET_DIR)" cargo clippy -p courier-wasm --no-default-features --target wasm32-unknown-unknown --locked -- -D warnings
	CARGO_TARGET_DIR="$(NPM_TARGET_DIR)" cargo clippy -p courier-core --no-default-features --target wasm32-unknown-unknown --locked -- -D warnings

test-npm: npm-build lint-wasm
	cargo build -p courier-server --locked
	cd npm && node --test --test-concurrency=1 --test-timeout=180000 test/*.test.mjs
	@# The Node suite again: `ws` passed in the options with the subscriber entry point's
	@# client subscribing, then Node's own WebSocket (Node 22's global; a flag on Node 20).
	cd npm && COURIER_TEST_WEBSOCKET=ws COURIER_TEST_ENTRY=subscriber node --test --test-concurrency=1 --test-timeout=180000 test/client.test.mjs
	cd npm && COURIER_TEST_WEBSOCKET=global node --experimental-websocket --test --test-concurrency=1 --test-timeout=180000 test/client.test.mjs
