"""The daily roll-up over the real business tables: exact figures after real purchases, a
spend, a refund and an avatar upload; a rerun gives the same numbers; the user's analytics
endpoint shows them; a day's figures stop at midnight UTC."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from market.models import DailyAnalytics, DailyUserAnalytics, Purchase
from market.models.base import utcnow
from market.ops import analytics
from tests.support import images
from tests.support.mercadopago import balance, buy, wait_status
from tests.support.poll import wait_for
from workers.maintenance import analytics as analytics_tasks

URL = "/api/v1/advanced/analytics/user/{}"
UPLOAD = "/api/v1/advanced/profile/avatar/upload"


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _rollup(days: list[date]) -> None:
    for day in days:
        analytics_tasks.rollup_analytics.delay(day=day.isoformat()).get(timeout=60)


def _figures(db, user_id, days: list[date]) -> dict[str, object]:
    """The user's figures summed over `days`, as the roll-up stored them."""
    db.expire_all()
    total = analytics.Figures()
    for row in db.execute(
        select(DailyUserAnalytics).where(
            DailyUserAnalytics.user_id == user_id, DailyUserAnalytics.day.in_(days)
        )
    ).scalars():
        total.merge(analytics.Figures(**{n: getattr(row, n) for n in analytics.FIGURES}))
    return total.as_dict()


def _pay(app, client, headers, mp_sandbox, package_id: str) -> str:
    checkout = buy(client, headers, package_id)
    mp_sandbox.pay(checkout["preference_id"])
    wait_status(app, checkout["purchase_id"], "approved")
    return checkout["purchase_id"]


@pytest.mark.usefixtures("worker")
def test_rollup_counts_real_activity_exactly_once(
    app, client, db, alice, bob, admin, user_id_of, mp_sandbox
):
    first_day = utcnow().date()
    _pay(app, client, alice, mp_sandbox, "credits-500")
    refunded = _pay(app, client, alice, mp_sandbox, "credits-100")
    _pay(app, client, bob, mp_sandbox, "credits-100")  # someone else's: not in alice's figures
    spent = client.post("/api/v1/advanced/credits/spend", json={"amount": 30}, headers=alice)
    assert spent.status_code == 201, spent.get_json()
    url = f"/api/v1/advanced/credits/purchases/{refunded}/refund"
    assert client.post(url, headers=admin).status_code == 202
    wait_status(app, refunded, "refunded")
    upload = client.post(
        UPLOAD, headers=alice, **images.multipart(images.plain_jpeg(), "a.jpg", "image/jpeg")
    )
    assert upload.status_code == 202, upload.get_json()
    wait_for(lambda: balance(client, alice) == 470, what="alice's balance after the refund")
    days = _days(first_day, utcnow().date())
    uid = user_id_of(alice)

    _rollup(days)
    expected = {
        "purchases": 2,
        "revenue_ars": Decimal("55.00"),
        "credits_bought": 600,
        "credits_spent": 30,
        "refunds": 1,
        "refunded_ars": Decimal("10.00"),
        "avatar_uploads": 1,
    }
    assert _figures(db, uid, days) == expected
    assert _figures(db, user_id_of(bob), days)["purchases"] == 1
    totals = [db.get(DailyAnalytics, day) for day in days]
    assert sum(t.active_users for t in totals) >= 2
    assert sum(t.revenue_ars for t in totals) >= Decimal("65.00")

    _rollup(days)  # rerun: rewritten, not added to
    assert _figures(db, uid, days) == expected

    query = f"?from={days[0].isoformat()}&to={days[-1].isoformat()}"
    for viewer in (alice, admin):
        answer = client.get(URL.format(uid) + query, headers=viewer)
        assert answer.status_code == 200, answer.get_json()
        shown = answer.get_json()["totals"]
        assert {k: shown[k] for k in expected} == {
            **expected,
            "revenue_ars": "55.00",
            "refunded_ars": "10.00",
        }
    assert client.get(URL.format(uid) + query, headers=bob).status_code == 404


def _settled_purchase(db, user_id, *, approved_at, reversed_at=None, currency="ARS"):
    purchase = Purchase(
        user_id=user_id,
        package_id="credits-100",
        credits=100,
        amount=Decimal("10.00"),
        currency=currency,
        external_reference=f"sm-{uuid.uuid4().hex}",
        status="refunded" if reversed_at else "approved",
        payment_id=random.randrange(10**12, 10**13),
        expires_at=approved_at,
        approved_at=approved_at,
        settled_at=approved_at,
        reversed_at=reversed_at,
    )
    db.add(purchase)


def test_a_day_ends_at_midnight_utc(db, alice, user_id_of):
    uid = user_id_of(alice)
    day = date(2025, 2, 10) + timedelta(days=random.randrange(300))
    midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    last_moment = midnight - timedelta(microseconds=1)
    _settled_purchase(db, uid, approved_at=last_moment)
    _settled_purchase(db, uid, approved_at=midnight, reversed_at=midnight + timedelta(hours=1))
    _settled_purchase(db, uid, approved_at=last_moment, currency="USD")  # counted, no pesos
    db.commit()
    analytics.rollup_day(db, day)
    analytics.rollup_day(db, day + timedelta(days=1))
    db.commit()
    assert _figures(db, uid, [day]) == {
        **analytics.Figures().as_dict(),
        "purchases": 2,
        "revenue_ars": Decimal("10.00"),
        "credits_bought": 200,
    }
    assert _figures(db, uid, [day + timedelta(days=1)]) == {
        **analytics.Figures().as_dict(),
        "purchases": 1,
        "revenue_ars": Decimal("10.00"),
        "credits_bought": 100,
        "refunds": 1,
        "refunded_ars": Decimal("10.00"),
    }
