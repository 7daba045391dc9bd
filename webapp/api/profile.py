"""The caller's profile (ETag / If-Match), privacy settings, avatar presets and options."""

from __future__ import annotations

import hashlib
from typing import Any

import marshmallow as ma
from flask import current_app
from flask.views import MethodView

from market.cache import Cache
from market.identity import profiles
from market.media import avatars, presets
from market.media.images import AvatarPolicy
from market.media.storage import Storage
from webapp import db
from webapp.auth import current_user, login_required
from webapp.preconditions import Blueprint
from webapp.schemas import StrictBoolean, http_url_field, text_field
from workflows.notify import dispatch_after_commit

blp = Blueprint(
    "profile", __name__, url_prefix="/api/v1/profile", description="Profiles, privacy, avatars"
)


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


# Schemas ------------------------------------------------------------------------------------

MULTILINE_FIELDS = frozenset({"bio"})


class ProfileChangesSchema(ma.Schema):
    """Fields to change; absent fields are left alone, null (or "") clears a field."""

    class Meta:
        unknown = ma.RAISE

    display_name = text_field(max_length=profiles.MAX_LENGTHS["display_name"], allow_none=True)
    bio = text_field(max_length=profiles.MAX_LENGTHS["bio"], multiline=True, allow_none=True)
    location = text_field(max_length=profiles.MAX_LENGTHS["location"], allow_none=True)
    website = http_url_field(
        max_length=profiles.MAX_LENGTHS["website"],
        require_tld=True,
        blank_clears=True,
        allow_none=True,
    )

    @ma.pre_load
    def _blank_is_null(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, dict):
            return data
        # Surrounding blanks are noise; an empty value clears the field; CRLF (or a lone CR)
        # becomes LF. Only blanks the documented patterns allow are stripped, so a value the
        # document refuses (a line break in a one-line field) is refused, not cleared.
        return {
            k: _normalised(k, v) if isinstance(v, str) and k in profiles.PROFILE_FIELDS else v
            for k, v in data.items()
        }


def _normalised(name: str, value: str) -> str | None:
    if name in MULTILINE_FIELDS:
        return value.replace("\r\n", "\n").replace("\r", "\n").strip(" \t\n") or None
    return value.strip(" \t") or None


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

    profile_public = StrictBoolean(required=True)
    show_email = StrictBoolean(required=True)
    show_location = StrictBoolean(required=True)
    show_purchase_activity = StrictBoolean(required=True)
    show_avatar = StrictBoolean(required=True)
    updated_at = ma.fields.String(dump_only=True)


class PresetChoiceSchema(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    preset = ma.fields.String(required=True, validate=ma.validate.OneOf(list(presets.PRESETS)))


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
    def patch(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change some fields; If-Match (the ETag as last read), when sent, must be current."""
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
    @blp.etag
    @blp.response(200, PrivacySchema)
    def get(self) -> dict[str, Any]:
        """Who sees what of the caller's profile (ETag: send it back in If-Match to change)."""
        view = profiles.get_privacy(db.session(), user_id=current_user().id)
        blp.set_etag(view, PrivacySchema)
        return view

    @login_required
    @blp.etag
    @blp.arguments(PrivacySchema)
    @blp.response(200, PrivacySchema)
    def put(self, values: dict[str, bool]) -> dict[str, Any]:
        """Replace every privacy setting at once; If-Match, when sent, must be current."""
        user = current_user()
        session = db.session()
        view = profiles.update_privacy(
            session,
            user_id=user.id,
            values=values,
            precondition=lambda current: blp.check_etag(current, PrivacySchema),
        )
        blp.set_etag(view, PrivacySchema)
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
        presets.ensure_preset(storage, policy, choice["preset"], avatars.output_names(policy))
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
        where = (
            settings.media_storage,
            settings.media_url,
            settings.s3_bucket,
            settings.s3_prefix,
            settings.s3_public_base_url,
        )
        ident = hashlib.sha256(
            f"{policy!r}|{presets.DESIGN_VERSION}|{where!r}".encode()
        ).hexdigest()[:16]
        return cache().get_or_load(
            "avatar_options", ident, lambda: avatars.avatar_options(storage, policy)
        )
