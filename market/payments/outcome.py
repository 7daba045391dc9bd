"""What applying a payment, or finishing a refund, did: the tasks' answer and their cue to
drop a cached balance."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

CHANGES = ("credited", "failed", "reversed", "partially_reversed", "restored", "refund_requested")


@dataclass(frozen=True)
class Outcome:
    """What applying a payment did."""

    effect: str
    purchase_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    purchase_status: str | None = None
    balance_changed: bool = False
    refund_id: uuid.UUID | None = None

    @property
    def changed(self) -> bool:
        """Whether this application changed anything (a repeat changes nothing)."""
        return self.effect in CHANGES

    def as_result(self) -> dict[str, Any]:
        return {
            "effect": self.effect,
            "purchase_id": str(self.purchase_id) if self.purchase_id else None,
            "purchase_status": self.purchase_status,
        }
