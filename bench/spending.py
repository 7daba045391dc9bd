"""3. Spending: 16 concurrent clients through the ledger, through HTTP, and pgbench's floor.

Ledger: 16 processes, each with its own connection and user, calling `ledger.spend` alone in
autocommit (one statement, its own transaction: what `POST /credits/spend` without an
Idempotency-Key sends), for a fixed time. Floor: `pgbench -b simple-update -c 16` on the
same PostgreSQL server (one balance update and one history insert per transaction), in a
scratch database dropped afterwards. HTTP: wrk POSTing /credits/spend for the 16 users in
turn (no Idempotency-Key: the header is optional).
"""

from __future__ import annotations

import multiprocessing
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench import harness
from bench.context import BenchUser, Context
from bench.harness import BenchError, percentile, request_line

NAME = "spending"
CLIENTS = 16
DURATION_S = 5
SPEND_PATH = "/api/v1/advanced/credits/spend"


def _spender(database_url: str, user_id: str, start_at: float, stop_at: float, out: Any) -> None:
    """One client: spend 1 credit per transaction until `stop_at`; report the latencies."""
    from market import ledger
    from market.db import autocommit, make_engine, make_sessionmaker

    engine = make_engine(database_url, pool_size=1, application_name="spartan-bench-spend")
    sessions = make_sessionmaker(engine)
    uid = uuid.UUID(user_id)
    with sessions() as session:  # connect before the clock starts
        session.connection()
    latencies = []
    time.sleep(max(0.0, start_at - time.time()))
    while time.time() < stop_at:
        began = time.perf_counter()
        with sessions() as session:  # as POST /credits/spend runs it: alone, in autocommit
            ledger.spend(autocommit(session), user_id=uid, amount=1, description=None)
            session.commit()
        latencies.append(time.perf_counter() - began)
    engine.dispose()
    out.put(latencies)


def _ledger(ctx: Context, users: list[BenchUser]) -> list[float]:
    # fork: the children need nothing of this process but the imports it already has.
    mp = multiprocessing.get_context("fork")
    out = mp.Queue()
    start_at = time.time() + 3.0  # every client connected before the clock starts
    stop_at = start_at + DURATION_S
    procs = [
        mp.Process(
            target=_spender,
            args=(ctx.settings.database_url, str(u.id), start_at, stop_at, out),
            daemon=True,
        )
        for u in users
    ]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=DURATION_S + 60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return [x for r in results for x in r]


def _libpq_args(url: str) -> list[str]:
    u = make_url(url)
    return ["-h", u.host or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "postgres"]


def _pgbench(ctx: Context) -> dict[str, float]:
    """pgbench simple-update with CLIENTS clients in a scratch database (dropped by close)."""
    from market import manage

    url = ctx.scratch.pgbench_url
    manage.create_database(url)
    name = make_url(url).database or ""
    conn = _libpq_args(url)
    subprocess.run(
        ["pgbench", "-i", "-q", "-s", "1", *conn, name],
        check=True,
        capture_output=True,
        timeout=120,
    )
    done = subprocess.run(
        [
            *("pgbench", "-b", "simple-update", "-c", str(CLIENTS), "-j", "2"),
            *("-T", str(DURATION_S), "-n", *conn, name),
        ],
        capture_output=True,
        text=True,
        timeout=DURATION_S + 60,
        check=False,
    )
    manage.drop_database(url)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    latency = re.search(r"latency average = ([\d.]+) ms", done.stdout)
    if done.returncode != 0 or tps is None:
        raise BenchError(f"pgbench failed: {done.stdout}\n{done.stderr}")
    return {"tps": float(tps.group(1)), "latency_avg_ms": float(latency.group(1)) if latency else 0}


def _http(ctx: Context, users: list[BenchUser]) -> harness.WrkResult:
    with tempfile.TemporaryDirectory(prefix="spartan-bench-spend-") as tmp:
        path = Path(tmp) / "spend.txt"
        lines = [
            request_line(
                "POST",
                SPEND_PATH,
                {**u.auth, "Content-Type": "application/json"},
                '{"amount":1}',
            )
            for u in users
        ]
        path.write_text("\n".join(lines) + "\n")
        return harness.wrk(
            ctx.web, requests_file=path, duration_s=DURATION_S, connections=CLIENTS, threads=2
        )


def run(ctx: Context) -> None:
    users = ctx.make_users(CLIENTS)
    ctx.fund(users, 10_000_000)
    ledger_latencies = _ledger(ctx, users)
    ledger_tps = len(ledger_latencies) / DURATION_S
    floor = _pgbench(ctx)
    http = _http(ctx, users)
    if http.errors:
        raise BenchError(f"HTTP spends failed: {http.raw}")
    r = ctx.results
    r.add(NAME, "ledger.spend, 16 processes", ledger_tps, floor["tps"], unit="tx/s", target=0.5)
    r.add(NAME, "POST /credits/spend, 16 conns", http.rps, floor["tps"], unit="tx/s", target=0.3)
    r.details[NAME] = {
        "clients": CLIENTS,
        "duration_s": DURATION_S,
        "ledger_tps": round(ledger_tps, 1),
        "ledger_ms": {
            "p50": round(harness.median(ledger_latencies) * 1000, 2),
            "p99": round(percentile(ledger_latencies, 99) * 1000, 2),
        },
        "pgbench": floor,
        "http": http.raw,
        "http_wrapped_note": "requests repeat by design: 16 users in turn, each a new spend",
    }
