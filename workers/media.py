"""Tasks of the `media` queue."""

from workers.app import app  # noqa: F401
