"""The caller's purchase history (GET /api/v1/profile/me/purchases)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from market import purchases
from webapp import db
from webapp.auth import current_user, login_required

blp = Blueprint(
    "purchases", __name__, url_prefix="/api/v1/profile/me/purchases", description="Purchases"
)


class PurchaseSchema(ma.Schema):
    id = ma.fields.String()
    package_id = ma.fields.String()
    credits = ma.fields.Integer()
    amount = ma.fields.Decimal(as_string=True, places=2)
    currency = ma.fields.String()
    status = ma.fields.String()
    status_detail = ma.fields.String(allow_none=True)
    external_reference = ma.fields.String()
    preference_id = ma.fields.String(allow_none=True)
    payment_id = ma.fields.String(allow_none=True)
    unrecovered_credits = ma.fields.Integer()
    created_at = ma.fields.DateTime()
    expires_at = ma.fields.DateTime()
    approved_at = ma.fields.DateTime(allow_none=True)
    reversed_at = ma.fields.DateTime(allow_none=True)


@blp.route("")
class Purchases(MethodView):
    @login_required
    @blp.response(200, PurchaseSchema(many=True))
    @blp.paginate()
    def get(self, pagination_parameters: Any) -> list[Any]:
        """The caller's credit purchases, newest first (X-Pagination header)."""
        rows, total = purchases.user_purchases(
            db.session(),
            user_id=current_user().id,
            offset=pagination_parameters.first_item,
            limit=pagination_parameters.page_size,
        )
        pagination_parameters.item_count = total
        return rows
