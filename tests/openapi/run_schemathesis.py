"""A bounded property-based run of schemathesis against the reference server's /openapi.json.

Starts the debug server on 127.0.0.1:0 (memory backend, rate limits at their defaults, no
fault injection), signs a service token, and runs `schemathesis run --checks all`: no 5xx,
every status, content type, header and body as documented, schema-valid requests accepted
and schema-violating ones refused. The two documented behaviours a check cannot express are
set per operation in schemathesis.toml, with why. Bounded in examples per operation and in
wall time (`--max-seconds`).

    .venv/bin/python tests/openapi/run_schemathesis.py [--max-examples N] [--max-seconds S]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECRET = "courier-schemathesis"
# Every check, set in schemathesis.toml (next to this file) with the two that a documented
# behaviour cannot satisfy adjusted per operation, each with the reason. (`--checks all` on
# the command line would override the per-operation settings.) SCHEMATHESIS_CHECKS runs a
# chosen list instead.
CHECKS = os.environ.get("SCHEMATHESIS_CHECKS")
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemathesis.toml")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub: str) -> str:
    now = int(time.time())
    # `admin` publishes and reads anywhere like `service` (same tier), and may also call the
    # admin API, so every operation's 200 is exercised; the 403 of other roles is tested in
    # crates/courier-server/tests/api/admin.rs.
    claims = {"sub": sub, "exp": now + 3600, "iat": now, "role": "admin", "publish": ["*"]}
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-examples", type=int, default=25, help="test cases per operation and phase")
    ap.add_argument("--max-seconds", type=float, default=90.0, help="wall-time bound of the run")
    ap.add_argument("--seed", type=int, default=14)
    args = ap.parse_args()

    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "debug", "courier-server")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURIER_")}
    env.update({"COURIER_JWT_SECRET": SECRET, "COURIER_LOG_LEVEL": "warn"})
    log = tempfile.NamedTemporaryFile(prefix="courier-schemathesis-", suffix=".log", delete=False)
    server = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=log, env=env
    )
    assert server.stdout is not None
    line = server.stdout.readline().decode()
    if not line.startswith("listening on "):
        server.kill()
        print(f"server did not start: {line!r}; see {log.name}", file=sys.stderr)
        return 1
    url = f"http://{line.split()[-1]}"
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "schemathesis"),
        "--config-file", CONFIG,
        "run",
        f"{url}/openapi.json",
        "--url", url,
        *(["--checks", CHECKS] if CHECKS else []),
        "--max-examples", str(args.max_examples),
        "--seed", str(args.seed),
        "--header", f"Authorization: Bearer {token('schemathesis')}",
        "--request-timeout", "10",
        "--workers", "1",
        "--no-color",
    ]
    started = time.monotonic()
    try:
        # In a scratch directory: schemathesis and hypothesis keep state in the working one.
        with tempfile.TemporaryDirectory(prefix="courier-schemathesis-") as scratch:
            run = subprocess.run(cmd, timeout=args.max_seconds, cwd=scratch)
        code = run.returncode
    except subprocess.TimeoutExpired:
        print(f"schemathesis: stopped at the {args.max_seconds:.0f} s bound", file=sys.stderr)
        code = 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    took = time.monotonic() - started
    if code == 0:
        os.unlink(log.name)
        print(f"schemathesis: passed in {took:.1f} s")
    else:
        print(f"schemathesis: exit {code} after {took:.1f} s (server log: {log.name})")
    return code


if __name__ == "__main__":
    sys.exit(main())
