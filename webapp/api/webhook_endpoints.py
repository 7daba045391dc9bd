"""Outgoing webhook endpoints: register (secret shown once), list, change, delete, and the
delivery log with manual redelivery."""

from __future__ import annotations

import json
import uuid
from typing import Any

import marshmallow as ma
from flask import current_app
from flask.views import MethodView

from market.models import WebhookDelivery, WebhookEndpoint
from market.models.webhooks import DELIVERY_STATES
from market.outbound import endpoints
from webapp import db
from webapp.api.tasks import accepted
from webapp.auth import current_user, login_required
from webapp.errors import ProblemSchema
from webapp.schemas import (
    AcceptedSchema,
    Blueprint,
    StrictBoolean,
    count_bound,
    http_url_field,
)
from workflows.redeliver import start_redelivery

blp = Blueprint(
    "webhook_endpoints",
    __name__,
    url_prefix="/api/v1/webhook-endpoints",
    description="Outgoing webhooks (Standard Webhooks signatures)",
)


def _events_field(**kwargs: Any) -> ma.fields.List:
    return ma.fields.List(
        ma.fields.String(validate=ma.validate.OneOf(endpoints.EVENT_TYPES)),
        validate=ma.validate.Length(min=1, max=len(endpoints.EVENT_TYPES)),
        metadata={"description": "Event types to receive (notification kinds)"},
        **kwargs,
    )


def _url_field(**kwargs: Any) -> ma.fields.Url:
    return http_url_field(
        max_length=2000,
        require_tld=False,
        metadata={"description": "Where events are POSTed; checked by the SSRF guard"},
        **kwargs,
    )


class EndpointSchema(ma.Schema):
    id = ma.fields.UUID()
    owner_id = ma.fields.UUID()
    url = ma.fields.String()
    description = ma.fields.String(allow_none=True)
    events = ma.fields.List(ma.fields.String())
    enabled = ma.fields.Boolean()
    disabled_at = ma.fields.DateTime(allow_none=True)
    disabled_reason = ma.fields.String(allow_none=True)
    consecutive_failures = ma.fields.Integer()
    failing_since = ma.fields.DateTime(allow_none=True)
    last_success_at = ma.fields.DateTime(allow_none=True)
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()


class CreatedEndpointSchema(EndpointSchema):
    secret = ma.fields.String(
        metadata={"description": "Signing secret (whsec_…); shown only in this answer"}
    )


class CreateEndpointSchema(ma.Schema):
    url = _url_field(required=True)
    events = _events_field(required=True)
    description = ma.fields.String(load_default=None, validate=ma.validate.Length(max=200))


class UpdateEndpointSchema(ma.Schema):
    OPENAPI = {"minProperties": 1}  # what `_not_empty` checks
    url = _url_field()
    events = _events_field()
    description = ma.fields.String(allow_none=True, validate=ma.validate.Length(max=200))
    enabled = StrictBoolean(metadata={"description": "false pauses; true resumes"})

    @ma.validates_schema
    def _not_empty(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ma.ValidationError("change at least one of url, events, description, enabled")


class AttemptSchema(ma.Schema):
    number = ma.fields.Integer()
    trigger = ma.fields.String(metadata={"enum": ["initial", "retry", "manual"]})
    attempted_at = ma.fields.DateTime()
    status_code = ma.fields.Integer(allow_none=True)
    duration_ms = ma.fields.Integer()
    error = ma.fields.String(allow_none=True)
    response_excerpt = ma.fields.String(allow_none=True)


class DeliverySchema(ma.Schema):
    id = ma.fields.UUID(metadata={"description": "Also the webhook-id header of every attempt"})
    endpoint_id = ma.fields.UUID()
    notification_id = ma.fields.UUID(allow_none=True)
    event_type = ma.fields.String()
    state = ma.fields.String(metadata={"enum": list(DELIVERY_STATES)})
    attempt_count = ma.fields.Integer()
    next_attempt_at = ma.fields.DateTime(allow_none=True)
    last_attempt_at = ma.fields.DateTime(allow_none=True)
    last_status_code = ma.fields.Integer(allow_none=True)
    last_error = ma.fields.String(allow_none=True)
    payload = ma.fields.Function(lambda d: json.loads(d.payload))
    attempts = ma.fields.List(ma.fields.Nested(AttemptSchema))
    created_at = ma.fields.DateTime()


class DeliveryQuerySchema(ma.Schema):
    state = ma.fields.String(validate=ma.validate.OneOf(DELIVERY_STATES), load_default=None)


class RedeliveryAcceptedSchema(AcceptedSchema):
    delivery_id = ma.fields.UUID(required=True)


def _allowed_hosts() -> frozenset[str]:
    return current_app.extensions["spartan.settings"].webhook_allowed_hosts


@blp.route("")
class Endpoints(MethodView):
    @login_required
    @blp.response(200, EndpointSchema(many=True))
    def get(self) -> list[WebhookEndpoint]:
        """The caller's endpoints (an admin: everyone's); secrets are never listed."""
        return endpoints.visible_endpoints(db.session(), viewer=current_user())

    @login_required
    @blp.arguments(CreateEndpointSchema)
    @blp.response(201, CreatedEndpointSchema)
    @blp.alt_response(422, schema=ProblemSchema, description="Invalid, or destination refused")
    def post(self, body: dict[str, Any]) -> WebhookEndpoint:
        """Register an endpoint; the answer carries its signing secret, shown this once.

        An admin's endpoint receives the subscribed events of every user.
        """
        session = db.session()
        endpoint = endpoints.create_endpoint(
            session, owner=current_user(), allowed_hosts=_allowed_hosts(), **body
        )
        session.commit()
        return endpoint


@blp.route("/<uuid:endpoint_id>")
class EndpointById(MethodView):
    @login_required
    @blp.response(200, EndpointSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def get(self, endpoint_id: uuid.UUID) -> WebhookEndpoint:
        """One endpoint (owner or admin)."""
        return endpoints.visible_endpoint(db.session(), endpoint_id, viewer=current_user())

    @login_required
    @blp.arguments(UpdateEndpointSchema)
    @blp.response(200, EndpointSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(422, schema=ProblemSchema, description="Invalid, or destination refused")
    def patch(self, changes: dict[str, Any], endpoint_id: uuid.UUID) -> WebhookEndpoint:
        """Change url, events or description, or disable/enable (disabling ends pending sends)."""
        session = db.session()
        endpoint = endpoints.visible_endpoint(
            session, endpoint_id, viewer=current_user(), lock=True
        )
        endpoints.update_endpoint(
            session, endpoint, changes=changes, allowed_hosts=_allowed_hosts()
        )
        session.commit()
        return endpoint

    @login_required
    @blp.response(204)
    @blp.alt_response(404, schema=ProblemSchema)
    def delete(self, endpoint_id: uuid.UUID) -> None:
        """Delete the endpoint and its delivery log."""
        session = db.session()
        endpoint = endpoints.visible_endpoint(
            session, endpoint_id, viewer=current_user(), lock=True
        )
        endpoints.delete_endpoint(session, endpoint)
        session.commit()


@blp.route("/<uuid:endpoint_id>/deliveries")
class Deliveries(MethodView):
    @login_required
    @blp.arguments(DeliveryQuerySchema, location="query")
    @blp.response(200, DeliverySchema(many=True))
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.paginate()
    def get(
        self, query: dict[str, Any], endpoint_id: uuid.UUID, pagination_parameters: Any
    ) -> list[WebhookDelivery]:
        """Deliveries, newest first, each with every attempt (time, status, duration, error)."""
        session = db.session()
        endpoint = endpoints.visible_endpoint(session, endpoint_id, viewer=current_user())
        rows, total = endpoints.endpoint_deliveries(
            session,
            endpoint.id,
            state=query["state"],
            offset=pagination_parameters.first_item,
            limit=pagination_parameters.page_size,
            count_up_to=count_bound(pagination_parameters.page_size),
        )
        pagination_parameters.item_count = total
        return rows


@blp.route("/<uuid:endpoint_id>/deliveries/<uuid:delivery_id>")
class DeliveryById(MethodView):
    @login_required
    @blp.response(200, DeliverySchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def get(self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> WebhookDelivery:
        """One delivery with its attempts."""
        session = db.session()
        endpoint = endpoints.visible_endpoint(session, endpoint_id, viewer=current_user())
        return endpoints.endpoint_delivery(session, endpoint.id, delivery_id)


@blp.route("/<uuid:endpoint_id>/deliveries/<uuid:delivery_id>/redeliver")
class Redeliver(MethodView):
    @login_required
    @blp.response(202, RedeliveryAcceptedSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(409, schema=ProblemSchema, description="The endpoint is disabled")
    def post(self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> Any:
        """Send the delivery again now, with the same webhook-id; 202 with the job to poll."""
        session = db.session()
        user = current_user()
        endpoint = endpoints.visible_endpoint(session, endpoint_id, viewer=user)
        found = endpoints.request_redelivery(session, endpoint, delivery_id)
        job = start_redelivery(session, owner_id=user.id, delivery_id=found.id)
        session.commit()
        return accepted(job, delivery_id=found.id)
