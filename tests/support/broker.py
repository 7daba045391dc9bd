"""What a test run leaves on the shared brokers, removed when the session ends.

On Redis a run's keys, queues and channels live under its key prefix. On AMQP they are named after
the prefix (workers.app) on the shared vhost, so the session deletes them when it ends; the
queues also carry x-expires (CELERY_QUEUE_EXPIRES_S, tests/conftest.py), so a run that is
killed before its teardown still leaves no queue behind for long.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kombu.exceptions import ChannelError


def run_entities(celery_app: Any) -> tuple[list[str], list[str]]:
    """(queues, exchanges) a prefixed Celery app declares on an AMQP broker."""
    queues = [q.name for q in celery_app.amqp.queues.values()]
    mailbox = celery_app.control.mailbox
    exchanges = {q.exchange.name for q in celery_app.amqp.queues.values()} | {
        mailbox.exchange.name,
        mailbox.reply_exchange.name,
        celery_app.conf.event_exchange,
    }
    return queues, sorted(exchanges - {""})


def drop_amqp_entities(celery_app: Any, prefix: str) -> list[str]:
    """Delete the app's queues and exchanges from an AMQP broker; returns what it deleted.

    Only names carrying `prefix`: the shared vhost's own exchanges are never touched.
    """
    if not prefix or not celery_app.conf.broker_url.startswith("amqp"):
        return []
    queues, exchanges = ([n for n in names if prefix in n] for names in run_entities(celery_app))
    with celery_app.connection_for_write() as conn:
        channel = conn.channel()
        try:
            for name in queues:
                channel = _delete(conn, channel, "queue_delete", name)
            for name in exchanges:
                channel = _delete(conn, channel, "exchange_delete", name)
        finally:
            channel.close()
    return queues + exchanges


def _delete(conn: Any, channel: Any, method: str, name: str) -> Any:
    """RabbitMQ deletes idempotently; should a broker refuse, it closed the channel: reopen."""
    try:
        getattr(channel, method)(name)
    except ChannelError:
        channel = conn.channel()
    return channel


@pytest.fixture(scope="session", autouse=True)
def broker_cleanup() -> Iterator[None]:
    """Set up first, torn down last (after the worker): remove this run's AMQP entities and
    its Redis keys (cache, limits, broker lists and results all start with KEY_PREFIX)."""
    yield
    from bench.harness import drop_redis_keys
    from market.config import load_settings
    from workers.app import app as celery_app

    settings = load_settings(read_dotenv=False)
    drop_amqp_entities(celery_app, settings.celery_queue_prefix)
    drop_redis_keys(settings.redis_url, settings.key_prefix)
