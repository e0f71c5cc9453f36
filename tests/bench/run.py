#!/usr/bin/env python3
"""Runs every benchmark of the project and writes docs/benchmarks.md.

Each benchmark is a function returning a markdown section. They run one after another
(2 cores: parallel runs would measure each other). Usage: `make bench` or
`python3 tests/bench/run.py [name ...]` to run some of them (the others keep their last
section, read back from docs/benchmarks.md).
"""
import datetime
import os
import platform
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import cpu_model  # noqa: E402 (after the path is set)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "benchmarks.md")


def load_benches():
    """Every `tests/bench/bench_*.py` module with a `run()` returning a markdown section.

    Modules run in file-name order; each package owns its own module."""
    import importlib.util
    benches = {}
    here = os.path.dirname(os.path.abspath(__file__))
    for fname in sorted(os.listdir(here)):
        if fname.startswith("bench_") and fname.endswith(".py"):
            name = fname[len("bench_"):-3]
            spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(here, fname))
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            benches[name] = mod.run
    return benches


BENCHES = load_benches()


def machine():
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{cpu_model()}, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, {rustc}"


def previous_sections():
    sections = {}
    if os.path.exists(DOC):
        text = open(DOC).read()
        for m in re.finditer(r"<!-- bench:(\w+) -->\n(.*?)<!-- /bench -->", text, re.S):
            sections[m.group(1)] = m.group(2)
    return sections


def main():
    wanted = sys.argv[1:] or list(BENCHES)
    sections = previous_sections()
    for name in wanted:
        sections[name] = BENCHES[name]() + f"\nMeasured {datetime.date.today().isoformat()}.\n"
    out = [
        "# Benchmarks\n",
        "Written by `make bench` (`python3 tests/bench/run.py`). Targets are checked here, never "
        "by timed assertions in tests.\n",
        f"Machine: {machine()}.\n",
    ]
    for name in BENCHES:
        if name in sections:
            out.append(f"<!-- bench:{name} -->\n{sections[name]}<!-- /bench -->\n")
    # One-off comparisons (before/after a change) have no module: kept as they were.
    for name, text in sections.items():
        if name not in BENCHES:
            out.append(f"<!-- bench:{name} -->\n{text}<!-- /bench -->\n")
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    with open(DOC, "w") as f:
        f.write("\n".join(out))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
