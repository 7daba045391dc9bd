"""docker-compose.yml, the Procfile and the Makefile name commands that exist."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
from pathlib import Path

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
    assert {"postgres", "redis", "web", "worker", "beat", "flower", "sandbox"} <= set(services)
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
    assert "-s var/" in entries["beat"]
    assert "--basic-auth" in entries["flower"]
    assert re.search(r"--bind 127\.0\.0\.1:\$\{PORT:-8000\}", entries["web"])


def test_makefile_targets():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "test", "migrate", "bench"):
        assert re.search(rf"^{target}:", makefile, re.M), target
