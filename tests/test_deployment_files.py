"""docker-compose.yml, the Procfile and the Makefile name commands that exist."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(shutil.which("celery") or ROOT / ".venv/bin/celery").parent


def _command_exists(argv: list[str]) -> None:
    program = argv[0]
    if program == "sh":
        argv = argv[2].split()
        program = argv[0]
    assert shutil.which(program) or (VENV_BIN / program).exists(), program
    if program == "python" and argv[1] == "-m":
        assert importlib.util.find_spec(argv[2]) is not None, argv[2]
    if program == "celery":
        assert argv[1:3] == ["-A", "workers.app"]
        assert importlib.util.find_spec("workers.app") is not None
    if program == "gunicorn":
        assert argv[1] == "webapp:create_app()"


def test_compose_services_and_their_commands():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "web", "worker", "beat", "flower"} <= set(services)
    # The sandbox is development only (docker-compose.dev.yml; tests/deployment/test_compose.py).
    assert "sandbox" not in services
    for _name, service in services.items():
        if "command" in service and "image" in service and service["image"] == "spartan-market":
            _command_exists(service["command"])
    queues = ",".join(
        s["command"][s["command"].index("-Q") + 1]
        for s in services.values()
        if "-Q" in s.get("command", [])
    )
    assert set(queues.split(",")) == {"payments", "media", "notifications", "maintenance"}
    assert services["beat"]["deploy"]["replicas"] == 1
    assert "--basic-auth" in " ".join(services["flower"]["command"])


def test_procfile_processes():
    entries = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()
    )
    assert set(entries) == {"web", "worker", "beat", "flower", "sandbox"}
    for command in entries.values():
        _command_exists(shlex.split(command))
    assert "-s ${BEAT_SCHEDULE_FILE:-" in entries["beat"]
    assert "--basic-auth" in entries["flower"]
    assert re.search(r"--bind \$\{WEB_HOST:-0\.0\.0\.0\}:\$\{PORT:-8000\}", entries["web"])


@pytest.mark.parametrize(
    ("env", "bind"),
    [
        ({"PORT": "5123"}, "0.0.0.0:5123"),  # a PaaS: every interface, its $PORT
        ({}, "0.0.0.0:8000"),
        ({"WEB_HOST": "127.0.0.1"}, "127.0.0.1:8000"),  # `make run` (dev.env): loopback
    ],
)
def test_procfile_web_binds_every_interface_unless_told(env, bind):
    entries = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()
    )
    script = entries["web"].strip().replace("gunicorn ", "printf '%s\\n' ", 1)
    ran = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=10,
    )
    argv = ran.stdout.splitlines()
    assert argv[argv.index("--bind") + 1] == bind


def test_make_run_keeps_the_web_process_on_loopback():
    dev = dict(
        line.split("=", 1)
        for line in (ROOT / "dev.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert dev["WEB_HOST"] == "127.0.0.1"
    assert "PYTHONPATH" not in dev
    assert "-e dev.env" in (ROOT / "Makefile").read_text()


def test_makefile_targets():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "test", "migrate", "bench"):
        assert re.search(rf"^{target}:", makefile, re.M), target


def _flower_shell_command() -> str:
    """The flower service's `sh -c` script as its container's shell sees it (`$$` → `$`)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    argv = compose["services"]["flower"]["command"]
    assert argv[:2] == ["sh", "-c"]
    return argv[2].replace("$$", "$")


@pytest.mark.parametrize("value", ["", None])
def test_compose_flower_refuses_to_start_without_basic_auth(value):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    flower = compose["services"]["flower"]
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"]), flower["ports"]
    env = {"PATH": "/nonexistent"}  # it must stop before looking for celery at all
    if value is not None:
        env["FLOWER_BASIC_AUTH"] = value
    sh = shutil.which("sh")
    assert sh is not None
    ran = subprocess.run(
        [sh, "-c", _flower_shell_command()], env=env, capture_output=True, text=True, timeout=10
    )
    assert ran.returncode != 0
    assert "set FLOWER_BASIC_AUTH" in ran.stderr
    assert "not found" not in ran.stderr


def test_compose_flower_passes_the_basic_auth_it_is_given():
    script = _flower_shell_command().replace("celery ", "printf '%s\\n' ", 1)
    ran = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": os.environ["PATH"], "FLOWER_BASIC_AUTH": "ops:s3cret word"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert ran.returncode == 0, ran.stderr
    assert "--basic-auth=ops:s3cret word" in ran.stdout.splitlines()


def _procfile_flower() -> str:
    entries = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()
    )
    return entries["flower"].strip()


def test_procfile_flower_listens_on_loopback_and_needs_basic_auth():
    """honcho runs each line with a shell: what Flower is given is what that shell expands."""
    sh = shutil.which("sh")
    assert sh is not None
    refused = subprocess.run(
        [sh, "-c", _procfile_flower()],
        env={"PATH": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert refused.returncode != 0
    assert "set FLOWER_BASIC_AUTH" in refused.stderr and "not found" not in refused.stderr
    script = _procfile_flower().replace("celery ", "printf '%s\\n' ", 1)
    ran = subprocess.run(
        [sh, "-c", script],
        env={"PATH": os.environ["PATH"], "FLOWER_BASIC_AUTH": "ops:s3cret word"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert ran.returncode == 0, ran.stderr
    argv = ran.stdout.splitlines()
    assert "--address=127.0.0.1" in argv and "--basic-auth=ops:s3cret word" in argv
    assert not any(a.startswith("--address=") and a != "--address=127.0.0.1" for a in argv)
