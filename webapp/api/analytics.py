"""A user's analytics: totals and a per-day series from the daily roll-up."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from market.errors import NotFoundError, ValidationError
from market.ops import analytics
from webapp import db
from webapp.auth import current_user, login_required
from webapp.errors import ProblemSchema

blp = Blueprint(
    "analytics", __name__, url_prefix="/api/v1/advanced/analytics", description="Analytics"
)

MAX_DAYS = 366


class RangeArgs(ma.Schema):
    since = ma.fields.Date(data_key="from", load_default=None)
    until = ma.fields.Date(data_key="to", load_default=None)


class FiguresSchema(ma.Schema):
    purchases = ma.fields.Integer()
    revenue_ars = ma.fields.Decimal(as_string=True, places=2)
    credits_bought = ma.fields.Integer()
    credits_spent = ma.fields.Integer()
    refunds = ma.fields.Integer()
    refunded_ars = ma.fields.Decimal(as_string=True, places=2)
    avatar_uploads = ma.fields.Integer()


class DaySchema(FiguresSchema):
    day = ma.fields.Date()


class TotalsSchema(FiguresSchema):
    active_days = ma.fields.Integer()


class UserAnalyticsSchema(ma.Schema):
    user_id = ma.fields.UUID()
    since = ma.fields.Date(data_key="from")
    until = ma.fields.Date(data_key="to")
    totals = ma.fields.Nested(TotalsSchema)
    days = ma.fields.List(ma.fields.Nested(DaySchema))
    computed_at = ma.fields.DateTime(allow_none=True)


@blp.route("/user/<uuid:user_id>")
class UserAnalytics(MethodView):
    @login_required
    @blp.arguments(RangeArgs, location="query")
    @blp.response(200, UserAnalyticsSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def get(self, args: dict[str, Any], user_id: uuid.UUID) -> dict[str, Any]:
        """Totals and a per-day series for `?from=&to=` (default: 30 days); self or admin."""
        viewer = current_user()
        if viewer.id != user_id and not viewer.is_admin:
            raise NotFoundError("no such user")
        until = args["until"] or datetime.now(UTC).date()
        since = args["since"] or until - timedelta(days=29)
        if since > until:
            raise ValidationError("`from` must not be after `to`")
        if (until - since).days + 1 > MAX_DAYS:
            raise ValidationError(f"at most {MAX_DAYS} days at once")
        report = analytics.user_report(db.session(), user_id=user_id, since=since, until=until)
        if report is None:
            raise NotFoundError("no such user")
        return report
