"""The in-app alert rules for operators: their state, and thresholds changed at run time."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from market.ops import alerts
from webapp import db
from webapp.auth import admin_required, current_user
from webapp.errors import ProblemSchema

blp = Blueprint(
    "alerts", __name__, url_prefix="/api/v1/advanced/alerts", description="Alert rules (admin)"
)


class AlertRuleSchema(ma.Schema):
    rule = ma.fields.String()
    direction = ma.fields.String(
        metadata={
            "description": "above: fires when the value exceeds the threshold; below: "
            "when it falls short"
        }
    )
    unit = ma.fields.String()
    threshold = ma.fields.Float(metadata={"description": "The threshold in force"})
    default_threshold = ma.fields.Float(metadata={"description": "From the ALERT_* variable"})
    threshold_source = ma.fields.String(metadata={"description": "environment or admin"})
    threshold_updated_by = ma.fields.UUID(allow_none=True)
    threshold_updated_at = ma.fields.DateTime(allow_none=True)
    value = ma.fields.Float(
        allow_none=True, metadata={"description": "The reading of the last evaluation (beat)"}
    )
    evaluated_at = ma.fields.DateTime(allow_none=True)
    firing = ma.fields.Boolean()
    firing_since = ma.fields.DateTime(allow_none=True)
    last_fired_at = ma.fields.DateTime(allow_none=True)
    last_recovered_at = ma.fields.DateTime(allow_none=True)


class ThresholdChangeSchema(ma.Schema):
    id = ma.fields.Integer()
    rule = ma.fields.String()
    old_threshold = ma.fields.Float(allow_none=True)
    new_threshold = ma.fields.Float(allow_none=True)
    changed_by = ma.fields.UUID(allow_none=True)
    changed_by_uid = ma.fields.String()
    changed_at = ma.fields.DateTime()


class AlertsSchema(ma.Schema):
    rules = ma.fields.List(ma.fields.Nested(AlertRuleSchema))
    changes = ma.fields.List(
        ma.fields.Nested(ThresholdChangeSchema),
        metadata={"description": "The latest threshold changes, newest first (the audit)"},
    )


class ThresholdPatchSchema(ma.Schema):
    threshold = ma.fields.Float(
        required=True,
        allow_none=True,
        allow_nan=False,
        metadata={"description": "The new threshold; null goes back to the environment default"},
    )


def _settings() -> Any:
    return current_app.extensions["spartan.settings"]


@blp.route("")
class Alerts(MethodView):
    @admin_required
    @blp.response(200, AlertsSchema)
    def get(self) -> dict[str, Any]:
        """Each alert rule: threshold, last value, firing or not, last fired and recovered."""
        session = db.session()
        return {
            "rules": alerts.overview(session, _settings()),
            "changes": alerts.threshold_changes(session),
        }


@blp.route("/<string:rule>")
class AlertRule(MethodView):
    @admin_required
    @blp.arguments(ThresholdPatchSchema)
    @blp.response(200, AlertRuleSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def patch(self, body: dict[str, Any], rule: str) -> dict[str, Any]:
        """Change a rule's threshold at run time (audited); beat's next evaluation uses it."""
        session = db.session()
        row = alerts.set_threshold(
            session, rule=rule, threshold=body["threshold"], by=current_user(), settings=_settings()
        )
        session.commit()
        return row
