"""Request metrics added up in the process and flushed to Redis in the background."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from market.ops.metrics_buffer import HashIncrements
from tests.support.poll import wait_for


@pytest.fixture()
def client(settings):
    r = redis.Redis.from_url(settings.redis_url)
    yield r
    r.close()


def test_increments_from_many_threads_add_up_exactly_once_flushed(client, settings):
    key = f"{settings.key_prefix}:test-buffer:{uuid.uuid4().hex}"
    buffer = HashIncrements(client, interval=3600)  # only explicit flushes here

    def add(_: int) -> None:
        for _ in range(100):
            buffer.add(key, ints=[("n", 1)], floats=[("ms", 0.5)], ttl=60)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(8)))
    assert client.hget(key, "n") is None  # nothing sent per add
    assert buffer.flush() == 2
    assert int(client.hget(key, "n")) == 800
    assert float(client.hget(key, "ms")) == pytest.approx(400.0)
    assert 0 < client.ttl(key) <= 60
    assert buffer.flush() == 0  # nothing owed: no round trip
    client.delete(key)


def test_the_background_thread_flushes_within_its_interval(client, settings):
    key = f"{settings.key_prefix}:test-buffer:{uuid.uuid4().hex}"
    buffer = HashIncrements(client, interval=0.05)
    buffer.add(key, ints=[("n", 3)])
    wait_for(lambda: client.hget(key, "n") == b"3", timeout=10, what="the background flush")
    client.delete(key)


def test_a_failed_flush_keeps_what_it_owed():
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    buffer = HashIncrements(dead, interval=3600)
    buffer.add("k", ints=[("n", 2)], floats=[("ms", 1.5)], ttl=10)
    with pytest.raises(redis.RedisError):
        buffer.flush()
    buffer.add("k", ints=[("n", 1)])
    assert buffer._ints == {("k", "n"): 3}
    assert buffer._floats == {("k", "ms"): 1.5}
    assert buffer._ttls == {"k": 10}
