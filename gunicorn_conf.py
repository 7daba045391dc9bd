"""gunicorn settings of the web process: `gunicorn 'webapp:create_app()' -c python:gunicorn_conf`.

Prometheus counters must add up over every gunicorn worker (and the workers that replaced
dead ones), so each worker writes them to files in PROMETHEUS_MULTIPROC_DIR and /metrics sums
the files (market.ops.metrics.exposition). prometheus-client reads that variable when it is
first imported, so it is set here, in the master before any worker is forked. This module
imports nothing of ours: importing the app here would fix prometheus-client's mode too early.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def on_starting(server: Any) -> None:
    """Give the workers an empty metrics directory: the operator's, wiped, or a new one."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        # Files of an earlier run would add its counts to this one's (prometheus-client asks
        # for the directory to be wiped before start).
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix="spartan-prometheus-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    server.log.info("Prometheus multiprocess directory: %s", path)


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's live gauges stop counting; its counters stay (they were counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
