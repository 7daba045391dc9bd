"""How many webhook deliveries per second one notifications worker sustains (a measurement,
not a test). Prints the worker's rate and its ratio to a baseline measured in the same run:
plain sequential `market.outbound.transport.deliver` calls to the same receiver, with no database.

    .venv/bin/python -m bench.webhook_throughput [--events 2000] [--concurrency 1]

It makes a scratch database, starts a loopback receiver and one `celery worker` process
consuming only the notifications queue, records N notifications for a user with one endpoint,
sends `notifications.dispatch_pending` once and times until every delivery has succeeded.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RUN = uuid.uuid4().hex[:8]
BASE_DB = os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/spartan")
ENV = {
    "APP_ENV": "test",
    "DATABASE_URL": BASE_DB.rsplit("/", 1)[0] + f"/spartan_bench_{RUN}",
    "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    "KEY_PREFIX": f"b{RUN}",
    "CELERY_QUEUE_PREFIX": f"b{RUN}.",
    "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099",
    "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    "LOG_LEVEL": "WARNING",
}
os.environ.update(ENV)  # before anything of ours reads the settings

from sqlalchemy import func, select  # noqa: E402

from bench.harness import drop_redis_keys  # noqa: E402
from market import manage, notifications  # noqa: E402
from market.config import load_settings  # noqa: E402
from market.db import make_engine, make_sessionmaker  # noqa: E402
from market.models import User, WebhookDelivery  # noqa: E402
from market.models.base import utcnow  # noqa: E402
from market.outbound import endpoints  # noqa: E402
from market.outbound.transport import deliver  # noqa: E402


class Receiver:
    """Answers 200 to every POST and counts them."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with owner.lock:
                    owner.count += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def baseline(url: str, secret: str, n: int) -> float:
    """Sequential signed POSTs from this process: the transport alone, per second."""
    body = b'{"type":"profile.updated","timestamp":"2026-01-01T00:00:00Z","data":{}}'
    started = time.monotonic()
    for _ in range(n):
        outcome = deliver(
            url,
            secret=secret,
            msg_id=str(uuid.uuid4()),
            timestamp=utcnow(),
            body=body,
            allowed_hosts=frozenset({"127.0.0.1"}),
        )
        assert outcome.succeeded, outcome
    return n / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=1, help="worker processes")
    parser.add_argument("--send-threads", type=int, default=8, help="WEBHOOK_SEND_CONCURRENCY")
    args = parser.parse_args()

    settings = load_settings(read_dotenv=False)
    manage.check_postgres(settings.database_url)
    manage.create_database(settings.database_url)
    manage.migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    receiver = Receiver()
    worker = None
    try:
        with sessions() as session:
            user = User(firebase_uid=f"bench-{RUN}", email="bench@example.com")
            session.add(user)
            session.flush()
            endpoint = endpoints.create_endpoint(
                session,
                owner=user,
                url=receiver.url,
                events=["profile.updated"],
                allowed_hosts=settings.webhook_allowed_hosts,
            )
            for i in range(args.events):
                notifications.record(
                    session,
                    user_id=user.id,
                    kind="profile.updated",
                    title="bench",
                    dedupe_key=f"bench:{RUN}:{i}",
                    data={"i": i},
                )
            session.commit()
            secret = endpoint.secret

        base_rate = baseline(receiver.url, secret, min(500, args.events))
        receiver.count = 0

        env = {**os.environ, "WEBHOOK_SEND_CONCURRENCY": str(args.send_threads)}
        worker = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "workers.app", "worker"),
                *("-Q", f"{ENV['CELERY_QUEUE_PREFIX']}notifications"),
                *("--concurrency", str(args.concurrency), "--loglevel", "WARNING"),
                *("--without-gossip", "--without-mingle", "-n", f"bench-{RUN}@%h"),
            ],
            env=env,
        )
        from workers.app import app

        # The worker is up once it answers a ping.
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not start")

        started = time.monotonic()
        app.send_task("notifications.dispatch_pending", kwargs={})
        while True:
            with sessions() as session:
                done = session.execute(
                    select(func.count())
                    .select_from(WebhookDelivery)
                    .where(WebhookDelivery.state == "succeeded")
                ).scalar_one()
            if done >= args.events:
                break
            if time.monotonic() - started > 600:
                raise SystemExit(f"only {done} of {args.events} delivered in 10 minutes")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        rate = args.events / elapsed
        print(
            f"events={args.events} worker_processes={args.concurrency} "
            f"send_threads={args.send_threads}\n"
            f"worker: {rate:.0f} deliveries/s ({elapsed:.2f} s, fan-out + send + record)\n"
            f"baseline (sequential deliver(), no DB): {base_rate:.0f}/s\n"
            f"ratio worker/baseline: {rate / base_rate:.2f}"
        )
        return 0
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        receiver.server.shutdown()
        engine.dispose()
        manage.drop_database(settings.database_url)
        drop_redis_keys(settings.redis_url, ENV["KEY_PREFIX"])  # its queues and results


if __name__ == "__main__":
    sys.exit(main())
