"""Set-up commands used by the Makefile: check servers, create the database, migrate.

python -m market.manage check | create-db | migrate | prepare
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg
import redis
from psycopg import sql
from sqlalchemy.engine import make_url

from market import health
from market.config import load_settings
from market.errors import ConfigurationError

ROOT = Path(__file__).resolve().parent.parent


class ServiceUnreachableError(Exception):
    """A server the stack needs does not answer."""


def _libpq(database_url: str, database: str | None = None) -> str:
    url = make_url(database_url)
    if database is not None:
        url = url.set(database=database)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _redacted(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def check_postgres(database_url: str) -> None:
    try:
        with psycopg.connect(_libpq(database_url, "postgres"), connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServiceUnreachableError(
            f"PostgreSQL is unreachable at {_redacted(database_url)}: {first}"
        ) from exc


def check_redis(redis_url: str) -> None:
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3).ping()
    except redis.RedisError as exc:
        raise ServiceUnreachableError(f"Redis is unreachable at {redis_url}: {exc}") from exc


def check_broker(broker_url: str) -> None:
    """A broker other than Redis (RabbitMQ): reachable, and our credentials accepted."""
    try:
        health.broker_check(broker_url, timeout_s=3)()
    except Exception as exc:
        raise ServiceUnreachableError(
            f"the broker is unreachable at {_redacted(broker_url)}: {exc}"
        ) from exc


def create_database(database_url: str) -> bool:
    """Create the URL's database if it is missing; True when it was created."""
    name = make_url(database_url).database
    with psycopg.connect(
        _libpq(database_url, "postgres"), autocommit=True, connect_timeout=5
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def drop_database(database_url: str) -> None:
    name = make_url(database_url).database
    with psycopg.connect(
        _libpq(database_url, "postgres"), autocommit=True, connect_timeout=5
    ) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def migrate(database_url: str, revision: str = "heads") -> None:
    """Apply the Alembic migrations to `database_url`."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = database_url
    config.attributes["configure_logger"] = False
    command.upgrade(config, revision)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Spartan Market set-up")
    parser.add_argument("command", choices=["check", "create-db", "migrate", "prepare"])
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        check_postgres(settings.database_url)
        check_redis(settings.redis_url)
        if not settings.celery_broker_url.startswith("redis"):
            check_broker(settings.celery_broker_url)
        if args.command in ("create-db", "prepare") and create_database(settings.database_url):
            print(f"created database {make_url(settings.database_url).database}")
        if args.command in ("migrate", "prepare"):
            migrate(settings.database_url)
    except (ServiceUnreachableError, ConfigurationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
