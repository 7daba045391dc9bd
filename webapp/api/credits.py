"""Credits: packages, buying (MercadoPago), balance, spending, history, refunds (admin)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import marshmallow as ma
from flask import current_app, request, url_for
from flask.views import MethodView
from sqlalchemy.orm import Session

from market import idempotency, ledger
from market.cache import Cache
from market.db import autocommit
from market.payments import purchases, refunds
from market.payments.catalogue import PACKAGE_IDS
from webapp import db, read_ahead
from webapp.api.tasks import accepted
from webapp.auth import (
    admin_required,
    current_user,
    current_user_id,
    known_user_id,
    login_required,
)
from webapp.errors import ProblemSchema
from webapp.schemas import (
    IDEMPOTENCY_DOC,
    Blueprint,
    CursorArgs,
    cursor_or_numbered_page,
)
from workflows.purchase import start_purchase
from workflows.refund import start_refund

blp = Blueprint("credits", __name__, url_prefix="/api/v1/advanced/credits", description="Credits")

RECENT = 10

Answer = tuple[Any, int, dict[str, str]]


class PackageSchema(ma.Schema):
    id = ma.fields.String()
    credits = ma.fields.Integer()
    price = ma.fields.Decimal(as_string=True, places=2)
    currency = ma.fields.String()


class BuySchema(ma.Schema):
    package_id = ma.fields.String(
        required=True,
        validate=ma.validate.OneOf(PACKAGE_IDS, error="Unknown package."),
        metadata={"description": "One of the packages of GET /credits/packages"},
    )


class AcceptedPurchaseSchema(ma.Schema):
    task_id = ma.fields.String()
    status_url = ma.fields.String()
    purchase_id = ma.fields.String()
    purchase_url = ma.fields.String(metadata={"description": "Follow the purchase here"})


class SpendSchema(ma.Schema):
    amount = ma.fields.Integer(required=True, strict=True, validate=ma.validate.Range(min=1))
    description = ma.fields.String(
        load_default=None, allow_none=True, validate=ma.validate.Length(max=200)
    )


class SpentSchema(ma.Schema):
    transaction_id = ma.fields.String()
    balance = ma.fields.Integer()


class TransactionSchema(ma.Schema):
    id = ma.fields.String()
    kind = ma.fields.String()
    amount = ma.fields.Integer(attribute="user_delta")
    description = ma.fields.String(allow_none=True)
    purchase_id = ma.fields.String(allow_none=True)
    created_at = ma.fields.DateTime()


class BalanceSchema(ma.Schema):
    balance = ma.fields.Integer()
    recent = ma.fields.List(ma.fields.Dict())


class AcceptedRefundSchema(ma.Schema):
    task_id = ma.fields.String()
    status_url = ma.fields.String()
    refund_id = ma.fields.String()


def cache() -> Cache:
    return current_app.extensions["spartan.cache"]


def transaction_view(txn: Any) -> dict[str, Any]:
    return TransactionSchema().dump(txn)


def idempotent(scope: str, payload: Any, work: Callable[[Session], Answer]) -> Answer:
    """Run `work` once per (user, Idempotency-Key) and commit; a replay answers the same."""
    user_id = current_user_id()  # no round trip once this process knows the caller
    session = db.session()
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        replay = idempotency.claim(session, user_id=user_id, key=key, scope=scope, payload=payload)
        if replay is not None:
            session.rollback()
            headers = {**replay.headers, "Idempotent-Replayed": "true"}
            return replay.body, replay.status, headers
    body, status, headers = work(session)
    if key is not None:
        idempotency.save(
            session, user_id=user_id, key=key, status=status, body=body, headers=headers
        )
    session.commit()
    return body, status, headers


@blp.route("/packages")
class Packages(MethodView):
    @blp.response(200, PackageSchema(many=True))
    def get(self) -> list[Any]:
        """The credit packages on sale."""
        return purchases.list_packages(db.session())


@blp.route("/buy")
class Buy(MethodView):
    @login_required
    @blp.arguments(BuySchema)
    @blp.response(202, AcceptedPurchaseSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    @blp.doc(**IDEMPOTENCY_DOC)
    def post(self, data: dict[str, Any]) -> Answer:
        """Start a purchase; the task's result carries the checkout link (init_point)."""
        user = current_user()
        settings = current_app.extensions["spartan.settings"]

        def work(session: Session) -> Answer:
            purchase = purchases.create_purchase(
                session,
                user_id=user.id,
                package_id=data["package_id"],
                ttl_minutes=settings.purchase_ttl_minutes,
            )
            job = start_purchase(session, owner_id=user.id, purchase_id=purchase.id)
            body, status, headers = accepted(
                job,
                purchase_id=str(purchase.id),
                purchase_url=url_for("purchase_status.PurchaseById", purchase_id=purchase.id),
            )
            return {**body, "task_id": str(body["task_id"])}, status, headers

        return idempotent("credits.buy", data, work)


@blp.route("/me")
class Balance(MethodView):
    @login_required
    @blp.response(200, BalanceSchema)
    def get(self) -> dict[str, Any]:
        """The caller's balance and latest movements (cached; dropped on every change)."""
        user_id = current_user_id()

        def load() -> dict[str, Any]:  # a cache hit opens no session
            session = db.session()
            recent, _ = ledger.history_page(session, user_id=user_id, limit=RECENT)
            return {
                "balance": ledger.balance(session, user_id),
                "recent": [transaction_view(t) for t in recent],
            }

        return cache().get_or_load("balance", str(user_id), load)


def _balance_entry() -> tuple[str, str] | None:
    user_id = known_user_id()
    return ("balance", str(user_id)) if user_id is not None else None


# The balance's cache read goes in the rate limiter's round trip (webapp/read_ahead.py).
read_ahead.declare("credits.Balance", "GET", _balance_entry)


@blp.route("/spend")
class Spend(MethodView):
    @login_required
    @blp.arguments(SpendSchema)
    @blp.response(201, SpentSchema)
    @blp.alt_response(409, schema=ProblemSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    @blp.doc(**IDEMPOTENCY_DOC)
    def post(self, data: dict[str, Any]) -> Answer:
        """Debit credits now; 409 when the balance is short."""
        user_id = current_user_id()

        def work(session: Session) -> Answer:
            posting, balance = ledger.spend(
                session, user_id=user_id, amount=data["amount"], description=data["description"]
            )
            return {"transaction_id": str(posting.transaction_id), "balance": balance}, 201, {}

        if request.headers.get("Idempotency-Key") is None:
            # The spend is one statement: run alone, it needs no BEGIN or COMMIT round trip.
            autocommit(db.session())
        answer = idempotent("credits.spend", data, work)
        cache().invalidate("balance", str(user_id))
        return answer


@blp.route("/transactions")
class Transactions(MethodView):
    @login_required
    @blp.arguments(CursorArgs, location="query", error_status_code=400)
    @blp.response(200, TransactionSchema(many=True))
    @blp.paginate()
    def get(self, args: dict[str, Any], pagination_parameters: Any) -> Answer:
        """The caller's ledger transactions, newest first.

        Numbered pages (`page`, X-Pagination with the total, counted up to what page 1000
        reaches) up to page 1000; any depth, at the same cost, with the `cursor` of the
        `Link: rel="next"` header every page carries (cursor pages are not counted: no
        X-Pagination).
        """
        session, user_id = db.session(), current_user_id()
        return cursor_or_numbered_page(
            args,
            pagination_parameters,
            by_cursor=lambda cursor, limit: ledger.history_page(
                session, user_id=user_id, cursor=cursor, limit=limit
            ),
            numbered=lambda offset, limit, count_up_to: ledger.history(
                session, user_id=user_id, offset=offset, limit=limit, count_up_to=count_up_to
            ),
        )


@blp.route("/purchases/<uuid:purchase_id>/refund")
class Refund(MethodView):
    @admin_required
    @blp.response(202, AcceptedRefundSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(409, schema=ProblemSchema)
    @blp.alt_response(422, schema=ProblemSchema, description="Idempotency-Key reused or invalid")
    @blp.doc(**IDEMPOTENCY_DOC)
    def post(self, purchase_id: uuid.UUID) -> Answer:
        """Refund a purchase at MercadoPago (admin); 409 when its credits were spent."""
        admin = current_user()
        owners: list[uuid.UUID] = []

        def work(session: Session) -> Answer:
            refund = refunds.request_refund(session, purchase_id=purchase_id, requested_by=admin.id)
            owners.append(purchases.get_purchase(session, purchase_id).user_id)
            job = start_refund(
                session, owner_id=admin.id, refund_id=refund.id, purchase_id=purchase_id
            )
            body, status, headers = accepted(job, refund_id=str(refund.id))
            return {**body, "task_id": str(body["task_id"])}, status, headers

        # The "body" of a refund is the purchase it names: the same key for another purchase
        # is another request (422).
        answer = idempotent("credits.refund", {"purchase_id": str(purchase_id)}, work)
        for owner in owners:
            cache().invalidate("balance", str(owner))
        return answer
