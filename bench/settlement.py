"""2. Settlement: webhook accepted → credits visible in GET /credits/me, and a burst of 1,000.

Project: the settlement chain (fetch_payment → apply_payment; a refund step only when due) run
by `celery -A workers.app worker` as the Procfile starts it. Baseline: a chain of as many
no-op steps, same broker and worker settings (bench/noop_tasks.py), timed from sending to
its last result. Latency is sequential (one purchase at a time) so it is not queueing time.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from celery import chain
from sqlalchemy import func, select

from bench import harness
from bench.context import BenchUser, Context
from bench.harness import BenchError, percentile

NAME = "settlement"
SEQUENTIAL = 200
BURST = 1000
POLL_S = 0.005
ME = "/api/v1/advanced/credits/me"


def _balance(session: requests.Session, url: str, user: BenchUser) -> int:
    answer = session.get(url + ME, headers=user.auth, timeout=10)
    answer.raise_for_status()
    return int(answer.json()["balance"])


def _sequential(ctx: Context) -> list[float]:
    """Seconds from each webhook's 200 to the balance showing its credits."""
    from workflows.settlement import KIND

    user = ctx.make_users(1)[0]
    payment_ids = ctx.paid_purchases([user], SEQUENTIAL)
    http = requests.Session()
    expected = _balance(http, ctx.web, user)
    before = ctx.jobs_finished(KIND)
    latencies = []
    for payment_id in payment_ids:
        path, headers, body = ctx.signed_webhook(payment_id)
        answer = http.post(ctx.web + path, data=body, headers=headers, timeout=10)
        accepted_at = time.perf_counter()
        if answer.status_code != 200 or answer.json().get("status") != "accepted":
            raise BenchError(f"webhook not accepted: {answer.status_code} {answer.text}")
        expected += 100
        deadline = accepted_at + 30
        while _balance(http, ctx.web, user) < expected:
            if time.perf_counter() > deadline:
                raise BenchError(f"payment {payment_id} not credited within 30 s")
            time.sleep(POLL_S)
        latencies.append(time.perf_counter() - accepted_at)
        # Its last steps run before the next purchase: each one meets an idle worker.
        harness.wait_until(
            lambda n=len(latencies): ctx.jobs_finished(KIND) - before >= n,
            timeout=30,
            what=f"the settlement of payment {payment_id}",
            every=POLL_S,
        )
    return latencies


def _steps_per_settlement(ctx: Context) -> int:
    """How many steps the settlement workflow has (the bare chain gets as many)."""
    from market.models import Job, JobStep
    from workflows.settlement import KIND

    with ctx.sessions() as session:
        job_id = session.execute(select(Job.id).where(Job.kind == KIND).limit(1)).scalar_one()
        return int(
            session.execute(
                select(func.count()).select_from(JobStep).where(JobStep.job_id == job_id)
            ).scalar_one()
        )


def _burst(ctx: Context) -> tuple[float, float]:
    """Seconds from the first of BURST webhooks sent (8 clients) to the last one credited,
    and to the last settlement job finished (all its steps, as the bare chain's)."""
    from workflows.settlement import KIND

    users = ctx.make_users(50)
    payment_ids = ctx.paid_purchases(users, BURST)
    hooks = [ctx.signed_webhook(p) for p in payment_ids]
    before = ctx.jobs_finished(KIND)
    local: dict[int, requests.Session] = {}

    def post(hook: tuple[str, dict[str, str], str]) -> int:
        session = local.setdefault(threading.get_ident(), requests.Session())
        path, headers, body = hook
        return session.post(ctx.web + path, data=body, headers=headers, timeout=30).status_code

    timeout = max(30, min(300, ctx.remaining() - 150))
    with harness.timed() as elapsed:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(post, hooks))
        if any(s != 200 for s in statuses):
            raise BenchError(f"burst: {sum(s != 200 for s in statuses)} webhooks not accepted")
        harness.wait_until(
            lambda: ctx.credited(payment_ids) == BURST,
            timeout=timeout,
            what=f"crediting a burst of {BURST}",
            every=0.1,
        )
        credited = elapsed()
        harness.wait_until(
            lambda: ctx.jobs_finished(KIND) - before >= BURST,
            timeout=timeout,
            what=f"finishing the jobs of a burst of {BURST}",
            every=0.1,
        )
        finished = elapsed()
    if ctx.jobs_failed():
        raise BenchError(f"{ctx.jobs_failed()} settlement jobs failed")
    return credited, finished


def _bare(ctx: Context, steps: int) -> tuple[list[float], float]:
    """The no-op chain: sequential round trips, then a burst of BURST chains."""
    from bench.noop_tasks import noop_step

    ctx.noop_worker  # noqa: B018
    latencies = []
    for _ in range(SEQUENTIAL):
        started = time.perf_counter()
        chain(*(noop_step.si() for _ in range(steps))).apply_async().get(timeout=30)
        latencies.append(time.perf_counter() - started)
    with harness.timed() as elapsed:
        results = [
            chain(*(noop_step.si() for _ in range(steps))).apply_async() for _ in range(BURST)
        ]
        for result in results:
            result.get(timeout=max(30, ctx.remaining() - 150))
        burst = elapsed()
    return latencies, burst


def run(ctx: Context) -> None:
    ctx.worker  # noqa: B018
    project = _sequential(ctx)
    steps = _steps_per_settlement(ctx)
    burst_credited, project_burst = _burst(ctx)
    bare, bare_burst = _bare(ctx, steps)
    r = ctx.results
    ms = 1000
    r.add(
        NAME,
        "median webhook→credits",
        harness.median(project) * ms,
        harness.median(bare) * ms,
        unit="ms",
        higher_is_better=False,
        target=1.5,
        note=f"{steps}-step chain",
    )
    r.add(
        NAME,
        "p99 webhook→credits",
        percentile(project, 99) * ms,
        percentile(bare, 99) * ms,
        unit="ms",
        higher_is_better=False,
    )
    r.add(
        NAME,
        f"burst of {BURST}",
        project_burst,
        bare_burst,
        unit="s",
        higher_is_better=False,
        target=2.0,
        note=f"8 clients; all credited after {burst_credited:.1f} s",
    )
    r.details[NAME] = {
        "sequential": SEQUENTIAL,
        "burst": BURST,
        "steps": steps,
        "poll_interval_ms": POLL_S * 1000,
        "project_ms": {
            "p50": round(harness.median(project) * ms, 2),
            "p90": round(percentile(project, 90) * ms, 2),
            "p99": round(percentile(project, 99) * ms, 2),
        },
        "bare_ms": {
            "p50": round(harness.median(bare) * ms, 2),
            "p90": round(percentile(bare, 90) * ms, 2),
            "p99": round(percentile(bare, 99) * ms, 2),
        },
        "project_burst_credited_s": round(burst_credited, 2),
        "project_burst_s": round(project_burst, 2),
        "bare_burst_s": round(bare_burst, 2),
    }
