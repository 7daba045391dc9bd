"""A fault test's own deployment: the web app under gunicorn and `celery worker` processes
(as the Procfile starts them) with the test's own Redis key and Celery queue prefixes, a
private redis-server when the broker itself is the fault, and a Celery client that plays beat.

Processes come from bench/harness.py (own process group, log file, TERM then KILL on stop).
Every process gets this test process's environment (the run's database, the sandbox's
address, set by tests/conftest.py and the `mp_sandbox` fixture) plus the deployment's own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from bench import harness
from bench.harness import Proc, Stack
from market.config import load_settings
from tests.support.poll import wait_for
from workers.app import config_for

WEBHOOK_PATH = "/api/v1/advanced/webhooks/mercadopago"
UNLIMITED = harness.UNLIMITED
# What beat would send, with the cut-offs shrunk from minutes to seconds. Sending a job again
# after 1 s, every 2 s, piles up copies faster than a busy worker drains them (each copy of a
# step not yet run runs): 5 s keeps the sweeps' rhythm without the pile-up.
BEAT_TASKS: dict[str, dict[str, Any]] = {
    "maintenance.resend_stale_jobs": {"older_than_s": 5},
    "maintenance.requeue_payment_events": {"older_than_s": 5},
    "maintenance.reconcile_purchases": {"older_than_s": 1},
}


class Deployment:
    """Web and worker processes of one test, sharing its prefixes and broker."""

    def __init__(self, name: str, **env: str) -> None:
        prefix = f"{os.environ['KEY_PREFIX']}{name}{uuid.uuid4().hex[:4]}"
        self.prefix = prefix
        self.env: dict[str, str] = {
            "KEY_PREFIX": prefix,
            "CELERY_QUEUE_PREFIX": f"{prefix}.",
            # Its processes and its client on one broker: Redis (as `broker_url` says) unless
            # the test names its own, also when the suite runs on RabbitMQ (TEST_BROKER_URL).
            "CELERY_BROKER_URL": os.environ["REDIS_URL"],
            "RATE_LIMIT_DEFAULT": UNLIMITED,
            "RATE_LIMIT_BUY": UNLIMITED,
            # Celery imports beat_schedule.py after taking the working directory off sys.path.
            "PYTHONPATH": str(harness.ROOT),
            **env,
        }
        self.stack = Stack()
        self.web_url = ""
        self.workers: dict[str, Proc] = {}
        self.client = beat_client(self.broker_url, self.queue_prefix)

    @property
    def queue_prefix(self) -> str:
        return self.env["CELERY_QUEUE_PREFIX"]

    @property
    def broker_url(self) -> str:
        return self.env.get("CELERY_BROKER_URL") or os.environ["REDIS_URL"]

    @property
    def webhook_url(self) -> str:
        return self.web_url + WEBHOOK_PATH

    def start(self, *workers: str) -> Deployment:
        """Start the web app and the named workers (booting side by side); returns once the
        web app answers and every worker answers a ping."""
        pending = [self._spawn_worker(name) for name in workers]
        self.web_url = harness.gunicorn(
            self.stack, f"web-{self.prefix}", "webapp:create_app()", self.env, "/api/openapi.json"
        )
        for ready in pending:
            ready()
        return self

    def start_worker(self, name: str) -> Proc:
        """Start one more worker; returns once it answers a ping."""
        self._spawn_worker(name)()
        return self.workers[name]

    def _spawn_worker(self, name: str, *, concurrency: int = 2) -> Callable[[], None]:
        """Start a prefork `celery worker` on the four queues; returns a wait for its ping."""
        node = f"{name}-{self.prefix}@{os.uname().nodename}"
        argv = [
            *(sys.executable, "-m", "celery", "-A", "workers.app", "worker"),
            *("--pool", "prefork", "--concurrency", str(concurrency), "-E"),
            *("--loglevel", "WARNING", "-n", node, "--without-gossip", "--without-mingle"),
        ]
        proc = self.stack.start(f"worker-{name}", argv, self.env)
        self.workers[name] = proc

        def answers() -> bool:
            assert proc.alive(), f"worker {name} exited:\n{proc.tail()}"
            return bool(self.client.control.ping(destination=[node], timeout=0.5))

        def wait() -> None:
            wait_for(answers, timeout=90, interval=0.2, what=f"worker {name} answering pings")

        return wait

    def responsive(self, name: str, *, timeout: float) -> bool:
        """Whether the worker answers a ping within `timeout` (as health's worker check asks)."""
        node = f"{name}-{self.prefix}@{os.uname().nodename}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # the broker may still be coming back
                if self.client.control.ping(destination=[node], timeout=0.5):
                    return True
            time.sleep(0.2)
        return False

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker and its pool processes: no warm shutdown, no ack, no cleanup."""
        proc = self.workers.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.popen.wait(timeout=10)
        self.stack.stop(proc)

    def beat(self, tasks: dict[str, dict[str, Any]] | None = None) -> None:
        """Send the recovery jobs as `celery beat` would (through the broker to a worker)."""
        for name, kwargs in (tasks or BEAT_TASKS).items():
            self.client.send_task(name, kwargs=kwargs, queue=f"{self.queue_prefix}maintenance")

    def close(self) -> None:
        self.stack.stop_all()
        self.client.close()
        harness.drop_redis_keys(os.environ["REDIS_URL"], self.prefix)


def beat_client(broker_url: str, queue_prefix: str) -> Celery:
    """A Celery client for a deployment's broker, configured as workers/app.py configures its
    own (queues, key prefix), with no result backend."""
    deployment = replace(
        load_settings(read_dotenv=False),
        celery_broker_url=broker_url,
        celery_queue_prefix=queue_prefix,
    )
    client = Celery(f"beat-{queue_prefix}", set_as_current=False)
    client.conf.update(
        config_for(deployment),
        # Celery prefers $CELERY_BROKER_URL (the suite's broker, e.g. RabbitMQ under
        # TEST_BROKER_URL) to `broker_url`; these two settings win over it.
        broker_read_url=broker_url,
        broker_write_url=broker_url,
        result_backend=None,
        task_ignore_result=True,
    )
    return client


class PrivateRedis:
    """A redis-server of one test, without persistence: a restart loses every key."""

    def __init__(self) -> None:
        self.port = harness.free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="spartan-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self.dir)]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        wait_for(self._answers, timeout=20, interval=0.05, what="redis-server answering")
        return self

    def kill(self) -> None:
        """SIGKILL: whatever it held (queued messages, bindings, results) is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, "redis-server exited"
        client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()


def settle_with_beat(
    deployment: Deployment,
    settled: Callable[[], bool],
    *,
    timeout: float,
    every_s: float = 2.0,
    what: str,
    describe: Callable[[], str] = lambda: "",
) -> int:
    """Play beat every `every_s` until `settled()`; how many rounds it took (0: none needed)."""
    deadline = time.monotonic() + timeout
    rounds = 0
    next_round = time.monotonic() + every_s
    while not settled():
        if time.monotonic() >= deadline:
            logs = "\n".join(
                f"--- worker {name}:\n{proc.tail(40)}" for name, proc in deployment.workers.items()
            )
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what} ({describe()})\n{logs}"
            )
        if time.monotonic() >= next_round:
            deployment.beat()
            rounds += 1
            next_round = time.monotonic() + every_s
        time.sleep(0.1)
    return rounds
