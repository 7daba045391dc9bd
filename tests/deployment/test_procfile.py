"""Every Procfile line started as a plain process manager starts it: `sh -c '<line>'` with a
clean environment (no PYTHONPATH, no dev.env), from a directory that is not the checkout, with
the project installed by `pip install .` (tests/deployment/installed.py)."""

from __future__ import annotations

import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from beat_schedule import SCHEDULE
from tests.deployment.installed import ROOT, Installation, Process, free_port
from tests.reliability.stack import beat_client
from tests.support.poll import wait_for

PACKAGES = ("market", "workers", "workflows", "webapp", "sandbox")
LIVE = "/api/v1/advanced/health/live"


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name: line.strip() for name, line in (x.split(":", 1) for x in lines if x.strip())}


def _modules_of_the_tree() -> set[str]:
    found = {"beat_schedule.py"}
    for package in PACKAGES:
        found |= {str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py")}
    found |= {
        "market/migrations/" + str(p.relative_to(ROOT / "migrations"))
        for p in (ROOT / "migrations").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    return found


def test_the_wheel_installs_every_module(installation: Installation):
    in_wheel = set(zipfile.ZipFile(installation.wheel).namelist())
    missing = _modules_of_the_tree() - in_wheel
    assert not missing, f"not installed by `pip install .` (list them in pyproject.toml): {missing}"
    # Imported from the installed copy, from a directory that is not the checkout.
    script = (
        "import beat_schedule, market.manage, sandbox.mercadopago, webapp, workers.app, workflows\n"
        "mods = beat_schedule, market.manage, sandbox.mercadopago, webapp, workers.app, workflows\n"
        "print(*[m.__file__ for m in mods], market.manage.migrations_dir(), sep='\\n')"
    )
    ran = subprocess.run(
        ["python", "-c", script],
        env=installation.environment(),
        cwd=installation.home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    for path in ran.stdout.split():
        assert Path(path).is_relative_to(installation.venv), path


@pytest.fixture()
def processes(tmp_path: Path) -> Iterator[dict[str, Process]]:
    started: dict[str, Process] = {}
    yield started
    for proc in reversed(list(started.values())):
        proc.stop()


def test_every_procfile_line_starts_anywhere(
    installation: Installation,
    production_settings: dict[str, str],
    processes: dict[str, Process],
    tmp_path: Path,
):
    port, flower_port, sandbox_port = free_port(), free_port(), free_port()
    settings = {
        **production_settings,
        "PORT": str(port),
        "FLOWER_PORT": str(flower_port),
        "SANDBOX_PORT": str(sandbox_port),
        "MERCADOPAGO_API_BASE_URL": f"http://127.0.0.1:{sandbox_port}",
        "PUBLIC_API_URL": f"http://127.0.0.1:{port}",
        "BEAT_SCHEDULE_FILE": str(tmp_path / "celerybeat-schedule"),
    }
    env = installation.environment(**settings)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The release step of a PaaS (and compose's `migrate`): the installed migrations.
    prepared = subprocess.run(
        ["sh", "-c", "python -m market.manage prepare"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert prepared.returncode == 0, prepared.stderr

    started_at = time.time()
    for name, line in procfile().items():
        processes[name] = Process.start(
            name, ["sh", "-c", line], env=env, cwd=elsewhere, logs=tmp_path
        )

    def answers(name: str, url: str) -> int | None:
        """The HTTP status `url` answers (None while nothing listens)."""
        assert processes[name].alive(), f"{name} exited:\n{processes[name].tail()}"
        try:
            return requests.get(url, timeout=2).status_code
        except requests.RequestException:
            return None

    sandbox = f"http://127.0.0.1:{sandbox_port}/_sandbox/health"
    wait_for(lambda: answers("sandbox", sandbox), timeout=60, interval=0.2, what="the sandbox")

    web = f"http://127.0.0.1:{port}"
    live = wait_for(lambda: answers("web", web + LIVE), timeout=90, interval=0.2, what="web")
    assert live == 200
    ready = requests.get(f"{web}/api/v1/advanced/health/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    # The image's HEALTHCHECK, run as the container would run it.
    probe = subprocess.run(["python", "-m", "market.ops.probe"], env=env, cwd=elsewhere, timeout=30)
    assert probe.returncode == 0

    client = beat_client(settings["CELERY_BROKER_URL"], settings["CELERY_QUEUE_PREFIX"])
    try:

        def pinged() -> list:
            assert processes["worker"].alive(), processes["worker"].tail()
            return client.control.ping(timeout=0.5)

        wait_for(pinged, timeout=90, interval=0.2, what="the worker answering a ping")
    finally:
        client.close()

    flower = f"http://127.0.0.1:{flower_port}/api/workers"
    refused = wait_for(lambda: answers("flower", flower), timeout=90, interval=0.2, what="flower")
    assert refused == 401
    user, password = settings["FLOWER_BASIC_AUTH"].split(":", 1)
    assert requests.get(flower, auth=(user, password), timeout=10).status_code == 200

    # Beat ticks, and says so as it starts: its first heartbeat is sent at once, not one
    # interval (30 s) after it started, and the worker records it.
    heartbeat = f"{settings['KEY_PREFIX']}:beat:heartbeat"
    store = redis.Redis.from_url(settings["REDIS_URL"])
    try:

        def ticked() -> float | None:
            assert processes["beat"].alive(), processes["beat"].tail()
            stamp = store.get(heartbeat)
            return float(stamp) if stamp else None

        stamp = wait_for(ticked, timeout=120, interval=0.2, what="beat's first heartbeat")
    finally:
        store.close()
    assert stamp - started_at < SCHEDULE["beat-heartbeat"]["schedule"], stamp - started_at
    for proc in processes.values():
        assert "ModuleNotFoundError" not in proc.output(), proc.tail()
