"""Mint Firebase Auth emulator ID tokens (unsigned) for local development and tests.

    python -m sandbox.token --uid alice [--admin] [--email alice@example.com]

Only accepted where FIREBASE_AUTH_EMULATOR_HOST is set (development and test).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import time
from typing import Any


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint(
    uid: str,
    *,
    project_id: str,
    admin: bool = False,
    email: str | None = None,
    name: str | None = None,
    expires_in: int = 3600,
    now: float | None = None,
    **claims: Any,
) -> str:
    """An unsigned emulator token `header.claims.` for `uid` in `project_id`."""
    issued = int(now if now is not None else time.time())
    body: dict[str, Any] = {
        "iss": f"https://securetoken.google.com/{project_id}",
        "aud": project_id,
        "sub": uid,
        "user_id": uid,
        "iat": issued,
        "auth_time": issued,
        "exp": issued + expires_in,
        "email": email if email is not None else f"{uid}@example.com",
        "email_verified": True,
        "firebase": {"sign_in_provider": "password", "identities": {}},
        **claims,
    }
    if name:
        body["name"] = name
    if admin:
        body["admin"] = True
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(body)}."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uid", required=True)
    parser.add_argument("--admin", action="store_true")
    parser.add_argument("--email")
    parser.add_argument("--name")
    parser.add_argument("--expires-in", type=int, default=24 * 3600)
    parser.add_argument(
        "--project", default=os.environ.get("FIREBASE_PROJECT_ID", "spartan-market-dev")
    )
    args = parser.parse_args(argv)
    print(
        mint(
            args.uid,
            project_id=args.project,
            admin=args.admin,
            email=args.email,
            name=args.name,
            expires_in=args.expires_in,
        )
    )


if __name__ == "__main__":
    main()
