"""The credit packages on sale, by id: what a buyer may name in `package_id`.

The rows (credits, price, position) are seeded by migration 0003; this tuple is the list the
API states and checks before a request reaches the database. tests/market/test_catalogue.py
holds the two equal.
"""

from __future__ import annotations

PACKAGE_IDS = ("credits-100", "credits-500", "credits-1000", "credits-2000")
