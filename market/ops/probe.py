"""The container's health probe: `python -m market.ops.probe` exits 0 when the web process
on this host answers its liveness route, 1 otherwise.

Stdlib only and nothing else imported, so Docker's HEALTHCHECK costs a few milliseconds.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

LIVE_PATH = "/api/v1/advanced/health/live"


def probe(port: int, timeout_s: float = 3.0) -> bool:
    """Whether GET http://127.0.0.1:<port>/…/health/live answers 200 within `timeout_s`."""
    url = f"http://127.0.0.1:{port}{LIVE_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            return answer.status == 200
    except (OSError, urllib.error.URLError):
        return False


def main() -> int:
    port = int(os.environ.get("PORT") or 8000)
    return 0 if probe(port) else 1


if __name__ == "__main__":
    sys.exit(main())
