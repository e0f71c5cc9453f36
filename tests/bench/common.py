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
