"""Set-up commands used by the Makefile (check servers, create the database, migrate) and the
operator's hold on admin rights.

python -m market.manage check | create-db | migrate | prepare
python -m market.manage revoke-admin UID | grant-admin UID
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg
import redis
from psycopg import sql
from sqlalchemy.engine import make_url

from market import db
from market.config import load_settings
from market.errors import ConfigurationError, NotFoundError
from market.identity import admins
from market.ops import health
from market.outbound import endpoints

# The Alembic scripts: installed as market/migrations (pyproject.toml), or the repository's
# migrations/ folder when running from a checkout.
_INSTALLED_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_CHECKOUT_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def migrations_dir() -> Path:
    """Where the Alembic environment and versions are, installed or in a checkout."""
    if (_INSTALLED_MIGRATIONS / "env.py").exists():
        return _INSTALLED_MIGRATIONS
    return _CHECKOUT_MIGRATIONS


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


def create_database(database_url: str, *, template: str | None = None) -> bool:
    """Create the URL's database if it is missing, as a copy of the database `template`
    names (one nobody is connected to) when given; True when it was created."""
    name = make_url(database_url).database
    with psycopg.connect(
        _libpq(database_url, "postgres"), autocommit=True, connect_timeout=5
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(create)
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

    # No alembic.ini: it is not installed, and only `alembic` run by hand in a checkout needs it.
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("path_separator", "os")
    config.attributes["url"] = database_url
    config.attributes["configure_logger"] = False
    command.upgrade(config, revision)


def revoke_admin(database_url: str, who: str) -> str:
    """End `who`'s admin rights at once: admin endpoints answer 403 to their next request
    whatever their token claims, other users' events stop going to their webhook endpoints
    (the pending ones are ended) and alerts stop. Idempotent."""
    engine = db.make_engine(database_url, pool_size=1, application_name="spartan-manage")
    try:
        with db.transaction(db.make_sessionmaker(engine)) as session:
            user = admins.revoke(session, who)
            ended = endpoints.end_foreign_deliveries(
                session, owner_id=user.id, reason="the owner's admin rights were revoked"
            )
            return (
                f"revoked the admin rights of {user.firebase_uid} ({user.id}); "
                f"{ended} pending deliveries of other users' events ended"
            )
    finally:
        engine.dispose()


def grant_admin(database_url: str, who: str) -> str:
    """List `who` as an admin for background work (alerts, every user's events) and lift a
    revocation; admin endpoints still need their token's `admin` claim. Idempotent."""
    engine = db.make_engine(database_url, pool_size=1, application_name="spartan-manage")
    try:
        with db.transaction(db.make_sessionmaker(engine)) as session:
            user = admins.grant(session, who)
            return f"listed {user.firebase_uid} ({user.id}) as an admin"
    finally:
        engine.dispose()


ADMIN_COMMANDS = {"revoke-admin": revoke_admin, "grant-admin": grant_admin}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Spartan Market set-up")
    parser.add_argument(
        "command", choices=["check", "create-db", "migrate", "prepare", *ADMIN_COMMANDS]
    )
    parser.add_argument("uid", nargs="?", help="the user (Firebase uid or user id)")
    args = parser.parse_args(argv)
    if args.command in ADMIN_COMMANDS and not args.uid:
        parser.error(f"{args.command} needs the user's Firebase uid (or user id)")
    try:
        settings = load_settings()
        if args.command in ADMIN_COMMANDS:
            check_postgres(settings.database_url)
            print(ADMIN_COMMANDS[args.command](settings.database_url, args.uid))
            return 0
        check_postgres(settings.database_url)
        check_redis(settings.redis_url)
        if not settings.celery_broker_url.startswith("redis"):
            check_broker(settings.celery_broker_url)
        if args.command in ("create-db", "prepare") and create_database(settings.database_url):
            print(f"created database {make_url(settings.database_url).database}")
        if args.command in ("migrate", "prepare"):
            migrate(settings.database_url)
    except (ServiceUnreachableError, ConfigurationError, NotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
