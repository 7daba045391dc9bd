"""What /api/openapi.json says goes on the wire, corrected where flask-smorest guesses wrong,
and completed with what every operation can answer.

flask-smorest documents every body as application/json, decimals as numbers and the
JSON-valued X-Pagination header as a plain header, and leaves out the answers that routing,
body parsing, authentication, rate limits and an unreachable database give before (or
instead of) a view. Clients generated from the document, and schema checkers such as
Schemathesis (tests/hostile), would then expect a type, a value, a header or a status that the
API never sends, or be surprised by one it does. One apispec plugin fixes these at the source,
for every operation, so a new route follows the same rules without a line of its own:

- errors are application/problem+json; 401 carries WWW-Authenticate, 429 and 503 Retry-After;
- every rate-limited operation documents 429 and the RateLimit headers on its answers;
- every operation documents 503 (the database unreachable, Retry-After);
- a 202 carries Location (the task to poll);
- every operation has an operationId (`<method>_<blueprint>_<view>`) and its blueprint's tag;
- links: an id a response carries (`id` of a 201, any `<name>_id`) leads to the operations
  whose only path parameter it fills, for client generators and stateful testing.
"""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma
from apispec import APISpec, BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin

from webapp.errors import PROBLEM_JSON, ProblemSchema

JSON = "application/json"
_PARAM = re.compile(r"{(\w+)}")
_HTTP_METHODS = ("get", "put", "post", "delete", "patch")

RETRY_AFTER = {
    "description": "Seconds to wait before trying again",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
WWW_AUTHENTICATE = {
    "description": "The authentication challenge (RFC 9110): `Bearer` for the API",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
LOCATION = {
    "description": "The task to poll (GET), also in `status_url`",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
_COUNT = {"type": "string", "pattern": "^[0-9]+$"}
_RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": {"description": "Requests allowed in the window", "schema": _COUNT},
    "RateLimit-Remaining": {"description": "Requests left in the window", "schema": _COUNT},
    "RateLimit-Reset": {"description": "Seconds until the window resets", "schema": _COUNT},
    "X-RateLimit-Limit": {"description": "Same as RateLimit-Limit", "schema": _COUNT},
    "X-RateLimit-Remaining": {"description": "Same as RateLimit-Remaining", "schema": _COUNT},
    "X-RateLimit-Reset": {
        "description": "When the window resets (Unix time)",
        "schema": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
    },
}


HEADERS = {
    "Retry-After": RETRY_AFTER,
    "WWW-Authenticate": WWW_AUTHENTICATE,
    "Location": LOCATION,
    **_RATE_LIMIT_HEADERS,
}


def _ref(header: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{header}"}


class WireFormatPlugin(BasePlugin):
    """Errors as application/problem+json, string decimals as strings, JSON headers as JSON,
    the answers every operation can give, operation ids and links.

    Register after flask-smorest's own plugins (`extra_plugins`): it rewrites what the
    marshmallow plugin has already resolved. `rate_limit_exempt` are the paths webapp.limits
    leaves alone.
    """

    def __init__(self, rate_limit_exempt: frozenset[str] = frozenset()) -> None:
        self.rate_limit_exempt = rate_limit_exempt
        self.spec: APISpec | None = None
        # (path, method, operation) of every operation so far: links are made both ways as
        # each one is registered, whatever the order of the blueprints.
        self.operations: list[tuple[str, str, dict[str, Any]]] = []

    def init_spec(self, spec: APISpec) -> None:
        super().init_spec(spec)
        self.spec = spec
        for name, header in HEADERS.items():
            spec.components.header(name, header)
        for plugin in spec.plugins:
            if isinstance(plugin, MarshmallowPlugin) and plugin.converter is not None:
                plugin.converter.add_attribute_function(decimal_as_string)

    def schema_helper(
        self, name: str, definition: dict[str, Any], **kwargs: Any
    ) -> dict[str, Any] | None:
        """A schema's `OPENAPI` class attribute: rules of the whole object (e.g.
        `minProperties`) that its own validation enforces and no field can state."""
        schema = kwargs.get("schema")
        extra = getattr(schema, "OPENAPI", None)
        return dict(extra) if extra else None

    def response_helper(self, response: dict[str, Any], **kwargs: Any) -> None:
        _retype_problem(response)

    def header_helper(self, header: dict[str, Any], **kwargs: Any) -> None:
        _json_header(header)

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        path = path or ""
        rule = kwargs.get("rule")
        for method, operation in (operations or {}).items():
            if method not in _HTTP_METHODS:
                continue
            if rule is not None:
                operation.setdefault("operationId", operation_id(method, rule.endpoint))
            _document_framework_errors(path, operation)
            self._optional_empty_body(operation)
            self._document_common_answers(path, operation)
            for response in (operation.get("responses") or {}).values():
                if isinstance(response, dict):
                    _retype_problem(response)
            self._link(path, method, operation)

    def _document_common_answers(self, path: str, operation: dict[str, Any]) -> None:
        responses = operation.setdefault("responses", {})
        limited = path.rstrip("/") not in self.rate_limit_exempt
        if limited:
            responses.setdefault("429", _problem("Too many requests; see Retry-After"))
        responses.setdefault("503", _problem("The database is unreachable; retry shortly"))
        for status, response in responses.items():
            if not isinstance(response, dict) or "$ref" in response:
                continue  # a shared response (flask-smorest's 422): headers don't apply
            headers = response.setdefault("headers", {})
            code = str(status)
            if code == "401":
                headers.setdefault("WWW-Authenticate", _ref("WWW-Authenticate"))
            elif code in ("429", "503"):
                headers.setdefault("Retry-After", _ref("Retry-After"))
            elif code == "202":
                headers.setdefault("Location", _ref("Location"))
            if limited and code != "304":
                for name in _RATE_LIMIT_HEADERS:
                    headers.setdefault(name, _ref(name))
            if not headers:
                response.pop("headers")

    def _optional_empty_body(self, operation: dict[str, Any]) -> None:
        """A JSON body none of whose fields is required may be left out: webargs then reads
        `{}` (a PATCH that changes nothing), so the document must not call it required."""
        body = operation.get("requestBody") or {}
        schema = ((body.get("content") or {}).get(JSON) or {}).get("schema")
        if isinstance(schema, dict) and "$ref" in schema and self.spec is not None:
            schema = self.spec.components.schemas.get(schema["$ref"].rsplit("/", 1)[-1])
        if isinstance(schema, dict) and not schema.get("required"):
            body["required"] = False

    # Links ------------------------------------------------------------------------------

    def _link(self, path: str, method: str, operation: dict[str, Any]) -> None:
        """Link this operation's answers to the known operations their ids fill, and the
        known operations' answers to this one."""
        for other_path, other_method, other in self.operations:
            self._link_pair(path, method, operation, other_path, other)
            self._link_pair(other_path, other_method, other, path, operation)
        self.operations.append((path, method, operation))

    def _link_pair(
        self, path: str, method: str, source: dict[str, Any], target_path: str, target: dict
    ) -> None:
        params = _PARAM.findall(target_path)
        if len(params) != 1 or "operationId" not in target:
            return
        (param,) = params
        for status, response in (source.get("responses") or {}).items():
            if not str(status).startswith("2") or not isinstance(response, dict):
                continue
            fields = self._response_fields(response)
            field = None
            if param in fields:
                field = param
            elif (
                str(status) == "201"
                and method == "post"
                and "id" in fields
                and target_path.startswith(f"{path.rstrip('/')}/{{{param}}}")
            ):
                field = "id"  # the created resource's own id, under the collection's path
            if field is None:
                continue
            response.setdefault("links", {})[target["operationId"]] = {
                "operationId": target["operationId"],
                "parameters": {param: f"$response.body#/{field}"},
            }

    def _response_fields(self, response: dict[str, Any]) -> set[str]:
        """The top-level property names of a JSON response body (its schema resolved)."""
        schema = ((response.get("content") or {}).get(JSON) or {}).get("schema")
        if isinstance(schema, dict) and "$ref" in schema and self.spec is not None:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = self.spec.components.schemas.get(name)
        if isinstance(schema, dict):
            return set(schema.get("properties") or {})
        return set()


def operation_id(method: str, endpoint: str) -> str:
    """`post_credits_buy` for POST on flask-smorest's endpoint "credits.Buy": unique (one
    view per endpoint, one function per method), stable, and a fine function name."""
    blueprint, _, view = endpoint.partition(".")
    words = re.sub(r"(?<!^)(?=[A-Z])", "_", view).lower()
    return f"{method}_{blueprint}_{words}"


def decimal_as_string(self: Any, field: ma.fields.Field, **kwargs: Any) -> dict[str, Any]:
    """A `Decimal(as_string=True)` is sent as "10.00": a string, not a JSON number. A URL has
    the format its metadata names (webapp.schemas.http_url_field: `uri` unless "" clears the
    field) or none: apispec's `url` is no format a validator knows."""
    if isinstance(field, ma.fields.Decimal) and field.as_string:
        return {"type": "string", "format": "decimal"}
    if isinstance(field, ma.fields.Url):
        ret = kwargs.get("ret")
        if isinstance(ret, dict):
            ret.pop("format", None)
        return {"format": field.metadata["format"]} if "format" in field.metadata else {}
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
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _json_header(header: dict[str, Any]) -> None:
    """A header whose value is a JSON object (X-Pagination) is described by `content`."""
    schema = header.get("schema")
    if isinstance(schema, dict) and "$ref" in schema:
        header["content"] = {JSON: {"schema": header.pop("schema")}}
