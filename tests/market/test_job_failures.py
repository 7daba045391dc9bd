"""What a job's owner reads of a failure: a stable code and a safe message (issue 15, item 3).
The details are kept for logs and admins; tests/workflows/test_jobs.py checks the HTTP view."""

from __future__ import annotations

from celery.exceptions import SoftTimeLimitExceeded

from market.errors import (
    InsufficientCreditsError,
    InvalidImageError,
    ProviderError,
    ProviderTransientError,
)
from market.jobs import failure_of
from workers.base import _failure_of


def test_a_domain_refusal_speaks_to_the_user():
    failure = failure_of(InvalidImageError("too many pixels: 6300x6300"))
    assert (failure.code, failure.message) == ("invalid-image", "too many pixels: 6300x6300")
    assert failure_of(InsufficientCreditsError("you have 3 credits")).code == (
        "insufficient-credits"
    )


def test_provider_failures_show_only_their_title():
    raw = "MercadoPago unreachable: HTTPConnectionPool(host='10.1.2.3', port=443)"
    for error, code in (
        (ProviderTransientError(raw), "provider-unavailable"),
        (ProviderError(f"policy_id 88 invalid; {raw}"), "provider-error"),
    ):
        failure = failure_of(error)
        assert failure.code == code and failure.message == type(error).title
        assert "10.1.2.3" not in failure.message and "10.1.2.3" in failure.detail


def test_anything_else_is_an_internal_error_whose_text_is_kept_apart():
    failure = failure_of(KeyError("postgresql://app:secret@db/spartan"))
    assert failure.code == "internal-error"
    assert "secret" not in failure.message and "secret" in failure.detail
    assert failure.detail.startswith("KeyError: ")


def test_a_retried_failure_says_so_and_a_timeout_has_its_own_code():
    retrying = failure_of(ProviderTransientError("HTTP 503 from api.mercadopago.com")).retrying
    assert retrying.message == "Retrying: The payment provider is unavailable"
    assert retrying.code == "provider-unavailable" and "api.mercadopago" in retrying.detail
    assert _failure_of(SoftTimeLimitExceeded()).code == "timed-out"


def test_messages_and_details_are_bounded():
    failure = failure_of(InvalidImageError("x" * 10_000))
    assert len(failure.message) <= 300 and len(failure.detail) <= 2000
