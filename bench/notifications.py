"""7. Notifications: webhook deliveries/s of one notifications worker vs the bare transport.

Runs bench/webhook_throughput.py (its own scratch database, receiver and worker) in a
subprocess with a deadline and reads its figures.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys

from bench.harness import ROOT, BenchError

NAME = "notifications"
EVENTS = 1000
# Its figures (the worker's banner shares its stdout).
FIGURES = re.compile(r"^(events=|worker: \d|baseline |ratio )")


def run(ctx, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    timeout = max(30.0, min(180.0, ctx.remaining() - 10))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.webhook_throughput", "--events", str(EVENTS)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGINT: its `finally` stops its worker and drops its database.
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise BenchError(f"webhook_throughput did not finish within {timeout:.0f} s") from None
    rate = re.search(r"worker: (\d+) deliveries/s", out)
    base = re.search(r"baseline \(.*\): (\d+)/s", out)
    if proc.returncode != 0 or rate is None or base is None:
        raise BenchError(f"webhook_throughput failed: {out}\n{err[-2000:]}")
    ctx.results.add(
        NAME,
        "deliveries/s, 1 worker",
        float(rate.group(1)),
        float(base.group(1)),
        unit="/s",
        note="baseline: sequential deliver(), no DB",
    )
    figures = [line for line in out.splitlines() if FIGURES.match(line)]
    ctx.results.details[NAME] = {"events": EVENTS, "output": figures}
