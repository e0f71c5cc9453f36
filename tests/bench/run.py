#!/usr/bin/env python3
"""Runs every benchmark of the project and writes docs/benchmarks.md.

Each benchmark is a function returning a markdown section. They run one after another
(2 cores: parallel runs would measure each other). Usage: `make bench` or
`python3 tests/bench/run.py [name ...]` to run some of them (the others keep their last
section, read back from docs/benchmarks.md).
"""
import datetime
import json
import os
import platform
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "benchmarks.md")


def sh(cmd, **kw):
    print(f"+ {cmd}", flush=True)
    return subprocess.run(cmd, shell=True, cwd=ROOT, check=True, text=True, **kw)


def criterion_estimate(group, name):
    path = os.path.join(ROOT, "target", "criterion", group, name, "new", "estimates.json")
    with open(path) as f:
        est = json.load(f)
    return est["mean"]["point_estimate"], est["mean"]["confidence_interval"]


def bench_core_dispatch():
    cmd = "cargo bench -p courier-core --bench dispatch"
    sh(cmd)
    mean_ns, ci = criterion_estimate("dispatch", "backtest_progress_frame")
    rate = 1e9 / mean_ns
    verdict = "meets" if rate >= 1_000_000 else "MISSES"
    return (
        "## Core: decode and dispatch one `backtest.progress` event frame\n\n"
        f"Command: `{cmd}`\n\n"
        "A 420-byte `event` frame is decoded and handed through the connection state machine "
        "(duplicate check, position update) to the application output queue.\n\n"
        "| measure | value |\n|---|---|\n"
        f"| mean time per frame | {mean_ns:.0f} ns (95% CI {ci['lower_bound']:.0f}–{ci['upper_bound']:.0f} ns) |\n"
        f"| frames per second, one core | {rate:,.0f} |\n"
        f"| target | ≥ 1,000,000 frames/s: {verdict} |\n"
    )


BENCHES = {
    "core_dispatch": bench_core_dispatch,
}


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            cpu = m.group(1) if m else cpu
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, {rustc}"


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
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    with open(DOC, "w") as f:
        f.write("\n".join(out))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
