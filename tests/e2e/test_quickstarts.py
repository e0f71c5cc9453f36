"""Issue #13: every README quickstart runs as written. Each fenced block is taken from its
README under its heading and run unchanged (Python with the venv's interpreter, TypeScript
type-checked with `tsc --strict` then run by Node against the built package, Rust as one of
`crates/courier-client/examples/*.rs`, which must be the README's text byte for byte) against
a fresh server at its default settings (only the secret and the port are ours), with a token minted
by the README's own `token` line. Each must print the event it received and exit by itself
with code 0 within EXIT_BOUND_S: a program still running then is a hang (something stays
armed after close()), which is what this test is for."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from conftest import NODE, PYTHON, ROOT, SECRET, Server, free_port

EXIT_BOUND_S = 20.0
NPM = os.path.join(ROOT, "npm")
BIN = os.path.join(NPM, "node_modules", ".bin")
RUST_EXAMPLES = os.path.join(ROOT, "crates", "courier-client", "examples")
PY_EXAMPLE = os.path.join(ROOT, "python", "examples", "readme_example.py")
# What each program prints for the event it received: the type, then the data (percent 42 or 42.5).
RECEIVED = re.compile(r"^received backtest\.progress\b.*\b42\b", re.M)

# (README, heading, fence language, index among that heading's blocks of that language)
QUICKSTARTS: List[Tuple[str, str, str, int]] = [
    ("README.md", "### Python", "python", 0),
    ("README.md", "### TypeScript", "ts", 0),
    ("README.md", "### Rust (native client)", "rust", 0),
    ("README.md", "### History (replay API): Python", "python", 0),
    ("README.md", "### History (replay API): Rust", "rust", 0),
    ("README.md", "### History (replay API): TypeScript", "ts", 0),
    ("python/README.md", "## Quickstart", "python", 0),
    ("python/README.md", "## Quickstart", "python", 1),  # asyncio
    ("npm/README.md", "# courier-client", "ts", 0),
]


def fenced_block(readme: str, heading: str, lang: str, index: int = 0) -> str:
    """The `index`-th ```lang block of the section under `heading` (up to the next heading of
    the same or a higher level; `#` lines inside fences are not headings)."""
    with open(os.path.join(ROOT, readme)) as f:
        lines = f.read().splitlines(keepends=True)
    level = len(heading) - len(heading.lstrip("#"))
    in_section = in_fence = False
    blocks: List[str] = []
    current: Optional[List[str]] = None  # the lines of the open ```lang fence
    for line in lines:
        if line.startswith("```"):
            if in_fence:
                if current is not None and in_section:
                    blocks.append("".join(current))
                in_fence, current = False, None
            else:
                in_fence = True
                current = [] if line.strip() == f"```{lang}" else None
            continue
        if in_fence:
            if current is not None:
                current.append(line)
            continue
        if line.startswith("#"):
            hashes = len(line) - len(line.lstrip("#"))
            if line.rstrip("\n") == heading:
                in_section = True
            elif in_section and hashes <= level:
                break
    assert len(blocks) > index, f"{readme}: no ```{lang} block #{index} under {heading!r}"
    return blocks[index]


def readme_token(server_bin: str) -> str:
    """The token the README's quickstart mints, by its own `token` line, for our secret."""
    sh = fenced_block("README.md", "## Quickstart", "sh")
    m = re.search(r"courier-server -- token ([^)\n]*)\)", sh)
    assert m, f"README.md's quickstart mints no token:\n{sh}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURIER_")}
    env["COURIER_JWT_SECRET"] = SECRET
    out = subprocess.run([server_bin, "token", *shlex.split(m.group(1))], env=env, check=True,
                         capture_output=True, text=True, timeout=30).stdout.strip()
    assert out.count(".") == 2, f"not a JWT: {out!r}"
    return out


@pytest.fixture
def server(server_bin: str, request: pytest.FixtureRequest) -> Iterator[Server]:
    """A fresh server at its default settings (no fault injection, default limits)."""
    srv = Server(server_bin, free_port(), {}, f"quickstart-{request.node.callspec.id}", flags=[])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def run_bounded(name: str, argv: List[str], cwd: str, env: Dict[str, str]) -> str:
    """Runs a quickstart; fails if it does not exit by itself with code 0 within the bound or
    does not print the received event. Returns its stdout."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=EXIT_BOUND_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{name}: still running {EXIT_BOUND_S:.0f} s after it started, killed: it does not "
                    f"exit by itself (something stays armed after close()).\nstdout: {out!r}\n"
                    f"stderr (tail): {err[-3000:]}")
    assert proc.returncode == 0, f"{name}: exit code {proc.returncode}\nstdout: {out!r}\nstderr (tail): {err[-3000:]}"
    assert RECEIVED.search(out), f"{name}: printed no received event\nstdout: {out!r}\nstderr (tail): {err[-3000:]}"
    print(f"{name}: {out.strip()}")
    return out


def run_python(name: str, code: str, env: Dict[str, str], tmp: str) -> str:
    path = os.path.join(tmp, "quickstart.py")
    with open(path, "w") as f:
        f.write(code)
    return run_bounded(name, [PYTHON, path], tmp, env)


def run_typescript(name: str, code: str, env: Dict[str, str], tmp: str) -> str:
    """In a fresh project whose node_modules holds the built package (npm/, `make npm-build`)
    and `ws`: type-checked with tsc (strict, NodeNext, ES2022), transpiled by esbuild, run by
    Node."""
    assert os.path.exists(os.path.join(NPM, "dist", "node.js")), "npm/dist is missing: run `make npm-build`"
    mods = os.path.join(tmp, "node_modules")
    os.makedirs(os.path.join(mods, "@types"))
    os.symlink(NPM, os.path.join(mods, "courier-client"))
    os.symlink(os.path.join(NPM, "node_modules", "ws"), os.path.join(mods, "ws"))
    os.symlink(os.path.join(NPM, "node_modules", "@types", "node"), os.path.join(mods, "@types", "node"))
    with open(os.path.join(tmp, "package.json"), "w") as f:
        json.dump({"name": "quickstart", "private": True, "type": "module"}, f)
    with open(os.path.join(tmp, "tsconfig.json"), "w") as f:
        json.dump({"compilerOptions": {"strict": True, "module": "NodeNext", "moduleResolution": "NodeNext",
                                       "target": "ES2022", "types": ["node"], "noEmit": True},
                   "files": ["quickstart.ts"]}, f)
    with open(os.path.join(tmp, "quickstart.ts"), "w") as f:
        f.write(code)
    tsc = subprocess.run([os.path.join(BIN, "tsc"), "-p", "tsconfig.json"], cwd=tmp, capture_output=True,
                         text=True, timeout=120)
    assert tsc.returncode == 0, f"{name} does not type-check:\n{tsc.stdout}{tsc.stderr}"
    subprocess.run([os.path.join(BIN, "esbuild"), "quickstart.ts", "--format=esm", "--platform=node",
                    "--target=node20", "--log-level=warning", "--outfile=quickstart.mjs"],
                   cwd=tmp, check=True, timeout=60)
    return run_bounded(name, [NODE, "quickstart.mjs"], tmp, env)


def run_rust(name: str, code: str, env: Dict[str, str], tmp: str) -> str:
    # The README block is one of courier-client's examples byte for byte (quickstart, history).
    same = []
    for file in sorted(os.listdir(RUST_EXAMPLES)):
        with open(os.path.join(RUST_EXAMPLES, file)) as f:
            if f.read() == code:
                same.append(file.removesuffix(".rs"))
    assert same, f"{name} is none of crates/courier-client/examples/*.rs byte for byte"
    cargo = ["cargo", "--quiet"]
    example = ["--locked", "-p", "courier-client", "--example", same[0]]
    # Built first (a no-op after `make test-e2e`'s build), so the bound times the program.
    subprocess.run([*cargo, "build", *example], cwd=ROOT, check=True, timeout=900)
    return run_bounded(name, [*cargo, "run", *example], ROOT, env)


RUNNERS = {"python": run_python, "ts": run_typescript, "rust": run_rust}
# Output by (language, block): a block that appears in two READMEs runs once.
_ran: Dict[Tuple[str, str], str] = {}


@pytest.mark.parametrize(
    "readme,heading,lang,index", QUICKSTARTS,
    ids=[f"{r.split('/')[0].removesuffix('.md').lower()}-{'history-' if 'History' in h else ''}{lang}"
         f"{'-' + str(i) if i else ''}" for r, h, lang, i in QUICKSTARTS])
def test_quickstart_runs_as_written(readme: str, heading: str, lang: str, index: int, server_bin: str,
                                    server: Server) -> None:
    code = fenced_block(readme, heading, lang, index)
    key = (lang, code)
    if key in _ran:
        assert RECEIVED.search(_ran[key])
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURIER_")}
    env.update({"COURIER_URL": server.url, "COURIER_TOKEN": readme_token(server_bin)})
    with tempfile.TemporaryDirectory(prefix="courier-quickstart-") as tmp:
        _ran[key] = RUNNERS[lang](f"{readme} {heading!r} ```{lang} #{index}", code, env, tmp)


def test_python_readme_example_file_is_the_readme_quickstart() -> None:
    """python/examples/readme_example.py (what the wheel smoke test runs) is the README's text."""
    with open(PY_EXAMPLE) as f:
        assert f.read().endswith("\n\n" + fenced_block("python/README.md", "## Quickstart", "python"))
