"""The ledger's parity check, after folding the system accounts' running totals."""

from __future__ import annotations

from typing import Any

from market import ledger
from workers import runtime
from workers.app import app
from workers.base import StepTask


@app.task(base=StepTask, name="maintenance.check_ledger")
def check_ledger() -> dict[str, Any]:
    """Fold the system accounts' running-total slots, then report accounts whose kept
    balance differs from their entries, and unbalanced transactions (logged as errors).
    Safe to rerun: the fold leaves every balance as it was."""
    with runtime.transaction() as session:
        folded = ledger.fold_totals(session)
    with runtime.transaction() as session:
        return {**ledger.check_parity(session), "total_slots_folded": folded}
