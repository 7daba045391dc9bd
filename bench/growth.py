"""8. Growth: the time of each query that reads a growing table, at 10k, 100k and 1M rows.

    .venv/bin/python -m bench.growth [--sizes 10000,100000,1000000] [--runs 5]

A scratch database (migrated, dropped after) grows in steps to each size: every table these
queries read gets that many rows (ledger transactions with their two entries each, all one
user's, so the history is that deep; purchases; MercadoPago's payment events; jobs; notifications;
webhook deliveries; MercadoPago's record of the credited payments), spread over a year,
loaded with `generate_series` and the triggers off (the rows are balanced by construction;
the bench measures reads), then the figures the triggers keep for /metrics (row counts,
system-account totals) are set as the triggers would have left them. At each
size, each query runs `--runs` times on a warm cache and its median is kept, with the plan
PostgreSQL chooses (`EXPLAIN`) for every distinct statement it sends. Writes (the roll-up,
the purges, the reconciliation sweep) run in a transaction rolled back after, so every size
sees the same data.

The reconciliation sweep is the database side of `maintenance.reconcile_purchases` for
SWEEP payments MercadoPago's search returned (workflows/sweeps.py `_settle`, per payment:
record it, skip it if applied, else find its purchase and start a settlement job): the
newest SWEEP purchases' payments, the credited ones unchanged since applied (a re-read of the
overlap) and the others new (a settlement started each). The search itself is HTTP to
MercadoPago, pages of 100 whatever our tables hold, so it is not timed here.

Flat means the time at 1M rows is within 2x of the time at 10k (the target of the rows it
adds to `make bench`); a plan with a sequential scan of a grown table is reported as such.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

SIZES = (10_000, 100_000, 1_000_000)
RUNS = 9
PAGE = 20
SWEEP = 10_000
# One year of history, newest row first: row i happened i * STEP seconds before T0.
STEP_S = 31
GROWN = (
    "ledger_transactions",
    "ledger_entries",
    "purchases",
    "payment_events",
    "jobs",
    "notifications",
    "webhook_deliveries",
    "mercadopago_payments",
)
HEAVY_USER = uuid.UUID("00000000-0000-4000-8000-000000000001")
ENDPOINT = uuid.UUID("00000000-0000-4000-8000-0000000000e1")


@dataclass
class Measure:
    name: str
    flat: bool  # expected flat (index-backed, bounded work) or linear by design
    note: str = ""
    runs: int | None = None  # a long measure (the sweep) runs fewer times than --runs
    ms: dict[int, float] = field(default_factory=dict)
    plans: dict[int, list[str]] = field(default_factory=dict)
    seq_scans: dict[int, list[str]] = field(default_factory=dict)


def _load(engine: Engine, start: int, stop: int, t0: datetime) -> None:
    """Rows start..stop-1 of every grown table (idempotent per row range)."""
    params = {"a": start, "b": stop - 1, "t0": t0, "step": STEP_S, "u": HEAVY_USER}
    from market import ledger

    params["consumed"] = ledger.system_account_id(ledger.CONSUMED)
    params["sales"] = ledger.system_account_id(ledger.SALES)
    params["ep"] = ENDPOINT
    at = "CAST(:t0 AS timestamptz) - make_interval(secs => i * CAST(:step AS int))"
    statements = [
        # Ledger: one sale in ten, nine spends; every transaction the heavy user's.
        f"""INSERT INTO ledger_transactions (id, reference, kind, user_id, user_delta, created_at)
        SELECT md5('t' || i)::uuid, 'g:' || i, CASE WHEN i % 10 = 0 THEN 'sale' ELSE 'spend' END,
               :u, CASE WHEN i % 10 = 0 THEN 9 ELSE -1 END, {at}
        FROM generate_series(CAST(:a AS int), CAST(:b AS int)) i""",
        f"""INSERT INTO ledger_entries (transaction_id, account_id, amount, created_at)
        SELECT md5('t' || i)::uuid, w.id, CASE WHEN i % 10 = 0 THEN 9 ELSE -1 END, {at}
        FROM generate_series(CAST(:a AS int), CAST(:b AS int)) i, ledger_accounts w
        WHERE w.user_id = :u
        UNION ALL
        SELECT md5('t' || i)::uuid, CASE WHEN i % 10 = 0 THEN :sales ELSE :consumed END,
               CASE WHEN i % 10 = 0 THEN -9 ELSE 1 END, {at}
        FROM generate_series(CAST(:a AS int), CAST(:b AS int)) i""",
        # Purchases: 70% credited, 20% expired, 8% pending, 2% refunded.
        f"""INSERT INTO purchases (id, user_id, package_id, credits, amount, currency,
            external_reference, status, payment_id, expires_at, approved_at, settled_at,
            reversed_at, created_at, updated_at)
        SELECT md5('p' || i)::uuid, :u, 'credits-100', 100, 10, 'ARS', 'g' || i,
               s.status, CASE WHEN s.status IN ('approved', 'refunded') THEN i + 1 END,
               {at} + interval '30 minutes',
               CASE WHEN s.status IN ('approved', 'refunded') THEN {at} + interval '5 s' END,
               CASE WHEN s.status <> 'pending' THEN {at} + interval '30 minutes' END,
               CASE WHEN s.status = 'refunded' THEN {at} + interval '1 day' END, {at}, {at}
        FROM generate_series(CAST(:a AS int), CAST(:b AS int)) i,
             LATERAL (SELECT CASE WHEN i % 50 = 7 THEN 'refunded' WHEN i % 10 < 7 THEN 'approved'
                                  WHEN i % 10 < 9 THEN 'expired' ELSE 'pending' END) s(status)""",
        f"""INSERT INTO payment_events (id, dedupe_key, notification_id, type,
            action, data_id, payment_id, received_at, processed_at)
        SELECT md5('m' || i)::uuid, 'n:' || i, i, 'payment', 'payment.updated',
               (i + 1)::text, i + 1, {at}, {at} + interval '1 s'
        FROM generate_series(CAST(:a AS int), CAST(:b AS int)) i""",
        f"""INSERT INTO jobs (id, kind, state, owner_id, created_at, updated_at, finished_at)
        SELECT md5('j' || i)::uuid, 'settlement', 'succeeded', :u, {at}, {at},
               {at} + interval '1 s'
        FROM generate_series(CAST(:a AS int), CAST(:b AS int)) i""",
        f"""INSERT INTO notifications (id, user_id, kind, title, dedupe_key, created_at,
            updated_at, read_at, dispatched_at)
        SELECT md5('n' || i)::uuid, :u, 'credits.purchase_approved', 'Credits', 'g' || i,
               {at}, {at}, {at} + interval '1 hour', {at} + interval '1 s'
        FROM generate_series(CAST(:a AS int), CAST(:b AS int)) i""",
        # MercadoPago's answer for each credited (or refunded) purchase, applied.
        """INSERT INTO mercadopago_payments (id, external_reference, status, amount,
            currency, date_last_updated, data, fetched_at, applied_status, applied_updated,
            applied_at)
        SELECT p.payment_id, p.external_reference, p.status, 10, 'ARS', p.approved_at, '{}',
               p.settled_at, p.status, p.approved_at, p.settled_at
        FROM purchases p
        WHERE p.payment_id BETWEEN CAST(:a AS int) + 1 AND CAST(:b AS int) + 1""",
        f"""INSERT INTO webhook_deliveries (id, endpoint_id, notification_id, event_type,
            payload, state, created_at, updated_at)
        SELECT md5('d' || i)::uuid, :ep, md5('n' || i)::uuid, 'credits.purchase_approved',
               '{{}}', 'succeeded', {at}, {at} + interval '2 s'
        FROM generate_series(CAST(:a AS int), CAST(:b AS int)) i""",
    ]
    with Session(engine) as session, session.begin():
        # Bulk load only: the triggers (balances, append-only, balanced at commit, foreign
        # keys) would cost a row-by-row check the measured reads never pay.
        session.execute(text("SET LOCAL session_replication_role = replica"))
        for stmt in statements:
            session.execute(text(stmt), params)
        # What the triggers (off above) keep for /metrics, as they would have left it.
        for stmt in RECOUNT:
            session.execute(text(stmt))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"VACUUM ANALYZE {', '.join(GROWN)}, row_counts, ledger_account_totals"))


RECOUNT = (
    "DELETE FROM row_counts",
    """INSERT INTO row_counts (tbl, k1, k2, slot, n)
    SELECT 'jobs', kind, state, 0, count(*) FROM jobs GROUP BY kind, state""",
    """INSERT INTO row_counts (tbl, k1, k2, slot, n)
    SELECT 'webhook_deliveries', event_type, state, 0, count(*) FROM webhook_deliveries
    GROUP BY event_type, state""",
    "DELETE FROM ledger_account_totals",
    """INSERT INTO ledger_account_totals (account_id, slot, total)
    SELECT a.id, 0, COALESCE(sum(e.amount), 0)
    FROM ledger_accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
    WHERE a.kind = 'system' GROUP BY a.id""",
)


def _seed(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        session.execute(
            text(
                "INSERT INTO users (id, firebase_uid, email) "
                "VALUES (:u, 'growth-heavy', 'heavy@example.com')"
            ),
            {"u": HEAVY_USER},
        )
        from market import ledger

        ledger.wallet(session, HEAVY_USER)
        session.execute(
            text(
                "INSERT INTO webhook_endpoints (id, owner_id, url, events, secret) "
                "VALUES (:ep, :u, 'https://example.com/hook', ARRAY['*'], 'whsec_x')"
            ),
            {"ep": ENDPOINT, "u": HEAVY_USER},
        )


@contextmanager
def _statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _seq_scans(plan: str) -> set[str]:
    """The grown tables `plan` reads whole: a sequential scan under a `Limit` node stops after
    that many rows (bounded: reported as "<table> (under LIMIT)")."""
    found: set[str] = set()
    parents: list[tuple[int, str]] = []  # (indent, node) of the lines above, outermost first
    for line in plan.splitlines():
        text_ = line.lstrip()
        indent = len(line) - len(text_)
        node = text_.removeprefix("->").strip()
        while parents and parents[-1][0] >= indent:
            parents.pop()
        for table in GROWN:
            if node.startswith(f"Seq Scan on {table} ") or node == f"Seq Scan on {table}":
                bounded = any(p.startswith("Limit") for _, p in parents)
                found.add(f"{table} (under LIMIT)" if bounded else table)
        if node and not node.startswith(("Filter", "Index Cond", "Recheck", "Sort Key")):
            parents.append((indent, node))
    return found


def _explain(engine: Engine, statements: list[tuple[str, Any]]) -> list[str]:
    plans = []
    explained: set[str] = set()
    with engine.connect() as conn:
        for statement, parameters in statements:
            head = statement.lstrip().split(None, 1)[0].upper()
            if head not in ("SELECT", "WITH", "DELETE", "UPDATE", "INSERT"):
                continue
            if statement in explained:  # the sweep sends the same few statements 10k times
                continue
            explained.add(statement)
            if isinstance(parameters, list):  # executemany: one set of parameters says it
                parameters = parameters[0] if parameters else None
            rows = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars()
            # A purge's IN list of 500 ids says nothing about the plan: cut long lines.
            plans.append("\n".join(r if len(r) <= 240 else r[:240] + " …" for r in rows))
        conn.rollback()
    return plans


def _queries(
    t0: datetime, cursors: dict[str, str], payments: list[dict[str, Any]]
) -> list[tuple[Measure, Callable[[Session], Any], bool]]:
    """(measure, call, writes) for one size; `writes` calls run in a rolled-back transaction."""
    from market import ledger
    from market.ops import analytics, gauges, purges
    from market.payments import purchases
    from market.payments.mercadopago.client import SEARCH_PAGE
    from webapp.schemas import MAX_PAGE, count_bound
    from workflows import sweeps

    # Every size has more than a batch of rows older than this (10k rows span 3.6 days).
    old = t0 - timedelta(days=1)
    day = (t0 - timedelta(days=2)).date()
    bound = count_bound(PAGE)
    counted = f"X-Pagination's total, counted up to {bound:,} rows (page {MAX_PAGE}'s reach)"

    def sweep(session: Session) -> int:
        # As the sweep does: one transaction per page of the search (rolled back here).
        started = 0
        for first in range(0, len(payments), SEARCH_PAGE):
            started += sum(
                sweeps._settle(session, p) for p in payments[first : first + SEARCH_PAGE]
            )
            session.rollback()
        return started

    lists = (
        ("history", ledger.history_page, ledger.history, "ledger_transactions"),
        ("purchases", purchases.purchases_page, purchases.user_purchases, "purchases"),
    )
    pages = []
    for name, by_cursor, numbered, table in lists:
        pages += [
            (
                Measure(f"{name}: first keyset page", True),
                lambda s, by_cursor=by_cursor: by_cursor(s, user_id=HEAVY_USER, limit=PAGE),
                False,
            ),
            (
                Measure(f"{name}: keyset page at the deepest row", True),
                lambda s, by_cursor=by_cursor, table=table: by_cursor(
                    s, user_id=HEAVY_USER, cursor=cursors[table], limit=PAGE
                ),
                False,
            ),
            (
                Measure(f"{name}: numbered page {MAX_PAGE} (the bound)", True, counted),
                lambda s, numbered=numbered: numbered(
                    s, user_id=HEAVY_USER, offset=(MAX_PAGE - 1) * PAGE, count_up_to=bound
                ),
                False,
            ),
            (
                Measure(f"{name}: numbered page 1 with its total", True, counted),
                lambda s, numbered=numbered: numbered(
                    s, user_id=HEAVY_USER, limit=PAGE, count_up_to=bound
                ),
                False,
            ),
        ]
    return [
        *pages,
        (Measure("daily analytics roll-up", True), lambda s: analytics.rollup_day(s, day), True),
        (Measure("/metrics domain gauges", True), gauges.operations_gauges, False),
        (
            Measure(
                f"reconciliation sweep: {SWEEP:,} changed payments",
                True,
                "database side, per payment the search returned",
                runs=1,
            ),
            sweep,
            True,
        ),
        *(
            (
                Measure(f"purge: {purge.__name__} (batch of 500)", True),
                lambda s, purge=purge: purge(s, before=old, limit=500),
                True,
            )
            for purge in (
                purges.finished_jobs,
                purges.read_notifications,
                purges.processed_payment_events,
                purges.finished_deliveries,
                purges.expired_purchases,
            )
        ),
    ]


def _deep_cursor(engine: Engine, size: int, table: str) -> str:
    """The cursor of the page before the last one (set up once per size, not timed)."""
    from market import pagination

    with Session(engine) as session:
        row = session.execute(
            text(
                f"SELECT created_at, id FROM {table} WHERE user_id = :u "
                "ORDER BY created_at DESC, id DESC OFFSET :n LIMIT 1"
            ),
            {"u": HEAVY_USER, "n": max(size - PAGE - 1, 0)},
        ).one()
    return pagination.encode_cursor(row.created_at, row.id)


def _changed_payments(engine: Engine, t0: datetime) -> list[dict[str, Any]]:
    """What MercadoPago's search of changed payments returns for the newest SWEEP purchases:
    a credited purchase's payment as applied (unchanged), any other's a new approval."""
    with Session(engine) as session:
        rows = session.execute(
            text(
                "SELECT external_reference, payment_id, status, approved_at FROM purchases "
                "WHERE user_id = :u ORDER BY created_at DESC, id DESC LIMIT :n"
            ),
            {"u": HEAVY_USER, "n": SWEEP},
        ).all()
    payments = []
    for n, row in enumerate(rows):
        known = row.payment_id is not None
        payments.append(
            {
                "id": row.payment_id if known else 10**12 + n,
                "external_reference": row.external_reference,
                "status": row.status if known else "approved",
                "status_detail": "accredited",
                "transaction_amount": 10,
                "currency_id": "ARS",
                "date_last_updated": (row.approved_at if known else t0).isoformat(),
            }
        )
    return payments


def _time(engine: Engine, call: Callable[[Session], Any], runs: int, *, warm: bool = True) -> float:
    times = []
    for n in range(runs + 1 if warm else runs):  # a warming run is not kept
        with Session(engine) as session:
            began = time.perf_counter()
            call(session)
            elapsed = time.perf_counter() - began
            session.rollback()
        if n or not warm:
            times.append(elapsed * 1000)
    return statistics.median(times)


def measure(
    database_url: str, sizes: tuple[int, ...] = SIZES, runs: int = RUNS, log: Any = sys.stderr
) -> list[Measure]:
    """Grow a scratch database through `sizes` and time every query at each (dropped after)."""
    from market import manage
    from market.db import make_engine

    scratch = f"{database_url.rsplit('/', 1)[0]}/spartan_bench_growth_{uuid.uuid4().hex[:8]}"
    manage.create_database(scratch)
    engine = make_engine(scratch, pool_size=2, application_name="spartan-bench-growth")
    t0 = datetime.now(UTC).replace(microsecond=0)
    measures: dict[str, Measure] = {}
    try:
        manage.migrate(scratch)
        _seed(engine)
        loaded = 0
        for size in sizes:
            began = time.perf_counter()
            _load(engine, loaded, size, t0)
            loaded = size
            print(
                f"  growth: {size:,} rows loaded in {time.perf_counter() - began:.0f} s",
                file=log,
                flush=True,
            )
            cursors = {
                table: _deep_cursor(engine, size, table)
                for table in ("ledger_transactions", "purchases")
            }
            payments = _changed_payments(engine, t0)
            for template, call, _writes in _queries(t0, cursors, payments):
                m = measures.setdefault(template.name, template)
                with _statements(engine) as sent, Session(engine) as session:
                    call(session)
                    session.rollback()
                # A long measure (m.runs) was warmed by the run that recorded its statements.
                m.ms[size] = _time(engine, call, min(runs, m.runs or runs), warm=m.runs is None)
                m.plans[size] = _explain(engine, sent)
                m.seq_scans[size] = sorted({t for plan in m.plans[size] for t in _seq_scans(plan)})
    finally:
        engine.dispose()
        manage.drop_database(scratch)
    return list(measures.values())


def table(measures: list[Measure], sizes: tuple[int, ...]) -> str:
    head = ["query", *(f"{s:,} rows" for s in sizes), "last/first", "seq scans (last)", ""]
    lines = [head]
    for m in measures:
        first, last = m.ms.get(sizes[0]), m.ms.get(sizes[-1])
        ratio = f"{last / first:.2f}" if first and last else ""
        scans = ", ".join(m.seq_scans.get(sizes[-1], [])) or "none"
        lines.append(
            [
                m.name,
                *(f"{m.ms[s]:.2f} ms" if s in m.ms else "" for s in sizes),
                ratio,
                scans,
                ("flat" if m.flat else "linear by design") + (f": {m.note}" if m.note else ""),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def run(ctx: Any) -> None:
    """The growth rows of `make bench`: time at the largest size against the smallest."""
    sizes = SIZES
    measures = measure(ctx.settings.database_url, sizes)
    for m in measures:
        ctx.results.add(
            "growth",
            f"{m.name}, {sizes[-1]:,} vs {sizes[0]:,} rows",
            m.ms[sizes[-1]],
            m.ms[sizes[0]],
            unit="ms",
            higher_is_better=False,
            target=2.0 if m.flat else None,
            note=(m.note + "; " if m.note else "")
            + ("seq scan: " + ", ".join(m.seq_scans[sizes[-1]]) if m.seq_scans[sizes[-1]] else ""),
        )
    ctx.results.details["growth"] = _details(measures)
    print(table(measures, sizes), file=sys.stderr)


def _details(measures: list[Measure]) -> dict[str, Any]:
    return {
        m.name: {
            "flat": m.flat,
            "ms": {str(k): round(v, 3) for k, v in m.ms.items()},
            "seq_scans": {str(k): v for k, v in m.seq_scans.items()},
            "plans": {str(k): v for k, v in m.plans.items()},
        }
        for m in measures
    }


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--plans", action="store_true", help="print every plan at the top size")
    parser.add_argument("--out", help="write the figures and plans as JSON here")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the scratch database is dropped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sizes = tuple(int(s) for s in args.sizes.split(","))
    url = os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/spartan")
    print(f"load average at start: {[round(x, 2) for x in os.getloadavg()]}")
    measures = measure(url, sizes, args.runs)
    print(table(measures, sizes))
    if args.plans:
        for m in measures:
            print(f"\n## {m.name} ({sizes[-1]:,} rows)")
            for plan in m.plans[sizes[-1]]:
                print(plan + "\n")
    if args.out:
        with open(args.out, "w") as out:
            json.dump(_details(measures), out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
