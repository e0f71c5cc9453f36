"""Helpers shared by the benchmark modules."""
import json
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_model():
    """This machine's CPU model and core count: sections are measured at different times,
    on different machines, so each names its own."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            cpu = m.group(1) if m else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def sh(cmd, **kw):
    """Runs a shell command at the repository root, echoing it."""
    print(f"+ {cmd}", flush=True)
    return subprocess.run(cmd, shell=True, cwd=ROOT, check=True, text=True, **kw)


def criterion_estimate(group, name):
    """Mean time (ns) and its confidence interval from criterion's output."""
    path = os.path.join(ROOT, "target", "criterion", group, name, "new", "estimates.json")
    with open(path) as f:
        est = json.load(f)
    return est["mean"]["point_estimate"], est["mean"]["confidence_interval"]


def plot(path, title, xlabel, ylabel, series, log_y=False, kind="line"):
    """Writes a PNG chart: `series` is {label: ([x…], [y…])}. Needs matplotlib (in .venv)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for label, (xs, ys) in series.items():
        if kind == "bar":
            ax.bar(xs, ys, width=(xs[1] - xs[0]) * 0.9 if len(xs) > 1 else 1, label=label, align="edge")
        else:
            ax.plot(xs, ys, marker="o", label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    full = os.path.join(ROOT, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    fig.savefig(full)
    plt.close(fig)
    return path


# --- a release server and tokens, for the measurements that run in the project's .venv -----

BENCH_SECRET = "courier-bench"


def jwt(claims, secret=BENCH_SECRET):
    """An HS256 JWT with `claims` plus `iat` and a one-hour `exp`."""
    import base64
    import hashlib
    import hmac
    import time

    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"exp": now + 3600, "iat": now, **claims}).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


class ReleaseServer:
    """`target/release/courier-server serve` on a free loopback port, configured by `env`
    (COURIER_* variables) on top of the bench secret, quiet logs and a short history (memory
    stays flat over long runs). A context manager; `.url` is `http://addr`."""

    def __init__(self, **env):
        self.env = env

    def __enter__(self):
        clean = {k: v for k, v in os.environ.items() if not k.startswith("COURIER_")}
        env = dict(clean, COURIER_JWT_SECRET=BENCH_SECRET, COURIER_LOG_LEVEL="warn",
                   COURIER_HISTORY__MAX_EVENTS_PER_CHANNEL="1000", **self.env)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        self.proc = subprocess.Popen([os.path.join(target, "release", "courier-server"), "serve", "--listen", "127.0.0.1:0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise SystemExit(f"courier-server did not start: {line!r}")
        self.url = f"http://{line.split()[-1]}"
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
