"""courier-core: reading a 100-event `POST /publish/batch` body, serde's passes vs the wire module's one."""
from common import criterion_estimate, sh

GROUP = "publish_batch_body_100_events"


def run():
    cmd = "cargo bench -p courier-core --bench publish_body"
    sh(cmd)
    rows = []
    means = {}
    for name, label in [
        ("serde_passes", "before: serde_json into raw events, then per event a peek at `id`/`channel`, a peek at `type`, serde_path_to_error into an `Event`"),
        ("one_pass", "after: `wire::BatchRequest::read_items`, one pass with the core's reader"),
    ]:
        mean_ns, ci = criterion_estimate(GROUP, name)
        means[name] = mean_ns
        rows.append(
            f"| {label} | {mean_ns / 1000:.1f} µs (95% CI {ci['lower_bound'] / 1000:.1f}–{ci['upper_bound'] / 1000:.1f}) "
            f"| {1e9 / mean_ns * 100:,.0f} |"
        )
    ratio = means["serde_passes"] / means["one_pass"]
    return (
        "## Server: read a 100-event `POST /publish/batch` body\n\n"
        f"Command: `{cmd}`\n\n"
        "A 30 KB body of 100 `backtest.progress` events is read into events plus the `id`, `channel` "
        "and `type` each answer needs; both ways run side by side in one run (the former reading "
        "is kept in the benchmark as the baseline).\n\n"
        "| reading | mean per body | events/s, one core |\n|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nOne pass is **{ratio:.1f}×** as fast.\n"
    )
