"""TRUSTED_PROXIES=N: the client address comes from exactly N proxies' X-Forwarded-For."""

from __future__ import annotations

import logging
import uuid

import pytest

TASKS = "/api/v1/advanced/tasks"
PROXY = "10.9.8.7"
SECOND_PROXY = "10.9.8.6"


def _client_address() -> str:
    n = uuid.uuid4().int
    return f"198.51.{n % 250}.{(n >> 8) % 250 + 1}"


def _get(client, forwarded_for: str | None, remote: str = PROXY, request_id: str | None = None):
    headers = {"X-Request-ID": request_id} if request_id else {}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return client.get(TASKS, headers=headers, environ_base={"REMOTE_ADDR": remote})


def test_without_trusted_proxies_forwarded_for_is_ignored(app_with):
    client = app_with(trusted_proxies=0, rate_limit_default="2/minute").test_client()
    proxy = _client_address()  # this test's own "proxy": its bucket starts empty
    answers = [_get(client, _client_address(), remote=proxy) for _ in range(3)]
    # Three "clients" by their header, one by their address: one bucket, the third is refused.
    assert [a.status_code for a in answers] == [401, 401, 429]


def test_one_trusted_proxy_gives_each_client_its_own_bucket(app_with):
    client = app_with(trusted_proxies=1, rate_limit_default="2/minute").test_client()
    first, second = _client_address(), _client_address()
    assert [_get(client, first).status_code for _ in range(2)] == [401, 401]
    assert _get(client, first).status_code == 429
    # Behind the same proxy, another client is not limited by the first one's calls.
    assert _get(client, second).status_code == 401


def test_forged_addresses_beyond_the_trusted_hops_change_nothing(app_with):
    client = app_with(trusted_proxies=1, rate_limit_default="2/minute").test_client()
    real = _client_address()
    # The client writes its own X-Forwarded-For; our one proxy appends the address it saw.
    answers = [_get(client, f"{_client_address()}, {real}") for _ in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 429]
    assert _get(client, f"{_client_address()}, {_client_address()}, {real}").status_code == 429


def test_two_trusted_proxies_take_the_second_address_from_the_right(app_with):
    client = app_with(trusted_proxies=2, rate_limit_default="1/minute").test_client()
    real = _client_address()
    assert _get(client, f"{_client_address()}, {real}, {SECOND_PROXY}").status_code == 401
    assert _get(client, f"{_client_address()}, {real}, {SECOND_PROXY}").status_code == 429
    # One value short of the hops trusted: ProxyFix believes none of them (the peer counts).
    peer = _client_address()
    assert _get(client, _client_address(), remote=peer).status_code == 401
    assert _get(client, _client_address(), remote=peer).status_code == 429


@pytest.mark.parametrize(("hops", "expected"), [(0, "peer"), (1, "real"), (2, "spoofed")])
def test_request_log_carries_the_client_address(app_with, caplog, hops, expected):
    client = app_with(trusted_proxies=hops).test_client()
    addresses = {"peer": PROXY, "real": _client_address(), "spoofed": _client_address()}
    caplog.set_level(logging.INFO, logger="webapp.observability")
    request_id = uuid.uuid4().hex
    answer = _get(client, f"{addresses['spoofed']}, {addresses['real']}", request_id=request_id)
    assert answer.status_code == 401
    (record,) = [
        r
        for r in caplog.records
        if r.name == "webapp.observability" and getattr(r, "request_id", None) == request_id
    ]
    assert record.client_addr == addresses[expected]


def test_forwarded_proto_is_believed_only_from_trusted_proxies(app_with):
    for hops, scheme in ((0, "http"), (1, "https")):
        app = app_with(trusted_proxies=hops)

        @app.get("/_scheme")  # a probe route on this throwaway app only
        def _scheme():
            from flask import request

            return {"scheme": request.scheme}

        answer = app.test_client().get(
            "/_scheme", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.1"}
        )
        assert answer.get_json() == {"scheme": scheme}, hops
