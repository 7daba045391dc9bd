"""The operators' live stack: the web as the Procfile starts it (gunicorn, two workers, our
gunicorn_conf), a real `celery worker`, Flower with basic auth, and Debian's Prometheus
scraping them with deploy/prometheus/prometheus.yml (targets, intervals, token rewritten).

Processes come from bench/harness.py (own process group, log file, TERM then KILL on stop);
the web and worker share a Deployment's Redis key and Celery queue prefixes.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import requests
import yaml

from bench import harness
from bench.harness import Proc
from tests.ops.prometheus import DEPLOY, binary
from tests.reliability.stack import Deployment
from tests.support.poll import wait_for


def start_web(
    deployment: Deployment, env: dict[str, str], access_log: Path | None = None
) -> tuple[Proc, str]:
    """The Procfile's `web` line: gunicorn with gunicorn_conf and two workers on loopback.

    With `access_log`, each request is logged there as `<pid> METHOD PATH STATUS`."""
    port = harness.free_port()
    argv = [
        *(sys.executable, "-m", "gunicorn", "webapp:create_app()", "-c", "python:gunicorn_conf"),
        *("--bind", f"127.0.0.1:{port}", "--workers", "2", "--no-control-socket"),
        *("--log-level", "warning"),
    ]
    if access_log is not None:
        argv += [
            "--access-logfile",
            str(access_log),
            "--access-logformat",
            "%(p)s %(m)s %(U)s %(s)s",
        ]
    proc = deployment.stack.start(f"web-{deployment.prefix}", argv, {**deployment.env, **env})
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: _answers(proc, url + "/api/openapi.json"),
        timeout=60,
        interval=0.1,
        what="gunicorn answering",
    )
    deployment.web_url = url
    return proc, url


def start_flower(deployment: Deployment, auth: str) -> tuple[Proc, str]:
    """The Procfile's `flower` line against the deployment's broker and prefixes."""
    port = harness.free_port()
    argv = [
        *(sys.executable, "-m", "celery", "-A", "workers.app", "flower"),
        *("--address=127.0.0.1", f"--port={port}", f"--basic-auth={auth}"),
    ]
    proc = deployment.stack.start(f"flower-{deployment.prefix}", argv, deployment.env)
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: _answers(proc, url + "/healthcheck"),
        timeout=60,
        interval=0.1,
        what="flower answering",
    )
    return proc, url


def _answers(proc: Proc, url: str) -> bool:
    assert proc.alive(), f"{proc.name} exited:\n{proc.tail(30)}"
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


class Prometheus:
    """Debian's prometheus binary with our configuration, on loopback, data in a temp dir."""

    def __init__(self, deployment: Deployment, *, web: str, flower: str, token: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="spartan-prometheus-test-"))
        (self.dir / "metrics-token").write_text(token)
        config: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(DEPLOY / name) for name in config["rule_files"]]
        targets = {"spartan-web": web, "spartan-flower": flower}
        for job in config["scrape_configs"]:
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
            job["scrape_timeout"] = "1s"
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = harness.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            binary("prometheus"),
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.proc = deployment.stack.start(f"prometheus-{uuid.uuid4().hex[:6]}", argv, {})
        wait_for(
            lambda: _answers(self.proc, self.url + "/-/ready"),
            timeout=60,
            interval=0.1,
            what="prometheus ready",
        )

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector `promql` evaluates to now."""
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", body
        return body["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The single value of `promql` (None when the vector is empty)."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def names(self) -> set[str]:
        answer = requests.get(f"{self.url}/api/v1/label/__name__/values", timeout=10).json()
        return set(answer["data"])

    def targets(self) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.url}/api/v1/targets", timeout=10).json()
        return answer["data"]["activeTargets"]

    def rule_groups(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
