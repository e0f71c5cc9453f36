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


def header(machine_line):
    return (
        "# Benchmarks\n\n"
        "Written by `make bench` (`python3 tests/bench/run.py`). Targets are checked here, never "
        "by timed assertions in tests.\n\n"
        f"Machine: {machine_line}.\n"
    )


def section_pattern(name):
    return re.compile(rf"<!-- bench:{re.escape(name)} -->\n.*?<!-- /bench -->\n", re.S)


def main():
    """Replaces each section that ran in place, and nothing else: notes written between
    sections (profiles, decisions) and one-off comparisons stay as they are. The Machine line
    is rewritten only when every benchmark ran (a partial run names its machine in its
    sections)."""
    wanted = sys.argv[1:] or list(BENCHES)
    unknown = [n for n in wanted if n not in BENCHES]
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    text = open(DOC).read() if os.path.exists(DOC) else header(machine())
    for name in wanted:
        body = BENCHES[name]() + f"\nMeasured {datetime.date.today().isoformat()}.\n"
        block = f"<!-- bench:{name} -->\n{body}<!-- /bench -->\n"
        pattern = section_pattern(name)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text, count=1)
        else:
            text = text.rstrip("\n") + "\n\n" + block
        # Written after each benchmark: a later one failing keeps the earlier ones' figures.
        os.makedirs(os.path.dirname(DOC), exist_ok=True)
        with open(DOC, "w") as f:
            f.write(text)
    if not sys.argv[1:]:
        text = re.sub(r"(?m)^Machine: .*$", lambda _: f"Machine: {machine()}.", text, count=1)
        with open(DOC, "w") as f:
            f.write(text)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
