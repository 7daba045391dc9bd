"""Tasks of the `payments` queue."""

from workers.app import app  # noqa: F401
