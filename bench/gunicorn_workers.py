"""Which gunicorn worker class and counts serve the web process best (a measurement, not a
test): sync vs gthread (2, 4, 8 threads) at WEB_CONCURRENCY 2, 3 and 4, on the webhook
ingestion path and on a cached `GET /credits/me`, every shape started in turn and measured
back to back with wrk, in interleaved rounds so a change of the machine's load hits all alike.

    .venv/bin/python -m bench.gunicorn_workers [--duration 4] [--rounds 2] [--connections 16]
        [--shapes 2,3,2x8,3x8]

Webhooks name payment ids nobody has seen (the statement's owner lookup finds no purchase),
no worker consumes them: this measures the web process, which is all that changes here.
Prints one Markdown table (requests/s and p99 of each path for each shape).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

from bench import harness
from bench.context import Context
from bench.harness import request_line

ME = "/api/v1/advanced/credits/me"
# (workers, threads): None is the sync worker class.
SHAPES = [(w, None) for w in (2, 3, 4)] + [(w, t) for w in (2, 3, 4) for t in (2, 4, 8)]


def _label(workers: int, threads: int | None) -> str:
    if threads is None:
        return f"sync, {workers} workers"
    return f"gthread, {workers} workers x {threads} threads"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--shapes", help="e.g. 2,3x8 (workers, or workers x threads for gthread); default: all"
    )
    args = parser.parse_args()
    shapes = SHAPES
    if args.shapes:
        shapes = [
            (int(w), int(t) if t else None)
            for w, _, t in (part.partition("x") for part in args.shapes.split(","))
        ]
    machine = harness.machine()
    ctx = Context(deadline_s=3600)
    payment_ids = itertools.count(700_000_000_000)
    figures: dict[tuple[int, int | None], dict[str, list[harness.WrkResult]]] = {
        shape: {"webhook": [], "me": []} for shape in shapes
    }
    try:
        ctx.start()
        user = ctx.make_users(1)[0]
        ctx.fund([user], 100)
        with tempfile.TemporaryDirectory(prefix="spartan-bench-gunicorn-") as tmp:
            for round_ in range(args.rounds):
                for workers, threads in shapes:
                    print(f"round {round_ + 1}: {_label(workers, threads)}", file=sys.stderr)
                    url = harness.gunicorn(
                        ctx.stack, "web", "webapp:create_app()", ctx.env(), ME,
                        workers=workers, threads=threads,
                    )  # fmt: skip
                    # Fresh signatures, new payments: every request is a new event.
                    lines = [
                        request_line("POST", *ctx.signed_webhook(next(payment_ids)))
                        for _ in range(6000)
                    ]
                    hooks = Path(tmp) / "hooks.txt"
                    hooks.write_text("\n".join(lines) + "\n")
                    shape = figures[(workers, threads)]
                    harness.wrk(url + ME, headers=user.auth, duration_s=1)  # caches the balance
                    shape["webhook"].append(
                        harness.wrk(
                            url,
                            requests_file=hooks,
                            duration_s=args.duration,
                            connections=args.connections,
                        )
                    )
                    shape["me"].append(
                        harness.wrk(
                            url + ME,
                            headers=user.auth,
                            duration_s=args.duration,
                            connections=args.connections,
                        )
                    )
                    for proc in [p for p in ctx.stack.procs if p.name == "web"]:
                        ctx.stack.stop(proc)
    finally:
        ctx.close()
    print(
        f"\n{machine['nproc']} cores, load average at start {machine['loadavg_at_start']};"
        f" wrk {args.connections} connections, {args.rounds} rounds of {args.duration:g} s"
        " per path and shape\n"
    )
    print("| shape | webhook req/s | webhook p99 ms | cached /me req/s | /me p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    for shape, runs in figures.items():
        row = [_label(*shape)]
        for path in ("webhook", "me"):
            done = runs[path]
            rps = sum(r.requests for r in done) / max(sum(r.duration_s for r in done), 1e-9)
            p99 = sum(r.p99_ms for r in done) / max(len(done), 1)
            row += [f"{rps:,.0f}", f"{p99:,.1f}"]
        row.append(str(sum(r.errors for path in runs.values() for r in path)))
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
