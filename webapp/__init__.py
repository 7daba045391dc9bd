"""The Flask app factory: `gunicorn 'webapp:create_app()'`."""

from __future__ import annotations

import redis
from flask import Flask
from flask_smorest import Api

from market.cache import Cache
from market.config import Settings, load_settings
from market.db import make_engine, make_sessionmaker
from market.identity.tokens import FirebaseVerifier
from webapp import db, edge, errors
from webapp.api import BLUEPRINTS
from webapp.openapi import WireFormatPlugin


class ProblemApi(Api):
    """flask-smorest's Api whose own errors (404, 405, 422…) are problem+json too."""

    ERROR_SCHEMA = errors.ProblemSchema
    # No catch-all `default` answer: every operation lists the statuses it can give
    # (webapp/openapi.py), so a client or a checker knows any other is a defect.
    DEFAULT_ERROR_RESPONSE_NAME = None

    def handle_http_exception(self, error):  # type: ignore[override]
        return errors.handle_http_exception(error)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    # No static folder: the only static files are Swagger UI's (webapp/edge.py).
    app = Flask(__name__, static_folder=None)
    app.config.update(
        API_TITLE="Spartan Market API",
        API_VERSION="1.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=edge.SWAGGER_UI_URL,
        API_SPEC_OPTIONS={
            "components": {
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
                }
            },
            "info": {"description": "Credits, profiles, avatars and notifications."},
        },
        MAX_CONTENT_LENGTH=16 * 1024 * 1024,
        JSON_SORT_KEYS=False,
    )
    app.extensions["spartan.settings"] = settings
    engine = make_engine(settings.database_url, application_name="spartan-web")
    app.extensions["spartan.engine"] = engine
    app.extensions["spartan.sessions"] = make_sessionmaker(engine)
    app.extensions["spartan.verifier"] = FirebaseVerifier(settings)
    app.extensions["spartan.redis"] = redis.Redis.from_url(
        settings.redis_url, socket_timeout=1, socket_connect_timeout=1
    )
    app.extensions["spartan.cache"] = Cache(app.extensions["spartan.redis"], settings.key_prefix)

    db.init_app(app)
    from webapp.limits import EXEMPT_PATHS

    api = ProblemApi(app, spec_kwargs={"extra_plugins": [WireFormatPlugin(EXEMPT_PATHS)]})
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    errors.register(app)
    # Operations: observability first (its hooks time and id everything after), then limits.
    from webapp import limits, observability
    from webapp.api.health import init_app as init_health

    observability.init_app(app)
    edge.init_app(app)  # proxies, CORS, Swagger UI assets
    limits.init_app(app)
    init_health(app)
    return app
