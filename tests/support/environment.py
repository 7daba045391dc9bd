"""The environment the in-process worker reads its settings from, changed for a while.

Workers build `runtime.settings()` once from the environment (cached); a test that needs the
worker to see another setting (the sandbox's address, a bucket, a frontend) changes the
variables, drops the cache, and puts both back afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def worker_environment(changes: dict[str, str]) -> Iterator[None]:
    from workers import runtime

    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    runtime.settings.cache_clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        runtime.settings.cache_clear()
