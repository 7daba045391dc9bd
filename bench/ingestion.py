"""1. Webhook ingestion: signed MercadoPago notifications POSTed by wrk, each for a new payment.

Project: the real endpoint under the Procfile's gunicorn (verify, store in the inbox, record
the settlement job, send its chain). Baseline: a Flask app under the same gunicorn settings
that verifies the same HMAC and answers 200. The worker does not consume the payments queue
while wrk runs (the queue absorbs the burst); then it does, and every accepted notification
must end credited: the count is part of the result.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy import func, select

from bench import harness
from bench.context import Context
from bench.harness import BenchError, request_line

NAME = "ingestion"
SETTLEMENT = "credits.settlement"
DURATION_S = 5
# More unique payments than the endpoint can take in DURATION_S (wrk's `wrapped` says if not).
SUPPLY = 3000


def _request_file(ctx: Context, payment_ids: list[int], directory: Path, name: str) -> Path:
    """One freshly signed notification per payment (the signature's ts must be recent)."""
    path = directory / name
    lines = []
    for payment_id in payment_ids:
        target, headers, body = ctx.signed_webhook(payment_id)
        lines.append(request_line("POST", target, headers, body))
    path.write_text("\n".join(lines) + "\n")
    return path


def _accepted(ctx: Context) -> list[int]:
    """Payment ids of the notifications the endpoint stored (each starts a settlement)."""
    from market.models import PaymentEvent

    with ctx.sessions() as session:
        return [int(i) for i in session.execute(select(PaymentEvent.data_id)).scalars()]


def _unprocessed(ctx: Context) -> int:
    from market.models import PaymentEvent

    with ctx.sessions() as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(PaymentEvent)
                .where(PaymentEvent.processed_at.is_(None))
            ).scalar_one()
        )


def run(ctx: Context) -> None:
    users = ctx.make_users(50)
    payment_ids = ctx.paid_purchases(users, SUPPLY)
    ctx.worker  # noqa: B018  (started before the measurement, then told to hold payments)
    ctx.pause_payments(True)
    with tempfile.TemporaryDirectory(prefix="spartan-bench-hooks-") as tmp:
        base_file = _request_file(ctx, payment_ids, Path(tmp), "baseline.txt")
        base = harness.wrk(ctx.baseline, requests_file=base_file, duration_s=DURATION_S)
        project_file = _request_file(ctx, payment_ids, Path(tmp), "project.txt")
        proj = harness.wrk(ctx.web, requests_file=project_file, duration_s=DURATION_S)
    if proj.errors or base.errors:
        raise BenchError(f"non-2xx or socket errors: project {proj.raw}, baseline {base.raw}")
    accepted = _accepted(ctx)
    with harness.timed() as elapsed:
        ctx.pause_payments(False)
        harness.wait_until(
            lambda: ctx.jobs_finished(SETTLEMENT) >= len(accepted),
            timeout=max(30, min(300, ctx.remaining() - 200)),
            what=f"settling {len(accepted)} accepted webhooks",
            every=0.2,
        )
        drained = elapsed()
    settled = ctx.credited(accepted)
    failed = ctx.jobs_failed()
    if failed:
        raise BenchError(f"{failed} settlement jobs failed")
    r = ctx.results
    r.add(NAME, "throughput", proj.rps, base.rps, unit="req/s", target=0.5)
    r.add(NAME, "latency p50", proj.p50_ms, base.p50_ms, unit="ms", higher_is_better=False)
    r.add(NAME, "latency p99", proj.p99_ms, base.p99_ms, unit="ms", higher_is_better=False)
    r.add(
        NAME,
        "accepted, then settled",
        settled,
        len(accepted),
        unit="",
        target=1.0,
        note=f"every job done {drained:.1f} s after the worker resumed",
    )
    ctx.results.details[NAME] = {
        "duration_s": DURATION_S,
        "connections": 8,
        "wrk_threads": 2,
        "project": proj.raw,
        "baseline": base.raw,
        "accepted": len(accepted),
        "settled": settled,
        "inbox_unprocessed": _unprocessed(ctx),
        "drain_s": round(drained, 2),
        "settled_per_s": round(len(accepted) / drained, 1) if drained else None,
        "project_requests_repeated": proj.wrapped,
    }
    if proj.wrapped:
        ctx.results.notes.append(
            f"ingestion: the {SUPPLY} unique payments ran out ({proj.wrapped} wraps); later "
            "requests repeated a notification (answered as duplicates)"
        )
