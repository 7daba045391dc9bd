"""Malformed emulator tokens are 401, never 500 (issue 15, item 6).

Emulator tokens are unsigned JSON anyone can write, and firebase-admin checks only `iss`,
`aud` and `sub` of them: every other claim the app uses must be checked before it is used.
Before the fix a non-numeric `exp` raised inside the expiry check (500), `"nan"`/`"inf"`
made a token that never expires, and a long or non-text email, name or uid failed in
PostgreSQL (500).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

ME = "/api/v1/profile/me"
MALFORMED: dict[str, dict[str, Any]] = {
    "exp_text": {"exp": "tomorrow"},
    "exp_numeric_text": {"exp": "9999999999"},
    "exp_null": {"exp": None},
    "exp_list": {"exp": [9999999999]},
    "exp_object": {"exp": {"seconds": 9999999999}},
    "exp_true": {"exp": True},
    "exp_nan": {"exp": "nan"},
    "exp_infinity": {"exp": "Infinity"},
    "exp_beyond_any_calendar": {"exp": 1e300},
    "exp_missing": {"exp": ...},
    "email_object": {"email": {"address": "x@example.com"}},
    "email_number": {"email": 42},
    "email_too_long": {"email": "x" * 400 + "@example.com"},
    "email_with_nul": {"email": "a\x00b@example.com"},
    "name_list": {"name": ["a", "b"]},
    "name_with_nul": {"name": "Mallory\x00"},
    "sub_with_nul": {"sub": "u\x00x", "user_id": "u\x00x"},
    "sub_with_newline": {"sub": "u\nx", "user_id": "u\nx"},
}


def _b64(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def emulator_token(project: str, **changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": f"https://securetoken.google.com/{project}",
        "aud": project,
        "sub": "u-malformed",
        "user_id": "u-malformed",
        "iat": now,
        "auth_time": now,
        "exp": now + 600,
        "email": "m@example.com",
        "firebase": {"sign_in_provider": "password", "identities": {}},
    }
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not ...}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_claim_is_401(client, settings, case):
    token = emulator_token(settings.firebase_project_id, **MALFORMED[case])
    answer = client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401, answer.get_data(as_text=True)
    assert answer.mimetype == "application/problem+json"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_long_display_name_is_cut_not_refused(client, settings):
    token = emulator_token(
        settings.firebase_project_id, sub="u-long-name", user_id="u-long-name", name="N" * 1000
    )
    answer = client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.get_data(as_text=True)


def test_a_well_formed_token_still_works(client, settings):
    token = emulator_token(settings.firebase_project_id, exp=4102444800.5)
    assert client.get(ME, headers={"Authorization": f"Bearer {token}"}).status_code == 200
