"""One benchmark run's shared world: scratch database, sandbox, web servers, workers, users.

Built once by `bench.__main__` and handed to each benchmark; `close()` stops every process,
drops the scratch databases and the run's Redis keys however the run ended.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import requests

from bench import harness
from bench.harness import WEBHOOK_PATH, BenchError, Proc, Results, Scratch, Stack

SANDBOX_COLLECTOR = "123456789"


@dataclass(frozen=True)
class BenchUser:
    id: uuid.UUID
    uid: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Context:
    """Lazily started pieces of the stack, so a benchmark pays only for what it uses."""

    def __init__(self, deadline_s: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + deadline_s
        self.scratch = Scratch.make(
            os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/spartan")
        )
        self.results = Results()
        self.stack = Stack()
        self._notification_ids = iter(range(500_000_000_001, 10**15))
        self._user_count = 0
        self._web: str | None = None
        self._baseline: str | None = None
        self._worker: tuple[Proc, str] | None = None
        self._noop_worker: tuple[Proc, str] | None = None

    def start(self) -> None:
        """Make the scratch database and start the sandbox (`close()` undoes it, even half done)."""
        # Every process of ours, and this one, reads its settings from this environment.
        os.environ.update(self.scratch.env())
        self._start_database()
        self._start_sandbox()

    # Time -------------------------------------------------------------------------------------

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # Set-up -------------------------------------------------------------------------------------

    def _start_database(self) -> None:
        from market import manage
        from market.config import load_settings
        from market.db import make_engine, make_sessionmaker

        self.settings = load_settings(read_dotenv=False)
        manage.check_postgres(self.settings.database_url)
        manage.check_redis(self.settings.redis_url)
        manage.create_database(self.settings.database_url)
        manage.migrate(self.settings.database_url)
        self.engine = make_engine(self.settings.database_url, pool_size=4)
        self.sessions = make_sessionmaker(self.engine)

    def _start_sandbox(self) -> None:
        """The MercadoPago sandbox in a process of its own, as `make run` starts it."""
        for _ in range(3):  # a port taken between choosing and binding it: try another
            port = harness.free_port()
            url = f"http://127.0.0.1:{port}"
            proc = self.stack.start(
                "sandbox",
                [sys.executable, "-m", "sandbox.mercadopago", "--port", str(port)],
                {**self.scratch.env(), "SANDBOX_PUBLIC_URL": url},
            )

            def up(url: str = url, proc: Proc = proc) -> bool:
                if not proc.alive():
                    return True
                try:
                    return requests.get(f"{url}/_sandbox/health", timeout=2).ok
                except requests.RequestException:
                    return False

            harness.wait_until(up, timeout=30, what="the MercadoPago sandbox", every=0.1)
            if proc.alive():
                self.sandbox_url = url
                os.environ["MERCADOPAGO_API_BASE_URL"] = url
                return
            self.stack.stop(proc)
        raise BenchError("the MercadoPago sandbox did not start (3 ports tried)")

    def _approved_payment(self, session: requests.Session, body: dict[str, Any]) -> int:
        """A preference made through the REST API, paid through the control API (no webhook)."""
        auth = {"Authorization": f"Bearer {self.settings.mercadopago_access_token}"}
        pref = session.post(
            f"{self.sandbox_url}/checkout/preferences", json=body, headers=auth, timeout=10
        )
        pref.raise_for_status()
        paid = session.post(
            f"{self.sandbox_url}/_sandbox/preferences/{pref.json()['id']}/pay",
            json={"status": "approved", "webhook": "withhold"},
            timeout=10,
        )
        paid.raise_for_status()
        return int(paid.json()["id"])

    def env(self) -> dict[str, str]:
        return {**self.scratch.env(), "MERCADOPAGO_API_BASE_URL": self.sandbox_url}

    @property
    def web(self) -> str:
        """The project's API under gunicorn as the Procfile runs it."""
        if self._web is None:
            self._web = harness.gunicorn(
                self.stack,
                "web",
                "webapp:create_app()",
                self.env(),
                "/api/v1/advanced/credits/packages",
            )
        return self._web

    @property
    def baseline(self) -> str:
        """The baseline Flask app (HMAC webhook, bare JSON) under the same gunicorn settings."""
        if self._baseline is None:
            self._baseline = harness.gunicorn(
                self.stack,
                "baseline",
                "bench.baseline_apps:baseline_app()",
                self.env(),
                "/bare/json",
            )
        return self._baseline

    @property
    def worker(self) -> tuple[Proc, str]:
        """The project's `celery -A workers.app worker` (all four queues, as the Procfile)."""
        if self._worker is None:
            from workers.app import app

            self._worker = harness.celery_worker(
                self.stack,
                "worker",
                "workers.app",
                self.env(),
                lambda node: bool(app.control.ping(destination=[node], timeout=0.5)),
            )
        return self._worker

    @property
    def noop_worker(self) -> tuple[Proc, str]:
        """A worker of the bare no-op tasks, same settings."""
        if self._noop_worker is None:
            from bench.noop_tasks import app

            self._noop_worker = harness.celery_worker(
                self.stack,
                "noop",
                "bench.noop_tasks",
                self.env(),
                lambda node: bool(app.control.ping(destination=[node], timeout=0.5)),
            )
        return self._noop_worker

    # Data -------------------------------------------------------------------------------------

    def make_users(self, n: int) -> list[BenchUser]:
        """Users as the API would create them from their tokens, with emulator tokens."""
        from market.identity.tokens import Identity, upsert_user
        from sandbox.token import mint

        users = []
        with self.sessions() as session, session.begin():
            for _ in range(n):
                self._user_count += 1
                uid = f"bench-{self.scratch.run}-{self._user_count}"
                email = f"{uid}@example.com"
                user = upsert_user(session, Identity(uid, email, None, False))
                token = mint(uid, project_id=self.settings.firebase_project_id, email=email)
                users.append(BenchUser(user.id, uid, token))
        return users

    def fund(self, users: list[BenchUser], credits: int) -> None:
        """Give each user `credits` (a sale posted straight to the ledger)."""
        from market import ledger

        with self.sessions() as session, session.begin():
            for user in users:
                ledger.credit_sale(
                    session,
                    user_id=user.id,
                    credits=credits,
                    reference=f"bench:fund:{uuid.uuid4()}",
                )

    def paid_purchases(self, users: list[BenchUser], n: int) -> list[int]:
        """`n` pending purchases (users in turn) each with an approved payment at the sandbox;
        their payment ids. The sandbox sends no webhook: the benchmark sends them."""
        from sqlalchemy import insert

        from market.models import CreditPackage, Purchase
        from market.models.base import utcnow

        with self.sessions() as session:
            package = session.get(CreditPackage, "credits-100")
            assert package is not None
        refs = [f"sm-bench-{uuid.uuid4().hex}" for _ in range(n)]
        item = {
            "id": package.id,
            "title": f"{package.credits} credits",
            "quantity": 1,
            "unit_price": float(package.price),
        }
        local = threading.local()

        def pay(ref: str) -> int:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            return self._approved_payment(
                local.session, {"items": [item], "external_reference": ref}
            )

        with ThreadPoolExecutor(4) as pool:
            payment_ids = list(pool.map(pay, refs))
        expires = utcnow() + timedelta(days=1)
        rows = [
            {
                "id": uuid.uuid4(),
                "user_id": users[i % len(users)].id,
                "package_id": package.id,
                "credits": package.credits,
                "amount": Decimal(package.price),
                "currency": package.currency,
                "external_reference": ref,
                "status": "pending",
                "expires_at": expires,
            }
            for i, ref in enumerate(refs)
        ]
        with self.sessions() as session, session.begin():
            for start in range(0, len(rows), 1000):
                session.execute(insert(Purchase), rows[start : start + 1000])
        return payment_ids

    def signed_webhook(self, payment_id: int) -> tuple[str, dict[str, str], str]:
        """(path with query, headers, body) of a MercadoPago notification, signed now."""
        from sandbox.mercadopago import sign

        request_id = str(uuid.uuid4())
        ts = str(int(time.time() * 1000))
        body = {
            "action": "payment.created",
            "api_version": "v1",
            "data": {"id": str(payment_id)},
            "date_created": "2026-01-01T00:00:00.000-03:00",
            "id": next(self._notification_ids),
            "live_mode": False,
            "type": "payment",
            "user_id": SANDBOX_COLLECTOR,
        }
        headers = {
            "Content-Type": "application/json",
            "x-request-id": request_id,
            "x-signature": sign(
                self.settings.mercadopago_webhook_secret, str(payment_id), request_id, ts
            ),
        }
        path = f"{WEBHOOK_PATH}?data.id={payment_id}&type=payment"
        return path, headers, json.dumps(body, separators=(",", ":"))

    def credited(self, payment_ids: list[int]) -> int:
        """How many of these payments have credited their purchase."""
        from sqlalchemy import func, select

        from market.models import Purchase

        with self.sessions() as session:
            return int(
                session.execute(
                    select(func.count())
                    .select_from(Purchase)
                    .where(Purchase.payment_id.in_(payment_ids), Purchase.status == "approved")
                ).scalar_one()
            )

    def jobs_finished(self, kind: str) -> int:
        """How many jobs of `kind` have ended (all their steps run), whatever the outcome."""
        from sqlalchemy import func, select

        from market.models import Job

        with self.sessions() as session:
            return int(
                session.execute(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.kind == kind, Job.state.in_(("succeeded", "failed", "cancelled")))
                ).scalar_one()
            )

    def jobs_failed(self) -> int:
        from sqlalchemy import func, select

        from market.models import Job

        with self.sessions() as session:
            return int(
                session.execute(
                    select(func.count()).select_from(Job).where(Job.state == "failed")
                ).scalar_one()
            )

    def pause_payments(self, paused: bool) -> None:
        """Stop (or resume) the project worker's consumption of the payments queue."""
        from workers.app import app, queue_name

        _, node = self.worker
        queue = queue_name("payments")
        if paused:
            app.control.cancel_consumer(queue, destination=[node], reply=True, timeout=5)
        else:
            app.control.add_consumer(queue, destination=[node], reply=True, timeout=5)

    # End ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process, drop the scratch databases and the run's Redis keys."""
        import shutil

        from market import manage

        errors: list[str] = []
        try:
            self.stack.stop_all()
        except Exception as exc:  # keep cleaning up
            errors.append(f"stopping processes: {exc}")
        if hasattr(self, "engine"):
            self.engine.dispose()
        for url in (self.scratch.database_url, self.scratch.pgbench_url):
            try:
                manage.drop_database(url)
            except Exception as exc:
                errors.append(f"dropping {url.rsplit('/', 1)[-1]}: {exc}")
        try:
            harness.drop_redis_keys(self.scratch.env()["REDIS_URL"], self.scratch.key_prefix)
        except Exception as exc:
            errors.append(f"Redis clean-up: {exc}")
        shutil.rmtree(self.scratch.media_root, ignore_errors=True)
        if errors:
            raise BenchError("; ".join(errors))
