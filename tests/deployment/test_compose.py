"""docker-compose.yml (production, from the operator's .env) and docker-compose.dev.yml (the
offline stack), resolved by Debian's docker-compose as `docker compose config` resolves them
(no engine is needed for that), then each service's command run the way the image runs it:
the installed package, a clean environment, a working directory that is not the checkout.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from market.config import load_settings
from market.errors import ConfigurationError
from tests.deployment.installed import ROOT, Installation, Process, free_port
from tests.reliability.stack import beat_client
from tests.support.poll import wait_for

APP_SERVICES = {"migrate", "web", "worker", "media-worker", "beat", "flower"}
PRODUCTION_SERVICES = APP_SERVICES | {"postgres", "redis"}


def required_names() -> list[str]:
    """The settings .env.example asks the operator for (each one `${NAME:?…}` in compose)."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    return [line.split("=", 1)[0] for line in lines if re.match(r"^[A-Z_]+=", line)]


def operators_env() -> dict[str, str]:
    """What an operator puts in .env: values of their own for every required name."""
    return {
        "POSTGRES_PASSWORD": secrets.token_hex(12),
        "MERCADOPAGO_ACCESS_TOKEN": f"APP_USR-{secrets.token_hex(8)}",
        "MERCADOPAGO_WEBHOOK_SECRET": secrets.token_hex(16),
        "MERCADOPAGO_WEBHOOK_URL": "https://api.spartan.example/api/v1/advanced/webhooks/mercadopago",
        "FIREBASE_PROJECT_ID": "spartan-prod",
        "FRONTEND_URL": "https://spartan.example",
        "PUBLIC_API_URL": "https://api.spartan.example",
        "METRICS_TOKEN": secrets.token_hex(12),
        "FLOWER_BASIC_AUTH": f"ops:{secrets.token_hex(8)}",
    }


def compose(
    tmp_path: Path, env_file: dict[str, str] | Path, *files: str, **shell: str
) -> subprocess.CompletedProcess[str]:
    """`docker-compose --env-file … -f … config` with nothing of the test's own environment."""
    program = shutil.which("docker-compose")
    assert program, "Debian's docker-compose is missing: `make test` installs it"
    if isinstance(env_file, dict):
        path = tmp_path / f"operator-{secrets.token_hex(3)}.env"
        path.write_text("".join(f"{k}={v}\n" for k, v in env_file.items()))
        env_file = path
    argv = [program, "--env-file", str(env_file)]
    for name in files or ("docker-compose.yml",):
        argv += ["-f", str(ROOT / name)]
    return subprocess.run(
        [*argv, "config"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **shell},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def resolved(tmp_path: Path, env_file: dict[str, str] | Path, *files: str, **shell: str) -> Any:
    done = compose(tmp_path, env_file, *files, **shell)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["services"]


def published(service: dict[str, Any]) -> list[str]:
    """The host addresses a service's ports are published on."""
    return [port.rsplit(":", 2)[0] for port in service.get("ports", [])]


def test_production_runs_from_the_operators_env(tmp_path):
    services = resolved(tmp_path, operators_env())
    assert set(services) == PRODUCTION_SERVICES  # no sandbox
    for name in APP_SERVICES:
        env = {k: v for k, v in services[name]["environment"].items() if v not in (None, "")}
        assert env["APP_ENV"] == "production"
        assert "FIREBASE_AUTH_EMULATOR_HOST" not in env
        assert load_settings(env).is_production  # nothing of dev.env in there
    for name, service in services.items():
        assert set(published(service)) <= {"127.0.0.1"}, (name, service.get("ports"))
    assert services["web"]["ports"] == ["127.0.0.1:8000:8000/tcp"]
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555/tcp"]
    assert services["web"]["healthcheck"]["test"][1:] == ["python", "-m", "market.ops.probe"]


def test_the_operator_may_publish_web_on_every_interface(tmp_path):
    services = resolved(tmp_path, {**operators_env(), "PUBLISH_ADDRESS": "0.0.0.0"})
    assert published(services["web"]) == ["0.0.0.0"]
    assert published(services["flower"]) == ["127.0.0.1"]  # Flower stays on loopback


@pytest.mark.parametrize("name", required_names())
def test_production_refuses_to_start_without_each_secret(tmp_path, name):
    env = operators_env()
    assert set(env) == set(required_names())
    for missing in ({k: v for k, v in env.items() if k != name}, {**env, name: ""}):
        done = compose(tmp_path, missing)
        assert done.returncode != 0
        assert f"set {name} in .env" in done.stderr


def test_the_dev_stack_is_an_override_with_the_sandbox(tmp_path):
    files = ("docker-compose.yml", "docker-compose.dev.yml")
    services = resolved(tmp_path, ROOT / "dev.env", *files)
    assert set(services) == PRODUCTION_SERVICES | {"sandbox"}
    for name, service in services.items():
        assert set(published(service)) <= {"127.0.0.1"}, (name, service.get("ports"))
    for name in APP_SERVICES:
        env = {k: v for k, v in services[name]["environment"].items() if v not in (None, "")}
        assert env["APP_ENV"] == "development"
        assert env["MERCADOPAGO_API_BASE_URL"] == "http://sandbox:8090"
        assert load_settings(env).emulator_mode
        # The same values can never run production: each public one is named.
        del env["FIREBASE_AUTH_EMULATOR_HOST"]
        with pytest.raises(ConfigurationError) as refused:
            load_settings({**env, "APP_ENV": "production"})
        for public in ("MERCADOPAGO_ACCESS_TOKEN", "MERCADOPAGO_WEBHOOK_SECRET", "DATABASE_URL"):
            assert public in str(refused.value)
        assert "MERCADOPAGO_API_BASE_URL" in str(refused.value)
    sandbox = services["sandbox"]
    assert sandbox["command"][:3] == ["python", "-m", "sandbox.mercadopago"]
    assert sandbox["environment"]["MERCADOPAGO_ACCESS_TOKEN"] == "TEST-sandbox-token"


# The image ---------------------------------------------------------------------------------


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split into build stages."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_the_image_installs_the_project_and_runs_unprivileged():
    final = _stages()[-1]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), users
    assert not any(line.startswith("COPY . ") for line in final)  # no source tree at run time
    assert any("pip install /wheels/" in line for line in final)
    assert any(line.startswith("COPY . ") for line in _stages()[0])
    (healthcheck,) = [line for line in final if line.startswith("HEALTHCHECK ")]
    probe = healthcheck.split(" CMD ", 1)[1]
    compose_file = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert yaml.safe_load(probe) == compose_file["services"]["web"]["healthcheck"]["test"][1:]
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".venv", "var", ".git", "tests"} <= ignored


def test_the_image_serves_the_procfile_web_on_its_port():
    (cmd,) = [line for line in _stages()[-1] if line.startswith("CMD ")]
    argv = yaml.safe_load(cmd[4:])
    assert argv[:2] == ["sh", "-c"]
    script = argv[2].replace("exec gunicorn ", "printf '%s\\n' ", 1)
    out = subprocess.run(
        ["sh", "-c", script], env={"PATH": "/usr/bin:/bin", "PORT": "10000"}, capture_output=True
    )
    args = out.stdout.decode().splitlines()
    assert args[0] == "webapp:create_app()"
    assert args[args.index("--bind") + 1] == "0.0.0.0:10000"


# Each service's command, run as the image runs it ---------------------------------------------


def _runnable(name: str, service: dict[str, Any], ports: dict[str, int]) -> list[str]:
    """The service's command with the container's fixed ports moved to free local ones, and
    each worker named after its service (containers have hostnames of their own; here all
    share this host's, and Celery needs a node name per worker)."""
    # `config` prints `$$` (a literal `$` for the container) escaped, as it read it.
    argv = [str(part).replace("$$", "$") for part in service["command"]]
    if argv[:4] == ["celery", "-A", "workers.app", "worker"]:
        argv += ["-n", f"{name}@%h"]
    web, flower = ports["web"], ports["flower"]
    argv = [a.replace("0.0.0.0:8000", f"127.0.0.1:{web}") for a in argv]
    return [
        a.replace("--address=0.0.0.0 --port=5555", f"--address=127.0.0.1 --port={flower}")
        for a in argv
    ]


def test_each_compose_service_runs_as_the_image_runs_it(
    tmp_path, installation: Installation, database: str, own_prefix: str
):
    services = resolved(tmp_path, operators_env())
    # The containers' network names become this run's servers; everything else is as resolved.
    local = {
        "DATABASE_URL": database,
        "REDIS_URL": os.environ["REDIS_URL"],
        "CELERY_BROKER_URL": os.environ["REDIS_URL"],
        "KEY_PREFIX": own_prefix,
        "CELERY_QUEUE_PREFIX": f"{own_prefix}.",
        "MEDIA_ROOT": str(tmp_path / "media"),
    }
    ports = {"web": free_port(), "flower": free_port()}
    procs: dict[str, Process] = {}

    def env_of(name: str) -> dict[str, str]:
        resolved_env = {k: str(v) for k, v in services[name]["environment"].items() if v}
        return installation.environment(**{**resolved_env, **local})

    migrate = subprocess.run(
        _runnable("migrate", services["migrate"], ports),
        env=env_of("migrate"),
        cwd=installation.home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    try:
        for name in ("web", "worker", "media-worker", "beat", "flower"):
            argv = _runnable(name, services[name], ports)
            procs[name] = Process.start(
                name, argv, env=env_of(name), cwd=installation.home, logs=tmp_path
            )

        def status(name: str, url: str) -> int | None:
            assert procs[name].alive(), f"{name} exited:\n{procs[name].tail()}"
            try:
                return requests.get(url, timeout=2).status_code
            except requests.RequestException:
                return None

        live = f"http://127.0.0.1:{ports['web']}/api/v1/advanced/health/live"
        assert wait_for(lambda: status("web", live), timeout=90, interval=0.2, what="web") == 200
        healthcheck = services["web"]["healthcheck"]["test"][1:]
        probe = subprocess.run(
            healthcheck, env={**env_of("web"), "PORT": str(ports["web"])}, timeout=30
        )
        assert probe.returncode == 0

        client = beat_client(local["CELERY_BROKER_URL"], local["CELERY_QUEUE_PREFIX"])
        try:

            def consumers() -> set[str]:
                for name in ("worker", "media-worker"):
                    assert procs[name].alive(), procs[name].tail()
                active = client.control.inspect(timeout=0.5).active_queues() or {}
                return {q["name"] for queues in active.values() for q in queues}

            # The queues the compose commands name (-Q), kept apart from every other run's by
            # the key prefix the broker applies to every key (Redis `global_keyprefix`).
            expected = {
                queue
                for name in ("worker", "media-worker")
                for queue in services[name]["command"][5].split(",")
            }
            assert expected == {"payments", "notifications", "maintenance", "media"}
            wait_for(lambda: consumers() >= expected, timeout=90, interval=0.3, what="both workers")
        finally:
            client.close()

        flower = f"http://127.0.0.1:{ports['flower']}/api/workers"
        assert wait_for(lambda: status("flower", flower), timeout=90, what="flower") == 401
        user, password = env_of("flower")["FLOWER_BASIC_AUTH"].split(":", 1)
        assert requests.get(flower, auth=(user, password), timeout=10).status_code == 200

        wait_for(
            lambda: procs["beat"].alive() and "beat: Starting" in procs["beat"].output(),
            timeout=60,
            interval=0.2,
            what=f"beat starting:\n{procs['beat'].tail()}",
        )
    finally:
        for proc in reversed(list(procs.values())):
            proc.stop()
    for proc in procs.values():
        assert "Traceback" not in proc.output(), proc.tail()


def test_the_dev_sandbox_runs_as_the_image_runs_it(tmp_path, installation: Installation):
    services = resolved(tmp_path, ROOT / "dev.env", "docker-compose.yml", "docker-compose.dev.yml")
    port = free_port()
    argv = [str(a) for a in services["sandbox"]["command"]]
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--host") + 1] = "127.0.0.1"
    env = installation.environment(
        **{k: str(v) for k, v in services["sandbox"]["environment"].items()}
    )
    proc = Process.start("sandbox", argv, env=env, cwd=installation.home, logs=tmp_path)
    try:

        def up() -> int | None:
            assert proc.alive(), proc.tail()
            try:
                return requests.get(
                    f"http://127.0.0.1:{port}/users/me",
                    timeout=2,
                    headers={"Authorization": "Bearer TEST-sandbox-token"},
                ).status_code
            except requests.RequestException:
                return None

        assert wait_for(up, timeout=60, interval=0.2, what="the sandbox") == 200
    finally:
        proc.stop()
