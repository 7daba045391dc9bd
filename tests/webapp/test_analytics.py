"""A user's analytics (self or admin) and the roll-up that feeds it (rerun: same numbers)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import select

from market.models import DailyAnalytics, DailyUserAnalytics
from market.ops import analytics

URL = "/api/v1/advanced/analytics/user/{}"


def test_self_or_admin_only_others_get_404(client, alice, bob, admin, user_id_of):
    uid = user_id_of(alice)
    assert client.get(URL.format(uid), headers=alice).status_code == 200
    assert client.get(URL.format(uid), headers=admin).status_code == 200
    assert client.get(URL.format(uid), headers=bob).status_code == 404
    assert client.get(URL.format(uid)).status_code == 401


def test_totals_and_a_dense_series_for_the_range(client, db, alice, user_id_of):
    uid = user_id_of(alice)
    d1, d3 = date(2026, 3, 1), date(2026, 3, 3)
    db.add_all(
        [
            DailyUserAnalytics(
                day=d1, user_id=uid, purchases=1, revenue_ars=Decimal("1500.00"), credits_bought=100
            ),
            DailyUserAnalytics(day=d3, user_id=uid, credits_spent=30, avatar_uploads=2),
        ]
    )
    db.commit()
    body = client.get(URL.format(uid) + "?from=2026-03-01&to=2026-03-04", headers=alice).get_json()
    assert body["from"] == "2026-03-01" and body["to"] == "2026-03-04"
    assert [d["day"] for d in body["days"]] == [
        "2026-03-01",
        "2026-03-02",
        "2026-03-03",
        "2026-03-04",
    ]
    assert body["days"][1]["purchases"] == 0
    totals = body["totals"]
    assert totals["revenue_ars"] == "1500.00"
    assert (totals["credits_bought"], totals["credits_spent"], totals["avatar_uploads"]) == (
        100,
        30,
        2,
    )
    assert totals["active_days"] == 2


def test_bad_ranges_are_422(client, alice, user_id_of):
    uid = user_id_of(alice)
    assert (
        client.get(URL.format(uid) + "?from=2026-03-05&to=2026-03-01", headers=alice).status_code
        == 422
    )
    assert (
        client.get(URL.format(uid) + "?from=2020-01-01&to=2026-03-01", headers=alice).status_code
        == 422
    )
    assert client.get(URL.format(uid) + "?from=yesterday", headers=alice).status_code == 422


def _snapshot(db, day):
    db.expire_all()
    total = db.get(DailyAnalytics, day)
    users = db.execute(
        select(DailyUserAnalytics)
        .where(DailyUserAnalytics.day == day)
        .order_by(DailyUserAnalytics.user_id)
    ).scalars()
    figures = [(u.user_id, *(getattr(u, n) for n in analytics.FIGURES)) for u in users]
    return (total.active_users, *(getattr(total, n) for n in analytics.FIGURES)), figures


def test_rolling_up_a_day_twice_gives_the_same_numbers(db):
    day = date.today() - timedelta(days=1)
    analytics.rollup_day(db, day)
    db.commit()
    first = _snapshot(db, day)
    analytics.rollup_day(db, day)
    db.commit()
    assert _snapshot(db, day) == first
