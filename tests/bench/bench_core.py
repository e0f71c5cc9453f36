"""courier-core: decode and dispatch of one event frame through the state machine."""
from common import criterion_estimate, sh


def run():
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
