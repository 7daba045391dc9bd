"""Optional If-Match on writes: sent and stale, 412; sent and current (or `*`), through;
absent, through (clients of the earlier API send none).

flask-smorest's ETag support makes If-Match required (428 without it). `Blueprint` here keeps
its ETag computation and 304s and changes only that rule, in the code and in the document, so
every write of a blueprint made with it follows the same contract.
"""

from __future__ import annotations

from typing import Any

import flask_smorest
from flask import request
from flask_smorest.etag import _get_etag_ctx  # the "was it checked" flag of the request

from market.errors import PreconditionFailedError
from webapp.errors import ProblemSchema

# Strong comparison (RFC 9110 13.1.1): a weak tag, a stale one or one that is not an
# entity-tag at all names no current version, so each is a 412.
IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": "The ETag of the resource as last read (or `*`). Anything else, stale "
    "included: 412. Absent: the write goes through.",
    "schema": {"type": "string"},
}


class Blueprint(flask_smorest.Blueprint):
    """A flask-smorest Blueprint whose If-Match is optional."""

    def _check_precondition(self) -> None:
        """No 428: a write without If-Match is unconditional."""

    def check_etag(self, etag_data: Any, etag_schema: Any = None) -> None:
        """412 (problem+json) when If-Match is sent and names another version."""
        if "If-Match" not in request.headers:
            _get_etag_ctx()["etag_checked"] = True
            return
        try:
            super().check_etag(etag_data, etag_schema)
        except flask_smorest.exceptions.PreconditionFailed as exc:
            raise PreconditionFailedError(
                "If-Match does not name the current version; read it again"
            ) from exc

    def _prepare_etag_doc(  # type: ignore[override]
        self, doc: dict[str, Any], doc_info: dict[str, Any], **kwargs: Any
    ) -> dict[str, Any]:
        doc = super()._prepare_etag_doc(doc, doc_info, **kwargs)
        parameters = doc.get("parameters") or []
        if "IF_MATCH" in parameters:
            doc["parameters"] = [IF_MATCH if p == "IF_MATCH" else p for p in parameters]
            doc.get("responses", {}).pop(428, None)
            doc["responses"][412] = {
                "description": "If-Match names another version than the current one",
                "content": {"application/json": {"schema": ProblemSchema}},
            }
        return doc
