"""`make bench`: every benchmark against its baseline, one table, bench/results.json.

    .venv/bin/python -m bench [--only ingestion,reads] [--budget 570] [--out PATH]

The whole run keeps to a time budget (default 20 minutes; the growth curves alone take two
to eight, most of it loading a million rows into each grown table): a benchmark that would
start too late is skipped and said so. Every process it started is stopped and every
scratch database and Redis key is dropped however it ends (error, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import harness

# The caller's environment, before the run's own settings are put into os.environ.
CALLER_ENV = dict(os.environ)
NOTES = (
    "The load generator (wrk, or this process) shares the machine with the system measured.",
    "Rate limits are raised to 1000000/minute for the run (RATE_LIMIT_*), so no request is 429.",
    "APP_ENV=development with Firebase emulator tokens; LOG_LEVEL=WARNING for every process.",
    "Servers: gunicorn 'webapp:create_app()' --workers 3 --worker-class gthread --threads 8"
    " --no-control-socket (Procfile), the"
    " baselines under the same settings; workers: celery worker --concurrency 2 -E.",
    "Ingestion: the worker holds the payments queue while wrk runs (8 connections, 5 s), then"
    " settles every accepted webhook.",
    "Uncached reads: the same app with its cache replaced by a pass-through (every read from"
    " PostgreSQL).",
)


def _benches() -> list[tuple[str, float, Callable[[Any], None]]]:
    """(name, seconds it needs at least, run) in running order."""
    from bench import (
        avatars,
        growth,
        ingestion,
        notifications,
        reads,
        settlement,
        spending,
        workers_memory,
    )

    return [
        ("ingestion", 90, ingestion.run),
        ("settlement", 90, settlement.run),
        ("spending", 40, spending.run),
        ("reads", 30, reads.run),
        ("memory", 2, workers_memory.run),
        ("avatar", 40, avatars.run),
        ("notifications", 40, lambda ctx: notifications.run(ctx, CALLER_ENV)),
        ("growth", 300, growth.run),
    ]


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--budget", type=float, default=1200, help="seconds for the whole run")
    parser.add_argument("--out", type=Path, default=harness.BENCH_DIR / "results.json")
    args = parser.parse_args(argv)
    if not harness.wrk_installed():
        print("error: wrk is not installed (`apt-get install wrk`)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _terminate)
    benches = _benches()
    if args.only:
        wanted = set(args.only.split(","))
        benches = [b for b in benches if b[0] in wanted]
    machine = harness.machine()

    from bench.context import Context

    ctx = Context(args.budget)
    failed = []
    try:
        ctx.start()
        for name, needs, run in benches:
            if ctx.remaining() < needs:
                ctx.results.notes.append(f"{name}: skipped, {ctx.remaining():.0f} s left")
                continue
            print(f"[{ctx.elapsed():5.0f} s] {name}…", file=sys.stderr, flush=True)
            try:
                run(ctx)
            except Exception as exc:
                failed.append(name)
                ctx.results.notes.append(f"{name}: FAILED: {exc}")
                traceback.print_exc()
    finally:
        try:
            ctx.close()
        except Exception as exc:
            ctx.results.notes.append(f"clean-up: {exc}")
    print()
    for note in NOTES:
        print(f"- {note}")
    print(
        f"- Machine: {machine['nproc']} cores, {machine['cpu']}, {machine['ram_gb']} GB RAM;"
        f" load average at start {machine['loadavg_at_start']}"
    )
    print()
    print(ctx.results.table())
    for note in ctx.results.notes:
        print(f"- {note}")
    report = ctx.results.as_json(machine, ctx.elapsed())
    report["notes"] = [*NOTES, *report["notes"]]
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{ctx.elapsed():.0f} s; results in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
