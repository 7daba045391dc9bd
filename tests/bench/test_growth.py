"""The growth bench runs end to end on tiny sizes (the figures belong to bench/growth.py)."""

from __future__ import annotations

import io

from bench import growth


def test_growth_bench_times_every_query_with_its_plans(database: str):
    measures = growth.measure(database, sizes=(50, 120), runs=1, log=io.StringIO())
    names = {m.name for m in measures}
    assert "history: keyset page at the deepest row" in names
    assert "daily analytics roll-up" in names
    assert "purchases: keyset page at the deepest row" in names
    assert any(name.startswith("reconciliation sweep: ") for name in names)
    assert any(name.startswith("purge: ") for name in names)
    for m in measures:
        assert set(m.ms) == {50, 120}, m.name
        assert m.plans[120], m.name  # EXPLAIN of every statement the query sent
    text = growth.table(measures, (50, 120))
    assert "last/first" in text and "history: first keyset page" in text
