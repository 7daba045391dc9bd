"""One database session per request, closed at teardown; or, for a request whose whole
write is one statement, that statement alone on the wire."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import Executable, Row
from sqlalchemy.orm import Session

from market.db import execute_idempotent


def session() -> Session:
    if "db" not in g:
        g.db = current_app.extensions["spartan.sessions"]()
    return g.db


def write_once(statement: Executable, params: dict[str, Any]) -> Row[Any] | None:
    """Run a request's whole write, ONE idempotent statement, in autocommit (a connection
    found dead is replaced and the statement sent again); its first row."""
    return execute_idempotent(current_app.extensions["spartan.engine"], statement, params)


def init_app(app: Flask) -> None:
    @app.teardown_appcontext
    def _close(exc: BaseException | None) -> None:
        db = g.pop("db", None)
        if db is not None:
            db.close()
