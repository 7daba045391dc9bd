"""What every benchmark shares: a scratch database, private prefixes, processes started and
stopped under deadlines, the wrk load generator with its Lua report, percentiles, the table.

Nothing here is timed against a fixed figure: each benchmark measures the project and its
baseline side by side in the same run, and the ratio is the result.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
T = TypeVar("T")
# Rate limits high enough never to answer 429 while a benchmark runs (said in the output).
UNLIMITED = "1000000/minute"
# The Procfile's web process: WEB_CONCURRENCY workers of WEB_THREADS threads each (gthread),
# chosen by bench/gunicorn_workers.py (bench/RESULTS.md, "gunicorn worker class").
WEB_WORKERS = 3
WEB_THREADS: int | None = 8
WEBHOOK_PATH = "/api/v1/advanced/webhooks/mercadopago"


class BenchError(Exception):
    """A benchmark could not run to its end (a process did not start, a deadline passed)."""


def wait_until(probe: Callable[[], T | None], *, timeout: float, what: str, every=0.02) -> T:
    """The first truthy answer of `probe`, or BenchError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not done within {timeout:.0f} s")
        time.sleep(every)


def free_port() -> int:
    """A port nobody listens on now (the kernel's choice; a tiny race is retried by callers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct` percentile (nearest rank) of `values`."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = math.ceil(pct / 100 * len(ordered))
    return ordered[max(0, min(len(ordered), rank) - 1)]


# Environment --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scratch:
    """One run's private names: database, Redis key prefix, Celery queue prefix."""

    run: str
    database_url: str
    pgbench_url: str
    key_prefix: str
    media_root: Path

    @classmethod
    def make(cls, base_url: str) -> Scratch:
        run = uuid.uuid4().hex[:8]
        server = base_url.rsplit("/", 1)[0]
        media = Path(tempfile.mkdtemp(prefix=f"spartan-bench-{run}-"))
        return cls(
            run,
            f"{server}/spartan_bench_{run}",
            f"{server}/spartan_bench_{run}_pgbench",
            f"b{run}",
            media,
        )

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of every process of the run (web, workers, this one)."""
        return {
            "APP_ENV": "development",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            "KEY_PREFIX": self.key_prefix,
            "CELERY_QUEUE_PREFIX": f"{self.key_prefix}.",
            "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099",
            "FIREBASE_PROJECT_ID": "spartan-bench",
            "MERCADOPAGO_ACCESS_TOKEN": "TEST-bench-token",
            "MERCADOPAGO_WEBHOOK_SECRET": "bench-webhook-secret",
            "MEDIA_ROOT": str(self.media_root),
            "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            "RATE_LIMIT_DEFAULT": UNLIMITED,
            "RATE_LIMIT_BUY": UNLIMITED,
            "RATE_LIMIT_SPEND": UNLIMITED,
            "RATE_LIMIT_UPLOAD": UNLIMITED,
            "LOG_LEVEL": "WARNING",
            # Celery imports beat_schedule.py after taking the working directory off sys.path.
            "PYTHONPATH": str(ROOT),
            **extra,
        }


def drop_redis_keys(redis_url: str, prefix: str) -> int:
    """Delete every Redis key of the run (cache, limits, metrics, broker queues, results)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            removed += client.delete(*batch)
            batch = []
    if batch:
        removed += client.delete(*batch)
    return removed


# Processes ----------------------------------------------------------------------------------


class Proc:
    """A child process in its own process group, stopped (TERM, then KILL) by a deadline."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str]) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115  (kept open while it runs)
            prefix=f"spartan-bench-{name}-", suffix=".log", delete=False
        )
        self.popen = subprocess.Popen(
            list(argv),
            env={**os.environ, **env},
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = Path(self.log.name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15) -> None:
        """TERM the whole group (gunicorn's and celery's children too), KILL after `timeout`."""
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.popen.wait(timeout=5)
        # Children that outlived their parent (a pool process) go with the group.
        self._signal(signal.SIGKILL)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)


class Stack:
    """Every process a run started, stopped in reverse order however the run ends."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> Proc:
        proc = Proc(name, argv, env)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        while self.procs:
            self.procs.pop().stop()


def gunicorn(
    stack: Stack,
    name: str,
    app: str,
    env: dict[str, str],
    probe_path: str,
    *,
    workers: int = WEB_WORKERS,
    threads: int | None = WEB_THREADS,
) -> str:
    """Serve `app` as the Procfile does (its worker class and counts, no control socket), or
    with `workers` and `threads` (None: sync workers); its base URL."""
    shape = ("--workers", str(workers))
    if threads is not None:
        shape += ("--worker-class", "gthread", "--threads", str(threads))
    for _ in range(3):
        port = free_port()
        proc = stack.start(
            name,
            [
                *(sys.executable, "-m", "gunicorn", app),
                *("--bind", f"127.0.0.1:{port}", *shape, "--no-control-socket"),
                # Many in flight at once under wrk: the default backlog of 2048 is enough.
                *("--log-level", "warning"),
            ],
            env,
        )
        url = f"http://127.0.0.1:{port}"

        def up(url: str = url, proc: Proc = proc) -> bool:
            if not proc.alive():
                return True
            try:
                return requests.get(url + probe_path, timeout=2).status_code < 500
            except requests.RequestException:
                return False

        wait_until(up, timeout=60, what=f"gunicorn {name}", every=0.1)
        if proc.alive():
            return url
        log = proc.tail()
        stack.stop(proc)
        if "in use" not in log:
            raise BenchError(f"gunicorn {name} exited:\n{log}")
    raise BenchError(f"gunicorn {name}: no free port after 3 tries")


def celery_worker(
    stack: Stack,
    name: str,
    app_module: str,
    env: dict[str, str],
    ping: Callable[[str], bool],
    queues: Sequence[str] = (),
) -> tuple[Proc, str]:
    """A `celery worker` as the Procfile starts it (prefork, concurrency 2, events on)."""
    node = f"{name}-{env.get('KEY_PREFIX', 'bench')}@{socket.gethostname()}"
    argv = [
        *(sys.executable, "-m", "celery", "-A", app_module, "worker"),
        *("--concurrency", "2", "-E", "--loglevel", "WARNING", "-n", node),
        *("--without-gossip", "--without-mingle"),
    ]
    if queues:
        argv += ["-Q", ",".join(queues)]
    proc = stack.start(name, argv, env)

    def ready() -> bool:
        if not proc.alive():
            raise BenchError(f"celery worker {name} exited:\n{proc.tail()}")
        return ping(node)

    wait_until(ready, timeout=90, what=f"celery worker {name}", every=0.2)
    return proc, node


# wrk ----------------------------------------------------------------------------------------

# Appended to every script: one JSON line of the run's figures (latencies in microseconds).
WRK_REPORT = r"""
threads = {}
local thread_count = 0
setup = function(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

done = function(summary, latency, requests)
  local wrapped = 0
  for _, t in ipairs(threads) do wrapped = wrapped + (t:get("wrapped") or 0) end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"wrapped":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, wrapped))
end
"""

# Requests taken in turn from a file, one per line: method|path|headers (k=v;k=v)|body.
# Each thread takes every n-th line, so no two requests of a run are the same; `wrapped`
# counts a thread running out (its requests then repeat, which the caller reports).
WRK_FROM_FILE = r"""
init = function(args)
  local nthreads = tonumber(args[2])
  reqs = {}
  local n = 0
  for line in io.lines(args[1]) do
    if n % nthreads == tid then
      local method, path, hdrs, body = line:match("^([^|]*)|([^|]*)|([^|]*)|(.*)$")
      local headers = {}
      for k, v in hdrs:gmatch("([^=;]+)=([^;]*)") do headers[k] = v end
      if body == "" then body = nil end
      table.insert(reqs, wrk.format(method, path, headers, body))
    end
    n = n + 1
  end
  i = 0
  wrapped = 0
end

request = function()
  i = i + 1
  if i > #reqs then
    i = 1
    wrapped = wrapped + 1
  end
  return reqs[i]
end
"""


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    wrapped: int
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def request_line(method: str, path: str, headers: dict[str, str], body: str = "") -> str:
    """One line of a request file for WRK_FROM_FILE."""
    text = "|".join((method, path, ";".join(f"{k}={v}" for k, v in headers.items()), body))
    if "\n" in text or any("|" in part for part in (path, body)):
        raise ValueError("a request line cannot hold '|' or a newline")
    return text


def wrk(
    url: str,
    *,
    requests_file: Path | None = None,
    headers: dict[str, str] | None = None,
    duration_s: float = 5,
    connections: int = 8,
    threads: int = 2,
) -> WrkResult:
    """Run wrk against `url` (a fixed request with `headers`, or the lines of a file)."""
    with tempfile.TemporaryDirectory(prefix="spartan-bench-wrk-") as tmp:
        script = Path(tmp) / "bench.lua"
        script.write_text(WRK_REPORT + (WRK_FROM_FILE if requests_file else ""))
        argv = [
            *("wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration_s:g}s"),
            *("--timeout", "10s", "-s", str(script)),
        ]
        for key, value in (headers or {}).items():
            argv += ["-H", f"{key}: {value}"]
        argv.append(url)
        if requests_file is not None:
            argv += ["--", str(requests_file), str(threads)]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration_s + 60, check=False
        )
    match = re.search(r"^WRKJSON (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    raw = json.loads(match.group(1))
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors"))
    return WrkResult(
        requests=raw["requests"],
        duration_s=raw["duration_us"] / 1e6,
        errors=errors + raw["timeouts"],
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        wrapped=raw["wrapped"],
        raw=raw,
    )


def wrk_installed() -> bool:
    try:
        subprocess.run(["wrk", "--version"], capture_output=True, timeout=10, check=False)
    except OSError:
        return False
    return True


# Results ------------------------------------------------------------------------------------


@dataclass
class Row:
    """One comparison: the project's figure, its baseline's, the ratio and its target."""

    bench: str
    measure: str
    value: float | None
    baseline: float | None = None
    unit: str = ""
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        bench: str,
        measure: str,
        value: float | None,
        baseline: float | None = None,
        *,
        unit: str = "",
        higher_is_better: bool = True,
        target: float | None = None,
        note: str = "",
    ) -> Row:
        """Record a figure; with a baseline, the ratio value/baseline and the target check."""
        ratio = None
        if value is not None and baseline:
            ratio = value / baseline
        met = None
        target_text = None
        if target is not None and ratio is not None:
            met = ratio >= target if higher_is_better else ratio <= target
            target_text = f"{'>=' if higher_is_better else '<='} {target:g}"
        row = Row(bench, measure, value, baseline, unit, ratio, target_text, met, note)
        self.rows.append(row)
        return row

    def table(self) -> str:
        header = ("bench", "measure", "project", "baseline", "ratio", "target", "")
        lines = [header]
        for r in self.rows:
            lines.append(
                (
                    r.bench,
                    r.measure,
                    _fmt(r.value, r.unit),
                    _fmt(r.baseline, r.unit),
                    "" if r.ratio is None else f"{r.ratio:.2f}",
                    r.target or "",
                    {True: "ok", False: "MISS", None: ""}[r.met] + (f" {r.note}" if r.note else ""),
                )
            )
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
        out = []
        for n, line in enumerate(lines):
            out.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)))
            if n == 0:
                out.append("  ".join("-" * w for w in widths))
        return "\n".join(s.rstrip() for s in out)

    def as_json(self, machine: dict[str, Any], elapsed_s: float) -> dict[str, Any]:
        return {
            "machine": machine,
            "elapsed_s": round(elapsed_s, 1),
            "notes": self.notes,
            "rows": [
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.__dict__.items()}
                for r in self.rows
            ],
            "details": self.details,
        }


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def machine() -> dict[str, Any]:
    """Where the run happened: cores, CPU model, memory, load when it started."""
    import platform

    import psutil

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@contextmanager
def timed() -> Iterator[Callable[[], float]]:
    """`with timed() as elapsed:` … `elapsed()` seconds since the block began."""
    started = time.perf_counter()
    yield lambda: time.perf_counter() - started
