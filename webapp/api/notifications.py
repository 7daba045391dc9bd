"""The caller's notification inbox: list (newest first, paginated), read one, read all."""

from __future__ import annotations

import uuid
from typing import Any

import marshmallow as ma
from flask.views import MethodView

from market import notifications
from market.models import Notification
from webapp import db
from webapp.auth import current_user, login_required
from webapp.errors import ProblemSchema
from webapp.schemas import Blueprint, count_bound

blp = Blueprint(
    "notifications", __name__, url_prefix="/api/v1/notifications", description="Notifications"
)


class NotificationSchema(ma.Schema):
    id = ma.fields.UUID()
    kind = ma.fields.String()
    title = ma.fields.String()
    body = ma.fields.String(allow_none=True)
    data = ma.fields.Dict()
    read = ma.fields.Function(lambda n: n.read_at is not None)
    read_at = ma.fields.DateTime(allow_none=True)
    created_at = ma.fields.DateTime()


class InboxQuerySchema(ma.Schema):
    unread = ma.fields.Boolean(load_default=False, metadata={"description": "Only unread ones"})


class ReadAllSchema(ma.Schema):
    marked_read = ma.fields.Integer(metadata={"description": "How many were unread"})


@blp.route("")
class Inbox(MethodView):
    @login_required
    @blp.arguments(InboxQuerySchema, location="query")
    @blp.response(200, NotificationSchema(many=True))
    @blp.paginate()
    def get(self, query: dict[str, Any], pagination_parameters: Any) -> list[Notification]:
        """The caller's notifications, newest first (`?unread=true`; X-Pagination header)."""
        rows, total = notifications.user_notifications(
            db.session(),
            user_id=current_user().id,
            unread_only=query["unread"],
            offset=pagination_parameters.first_item,
            limit=pagination_parameters.page_size,
            count_up_to=count_bound(pagination_parameters.page_size),
        )
        pagination_parameters.item_count = total
        return rows


@blp.route("/<uuid:notification_id>")
class NotificationById(MethodView):
    @login_required
    @blp.response(200, NotificationSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def get(self, notification_id: uuid.UUID) -> Notification:
        """One of the caller's notifications (404 for anybody else's)."""
        return notifications.user_notification(
            db.session(), user_id=current_user().id, notification_id=notification_id
        )


@blp.route("/<uuid:notification_id>/read")
class ReadOne(MethodView):
    @login_required
    @blp.response(200, NotificationSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def post(self, notification_id: uuid.UUID) -> Notification:
        """Mark one of the caller's notifications read (idempotent; 404 for anybody else's)."""
        session = db.session()
        row = notifications.mark_read(
            session, user_id=current_user().id, notification_id=notification_id
        )
        session.commit()
        return row


@blp.route("/read-all")
class ReadAll(MethodView):
    @login_required
    @blp.response(200, ReadAllSchema)
    def post(self) -> dict[str, int]:
        """Mark every unread notification of the caller read (idempotent)."""
        session = db.session()
        count = notifications.mark_all_read(session, user_id=current_user().id)
        session.commit()
        return {"marked_read": count}
