## --- the admin console (console/): React + courier-client, bundled by esbuild -------------
# Included by the top Makefile. `make console` builds console/dist, which courier-server
# serves at /admin with no configuration (it looks for console/dist of its source tree at
# run time, or `admin.console_dir`), so `cargo build -p courier-server` never needs Node.

TEST_TARGETS += test-console

CONSOLE_INPUTS := $(wildcard console/src/*) console/index.html console/build.mjs console/tsconfig.json

.PHONY: console test-console

console/dist/.built: npm/dist/.built $(CONSOLE_INPUTS)
	node console/build.mjs
	@touch $@

# Builds the npm package first (the console bundles it, WebAssembly included).
console: npm-build
	@$(MAKE) --no-print-directory console/dist/.built

# Headless Chromium against the real server serving the built console (about 10 s; each
# test bounded at 1 min, the whole run at 3 min); screenshots in tests/artifacts/console-*.png.
test-console: console
	cargo build -p courier-server --locked
	timeout 180 node --test --test-concurrency=1 --test-timeout=60000 console/test/console.test.mjs
