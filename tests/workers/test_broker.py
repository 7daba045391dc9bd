"""The broker as operations see it, on Redis and on RabbitMQ alike (`make test` runs both).

Queue depths and ages read this run's own queues through its prefix, and another deployment
on the same broker (another prefix: another test run, a neighbour) is invisible to this one's
worker checks: its workers do not answer our `inspect()`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

import pytest
from celery import Celery
from kombu import Queue
from kombu.exceptions import ChannelError

from bench import harness
from market.ops import health
from tests.support.broker import drop_amqp_entities
from workers.app import app as celery_app
from workers.app import config_for
from workflows import control


def _is_redis(settings) -> bool:
    return settings.celery_broker_url.startswith("redis")


@pytest.fixture()
def probe_queue(settings):
    """A queue of this run that no worker consumes, removed after the test."""
    name = f"{settings.celery_queue_prefix}probe-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, exchange=celery_app.amqp.default_exchange, routing_key=name, expires=600)
    with celery_app.connection_for_write() as conn:
        bound = queue(conn.default_channel)
        bound.declare()
        try:
            yield conn, queue
        finally:
            bound.delete()


def test_depth_and_age_of_this_runs_queue(settings, probe_queue):
    conn, queue = probe_queue
    # Stamped as the publisher does (workers.observability): 30 s, 20 s and 10 s ago.
    with conn.Producer() as producer:
        for ago in (30, 20, 10):
            producer.publish(
                {"ago": ago},
                exchange=queue.exchange,
                routing_key=queue.routing_key,
                headers={health.SENT_AT_HEADER: time.time() - ago},
                serializer="json",
            )
    names = {
        "never_declared": f"{settings.celery_queue_prefix}nothing-{uuid.uuid4().hex[:8]}",
        "probe": queue.name,
    }
    keyprefix = settings.celery_queue_prefix
    # The missing queue comes first: on AMQP its failed passive declare closes the channel,
    # and the probe must still be measured on a new one.
    depths = health.queue_depths(settings.celery_broker_url, names, global_keyprefix=keyprefix)
    assert depths == {"never_declared": 0, "probe": 3}
    ages = health.oldest_message_age(settings.celery_broker_url, names, global_keyprefix=keyprefix)
    if _is_redis(settings):
        assert ages["never_declared"] is None
        assert 30 <= ages["probe"] < 20 + 30  # the oldest of the three, not the newest
    else:
        assert ages == {}  # AMQP cannot peek: unknown, never a made-up 0


@pytest.mark.usefixtures("worker")
def test_another_deployments_worker_is_invisible_to_ours(settings):
    """A `celery worker` process of another prefix on the same broker: it answers its own
    deployment's broadcast and never ours (on AMQP: the prefixed control exchange)."""
    other_prefix = f"{settings.celery_queue_prefix}other."
    other = Celery("another-deployment", set_as_current=False)
    other.conf.update(config_for(replace(settings, celery_queue_prefix=other_prefix)))
    env = {
        "KEY_PREFIX": f"{settings.key_prefix}other",
        "CELERY_QUEUE_PREFIX": other_prefix,
        # Celery imports beat_schedule.py after taking the working directory off sys.path.
        "PYTHONPATH": str(harness.ROOT),
    }
    stack = harness.Stack()
    try:
        _, node = harness.celery_worker(
            stack,
            "other",
            "workers.app",
            env,
            lambda node: bool(other.control.ping(destination=[node], timeout=0.5)),
        )
        ours = celery_app.control.inspect(timeout=1.0).ping() or {}
        assert node not in ours and len(ours) == 1
        report = control.workers_check()
        assert report["workers"] == 1
        assert report["per_queue"] == dict.fromkeys(report["per_queue"], 1)
        assert report["queues_without_workers"] == []
    finally:
        stack.stop_all()
        dropped = drop_amqp_entities(other, other_prefix)
        other.close()
    if not _is_redis(settings):
        # What the other deployment declared on the shared vhost is gone with it.
        assert {q.name for q in other.conf.task_queues} <= set(dropped)
        assert f"{other_prefix}celery.pidbox" in dropped
        with celery_app.connection_for_write() as conn, pytest.raises(ChannelError):
            conn.channel().queue_declare(queue=f"{other_prefix}payments", passive=True)
