"""The in-app alert rules over the API: their state, thresholds changed at run time (stored,
audited) and used by beat's evaluation on the real worker."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, update

from market.models import AlertState, AlertThreshold, AlertThresholdChange
from market.ops import alerts
from workers.maintenance.alerts import evaluate_alerts

BASE = "/api/v1/advanced/alerts"


@pytest.fixture()
def clean_thresholds(db):
    """No stored threshold before or after: the environment's defaults hold for other tests."""
    db.execute(delete(AlertThreshold))
    db.commit()
    yield
    db.execute(delete(AlertThreshold))
    db.commit()


def _rule(client, admin, name):
    answer = client.get(BASE, headers=admin)
    assert answer.status_code == 200
    return next(r for r in answer.get_json()["rules"] if r["rule"] == name)


@pytest.mark.usefixtures("clean_thresholds")
def test_every_rule_is_listed_with_its_default_threshold(client, admin, settings):
    body = client.get(BASE, headers=admin).get_json()
    rows = {r["rule"]: r for r in body["rules"]}
    assert set(rows) == {rule.name for rule in alerts.RULES}
    for rule in alerts.RULES:
        row = rows[rule.name]
        assert row["threshold"] == row["default_threshold"] == getattr(settings, rule.setting)
        assert row["threshold_source"] == "environment"
        assert row["direction"] == rule.direction
        assert {"value", "firing", "last_fired_at", "last_recovered_at", "evaluated_at"} <= set(row)


@pytest.mark.usefixtures("clean_thresholds")
def test_a_threshold_change_is_stored_and_audited(client, db, admin, user_id_of):
    answer = client.patch(f"{BASE}/p95_ms", json={"threshold": 750}, headers=admin)
    assert answer.status_code == 200, answer.get_json()
    row = answer.get_json()
    assert row["threshold"] == 750 and row["threshold_source"] == "admin"
    assert row["threshold_updated_by"] == str(user_id_of(admin))
    assert _rule(client, admin, "p95_ms")["threshold"] == 750
    # The same value again changes nothing and records nothing.
    assert client.patch(f"{BASE}/p95_ms", json={"threshold": 750}, headers=admin).status_code == 200
    back = client.patch(f"{BASE}/p95_ms", json={"threshold": None}, headers=admin).get_json()
    assert back["threshold"] == back["default_threshold"]
    assert back["threshold_source"] == "environment"
    audit = db.execute(
        select(AlertThresholdChange)
        .where(AlertThresholdChange.changed_by == user_id_of(admin))
        .order_by(AlertThresholdChange.id)
    ).scalars()
    trail = [(c.rule, c.old_threshold, c.new_threshold) for c in audit]
    assert trail == [("p95_ms", None, 750.0), ("p95_ms", 750.0, None)]
    changes = client.get(BASE, headers=admin).get_json()["changes"]
    assert changes[0]["rule"] == "p95_ms" and changes[0]["new_threshold"] is None
    assert changes[0]["changed_at"] and changes[0]["changed_by_uid"]


@pytest.mark.parametrize(
    ("rule", "body", "status"),
    [
        ("error_rate", {"threshold": 1.5}, 422),  # a rate is at most 1
        ("error_rate", {"threshold": -0.1}, 422),
        ("disk_free_pct", {"threshold": 101}, 422),
        ("workers_min", {"threshold": 1.5}, 422),  # whole workers
        ("queue_depth", {"threshold": "many"}, 422),
        ("queue_depth", {}, 422),
        ("queue_depth", {"threshold": 5, "extra": 1}, 422),
        ("no_such_rule", {"threshold": 1}, 404),
    ],
)
@pytest.mark.usefixtures("clean_thresholds")
def test_bad_thresholds_are_refused_and_change_nothing(client, db, admin, rule, body, status):
    before = db.execute(select(AlertThresholdChange.id)).scalars().all()
    answer = client.patch(f"{BASE}/{rule}", json=body, headers=admin)
    assert answer.status_code == status, answer.get_json()
    assert answer.mimetype == "application/problem+json"
    assert db.execute(select(AlertThreshold)).first() is None
    assert db.execute(select(AlertThresholdChange.id)).scalars().all() == before


def test_alerts_are_for_admins(client, alice):
    assert client.get(BASE).status_code == 401
    assert client.get(BASE, headers=alice).status_code == 403
    patch = client.patch(f"{BASE}/p95_ms", json={"threshold": 1}, headers=alice)
    assert patch.status_code == 403


@pytest.mark.usefixtures("worker", "clean_thresholds")
def test_beat_evaluation_uses_the_stored_threshold(client, db, admin):
    """At least one worker answers, so `workers_min` is quiet by default; an admin asking
    for 1000 workers makes beat's evaluation fire it, and putting it back recovers it."""
    db.execute(update(AlertState).values(breach_started_at=None))
    db.commit()
    assert "workers_min" not in evaluate_alerts.delay().get(timeout=30)["triggered"]
    patched = client.patch(f"{BASE}/workers_min", json={"threshold": 1000}, headers=admin)
    assert patched.status_code == 200
    result = evaluate_alerts.delay().get(timeout=30)
    assert "workers_min" in result["triggered"]
    row = _rule(client, admin, "workers_min")
    assert row["firing"] is True and row["threshold"] == 1000
    assert 1 <= row["value"] < 1000
    assert row["last_fired_at"] == row["firing_since"]
    client.patch(f"{BASE}/workers_min", json={"threshold": None}, headers=admin)
    assert "workers_min" in evaluate_alerts.delay().get(timeout=30)["resolved"]
    row = _rule(client, admin, "workers_min")
    assert row["firing"] is False and row["firing_since"] is None
    assert row["last_fired_at"] < row["last_recovered_at"]
