"""Helpers shared by the benchmark modules."""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
