"""Fixtures: the reference server (built once, started per test on port 0) and tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, Iterator, List, Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECRET = "courier-python-tests"


# The server's default rate-limit table (crates/courier-server/src/config.rs), which the
# limiter tests run against: `deposit` (and `deposit.*`) allows 5 a minute, all 5 back to back,
# then one every 12 s; the `premium` tier multiplies that by 5 (25, then one every 2.4 s). A
# type no row matches, such as `custom.x`, is charged to the user's fallback bucket (300).
LIMITED_TYPE = "deposit.made"
LIMITED_BURST = {"standard": 5, "premium": 25}
LIMITED_REFILL_S = {"standard": 12.0, "premium": 2.4}
UNLIMITED_TYPE = "custom.x"


def assert_none_refused(records: List[Dict[str, Any]]) -> None:
    """No request of `records` (Server.publish_requests) was refused by the server, whole
    (429) or per event (`refused`): whatever the client waited for, it waited on its own."""
    assert records, "the server saw the publishes"
    bad = [r for r in records if r["status"] != 200 or r.get("refused")]
    assert bad == [], bad


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(
    sub: str = "svc-py",
    role: str = "service",
    ttl: float = 3600,
    channels: Optional[List[str]] = None,
    publish: Optional[List[str]] = None,
    tier: Optional[str] = None,
) -> str:
    """An HS256 JWT for the test server's secret. Without `tier` the server applies the
    role's: `service` (limits x20) for services, `standard` (x1) for users."""
    now = int(time.time())
    claims: Dict[str, Any] = {"sub": sub, "exp": int(now + ttl), "iat": now, "role": role}
    if channels:
        claims["channels"] = channels
    if publish:
        claims["publish"] = publish
    if tier:
        claims["tier"] = tier
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def server_binary() -> str:
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    path = os.path.join(target, "debug", "courier-server")
    if not os.environ.get("SKIP_COURIER_SERVER_BUILD"):
        subprocess.run(["cargo", "build", "-q", "--locked", "-p", "courier-server"], cwd=ROOT, check=True)
    return path


@dataclass
class Server:
    addr: str
    proc: "subprocess.Popen[bytes]"
    log_path: str
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def fault(self, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        req = urllib.request.Request(
            f"{self.url}/_fault/{path}",
            data=json.dumps(body or {}).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:
            body = r.read()
            try:
                return json.loads(body)
            except ValueError:
                return body.decode()

    def publish_requests(self, sub: str) -> List[Dict[str, Any]]:
        """The server's record (`GET /_fault/requests`) of every publish request made with a
        token of `sub`, in arrival order: `at_ms` (Unix ms), `status`, and per event refused
        by the limiter an entry of `refused` ({bucket, retry_after_ms})."""
        records = self.get("/_fault/requests")["requests"]
        return [r for r in records if r["path"].startswith("/publish") and r.get("sub") == sub]

    def requests(self, path: str) -> List[Dict[str, Any]]:
        """The server's own timestamped log of HTTP requests to `path`:
        [{"event": "start"|"finish", "at": seconds, "status": int?}] in order."""
        out = []
        with open(self.log_path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                span = rec.get("span") or {}
                if span.get("path") != path or not rec.get("target", "").startswith("tower_http::trace"):
                    continue
                msg = rec["fields"].get("message", "")
                ts = rec["timestamp"].rstrip("Z")
                head, _, frac = ts.partition(".")
                at = datetime.fromisoformat(head).timestamp() + float("0." + (frac or "0"))
                if msg.startswith("started"):
                    out.append({"event": "start", "at": at})
                elif msg.startswith("finished"):
                    out.append({"event": "finish", "at": at, "status": rec["fields"].get("status")})
        return out


@pytest.fixture(scope="session")
def server_bin(tmp_path_factory: pytest.TempPathFactory) -> str:
    # A private copy: other builds in the same target dir may replace the original mid-run.
    copy = str(tmp_path_factory.mktemp("bin") / "courier-server")
    shutil.copy2(server_binary(), copy)
    return copy


def start_server(binary: str, env_extra: Optional[Dict[str, str]] = None) -> Server:
    log = tempfile.NamedTemporaryFile(prefix="courier-server-", suffix=".log", delete=False)
    # The server reads every COURIER_* variable as configuration (and refuses unknown ones).
    # COURIER_BACKEND / COURIER_REDIS_URL pass through, so `make test-sdk-redis` runs this
    # suite against a Redis-backed server; each server then gets its own key namespace, like
    # a fresh deployment.
    keep = ("COURIER_BACKEND", "COURIER_REDIS_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURIER_") or k in keep}
    if env.get("COURIER_BACKEND") in ("redis", "redis-cluster"):
        env["COURIER_REDIS__KEY_PREFIX"] = f"pytest-{os.getpid()}-{time.monotonic_ns()}:"
    # Rate limits stay at the server's defaults (on): the suite runs against the server as a
    # user gets it. A test about something else that needs them off passes its own override.
    env.update(
        {
            "COURIER_JWT_SECRET": SECRET,
            "COURIER_LOG_LEVEL": "info,tower_http=debug",
        }
    )
    env.update(env_extra or {})
    proc = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--enable-fault-injection", "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}; see {log.name}")
    return Server(line.split()[-1], proc, log.name)


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
    try:
        os.unlink(server.log_path)
    except OSError:
        pass


@pytest.fixture
def server(server_bin: str) -> Iterator[Server]:
    s = start_server(server_bin)
    try:
        yield s
    finally:
        stop_server(s)


@pytest.fixture
def token() -> str:
    return make_token()
