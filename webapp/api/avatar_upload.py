"""Avatar upload: check the bytes, stage the original, start the avatar workflow (202)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from flask_smorest.fields import Upload
from werkzeug.datastructures import FileStorage

from market.errors import UploadTooLargeError, ValidationError
from market.media import avatars
from webapp import db
from webapp.api.profile import media
from webapp.api.tasks import accepted
from webapp.auth import current_user, login_required
from webapp.errors import ProblemSchema
from webapp.schemas import AcceptedSchema
from workflows.avatar import start_avatar_upload

blp = Blueprint(
    "avatar_upload",
    __name__,
    url_prefix="/api/v1/advanced/profile/avatar",
    description="Avatar uploads",
)

# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_SLACK = 64 * 1024


IMAGE_TYPES = "image/jpeg, image/png, image/webp"


class UploadSchema(ma.Schema):
    file = Upload(
        required=True,
        metadata={
            "description": "A JPEG, PNG or WebP image (its bytes decide, not its declared type)",
            "minLength": 1,
        },
    )


class AvatarAcceptedSchema(AcceptedSchema):
    media_id = ma.fields.String(required=True)


@blp.before_request
def _refuse_oversized_body() -> None:
    """413 from the declared length, before the body is read; a lying length stops at the cap."""
    _, policy = media()
    cap = policy.max_bytes + MULTIPART_SLACK
    if request.content_length is not None and request.content_length > cap:
        raise UploadTooLargeError(f"the file must be at most {policy.max_bytes} bytes")
    request.max_content_length = cap


def _read_capped(upload: FileStorage, limit: int) -> bytes:
    data = upload.stream.read(limit + 1)
    if len(data) > limit:
        raise UploadTooLargeError(f"the file must be at most {limit} bytes")
    return data


@blp.route("/upload")
class AvatarUpload(MethodView):
    @login_required
    @blp.arguments(UploadSchema, location="files")
    @blp.response(202, AvatarAcceptedSchema)
    @blp.alt_response(413, schema=ProblemSchema, description="The file is too large")
    @blp.alt_response(415, schema=ProblemSchema, description="Not a JPEG, PNG or WebP image")
    @blp.alt_response(422, schema=ProblemSchema, description="Too many pixels, or corrupt")
    @blp.doc(
        requestBody={
            "content": {"multipart/form-data": {"encoding": {"file": {"contentType": IMAGE_TYPES}}}}
        }
    )
    def post(self, files: dict[str, FileStorage]) -> Any:
        """Upload a new avatar (multipart `file`); it becomes the avatar once processed."""
        if request.form:
            # The document's form has one part, `file`: any other is a client's mistake.
            raise ValidationError(
                "unexpected form fields", errors={"form": sorted(request.form.keys())}
            )
        user = current_user()
        storage, policy = media()
        data = _read_capped(files["file"], policy.max_bytes)
        session = db.session()
        staged = avatars.stage_upload(
            session, storage=storage, policy=policy, user_id=user.id, data=data
        )
        job = start_avatar_upload(session, owner_id=user.id, media_id=staged.id)
        try:
            session.commit()
        except Exception:
            avatars.discard_staged(storage, staged)
            raise
        return accepted(job, media_id=str(staged.id))
