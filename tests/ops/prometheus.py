"""Debian's Prometheus binaries for the operators' tests, and our example configuration.

`make test` installs the `prometheus` package when its binaries are missing (see the
Makefile); the tests run them directly, never the package's service.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"
RUNBOOK = ROOT / "docs" / "operations.md"
METRIC = re.compile(r"\b((?:spartan|flower)_[a-z0-9_]+)\b")


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: `make test-tools` (part of `make test`) installs it")
    return found


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def load(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text())


def rules() -> list[dict[str, Any]]:
    return [rule for group in load("alerts.yml")["groups"] for rule in group["rules"]]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in rules() if "alert" in rule]


def metric_names_in_rules() -> set[str]:
    """Every metric the rules read (recording rules' own names excluded: they have a colon)."""
    return {name for rule in rules() for name in METRIC.findall(rule["expr"])}
