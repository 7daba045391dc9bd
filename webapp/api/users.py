"""Public profiles: what others see of a user, filtered by that user's privacy settings."""

from __future__ import annotations

import uuid
from typing import Any

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from market.errors import NotFoundError
from market.identity import profiles
from webapp import db
from webapp.api.profile import AvatarSchema, PrivacySchema, cache, media
from webapp.auth import current_user, login_optional
from webapp.errors import ProblemSchema

blp = Blueprint("users", __name__, url_prefix="/api/v1/users", description="Public profiles")


class PurchaseActivitySchema(ma.Schema):
    purchases = ma.fields.Integer()
    last_purchase_on = ma.fields.String(allow_none=True)


class PublicProfileSchema(ma.Schema):
    """Fields the user's privacy hides are absent; the owner and admins get every field."""

    user_id = ma.fields.String()
    display_name = ma.fields.String(allow_none=True)
    bio = ma.fields.String(allow_none=True)
    website = ma.fields.String(allow_none=True)
    member_since = ma.fields.String()
    location = ma.fields.String(allow_none=True)
    email = ma.fields.String(allow_none=True)
    avatar_urls = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String())
    avatar = ma.fields.Nested(AvatarSchema)
    purchase_activity = ma.fields.Nested(PurchaseActivitySchema)
    # Owner and admins only.
    version = ma.fields.Integer()
    updated_at = ma.fields.String()
    privacy = ma.fields.Nested(PrivacySchema)


@blp.route("/<uuid:user_id>/profile")
class PublicProfile(MethodView):
    @login_optional
    @blp.response(200, PublicProfileSchema)
    @blp.alt_response(404, schema=ProblemSchema, description="No such user, or a private profile")
    def get(self, user_id: uuid.UUID) -> dict[str, Any]:
        """A user's profile as the caller may see it (anonymous callers too; cached)."""
        viewer = current_user(required=False)
        storage, policy = media()
        session = db.session()
        if viewer is not None and (viewer.id == user_id or viewer.is_admin):
            return profiles.full_profile(session, user_id=user_id, storage=storage, policy=policy)
        view = cache().get_or_load(
            "public_profile",
            str(user_id),
            lambda: profiles.public_profile(
                session, user_id=user_id, storage=storage, policy=policy
            ),
        )
        if view is None:
            # A private profile is indistinguishable from a missing user.
            raise NotFoundError("no such user")
        return view
