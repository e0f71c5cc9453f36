#!/usr/bin/env python3
"""Installs a built wheel into a fresh venv and runs the README's example against the
reference server (started on port 0). Usage: wheel_smoke.py WHEEL"""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "tests"))

from conftest import make_token, server_binary, start_server, stop_server  # noqa: E402


def main() -> int:
    wheel = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="courier-wheel-")
    try:
        venv = os.path.join(work, "venv")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        py = os.path.join(venv, "bin", "python")
        subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", wheel], check=True)
        server = start_server(server_binary())
        try:
            env = dict(os.environ, COURIER_URL=server.url, COURIER_TOKEN=make_token())
            out = subprocess.run(
                [py, os.path.join(HERE, "examples", "readme_example.py")],
                cwd=work, env=env, check=True, capture_output=True, text=True, timeout=60,
            ).stdout.strip()
        finally:
            stop_server(server)
        if not out.startswith("received backtest.progress {"):
            print(f"README example printed {out!r}, expected the event it received", file=sys.stderr)
            return 1
        print(f"wheel {os.path.basename(wheel)}: README example works in a fresh venv")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
