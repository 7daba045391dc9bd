"""Outgoing webhooks: endpoints, the delivery log, redelivery and the fan-out of
notifications into deliveries (sending is in market/outbound/sending.py).

Times that decide what is due come from the database clock (`now()`), so web and worker hosts
whose clocks differ a little still agree. Lock order, everywhere: `webhook_endpoints` rows
before `webhook_deliveries` rows, each set in id order.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, selectinload

from market import pagination
from market.db import locked
from market.errors import ConflictError, NotFoundError, ValidationError
from market.identity import admins
from market.models import Notification, User, WebhookDelivery
from market.models import WebhookEndpoint as Endpoint
from market.models.notifications import NOTIFICATION_KINDS
from market.outbound import transport

EVENT_TYPES = NOTIFICATION_KINDS
# Alerts are written once per admin (market/ops/alerts.py), so they reach an admin's endpoints
# only through that admin's own row: matching them for every admin endpoint would send each
# alert once per admin.
ADMIN_ADDRESSED = frozenset({"alert.triggered", "alert.resolved"})
MAX_ENDPOINTS_PER_USER = 20


def db_now(session: Session) -> datetime:
    """The database's clock (its transaction start time): the one clock every host shares."""
    return session.execute(select(func.now())).scalar_one()


# Endpoints ------------------------------------------------------------------------------------


def _check_events(events: Sequence[str], *, owner: User) -> list[str]:
    unique = sorted(set(events))
    if not unique:
        raise ValidationError("subscribe to at least one event type")
    unknown = [e for e in unique if e not in EVENT_TYPES]
    if unknown:
        raise ValidationError(f"unknown event types: {', '.join(unknown)}")
    if not owner.is_admin and ADMIN_ADDRESSED.intersection(unique):
        raise ValidationError("alert events are sent to administrators only")
    return unique


def create_endpoint(
    session: Session,
    *,
    owner: User,
    url: str,
    events: Sequence[str],
    allowed_hosts: frozenset[str],
    description: str | None = None,
) -> Endpoint:
    """Register an endpoint with a fresh secret; DestinationRefusedError for a refused URL."""
    checked = _check_events(events, owner=owner)
    transport.check_destination(url, allowed_hosts=allowed_hosts)
    count = session.execute(
        select(func.count()).select_from(Endpoint).where(Endpoint.owner_id == owner.id)
    ).scalar_one()
    if count >= MAX_ENDPOINTS_PER_USER:
        raise ValidationError(f"at most {MAX_ENDPOINTS_PER_USER} webhook endpoints per user")
    endpoint = Endpoint(
        owner_id=owner.id,
        url=url,
        events=checked,
        description=description,
        secret=transport.generate_secret(),
        enabled=True,
    )
    session.add(endpoint)
    session.flush()
    return endpoint


def visible_endpoints(session: Session, *, viewer: User) -> list[Endpoint]:
    """The viewer's endpoints, or every endpoint for an admin, newest first."""
    stmt = select(Endpoint).order_by(Endpoint.created_at.desc(), Endpoint.id)
    if not viewer.is_admin:
        stmt = stmt.where(Endpoint.owner_id == viewer.id)
    return list(session.execute(stmt).scalars())


def visible_endpoint(
    session: Session, endpoint_id: uuid.UUID, *, viewer: User, lock: bool = False
) -> Endpoint:
    """The endpoint if the viewer owns it (or is an admin); NotFoundError otherwise."""
    stmt = select(Endpoint).where(Endpoint.id == endpoint_id)
    if not viewer.is_admin:
        stmt = stmt.where(Endpoint.owner_id == viewer.id)
    stmt = locked(stmt, lock)
    endpoint = session.execute(stmt).scalar_one_or_none()
    if endpoint is None:
        raise NotFoundError("no such webhook endpoint")
    return endpoint


def update_endpoint(
    session: Session,
    endpoint: Endpoint,
    *,
    changes: dict[str, Any],
    allowed_hosts: frozenset[str],
) -> Endpoint:
    """Apply a PATCH (url, events, description, enabled) to a locked endpoint."""
    if "url" in changes and changes["url"] != endpoint.url:
        transport.check_destination(changes["url"], allowed_hosts=allowed_hosts)
        endpoint.url = changes["url"]
    if "events" in changes:
        # What the endpoint's owner may subscribe to, whoever (an admin) makes the change.
        owner = session.get(User, endpoint.owner_id)
        assert owner is not None  # the endpoint row references it
        endpoint.events = _check_events(changes["events"], owner=owner)
    if "description" in changes:
        endpoint.description = changes["description"]
    if changes.get("enabled") is True and not endpoint.enabled:
        endpoint.enabled = True
        endpoint.disabled_at = endpoint.disabled_reason = endpoint.failing_since = None
        endpoint.consecutive_failures = 0
    elif changes.get("enabled") is False and endpoint.enabled:
        disable_endpoint(session, endpoint, reason="disabled by its owner", now=db_now(session))
    session.flush()
    return endpoint


def delete_endpoint(session: Session, endpoint: Endpoint) -> None:
    """Delete the endpoint with its deliveries and their attempts."""
    session.delete(endpoint)
    session.flush()


def disable_endpoint(session: Session, endpoint: Endpoint, *, reason: str, now: datetime) -> None:
    """Disable a locked endpoint and end its pending deliveries (they can be redelivered)."""
    endpoint.enabled = False
    endpoint.disabled_at = now
    endpoint.disabled_reason = reason[:300]
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.state == "pending")
        .values(state="failed", next_attempt_at=None, last_error=f"endpoint disabled: {reason}")
        .execution_options(synchronize_session=False)
    )


def end_foreign_deliveries(session: Session, *, owner_id: uuid.UUID, reason: str) -> int:
    """Fail the pending deliveries of other users' events to `owner_id`'s endpoints.

    For an admin whose rights were just revoked: what was queued under them is not sent.
    Returns how many were ended (idempotent: a rerun finds none).
    """
    foreign = select(Notification.id).where(Notification.user_id != owner_id)
    mine = select(Endpoint.id).where(Endpoint.owner_id == owner_id)
    ended = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id.in_(mine),
            WebhookDelivery.state == "pending",
            WebhookDelivery.notification_id.in_(foreign),
        )
        .values(state="failed", next_attempt_at=None, last_error=reason[:300])
        .execution_options(synchronize_session=False)
    )
    return int(ended.rowcount or 0)


# Delivery log and redelivery -------------------------------------------------------------------


def endpoint_deliveries(
    session: Session,
    endpoint_id: uuid.UUID,
    *,
    state: str | None,
    offset: int,
    limit: int,
    count_up_to: int | None = None,
) -> tuple[list[WebhookDelivery], int]:
    """One page of the endpoint's deliveries with their attempts, newest first, and the total
    (counted no further than `count_up_to`; None: all)."""
    where = [WebhookDelivery.endpoint_id == endpoint_id]
    if state:
        where.append(WebhookDelivery.state == state)
    total = pagination.count_up_to(session, select(WebhookDelivery.id).where(*where), count_up_to)
    rows = session.execute(
        select(WebhookDelivery)
        .where(*where)
        .options(selectinload(WebhookDelivery.attempts))
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
        .offset(offset)
        .limit(limit)
    ).scalars()
    return list(rows), total


def endpoint_delivery(
    session: Session, endpoint_id: uuid.UUID, delivery_id: uuid.UUID, *, lock: bool = False
) -> WebhookDelivery:
    """One delivery of the endpoint, with its attempts; NotFoundError otherwise."""
    stmt = select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint_id
    )
    stmt = locked(stmt, lock)
    found = session.execute(
        stmt.options(selectinload(WebhookDelivery.attempts))
    ).scalar_one_or_none()
    if found is None:
        raise NotFoundError("no such delivery")
    return found


def request_redelivery(
    session: Session, endpoint: Endpoint, delivery_id: uuid.UUID
) -> WebhookDelivery:
    """Make the delivery due now, same webhook-id; a finished one gets exactly one more try."""
    if not endpoint.enabled:
        raise ConflictError("the endpoint is disabled; enable it before redelivering")
    found = endpoint_delivery(session, endpoint.id, delivery_id, lock=True)
    now = db_now(session)
    if found.state != "pending":
        found.state = "pending"
        found.auto_retry = False
    # A delivery in flight right now may then be sent twice, with the same webhook-id:
    # receivers dedupe on it, which is what the id is for.
    found.next_attempt_at = now
    found.redelivery_requested_at = now
    session.flush()
    return found


# Fan-out ---------------------------------------------------------------------------------------


def payload_of(notification: Notification) -> str:
    """The JSON body every endpoint receives for `notification`."""
    created = notification.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    data = {
        **(notification.data or {}),
        "notification_id": str(notification.id),
        "user_id": str(notification.user_id),
    }
    return json.dumps(
        {"type": notification.kind, "timestamp": created, "data": data}, separators=(",", ":")
    )


def _matches(endpoint: Endpoint, owner_is_admin: bool, notification: Notification) -> bool:
    if notification.kind not in endpoint.events:
        return False
    if endpoint.owner_id == notification.user_id:
        return True
    return owner_is_admin and notification.kind not in ADMIN_ADDRESSED


def fan_out(session: Session, batch: Sequence[Notification]) -> list[uuid.UUID]:
    """Create one delivery per matching enabled endpoint; returns the new ids (idempotent)."""
    if not batch:
        return []
    kinds = sorted({n.kind for n in batch})
    user_ids = {n.user_id for n in batch}
    # Every user's events go to an admin's endpoint only while the admin's rights hold without
    # a token (market/identity/admins.py): a revoked admin, or one whose proof expired, gets
    # their own events only.
    admin_now = admins.in_force()
    candidates = session.execute(
        select(Endpoint, admin_now)
        .join(User, User.id == Endpoint.owner_id)
        .where(
            Endpoint.enabled.is_(True),
            Endpoint.events.overlap(kinds),
            or_(Endpoint.owner_id.in_(user_ids), admin_now),
        )
    ).all()
    rows = [
        {
            "endpoint_id": endpoint.id,
            "notification_id": notification.id,
            "event_type": notification.kind,
            "payload": payload_of(notification),
            "next_attempt_at": func.now(),
        }
        for notification in batch
        for endpoint, owner_is_admin in candidates
        if _matches(endpoint, owner_is_admin, notification)
    ]
    if not rows:
        return []
    stmt = (
        insert(WebhookDelivery)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["endpoint_id", "notification_id"])
        .returning(WebhookDelivery.id)
    )
    return list(session.execute(stmt).scalars())
