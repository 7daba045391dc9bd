"""Credit purchases through MercadoPago Checkout Pro: packages, creation, the preference,
history and expiry. Settlement is in settlement.py, refunds in refunds.py (beside this module).

Its states and their allowed changes are one table in states.py; every change goes through
it, under the purchase row's lock, so duplicate, late and out-of-order notifications find
the state the previous one left.

What decides is the payment as MercadoPago answers it (GET /v1/payments/{id} or a search),
recorded in `mercadopago_payments`, never a webhook body.

Lock order: purchase (FOR UPDATE) → payment_refunds → wallet (market/ledger/__init__.py).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from market import pagination
from market.config import Settings
from market.db import locked
from market.errors import NotFoundError, ValidationError
from market.models import CreditPackage, MercadoPagoPayment, Purchase
from market.models.base import utcnow
from market.payments import states
from market.payments.mercadopago.client import MercadoPagoGateway

log = logging.getLogger(__name__)

CREDITABLE = states.CREDITABLE
IN_FLIGHT = ("pending", "in_process", "authorized", "in_mediation")
REVERSED = ("refunded", "charged_back")


def gateway_for(settings: Settings) -> MercadoPagoGateway:
    """The MercadoPago client these settings point at (the real API or the sandbox)."""
    return MercadoPagoGateway(
        settings.mercadopago_access_token,
        settings.mercadopago_api_base_url,
        timeout=settings.mercadopago_timeout_s,
    )


# Packages and purchases ---------------------------------------------------------------------


def list_packages(session: Session) -> list[CreditPackage]:
    """The packages on sale, cheapest first."""
    stmt = select(CreditPackage).where(CreditPackage.active).order_by(CreditPackage.position)
    return list(session.execute(stmt).scalars())


def create_purchase(
    session: Session, *, user_id: uuid.UUID, package_id: str, ttl_minutes: int
) -> Purchase:
    """A pending purchase of the package with a fresh external_reference (flushed)."""
    package = session.get(CreditPackage, package_id)
    if package is None or not package.active:
        # 422, not 404: the URL exists; the body names something that does not.
        raise ValidationError(
            f"no credit package {package_id!r}", errors={"package_id": ["Unknown package."]}
        )
    purchase = Purchase(
        id=uuid.uuid4(),
        user_id=user_id,
        package_id=package.id,
        credits=package.credits,
        amount=package.price,
        currency=package.currency,
        external_reference=f"sm-{uuid.uuid4().hex}",
        status="pending",
        expires_at=utcnow() + timedelta(minutes=ttl_minutes),
    )
    session.add(purchase)
    session.flush()
    states.start_purchase(session, purchase)
    return purchase


def get_purchase(session: Session, purchase_id: uuid.UUID, *, lock: bool = False) -> Purchase:
    stmt = select(Purchase).where(Purchase.id == purchase_id)
    stmt = locked(stmt, lock)
    purchase = session.execute(stmt).scalar_one_or_none()
    if purchase is None:
        raise NotFoundError("no such purchase")
    return purchase


def user_purchases(
    session: Session,
    *,
    user_id: uuid.UUID,
    offset: int = 0,
    limit: int = 20,
    count_up_to: int | None = None,
) -> tuple[list[Purchase], int]:
    """The user's purchases, newest first, and how many there are (numbered pages), counted
    no further than `count_up_to` (None: all)."""
    where = Purchase.user_id == user_id
    total = pagination.count_up_to(session, select(Purchase.id).where(where), count_up_to)
    rows = session.execute(
        select(Purchase)
        .where(where)
        .order_by(Purchase.created_at.desc(), Purchase.id.desc())
        .offset(offset)
        .limit(limit)
    ).scalars()
    return list(rows), total


def purchases_page(
    session: Session, *, user_id: uuid.UUID, cursor: str | None = None, limit: int = 20
) -> tuple[list[Purchase], str | None]:
    """One keyset page of the user's purchases, newest first, and the next page's cursor.

    Index-backed at any depth (ix_purchases_user_created_id), and uncounted: the cost is the
    page's, never the history's.
    """
    stmt = pagination.newest_first(
        select(Purchase).where(Purchase.user_id == user_id),
        Purchase.created_at,
        Purchase.id,
        cursor=cursor,
        limit=limit,
    )
    return pagination.split_page(list(session.execute(stmt).scalars()), limit)


def _mp_datetime(when: datetime) -> str:
    # MercadoPago's format: milliseconds and an explicit offset.
    return when.isoformat(timespec="milliseconds")


def preference_body(purchase: Purchase, settings: Settings) -> dict[str, Any]:
    """The Checkout Pro preference for the purchase."""
    back = checkout_return_url(purchase, settings)
    body: dict[str, Any] = {
        "items": [
            {
                "id": purchase.package_id,
                "title": f"{purchase.credits} Spartan Market credits",
                "quantity": 1,
                "unit_price": purchase.amount,
                "currency_id": purchase.currency,
            }
        ],
        "external_reference": purchase.external_reference,
        "back_urls": {
            "success": f"{back}?result=success",
            "failure": f"{back}?result=failure",
            "pending": f"{back}?result=pending",
        },
        "auto_return": "approved",
        "metadata": {
            "purchase_id": str(purchase.id),
            "user_id": str(purchase.user_id),
            "credits": purchase.credits,
        },
        # The checkout closes when the purchase expires, and so does a cash or ticket
        # payment started before: none can arrive days after the purchase expired.
        "expires": True,
        "expiration_date_from": _mp_datetime(purchase.created_at or utcnow()),
        "expiration_date_to": _mp_datetime(purchase.expires_at),
        "date_of_expiration": _mp_datetime(purchase.expires_at),
    }
    if settings.mercadopago_webhook_url:
        body["notification_url"] = notification_url(settings.mercadopago_webhook_url)
    return body


# Our page the checkout's back URLs land on (webapp/api/purchase_status.py).
RETURN_PATH = "/checkout/purchases/"


def checkout_return_url(purchase: Purchase, settings: Settings) -> str:
    """Where the buyer lands after the checkout: our page showing the purchase's status
    (webapp/api/purchase_status.py), keyed by its unguessable external reference, on the
    API's public address; the page links back to the frontend."""
    return f"{settings.public_api_url}{RETURN_PATH}{purchase.external_reference}"


def notification_url(url: str) -> str:
    """The webhook URL with `source_news=webhooks`, so MercadoPago sends webhooks only, not
    legacy IPN copies of each (those are still handled, should the panel send them)."""
    parts = urlsplit(url)
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "source_news"
    ]
    query.append(("source_news", "webhooks"))
    return urlunsplit(parts._replace(query=urlencode(query)))


def save_preference(
    session: Session, *, purchase_id: uuid.UUID, preference: dict[str, Any]
) -> Purchase:
    """Remember the preference (the first one stays: the key makes retries the same one)."""
    purchase = get_purchase(session, purchase_id, lock=True)
    if purchase.preference_id is None:
        purchase.preference_id = str(preference["id"])
        purchase.init_point = preference.get("init_point")
        purchase.sandbox_init_point = preference.get("sandbox_init_point")
    return purchase


def checkout(purchase: Purchase, settings: Settings) -> dict[str, Any]:
    """What the client needs to send the buyer to pay."""
    link = purchase.sandbox_init_point if settings.mercadopago_sandbox else purchase.init_point
    return {
        "purchase_id": str(purchase.id),
        "preference_id": purchase.preference_id,
        "init_point": purchase.init_point,
        "sandbox_init_point": purchase.sandbox_init_point,
        "checkout_url": link or purchase.init_point,
    }


def visible_purchase(
    session: Session, purchase_id: uuid.UUID, *, viewer_id: uuid.UUID, is_admin: bool
) -> Purchase:
    """The purchase if the viewer bought it or is an admin; else NotFoundError (its existence
    is private)."""
    purchase = session.get(Purchase, purchase_id)
    if purchase is None or not (is_admin or purchase.user_id == viewer_id):
        raise NotFoundError("no such purchase")
    return purchase


def purchase_view(session: Session, purchase: Purchase) -> dict[str, Any]:
    """The purchase as its buyer follows it: state, package, money, MercadoPago's payments
    (as MercadoPago last answered) and the timeline of its changes."""
    payments = session.execute(
        select(MercadoPagoPayment)
        .where(MercadoPagoPayment.external_reference == purchase.external_reference)
        .order_by(MercadoPagoPayment.id)
    ).scalars()
    return {
        "purchase": purchase,
        "credited": purchase.status in states.CREDITED,
        "payments": list(payments),
        "timeline": states.timeline(session, purchase.id),
    }


def by_reference(session: Session, external_reference: str) -> Purchase | None:
    """The purchase of a checkout's external reference (the back URLs' key)."""
    stmt = select(Purchase).where(Purchase.external_reference == external_reference)
    return session.execute(stmt).scalar_one_or_none()


# Maintenance --------------------------------------------------------------------------------


def pending_to_reconcile(
    session: Session, *, older_than: datetime, limit: int = 100
) -> list[Purchase]:
    """Pending (or rejected, still retryable) purchases quiet since `older_than`."""
    stmt = (
        select(Purchase)
        .where(
            Purchase.status.in_(CREDITABLE),
            Purchase.updated_at < older_than,
            Purchase.expires_at > utcnow() - timedelta(days=2),
        )
        .order_by(Purchase.updated_at)
        .limit(limit)
    )
    return list(session.execute(stmt).scalars())


def touch_purchase(session: Session, purchase_id: uuid.UUID) -> None:
    purchase = session.get(Purchase, purchase_id)
    if purchase is not None:
        purchase.updated_at = utcnow()


def due_for_expiry(session: Session, *, now: datetime, limit: int = 100) -> list[Purchase]:
    """Pending purchases past their expiry."""
    stmt = (
        select(Purchase)
        .where(Purchase.status == "pending", Purchase.expires_at < now)
        .order_by(Purchase.expires_at)
        .limit(limit)
    )
    return list(session.execute(stmt).scalars())


def expire_purchase(
    session: Session, *, purchase_id: uuid.UUID, payments: list[dict[str, Any]]
) -> bool:
    """Expire a pending purchase whose checkout is over, unless MercadoPago holds a payment
    for it that is approved or still in flight (settlement handles those). Idempotent."""
    if any(p.get("status") in ("approved", *IN_FLIGHT) for p in payments):
        return False
    purchase = get_purchase(session, purchase_id, lock=True)
    if purchase.status != "pending" or purchase.expires_at >= utcnow():
        return False
    states.move_purchase(session, purchase, "expired", reason="checkout_expired")
    return True
