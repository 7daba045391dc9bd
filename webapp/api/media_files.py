"""`/media/<key>`: rendered avatars and presets on local disk, cached as immutable.

Served in every environment while MEDIA_STORAGE=local and MEDIA_URL is a path on this host
(the default `/media`). When MEDIA_URL points at a CDN or another server (an absolute URL),
or media live in S3, clients never ask here: the route answers 404. A web server may serve
MEDIA_ROOT itself instead (README, "Media storage", has the nginx lines). Staged originals
(with their EXIF and GPS data) are never served.
"""

from __future__ import annotations

from flask import Blueprint as FlaskBlueprint
from flask import Response, abort, current_app, send_file
from flask_smorest import Blueprint

from market.config import Settings
from market.media import avatars
from market.media.storage import content_type_for

blp = Blueprint(
    "media_files", __name__, url_prefix="/media", description="Media files (local disk)"
)

SERVED_PREFIXES = ("avatars/", "presets/")
# A new upload or design gets a new key, so a file never changes under its URL.
CACHE_CONTROL = "public, max-age=31536000, immutable"


def serves_media(settings: Settings) -> bool:
    """Whether this app serves the local media files (see the module's docstring)."""
    return settings.media_storage == "local" and settings.media_url.startswith("/")


def serve_media(key: str) -> Response:
    settings = current_app.extensions["spartan.settings"]
    if not serves_media(settings) or not key.startswith(SERVED_PREFIXES):
        abort(404)
    storage = avatars.storage_for(settings)
    try:
        path = storage.path(key)
    except ValueError:  # a key that escapes the media root
        abort(404)
    if path is None or not path.is_file():
        abort(404)
    response = send_file(path, mimetype=content_type_for(key), conditional=True, etag=True)
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


# Registered on Flask's own rule table, not flask-smorest's: not part of the API document.
FlaskBlueprint.add_url_rule(blp, "/<path:key>", "serve_media", serve_media, methods=["GET"])
