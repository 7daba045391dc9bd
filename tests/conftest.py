"""Test set-up: a database of this run's own, migrated with Alembic; Redis keys and Celery
queues under this run's own prefix; a real Celery worker consuming them."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

RUN_ID = uuid.uuid4().hex[:10]
_BASE_DB = os.environ.get("TEST_DATABASE_URL") or os.environ.get(
    "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/spartan"
)
_MEDIA = Path(tempfile.mkdtemp(prefix=f"spartan-media-{RUN_ID}-"))

# Set before anything of ours reads the settings (they are built once per process).
os.environ.update(
    {
        "APP_ENV": "test",
        "DATABASE_URL": _BASE_DB.rsplit("/", 1)[0] + f"/spartan_test_{RUN_ID}",
        "REDIS_URL": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "KEY_PREFIX": f"t{RUN_ID}",
        "CELERY_QUEUE_PREFIX": f"t{RUN_ID}.",
        # RabbitMQ drops the queues of a run that died before its teardown (tests/support/broker).
        "CELERY_QUEUE_EXPIRES_S": "3600",
        "FIREBASE_PROJECT_ID": "spartan-test",
        "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099",
        "MEDIA_ROOT": str(_MEDIA),
        "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
    }
)
if os.environ.get("TEST_BROKER_URL"):
    os.environ["CELERY_BROKER_URL"] = os.environ["TEST_BROKER_URL"]

pytest_plugins = (
    "tests.support.fixtures",
    "tests.support.mercadopago",
    "tests.support.broker",
    "tests.support.s3",
    "tests.support.browser",
)


@pytest.fixture(scope="session")
def run_id() -> str:
    return RUN_ID


@pytest.fixture(scope="session")
def media_root() -> Iterator[Path]:
    yield _MEDIA
