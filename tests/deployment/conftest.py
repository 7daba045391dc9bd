"""The installed project (built once per run) and the settings of a deployment of one test."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness import drop_redis_keys
from tests.deployment.installed import Installation


@pytest.fixture(scope="session")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Installation:
    return Installation.build(tmp_path_factory.mktemp("installed"))


@pytest.fixture()
def own_prefix(run_id: str) -> Iterator[str]:
    """A Redis key and queue prefix of the test's own; its keys are dropped afterwards."""
    prefix = f"{os.environ['KEY_PREFIX']}d{secrets.token_hex(3)}"
    yield prefix
    drop_redis_keys(os.environ["REDIS_URL"], prefix)


@pytest.fixture()
def production_settings(database: str, own_prefix: str, tmp_path: Path) -> dict[str, str]:
    """A production configuration of this run's database and Redis, with values of its own."""
    return {
        "APP_ENV": "production",
        "DATABASE_URL": database,
        "REDIS_URL": os.environ["REDIS_URL"],
        "CELERY_BROKER_URL": os.environ["REDIS_URL"],
        "KEY_PREFIX": own_prefix,
        "CELERY_QUEUE_PREFIX": f"{own_prefix}.",
        "MERCADOPAGO_ACCESS_TOKEN": f"APP_USR-{secrets.token_hex(8)}",
        "MERCADOPAGO_WEBHOOK_SECRET": secrets.token_hex(16),
        "FIREBASE_PROJECT_ID": "spartan-deployment-test",
        "FRONTEND_URL": "https://spartan.example",
        "PUBLIC_API_URL": "https://api.spartan.example",
        "METRICS_TOKEN": secrets.token_hex(12),
        "FLOWER_BASIC_AUTH": f"ops:{secrets.token_hex(8)}",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "LOG_LEVEL": "INFO",
    }
