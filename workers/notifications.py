"""Tasks of the `notifications` queue: fan-out of recorded notifications and webhook sending,
in batches (one task per batch, never one per row)."""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from market import notifications
from market.models.base import utcnow
from market.outbound import endpoints, sending, transport
from workers import runtime
from workers.app import app
from workers.base import StepTask

log = logging.getLogger(__name__)

# A send task stops claiming new work after this long (well inside the 240 s soft limit);
# whatever is still due is picked up by `retry_deliveries` on its next beat.
SEND_BUDGET_S = 120.0
RETRY_BUDGET_S = 60.0


@app.task(base=StepTask, name="notifications.dispatch_pending")
def dispatch_pending(*, batch_size: int = 500) -> dict[str, int]:
    """Fan out every notification not yet dispatched, a batch per transaction (idempotent).

    Each batch is marked dispatched and gets its webhook deliveries in the same transaction,
    then ONE `send_deliveries` task is sent for the batch's new deliveries.
    """
    total = sent = 0
    while True:
        with runtime.transaction() as session:
            batch = notifications.claim_undispatched(session, limit=batch_size)
            delivery_ids = endpoints.fan_out(session, batch)
            now = utcnow()
            for notification in batch:
                notification.dispatched_at = now
        # After the commit, so the sender sees the rows. Should this send be lost, the
        # deliveries are due already and `retry_deliveries` sends them.
        if delivery_ids:
            send_deliveries.delay(delivery_ids=[str(i) for i in delivery_ids])
        total += len(batch)
        sent += len(delivery_ids)
        if len(batch) < batch_size:
            return {"notifications_dispatched": total, "webhook_deliveries": sent}


@app.task(base=StepTask, name="notifications.send_deliveries")
def send_deliveries(*, delivery_ids: list[str]) -> dict[str, int]:
    """Make one attempt of each listed delivery that is still due (a repeat sends nothing)."""
    ids = [uuid.UUID(i) for i in delivery_ids]
    return _send_due(ids, budget_s=SEND_BUDGET_S)


@app.task(base=StepTask, name="notifications.retry_deliveries")
def retry_deliveries() -> dict[str, int]:
    """Attempt every due delivery (retries, and sends whose message was lost), in batches.

    Several runs at once share the work: claims skip rows another run holds.
    """
    return _send_due(None, budget_s=RETRY_BUDGET_S)


def _send_due(ids: list[uuid.UUID] | None, *, budget_s: float) -> dict[str, int]:
    """Claim due deliveries a batch at a time, send them outside any transaction, record."""
    s = runtime.settings()
    policy = sending.Policy.from_settings(s)
    concurrency = max(1, s.webhook_send_concurrency)
    batch_size = concurrency * 4
    lease = sending.lease_for(
        batch_size, concurrency=concurrency, total_timeout_s=s.webhook_total_timeout_s
    )
    counts = {"attempted": 0, "succeeded": 0, "failed": 0, "endpoints_disabled": 0}
    started = time.monotonic()
    # Listed ids are claimed a slice at a time; without a list, whatever is due.
    slices = iter(
        [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)] if ids is not None else []
    )
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="webhook") as pool:
        while time.monotonic() - started < budget_s:
            chunk = next(slices, None)
            if ids is not None and chunk is None:
                break
            with runtime.transaction() as session:
                claims = sending.claim_due(session, limit=batch_size, lease=lease, ids=chunk)
            if not claims and chunk is None:
                break
            results = list(pool.map(_attempt, claims))
            with runtime.transaction() as session:
                disabled = sending.record_outcomes(session, results, policy=policy)
            if disabled:
                # The owners' "endpoint disabled" notifications go out like any other.
                dispatch_pending.delay()
            counts["attempted"] += len(results)
            counts["succeeded"] += sum(1 for _, o in results if o.succeeded)
            counts["failed"] += sum(1 for _, o in results if not o.succeeded)
            counts["endpoints_disabled"] += len(disabled)
    return counts


def _attempt(
    claim: sending.Claim,
) -> tuple[sending.Claim, transport.DeliveryOutcome]:
    """One signed POST; the timestamp is the attempt's own, as receivers check its age."""
    s = runtime.settings()
    try:
        outcome = transport.deliver(
            claim.url,
            secret=claim.secret,
            msg_id=str(claim.delivery_id),
            timestamp=utcnow(),
            body=claim.payload.encode("utf-8"),
            allowed_hosts=s.webhook_allowed_hosts,
            connect_timeout=s.webhook_connect_timeout_s,
            total_timeout=s.webhook_total_timeout_s,
        )
    except Exception as exc:  # a bug must not lose the other results of the batch
        log.exception("webhook delivery %s crashed", claim.delivery_id)
        outcome = transport.DeliveryOutcome(
            None, 0, f"internal error: {type(exc).__name__}", True, None, ""
        )
    return claim, outcome
