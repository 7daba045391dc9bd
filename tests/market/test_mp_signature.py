"""MercadoPago webhook signature verification (the SDK's validator, any age), against signatures
computed here from the docs."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from market.payments.mercadopago.signature import InvalidSignatureError, verify_notification

SECRET = "your-secret-signature-key"
NOW = 1_750_000_000.0
TS_MS = str(int(NOW * 1000))
REQUEST_ID = "bb56a2f1-6aae-46ac-982e-9dcd3581d08e"
DATA_ID = "123456789"


def digest(manifest: str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), manifest.encode(), hashlib.sha256).hexdigest()


def header(manifest: str, ts: str = TS_MS, secret: str = SECRET) -> str:
    return f"ts={ts},v1={digest(manifest, secret)}"


GOOD = header(f"id:{DATA_ID};request-id:{REQUEST_ID};ts:{TS_MS};")


def verify(**overrides: object) -> float:
    arguments: dict[str, object] = {
        "x_signature": GOOD,
        "x_request_id": REQUEST_ID,
        "data_id": DATA_ID,
        "secret": SECRET,
        "now": NOW,
    }
    return verify_notification(**(arguments | overrides))  # type: ignore[arg-type]


def reason_of(**overrides: object) -> str:
    with pytest.raises(InvalidSignatureError) as caught:
        verify(**overrides)
    return caught.value.reason


def test_good_signature_passes():
    verify()


@pytest.mark.parametrize(
    "change",
    [
        {"data_id": "123456780"},
        {"x_request_id": "bb56a2f1-6aae-46ac-982e-9dcd3581d08f"},
        {"x_signature": GOOD[:-1] + ("0" if GOOD[-1] != "0" else "1")},
        {"x_signature": header(f"id:{DATA_ID};request-id:{REQUEST_ID};ts:{TS_MS};", "1")},
    ],
)
def test_tampered_notification_fails(change: dict[str, object]):
    assert reason_of(**change) == "SignatureMismatch"


def test_wrong_secret_fails():
    assert reason_of(secret="another-secret") == "SignatureMismatch"


def test_empty_secret_is_refused_even_for_a_matching_signature():
    forged = header(f"id:{DATA_ID};request-id:{REQUEST_ID};ts:{TS_MS};", secret="")
    assert reason_of(secret="", x_signature=forged) == "no webhook secret configured"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "MissingSignatureHeader"),
        ("", "MissingSignatureHeader"),
        ("  ", "MissingSignatureHeader"),
        (f"v1={digest('x')}", "MissingTimestamp"),
        (f"ts={TS_MS}", "MissingHash"),
        (f"ts={TS_MS},v1=", "MissingHash"),
        (f"ts=soon,v1={digest('x')}", "MalformedSignatureHeader"),
        ("garbage", "MalformedSignatureHeader"),
        # A digit to str.isdigit() that is no number: the SDK signs it, we refuse it.
        (
            "ts=\u00b2,v1=" + digest(f"id:{DATA_ID};request-id:{REQUEST_ID};ts:\u00b2;"),
            "MalformedSignatureHeader",
        ),
    ],
)
def test_malformed_header_fails(value: str | None, reason: str):
    assert reason_of(x_signature=value) == reason


def test_absent_parts_are_left_out_of_the_manifest():
    verify(x_request_id=None, x_signature=header(f"id:{DATA_ID};ts:{TS_MS};"))
    verify(x_request_id="", x_signature=header(f"id:{DATA_ID};ts:{TS_MS};"))
    verify(data_id=None, x_signature=header(f"request-id:{REQUEST_ID};ts:{TS_MS};"))
    verify(data_id=None, x_request_id=None, x_signature=header(f"ts:{TS_MS};"))
    # Signed without the request id, but the notification carries one: not the same manifest.
    assert reason_of(x_signature=header(f"id:{DATA_ID};ts:{TS_MS};")) == "SignatureMismatch"


def test_data_ids_keep_their_original_case():
    # The SDK stopped lower-casing alphanumeric ids in 2026: MercadoPago signs them as sent.
    signed = header(f"id:ABC123def;request-id:{REQUEST_ID};ts:{TS_MS};")
    verify(data_id="ABC123def", x_signature=signed)
    assert reason_of(data_id="abc123def", x_signature=signed) == "SignatureMismatch"
    signed = header(f"id:ORD-01AB;request-id:{REQUEST_ID};ts:{TS_MS};")
    verify(data_id="ORD-01AB", x_signature=signed)
    assert reason_of(data_id="ord-01ab", x_signature=signed) == "SignatureMismatch"


@pytest.mark.parametrize(
    "ts",
    [TS_MS, str(int(NOW))],
    ids=["milliseconds", "seconds"],
)
def test_timestamp_in_milliseconds_or_seconds(ts: str):
    verify(x_signature=header(f"id:{DATA_ID};request-id:{REQUEST_ID};ts:{ts};", ts))


@pytest.mark.parametrize("late", [0, 300, 20 * 60, 6 * 3600, 96 * 3600, 400 * 86_400])
def test_a_signature_of_any_age_passes_and_reports_its_lateness(late: int):
    # MercadoPago's retries (15 min ... every 96 h) may keep the first attempt's ts.
    assert verify(now=NOW + late) == pytest.approx(late)


@pytest.mark.parametrize("ahead", [301, 86_400])
def test_a_timestamp_from_the_future_fails(ahead: int):
    assert reason_of(now=NOW - ahead) == "TimestampInTheFuture"


def test_a_small_clock_drift_ahead_passes():
    assert verify(now=NOW - 300) == 0.0


def test_default_clock_is_now():
    assert verify(now=None) > 365 * 86_400  # NOW is in 2025


@pytest.mark.parametrize(
    "variant",
    [
        lambda v1: f"v1={v1},ts={TS_MS}",
        lambda v1: f" ts = {TS_MS} , v1 = {v1} ",
        lambda v1: f"TS={TS_MS},V1={v1.upper()}",
        lambda v1: f"ts={TS_MS},v2=ignored,v1={v1},extra",
        lambda v1: f"ts={TS_MS},v1={'0' * 64},v1={v1}",
    ],
    ids=["order", "spaces", "upper-case", "unknown-parts", "several-v1"],
)
def test_header_variants_are_accepted(variant):
    v1 = digest(f"id:{DATA_ID};request-id:{REQUEST_ID};ts:{TS_MS};")
    verify(x_signature=variant(v1))
