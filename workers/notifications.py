"""Tasks of the `notifications` queue."""

from workers.app import app  # noqa: F401
