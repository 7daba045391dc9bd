"""Operators dropping cache entries: one user's, or every public profile (no KEYS scans)."""

from __future__ import annotations

import uuid

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from webapp.auth import admin_required
from webapp.errors import ProblemSchema

blp = Blueprint(
    "cache", __name__, url_prefix="/api/v1/advanced/cache", description="Cache administration"
)


@blp.route("/user/<uuid:user_id>")
class UserCache(MethodView):
    @admin_required
    @blp.response(204)
    @blp.alt_response(403, schema=ProblemSchema)
    def delete(self, user_id: uuid.UUID) -> None:
        """Drop the user's cached profile, balance and public profile (admin; idempotent)."""
        current_app.extensions["spartan.cache"].invalidate_user(user_id)


@blp.route("/public-profiles")
class PublicProfilesCache(MethodView):
    @admin_required
    @blp.response(204)
    @blp.alt_response(403, schema=ProblemSchema)
    def delete(self) -> None:
        """Drop every cached public profile at once (admin; one version bump; idempotent)."""
        current_app.extensions["spartan.cache"].invalidate_namespace("public_profile")
