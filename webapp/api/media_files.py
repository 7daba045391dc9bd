"""`/media/<key>` in development and test: rendered avatars and presets, cached as immutable.

In production a web server or CDN serves MEDIA_URL; this route then answers 404. Staged
originals (with their EXIF and GPS data) are never served.
"""

from __future__ import annotations

from flask import Blueprint as FlaskBlueprint
from flask import Response, abort, current_app, send_file
from flask_smorest import Blueprint

from market import avatars
from market.storage import content_type_for

blp = Blueprint("media_files", __name__, url_prefix="/media", description="Media files (dev)")

SERVED_PREFIXES = ("avatars/", "presets/")
# A new upload or design gets a new key, so a file never changes under its URL.
CACHE_CONTROL = "public, max-age=31536000, immutable"


def serve_media(key: str) -> Response:
    settings = current_app.extensions["spartan.settings"]
    if settings.is_production or not key.startswith(SERVED_PREFIXES):
        abort(404)
    storage = avatars.storage_for(settings)
    try:
        path = storage.path(key)
    except ValueError:  # a key that escapes the media root
        abort(404)
    if not path.is_file():
        abort(404)
    response = send_file(path, mimetype=content_type_for(key), conditional=True, etag=True)
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


# Registered on Flask's own rule table, not flask-smorest's: not part of the API document.
FlaskBlueprint.add_url_rule(blp, "/<path:key>", "serve_media", serve_media, methods=["GET"])
