"""Sending webhook deliveries: leasing due deliveries, recording each attempt, the retry
schedule and the disable policy, and the retention purge.

A sender claims a batch (a lease: `next_attempt_at` pushed past the batch's worst case), makes
the attempts outside any transaction, then records them. Lock order as in endpoints.py:
endpoint rows before delivery rows, each set in id order; claims never wait (SKIP LOCKED).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from market import notifications
from market.config import Settings
from market.db import lock_in_key_order
from market.identity import admins
from market.models import Notification, User, WebhookDelivery, WebhookDeliveryAttempt
from market.models import WebhookEndpoint as Endpoint
from market.outbound import transport
from market.outbound.endpoints import db_now, disable_endpoint

EXCERPT_CHARS = 1000


@dataclass(frozen=True)
class Policy:
    """How deliveries are retried and when an endpoint is given up on."""

    schedule: tuple[float, ...]
    disable_after_failures: int
    disable_after: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            schedule=settings.webhook_retry_schedule,
            disable_after_failures=settings.webhook_disable_after_failures,
            disable_after=timedelta(hours=settings.webhook_disable_after_hours),
        )


@dataclass(frozen=True)
class Claim:
    """A delivery leased to one sender for one attempt: what to send and where."""

    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    url: str
    secret: str
    payload: str
    number: int
    trigger: str


# Sending: claims and attempts -----------------------------------------------------------------


def lease_for(batch_size: int, *, concurrency: int, total_timeout_s: float) -> timedelta:
    """How long a claimed batch stays invisible to other senders: its worst case, plus margin."""
    rounds = math.ceil(batch_size / max(1, concurrency))
    return timedelta(seconds=rounds * (total_timeout_s + 1) + 30)


def claim_due(
    session: Session,
    *,
    limit: int,
    lease: timedelta,
    ids: Iterable[uuid.UUID] | None = None,
) -> list[Claim]:
    """Lease up to `limit` due deliveries of enabled endpoints for one attempt each.

    The lease (next_attempt_at pushed forward) keeps other senders off while the attempt is
    made outside any transaction; if the sender dies, the delivery is due again afterwards.
    """
    # Another user's event goes out only while the owner's admin rights still hold: a delivery
    # queued under them and retried after they lapsed is ended instead (market/identity/admins).
    allowed = or_(
        Notification.user_id.is_(None),
        Notification.user_id == Endpoint.owner_id,
        admins.in_force(),
    )
    stmt = (
        select(WebhookDelivery, Endpoint.url, Endpoint.secret, allowed)
        .join(Endpoint, Endpoint.id == WebhookDelivery.endpoint_id)
        .join(User, User.id == Endpoint.owner_id)
        .outerjoin(Notification, Notification.id == WebhookDelivery.notification_id)
        .where(
            WebhookDelivery.state == "pending",
            WebhookDelivery.next_attempt_at <= func.now(),
            Endpoint.enabled.is_(True),
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    )
    if ids is not None:
        stmt = stmt.where(WebhookDelivery.id.in_(list(ids)))
    now = db_now(session)
    claims = []
    for found, url, secret, may_send in session.execute(stmt).all():
        if not may_send:
            found.state, found.next_attempt_at = "failed", None
            found.last_error = "the endpoint owner's admin rights no longer hold"
            continue
        found.attempt_count += 1
        found.next_attempt_at = now + lease
        if found.redelivery_requested_at is not None:
            trigger = "manual"
        else:
            trigger = "initial" if found.attempt_count == 1 else "retry"
        found.redelivery_requested_at = None
        claims.append(
            Claim(
                found.id,
                found.endpoint_id,
                url,
                secret,
                found.payload,
                found.attempt_count,
                trigger,
            )
        )
    session.flush()
    return claims


def record_outcomes(
    session: Session,
    results: Sequence[tuple[Claim, transport.DeliveryOutcome]],
    *,
    policy: Policy,
) -> list[uuid.UUID]:
    """Log each attempt, settle or reschedule its delivery and apply the disable policy.

    Returns the ids of endpoints this disabled (their owners have a notification to send).
    An attempt whose lease was overtaken (a newer attempt was claimed) is logged only.
    """
    if not results:
        return []
    now = db_now(session)
    endpoints = lock_in_key_order(session, Endpoint.id, (c.endpoint_id for c, _ in results))
    deliveries = lock_in_key_order(session, WebhookDelivery.id, (c.delivery_id for c, _ in results))
    for claim, outcome in results:
        found, endpoint = deliveries.get(claim.delivery_id), endpoints.get(claim.endpoint_id)
        if found is None or endpoint is None:
            continue  # deleted with its endpoint while the attempt was in flight
        session.add(
            WebhookDeliveryAttempt(
                delivery_id=found.id,
                number=claim.number,
                trigger=claim.trigger,
                attempted_at=now - timedelta(milliseconds=outcome.duration_ms),
                status_code=outcome.status_code,
                duration_ms=outcome.duration_ms,
                error=outcome.error,
                response_excerpt=outcome.response_excerpt[:EXCERPT_CHARS] or None,
            )
        )
        latest = found.attempt_count == claim.number
        if latest or outcome.succeeded:
            found.last_attempt_at = now
            found.last_status_code = outcome.status_code
            found.last_error = outcome.error
        if outcome.succeeded:
            found.state, found.next_attempt_at = "succeeded", None
            endpoint.consecutive_failures = 0
            endpoint.failing_since = None
            endpoint.last_success_at = now
            continue
        endpoint.failing_since = endpoint.failing_since or now
        if not (latest and found.state == "pending"):
            continue
        delay = None
        if outcome.retryable and found.auto_retry:
            delay = transport.retry_delay(
                found.attempt_count, schedule=policy.schedule, retry_after_s=outcome.retry_after_s
            )
        if delay is not None:
            found.next_attempt_at = now + timedelta(seconds=delay)
        else:
            found.state, found.next_attempt_at = "failed", None
            endpoint.consecutive_failures += 1
    disabled = []
    for endpoint in endpoints.values():
        reason = _disable_reason(endpoint, policy=policy, now=now)
        if reason is not None:
            disable_endpoint(session, endpoint, reason=reason, now=now)
            _notify_disabled(session, endpoint, now=now)
            disabled.append(endpoint.id)
    session.flush()
    return disabled


def _disable_reason(endpoint: Endpoint, *, policy: Policy, now: datetime) -> str | None:
    if not endpoint.enabled:
        return None
    if endpoint.consecutive_failures >= policy.disable_after_failures:
        return f"{endpoint.consecutive_failures} deliveries in a row failed"
    if endpoint.failing_since is not None and now - endpoint.failing_since >= policy.disable_after:
        hours = (now - endpoint.failing_since).total_seconds() / 3600
        return f"every attempt failed for {hours:.1f} hours"
    return None


def _notify_disabled(session: Session, endpoint: Endpoint, *, now: datetime) -> None:
    notifications.record(
        session,
        user_id=endpoint.owner_id,
        kind="webhook_endpoint.disabled",
        title="A webhook endpoint was disabled",
        body=f"{endpoint.url} was disabled: {endpoint.disabled_reason}. Fix it, enable it again "
        "and redeliver what it missed.",
        data={
            "endpoint_id": str(endpoint.id),
            "url": endpoint.url,
            "reason": endpoint.disabled_reason,
        },
        dedupe_key=f"webhook_endpoint.disabled:{endpoint.id}:{now.isoformat()}",
    )


def purge_finished_deliveries(session: Session, *, before: datetime, limit: int) -> int:
    """Delete one batch of finished deliveries (with their attempts) last changed before `before`.

    For the retention purge (`delivery_retention_days`); safe to rerun, concurrent runs share.
    """
    ids = list(
        session.execute(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.state.in_(("succeeded", "failed")),
                WebhookDelivery.updated_at < before,
            )
            .order_by(WebhookDelivery.updated_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if ids:
        session.execute(
            delete(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids))
            .execution_options(synchronize_session=False)
        )
    return len(ids)
