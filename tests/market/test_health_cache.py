"""Shared health reports on real Redis: one refresh among many readers, stale while refreshing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from market.ops.health_cache import PENDING, LocalReport, SharedReport


@pytest.fixture()
def client(settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


@pytest.fixture()
def prefix(settings) -> str:
    return f"{settings.key_prefix}hc{uuid.uuid4().hex[:6]}"


class Counting:
    def __init__(self, status: str = "ok") -> None:
        self.runs = 0
        self.status = status

    def __call__(self) -> dict:
        self.runs += 1
        return {"status": self.status, "checks": {"database": {"status": self.status}}}


def test_processes_share_one_refresh(client, prefix):
    run = Counting()
    first, second = SharedReport(client, prefix), SharedReport(client, prefix)
    assert first.get(run)["status"] == "ok"
    assert second.get(run)["status"] == "ok"
    assert run.runs == 1


def test_a_refresh_in_progress_is_not_repeated(client, prefix):
    """Another process holds the refresh lock: the previous report, or PENDING, meanwhile."""
    reader = SharedReport(client, prefix, fresh_for_s=0.0, wait_s=0.2)
    client.set(reader.lock_key, "someone-else", px=60_000)
    run = Counting()
    assert reader.get(run) == PENDING
    reader._write({"status": "down", "checks": {}})
    assert reader.get(run)["status"] == "down"  # stale (fresh_for_s=0) but nobody reruns it
    assert run.runs == 0


def test_unreachable_redis_falls_back_to_a_copy_per_process():
    dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    report = SharedReport(dead, "nowhere")
    run = Counting()
    for _ in range(3):
        assert report.get(run)["status"] == "ok"
    assert run.runs == 1


def test_local_report_runs_once_while_fresh():
    local, run = LocalReport(fresh_for_s=3600), Counting()
    assert local.get(run) is local.get(run)
    assert run.runs == 1
    assert LocalReport(fresh_for_s=0).get(run) and run.runs == 2
