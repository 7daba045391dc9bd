"""What /api/openapi.json says goes on the wire, corrected where flask-smorest guesses wrong.

flask-smorest documents every body as application/json, decimals as numbers and the
JSON-valued X-Pagination header as a plain header, and leaves out the 404 and 400 that
routing and body parsing answer before a view runs. Clients (and schema checkers such as
Schemathesis, tests/hostile) that trust the document would then expect a type, a value or a
header format that the API never sends, or be surprised by a status. One apispec plugin fixes
these at the source.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from apispec import APISpec, BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin

from webapp.errors import PROBLEM_JSON, ProblemSchema

JSON = "application/json"


class WireFormatPlugin(BasePlugin):
    """Errors as application/problem+json, string decimals as strings, JSON headers as JSON,
    and the errors the framework answers before a view runs.

    Register after flask-smorest's own plugins (`extra_plugins`): it rewrites what the
    marshmallow plugin has already resolved.
    """

    def init_spec(self, spec: APISpec) -> None:
        super().init_spec(spec)
        for plugin in spec.plugins:
            if isinstance(plugin, MarshmallowPlugin) and plugin.converter is not None:
                plugin.converter.add_attribute_function(decimal_as_string)

    def response_helper(self, response: dict[str, Any], **kwargs: Any) -> None:
        _retype_problem(response)

    def header_helper(self, header: dict[str, Any], **kwargs: Any) -> None:
        _json_header(header)

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        for operation in (operations or {}).values():
            _document_framework_errors(path or "", operation)
            for response in (operation.get("responses") or {}).values():
                if isinstance(response, dict):
                    _retype_problem(response)


def decimal_as_string(self: Any, field: ma.fields.Field, **kwargs: Any) -> dict[str, Any]:
    """A `Decimal(as_string=True)` is sent as "10.00": a string, not a JSON number."""
    if isinstance(field, ma.fields.Decimal) and field.as_string:
        return {"type": "string", "format": "decimal"}
    return {}


def _retype_problem(response: dict[str, Any]) -> None:
    """Move a Problem body from application/json to the type webapp.errors serves."""
    content = response.get("content") or {}
    body = content.get(JSON)
    schema = body.get("schema") if isinstance(body, dict) else None
    if isinstance(schema, dict):
        is_problem = schema.get("$ref", "").endswith("/Problem")
    else:
        is_problem = schema is ProblemSchema or isinstance(schema, ProblemSchema)
    if is_problem:
        content[PROBLEM_JSON] = content.pop(JSON)


def _document_framework_errors(path: str, operation: dict[str, Any]) -> None:
    """The answers Flask and webargs give before a view runs, on every view they concern.

    A malformed path id (e.g. not a UUID) finds no route: 404. A body that is not JSON at
    all is refused by webargs with 400 (one that is JSON but invalid is the view's 422).
    """
    responses = operation.setdefault("responses", {})
    if "{" in path:
        responses.setdefault("404", _problem("Not found (or a malformed id in the path)"))
    if JSON in ((operation.get("requestBody") or {}).get("content") or {}):
        responses.setdefault("400", _problem("The body is not JSON"))


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _json_header(header: dict[str, Any]) -> None:
    """A header whose value is a JSON object (X-Pagination) is described by `content`."""
    schema = header.get("schema")
    if isinstance(schema, dict) and "$ref" in schema:
        header["content"] = {JSON: {"schema": header.pop("schema")}}
