# Python package `courier-client` (python/ + crates/courier-py). Included by the top Makefile.
# Every target installs what it needs into .venv at the repository root, idempotently.

PY_VENV := .venv
PY := $(PY_VENV)/bin/python
PY_TOOLS := maturin>=1.16,<2 pytest>=8 pytest-asyncio>=0.23 pytest-timeout>=2 mypy>=1.11 httpx>=0.27 schemathesis==4.32.5
PY_TOOLS_STAMP := $(PY_VENV)/.courier-tools

TEST_TARGETS += test-python test-openapi

.PHONY: python-venv python-dev test-python test-python-wheel test-openapi

python-venv:
	@test -x $(PY) || python3 -m venv $(PY_VENV)
	@if [ "$$(cat $(PY_TOOLS_STAMP) 2>/dev/null)" != "$(PY_TOOLS)" ]; then \
		$(PY) -m pip install -q --upgrade pip && \
		$(PY) -m pip install -q $(foreach t,$(PY_TOOLS),'$(t)') && \
		echo "$(PY_TOOLS)" > $(PY_TOOLS_STAMP); \
	fi

# Builds the native module (release) and installs the package into .venv (editable).
python-dev: python-venv
	cd python && ../$(PY) -m maturin develop --release --locked -q

test-python: python-dev tools-redis
	cargo build -q --locked -p courier-server
	cd python && ../$(PY) -m mypy.stubtest courier_client._native
	cd python && ../$(PY) -m mypy --strict courier_client examples ../examples/python-publisher
	cd python && SKIP_COURIER_SERVER_BUILD=1 ../$(PY) -m pytest -q -p no:cacheprovider tests
	$(MAKE) --no-print-directory test-python-wheel

# The built abi3 wheel installed into a fresh venv runs the README's example.
test-python-wheel: python-venv
	rm -rf target/wheels/courier_client-*.whl
	cd python && ../$(PY) -m maturin build --release --locked -q -o ../target/wheels
	$(PY) python/wheel_smoke.py target/wheels/courier_client-*.whl

# The live server against its /openapi.json: a bounded property-based schemathesis run (every
# check, per-operation exceptions in tests/openapi/schemathesis.toml), 90 s at most.
test-openapi: python-venv
	cargo build -q --locked -p courier-server
	$(PY) tests/openapi/run_schemathesis.py --max-examples 50 --max-seconds 90
