"""The e2e orchestrator's plumbing: the reference server on a fixed port (so a restart keeps
the address), tokens, and the client processes of every language."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any, Dict, List, Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
E2E = os.path.join(ROOT, "tests", "e2e")
ARTIFACTS = os.path.join(ROOT, "tests", "artifacts", "e2e")
SCENARIOS = os.path.join(E2E, "scenarios")
SECRET = "courier-e2e-secret-0123456789"
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
NODE = shutil.which("node") or "node"


def load_scenario(name: str) -> Dict[str, Any]:
    """scenarios/NAME.json."""
    with open(os.path.join(SCENARIOS, f"{name}.json")) as f:
        return dict(json.load(f))


# The chaos scenario also holds the reconnect storm's parameters and the server settings the
# storm and dashboard tests borrow.
SCENARIO_PATH = os.path.join(SCENARIOS, "chaos.json")
SCENARIO: Dict[str, Any] = load_scenario("chaos")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub: str, role: str = "service", channels: Optional[List[str]] = None, ttl: int = 3600,
          tier: Optional[str] = None) -> str:
    now = int(time.time())
    claims: Dict[str, Any] = {"sub": sub, "exp": now + ttl, "iat": now, "role": role}
    if channels:
        claims["channels"] = channels
    if tier is not None:
        claims["tier"] = tier  # the rate-limit multiplier's key; without it a service gets `service` (x20)
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """courier-server on 127.0.0.1:port (by default with fault injection and JSON logs;
    `flags` replaces those); restartable on the same port."""

    def __init__(self, binary: str, port: int, env: Dict[str, str], log_name: str,
                 flags: Optional[List[str]] = None) -> None:
        self.binary, self.port, self.extra_env, self.log_name = binary, port, env, log_name
        self.flags = ["--enable-fault-injection", "--log-format", "json"] if flags is None else flags
        self.proc: Optional["subprocess.Popen[bytes]"] = None
        self.starts = 0
        self.up_at: float = 0.0

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.addr}/ws"

    def start(self) -> None:
        # The server reads every COURIER_* variable as configuration and refuses unknown ones.
        env = {k: v for k, v in os.environ.items() if not k.startswith("COURIER_")}
        env.update({"COURIER_JWT_SECRET": SECRET})
        env.update(self.extra_env)
        self.starts += 1
        log = open(os.path.join(ARTIFACTS, f"{self.log_name}-{self.starts}.log"), "wb")
        deadline = time.monotonic() + 15
        while True:
            proc = subprocess.Popen(
                [self.binary, "serve", "--listen", self.addr, *self.flags],
                stdout=subprocess.PIPE, stderr=log, env=env,
            )
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            if line.startswith("listening on "):
                self.proc = proc
                self.up_at = time.time() * 1000
                return
            proc.wait(timeout=5)
            if time.monotonic() > deadline:
                raise RuntimeError(f"courier-server did not start on {self.addr}: {line!r} (see {log.name})")
            time.sleep(0.05)  # the port may still be held by the previous process

    def stop(self) -> float:
        """SIGTERM (graceful shutdown) and wait; returns when it exited (Unix ms)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None
        return time.time() * 1000

    def kill(self) -> float:
        """SIGKILL (no shutdown at all: in-memory history and the request record die with it)
        and wait; returns when it exited (Unix ms)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=15)
        self.proc = None
        return time.time() * 1000

    def restart(self, kill: bool = False, down_s: float = 0.0) -> Dict[str, float]:
        """Stops (SIGTERM, or SIGKILL with `kill`), stays down `down_s`, starts on the same port."""
        t0 = time.time() * 1000
        down = self.kill() if kill else self.stop()
        if down_s > 0:
            time.sleep(down_s)
        self.start()
        return {"signal_ms": t0, "down_ms": down, "up_ms": self.up_at}

    def publish_batch(self, tok: str, events: List[Dict[str, Any]]) -> Any:
        """POST /publish/batch with `tok`; the parsed answer."""
        req = urllib.request.Request(
            f"{self.url}/publish/batch", data=json.dumps({"events": events}).encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {tok}"}, method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def fault(self, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        req = urllib.request.Request(
            f"{self.url}/_fault/{path}", data=json.dumps(body or {}).encode(),
            headers={"content-type": "application/json"}, method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as r:
            return json.loads(r.read())

    def requests(self) -> List[Dict[str, Any]]:
        body = self.get("/_fault/requests")
        assert body["dropped"] == 0, "the server's request record overflowed"
        return list(body["requests"])


@pytest.fixture(scope="session")
def server_bin(tmp_path_factory: pytest.TempPathFactory) -> str:
    os.makedirs(ARTIFACTS, exist_ok=True)
    src = os.path.join(TARGET, "debug", "courier-server")
    assert os.path.exists(src), f"{src} is missing: run `cargo build -p courier-server` (make test-e2e does)"
    # A private copy: other builds in the same target dir may replace the original mid-run.
    copy = str(tmp_path_factory.mktemp("bin") / "courier-server")
    shutil.copy2(src, copy)
    return copy


class ClientProc:
    """One client process speaking the line protocol: stdin `go`/`stop`, stdout `ready`,
    `published`, `done`."""

    def __init__(self, name: str, argv: List[str], out: str) -> None:
        self.name, self.out = name, out
        self.stderr_path = os.path.join(ARTIFACTS, f"{name}.stderr")
        self._stderr = open(self.stderr_path, "wb")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([os.path.join(E2E, "clients"), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     env=env, cwd=ROOT)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.seen: Dict[str, float] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode().strip())
        self.lines.put("<eof>")

    def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"{cmd}\n".encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def wait_for(self, word: str, timeout: float) -> bool:
        if word in self.seen:
            return True
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return False
            if line == "<eof>":
                self.lines.put(line)
                return False
            self.seen[line] = time.time() * 1000
            if line == word:
                return True

    def stderr_tail(self) -> str:
        self._stderr.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read()[-3000:].decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def client_argv(name: str, url_http: str, url_ws: str, tok: str, out: str, scenario_path: str) -> List[str]:
    clients = os.path.join(E2E, "clients")
    if name == "rust":
        return [os.path.join(TARGET, "debug", "examples", "e2e_client"), "chaos", scenario_path, name, url_http, tok, out]
    if name == "py_async":
        return [PYTHON, os.path.join(clients, "client_async.py"), scenario_path, name, url_http, tok, out]
    if name == "py_sync":
        return [PYTHON, os.path.join(clients, "client_sync.py"), scenario_path, name, url_http, tok, out]
    if name == "node":
        return [NODE, os.path.join(clients, "client.mjs"), scenario_path, name, url_ws, tok, out]
    if name == "browser":
        shot = os.path.join(ARTIFACTS, "browser-client.png")
        return [NODE, os.path.join(clients, "browser.mjs"), scenario_path, name, url_ws, tok, out, shot]
    raise ValueError(name)


def read_jsonl(path: str) -> List[Dict[str, Any]]:
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line cut short by a crash
    return out


def log(msg: str) -> None:
    sys.stderr.write(f"[e2e {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()
