"""The caller's profile (ETag / If-Match), privacy settings, avatar presets and options."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import marshmallow as ma
from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from market import avatar_presets, avatars, profiles
from market.cache import Cache
from market.media import AvatarPolicy
from market.storage import Storage
from webapp import db
from webapp.auth import current_user, login_required
from webapp.errors import ProblemSchema
from workflows.notify import dispatch_after_commit

blp = Blueprint(
    "profile", __name__, url_prefix="/api/v1/profile", description="Profiles, privacy, avatars"
)

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f]")


def media() -> tuple[Storage, AvatarPolicy]:
    """This app's avatar storage and limits."""
    settings = current_app.extensions["spartan.settings"]
    return avatars.storage_for(settings), avatars.policy_for(settings)


def cache() -> Cache:
    return current_app.extensions["spartan.cache"]


def invalidate_profile(user_id: Any) -> None:
    """Drop the user's own and public profile (after the commit that changed them)."""
    cache().invalidate("profile", str(user_id))
    cache().invalidate("public_profile", str(user_id))


def _plain_text(*, multiline: bool) -> Any:
    """A validator refusing control characters (and line breaks unless `multiline`)."""
    bad = _CONTROL if multiline else _CONTROL_OR_NEWLINE
    what = "control characters" if multiline else "line breaks or control characters"

    def check(value: str | None) -> None:
        if value is not None and bad.search(value):
            raise ma.ValidationError(f"Must not contain {what}.")

    return check


# Schemas ------------------------------------------------------------------------------------


class ProfileChangesSchema(ma.Schema):
    """Fields to change; absent fields are left alone, null (or "") clears a field."""

    class Meta:
        unknown = ma.RAISE

    display_name = ma.fields.String(
        allow_none=True,
        validate=[
            ma.validate.Length(max=profiles.MAX_LENGTHS["display_name"]),
            _plain_text(multiline=False),
        ],
    )
    bio = ma.fields.String(
        allow_none=True,
        validate=[
            ma.validate.Length(max=profiles.MAX_LENGTHS["bio"]),
            _plain_text(multiline=True),
        ],
    )
    location = ma.fields.String(
        allow_none=True,
        validate=[
            ma.validate.Length(max=profiles.MAX_LENGTHS["location"]),
            _plain_text(multiline=False),
        ],
    )
    website = ma.fields.URL(
        allow_none=True,
        schemes={"http", "https"},
        validate=ma.validate.Length(max=profiles.MAX_LENGTHS["website"]),
        error_messages={"invalid": "Must be an http:// or https:// address."},
    )

    @ma.pre_load
    def _blank_is_null(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, dict):
            return data
        # Surrounding blanks are noise; an empty value clears the field; CRLF becomes LF.
        return {
            k: (v.replace("\r\n", "\n").strip() or None)
            if isinstance(v, str) and k in profiles.PROFILE_FIELDS
            else v
            for k, v in data.items()
        }


class AvatarSchema(ma.Schema):
    source = ma.fields.String(allow_none=True, metadata={"enum": ["upload", "preset", None]})
    preset = ma.fields.String(allow_none=True)
    media_id = ma.fields.String(allow_none=True)
    urls = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String()),
        metadata={"description": "Output format -> size -> URL"},
    )


class ProfileSchema(ma.Schema):
    user_id = ma.fields.String()
    email = ma.fields.String(allow_none=True)
    display_name = ma.fields.String(allow_none=True)
    bio = ma.fields.String(allow_none=True)
    location = ma.fields.String(allow_none=True)
    website = ma.fields.String(allow_none=True)
    avatar_urls = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.String(),
        metadata={"description": "Output size -> URL (WebP); {} without an avatar"},
    )
    avatar = ma.fields.Nested(AvatarSchema)
    version = ma.fields.Integer()
    member_since = ma.fields.String()
    updated_at = ma.fields.String()


class PrivacySchema(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    profile_public = ma.fields.Boolean(required=True)
    show_email = ma.fields.Boolean(required=True)
    show_location = ma.fields.Boolean(required=True)
    show_purchase_activity = ma.fields.Boolean(required=True)
    show_avatar = ma.fields.Boolean(required=True)
    updated_at = ma.fields.String(dump_only=True)


class PresetChoiceSchema(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    preset = ma.fields.String(
        required=True, validate=ma.validate.OneOf(list(avatar_presets.PRESETS))
    )


class PresetSchema(ma.Schema):
    id = ma.fields.String()
    name = ma.fields.String()
    avatar_urls = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String())


class AvatarOptionsSchema(ma.Schema):
    formats = ma.fields.List(ma.fields.String())
    mime_types = ma.fields.List(ma.fields.String())
    max_bytes = ma.fields.Integer()
    max_pixels = ma.fields.Integer()
    sizes = ma.fields.List(ma.fields.Integer())
    output_formats = ma.fields.List(ma.fields.String())
    presets = ma.fields.List(ma.fields.Nested(PresetSchema))


# Views --------------------------------------------------------------------------------------


def own_view(user_id: Any) -> dict[str, Any]:
    storage, policy = media()
    return cache().get_or_load(
        "profile",
        str(user_id),
        lambda: profiles.own_profile(db.session(), user_id=user_id, storage=storage, policy=policy),
    )


@blp.route("/me")
class Me(MethodView):
    @login_required
    @blp.etag
    @blp.response(200, ProfileSchema)
    def get(self) -> dict[str, Any]:
        """The caller's profile (cached). Send its ETag back in If-Match to change it."""
        view = own_view(current_user().id)
        blp.set_etag(view)
        return view

    @login_required
    @blp.etag
    @blp.arguments(ProfileChangesSchema)
    @blp.response(200, ProfileSchema)
    @blp.alt_response(412, schema=ProblemSchema, description="The profile changed since read")
    @blp.alt_response(428, schema=ProblemSchema, description="If-Match is required")
    def patch(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change some fields; requires If-Match with the ETag of the profile as last read."""
        user = current_user()
        storage, policy = media()
        session = db.session()
        view = profiles.update_profile(
            session,
            user_id=user.id,
            changes=changes,
            precondition=blp.check_etag,
            storage=storage,
            policy=policy,
        )
        dispatch_after_commit(session)  # sends the "profile.updated" it recorded, if any
        session.commit()
        invalidate_profile(user.id)
        blp.set_etag(view)
        return view


@blp.route("/me/privacy")
class MyPrivacy(MethodView):
    @login_required
    @blp.response(200, PrivacySchema)
    def get(self) -> dict[str, Any]:
        """Who sees what of the caller's profile."""
        return profiles.get_privacy(db.session(), user_id=current_user().id)

    @login_required
    @blp.arguments(PrivacySchema)
    @blp.response(200, PrivacySchema)
    def put(self, values: dict[str, bool]) -> dict[str, Any]:
        """Replace every privacy setting at once."""
        user = current_user()
        session = db.session()
        view = profiles.update_privacy(session, user_id=user.id, values=values)
        dispatch_after_commit(session)  # sends the "privacy.updated" it recorded, if any
        session.commit()
        cache().invalidate("public_profile", str(user.id))
        return view


@blp.route("/me/avatar")
class MyAvatar(MethodView):
    @login_required
    @blp.arguments(PresetChoiceSchema)
    @blp.response(200, ProfileSchema)
    def put(self, choice: dict[str, str]) -> dict[str, Any]:
        """Use a preset avatar instead of an upload (newer than any upload still processing)."""
        user = current_user()
        storage, policy = media()
        session = db.session()
        # Files first: the profile never points at a preset that is not in storage.
        avatar_presets.ensure_preset(
            storage, policy, choice["preset"], avatars.output_names(policy)
        )
        swap = avatars.choose_preset(
            session, user_id=user.id, preset_id=choice["preset"], policy=policy
        )
        dispatch_after_commit(session)  # sends the "avatar.updated" it recorded, if any
        session.commit()
        avatars.delete_files(storage, swap.delete)
        invalidate_profile(user.id)
        return own_view(user.id)


@blp.route("/avatar/options")
class AvatarOptions(MethodView):
    @blp.response(200, AvatarOptionsSchema)
    def get(self) -> dict[str, Any]:
        """Allowed formats, size and pixel limits, output sizes and the preset avatars."""
        storage, policy = media()
        settings = current_app.extensions["spartan.settings"]
        # Keyed by what the answer depends on: new limits or designs are a new entry.
        ident = hashlib.sha256(
            f"{policy!r}|{avatar_presets.DESIGN_VERSION}|{settings.media_url}".encode()
        ).hexdigest()[:16]
        return cache().get_or_load(
            "avatar_options", ident, lambda: avatars.avatar_options(storage, policy)
        )
