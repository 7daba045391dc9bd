"""5. Reads: GET /credits/me cached and uncached, against a bare Flask JSON endpoint.

All three under the Procfile's gunicorn settings, driven by wrk with one user's token.
Uncached is the same app with its cache replaced by a pass-through
(bench/baseline_apps.py:uncached_app): every request loads the balance and the latest
movements from PostgreSQL, as when Redis is down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench import harness
from bench.baseline_apps import JSON_PATH
from bench.context import Context
from bench.harness import BenchError

NAME = "reads"
DURATION_S = 6  # per target, in ROUNDS interleaved rounds
ROUNDS = 2
ME = "/api/v1/advanced/credits/me"


@dataclass
class Combined:
    """Rounds of one target: requests over total time; percentiles averaged over rounds."""

    rps: float
    p50_ms: float
    p99_ms: float
    raw: list[dict[str, Any]]


def _combined(results: list[harness.WrkResult]) -> Combined:
    return Combined(
        sum(r.requests for r in results) / sum(r.duration_s for r in results),
        sum(r.p50_ms for r in results) / len(results),
        sum(r.p99_ms for r in results) / len(results),
        [r.raw for r in results],
    )


def run(ctx: Context) -> None:
    user = ctx.make_users(1)[0]
    for _ in range(10):  # ten movements: a full page of `recent`
        ctx.fund([user], 100)
    uncached_url = harness.gunicorn(
        ctx.stack, "uncached", "bench.baseline_apps:uncached_app()", ctx.env(), ME
    )
    targets = {
        "bare": (ctx.baseline + JSON_PATH, {}),
        "cached": (ctx.web + ME, user.auth),
        "uncached": (uncached_url + ME, user.auth),
    }
    runs: dict[str, list[harness.WrkResult]] = {name: [] for name in targets}
    # Interleaved rounds: a change of the machine's load hits the three alike.
    for _ in range(ROUNDS):
        for name, (url, headers) in targets.items():
            result = harness.wrk(url, headers=headers, duration_s=DURATION_S / ROUNDS)
            if result.errors:
                raise BenchError(f"reads ({name}) had errors: {result.raw}")
            runs[name].append(result)
    bare, cached, uncached = (_combined(runs[name]) for name in targets)
    r = ctx.results
    r.add(NAME, "cached throughput", cached.rps, bare.rps, unit="req/s", target=0.6)
    r.add(NAME, "uncached throughput", uncached.rps, bare.rps, unit="req/s")
    r.add(NAME, "cached p50", cached.p50_ms, bare.p50_ms, unit="ms", higher_is_better=False)
    r.add(NAME, "uncached p50", uncached.p50_ms, bare.p50_ms, unit="ms", higher_is_better=False)
    r.add(NAME, "cached p99", cached.p99_ms, bare.p99_ms, unit="ms", higher_is_better=False)
    r.details[NAME] = {
        "duration_s": DURATION_S,
        "rounds": ROUNDS,
        "connections": 8,
        "bare": bare.raw,
        "cached": cached.raw,
        "uncached": uncached.raw,
    }
