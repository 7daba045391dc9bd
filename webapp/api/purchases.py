"""The caller's purchase history (GET /api/v1/profile/me/purchases)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView

from market.payments import purchases
from webapp import db
from webapp.auth import current_user_id, login_required
from webapp.schemas import Blueprint, CursorArgs, cursor_or_numbered_page

Answer = tuple[Any, int, dict[str, str]]

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
    @blp.arguments(CursorArgs, location="query", error_status_code=400)
    @blp.response(200, PurchaseSchema(many=True))
    @blp.paginate()
    def get(self, args: dict[str, Any], pagination_parameters: Any) -> Answer:
        """The caller's credit purchases, newest first.

        Numbered pages (`page`, X-Pagination with the total, counted up to what page 1000
        reaches) up to page 1000; any depth, at the same cost, with the `cursor` of the
        `Link: rel="next"` header every page carries (cursor pages are not counted: no
        X-Pagination).
        """
        session, user_id = db.session(), current_user_id()
        return cursor_or_numbered_page(
            args,
            pagination_parameters,
            by_cursor=lambda cursor, limit: purchases.purchases_page(
                session, user_id=user_id, cursor=cursor, limit=limit
            ),
            numbered=lambda offset, limit, count_up_to: purchases.user_purchases(
                session, user_id=user_id, offset=offset, limit=limit, count_up_to=count_up_to
            ),
        )
