"""The project as an operator gets it: `pip install .` into a virtual environment of its own,
and processes started as a plain process manager starts them.

`Installation.build` copies the tree as the image's build context has it (`.dockerignore`
applied), builds the wheel with `pip wheel --no-deps .` as the Dockerfile does, and installs it
into a fresh venv. Third-party dependencies come from the development venv through a `.pth`
line (reinstalling ~80 wheels would cost half a minute for nothing under test); the console
scripts the Procfile calls (gunicorn, celery) are installed into the new venv by pip itself, so
their `#!` lines run its interpreter. Nothing of the checkout is importable from there: no
PYTHONPATH, and every process runs in a directory that is not the checkout.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Console scripts the Procfile and compose commands call by name, with what provides them.
SCRIPTS = ("gunicorn", "celery", "flower")


def dockerignore_patterns() -> list[str]:
    """The `.dockerignore` entries as names to skip at any depth (what this tree uses)."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip().removeprefix("**/") for line in lines if line.strip()[:1] not in ("", "#")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{' '.join(map(str, argv))}\n{done.stdout}\n{done.stderr}"
    return done


@dataclass
class Installation:
    """A venv holding the installed project, and a home directory away from the checkout."""

    base: Path
    wheel: Path
    venv: Path
    home: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @classmethod
    def build(cls, base: Path) -> Installation:
        context = base / "context"
        shutil.copytree(ROOT, context, ignore=shutil.ignore_patterns(*dockerignore_patterns()))
        dist = base / "dist"
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, context])
        (wheel,) = dist.glob("spartan_market-*.whl")
        env_dir = base / "venv"
        venv.EnvBuilder(with_pip=False).create(env_dir)
        python = env_dir / "bin" / "python"
        pins = [f"{name}=={version(name)}" for name in SCRIPTS]
        pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps"]
        _run([*pip, wheel, *pins])
        purelib = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dependencies = sysconfig.get_paths()["purelib"]
        Path(purelib, "_spartan_dependencies.pth").write_text(dependencies + "\n")
        home = base / "home"
        home.mkdir()
        return cls(base, wheel, env_dir, home)

    def environment(self, **settings: str) -> dict[str, str]:
        """What a process manager gives a process: PATH, HOME, a locale and the settings."""
        return {
            "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            **settings,
        }


@dataclass
class Process:
    """A command in its own process group, its output in a log file; TERM then KILL to stop."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    _closed: bool = field(default=False)

    @classmethod
    def start(
        cls, name: str, argv: Sequence[str], *, env: dict[str, str], cwd: Path, logs: Path
    ) -> Process:
        log = logs / f"{name}-{secrets.token_hex(3)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                list(argv),
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(name, popen, log)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def stop(self, timeout: float = 20) -> None:
        if self._closed:
            return
        self._closed = True
        self._signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.popen.wait(timeout=10)
        self._signal(signal.SIGKILL)  # pool children that outlived their parent

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)
