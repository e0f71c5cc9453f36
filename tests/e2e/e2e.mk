## --- e2e: the cross-language end-to-end suite (tests/e2e) --------------------------------
# Included by the top Makefile. Three scenarios (tests/e2e/scenarios/*.json), each run by the
# Rust native, Python async and sync, Node and browser clients at once against the real
# server: `chaos` (drops, 429/503 bursts, a restart; limiter off), `limits` (the rate limiter
# at its defaults, standard tier, limited and unlimited types mixed) and `kill` (SIGKILL and
# restart twice mid-stream); Retry-After checked at the server (whole request and per
# bucket), a 500-subscriber reconnect storm, the example dashboard in headless Chromium, and
# every README quickstart run as written (test_quickstarts.py).
# Records, server logs and screenshots go to tests/artifacts/e2e/ (git-ignored).

TEST_TARGETS += test-e2e

.PHONY: test-e2e

test-e2e: python-dev npm-build
	cargo build --locked -p courier-server
	cargo build --locked -p courier-client --example e2e_client
	cargo build --locked -p courier-client --example quickstart
	mkdir -p tests/artifacts/e2e
	$(PY) -m pytest -q -p no:cacheprovider -o asyncio_default_fixture_loop_scope=function \
		--timeout 600 --durations=0 tests/e2e
