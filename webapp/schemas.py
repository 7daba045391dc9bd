"""Schemas shared by several blueprints."""

from __future__ import annotations

import marshmallow as ma


class AcceptedSchema(ma.Schema):
    """The answer to work that runs in the background (202)."""

    task_id = ma.fields.UUID(required=True)
    status_url = ma.fields.String(required=True)
