"""Schemas, fields and header rules shared by several blueprints, and the Blueprint whose
lists they page.

Every rule here is written once and serves twice: marshmallow enforces it and apispec puts it
in the OpenAPI document (a `FullMatch` becomes `pattern`, a `Length` `minLength`/`maxLength`,
a `OneOf` `enum`), so the document cannot promise less or more than the server checks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import flask_smorest
import marshmallow as ma
from apispec.exceptions import DuplicateComponentNameError
from flask import request
from flask_smorest.pagination import PaginationMetadataSchema as SmorestPaginationMetadata
from webargs.flaskparser import FlaskParser

from market import idempotency, pagination
from market.errors import ValidationError

# Page numbers are bounded: `page` x `page_size` is an OFFSET the database walks, and a
# number past bigint used to answer 500. Deeper than this, lists that grow without bound
# page with their `cursor` (keyset) instead.
MAX_PAGE = 1000
# A view paging by cursor sets `item_count` to this: no total is counted, so no X-Pagination.
UNCOUNTED = -1


def count_bound(page_size: int) -> int:
    """How far a numbered list counts its total: one row past what its pages can reach.

    The pages stop at MAX_PAGE, so counting further would only tell how deep the cursor goes,
    at a cost that grows with the list. X-Pagination then says `total` (the pages' reach) and
    `total_is_lower_bound: true`: there are more, reached by the `Link: rel="next"` cursor.
    """
    return MAX_PAGE * page_size + 1


class QueryParser(FlaskParser):
    """Query strings that do not parse are the client's bad request: 400, not 422."""

    DEFAULT_VALIDATION_STATUS = 400


class FullMatch(ma.validate.Regexp):
    """`Regexp` that must match the whole value. Python's `$` also matches before a final
    newline, JSON Schema's does not: the same `^…$` pattern means the same in both."""

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or self.regex.fullmatch(value) is None:
            raise ma.ValidationError(self._format_error(value))
        return value


class StrictBoolean(ma.fields.Boolean):
    """A JSON `true` or `false`, as the document's `type: boolean` says: not 0, 1 or "yes"."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


# One line of text: no control characters (so no line breaks either).
SINGLE_LINE = r"^[^\x00-\x1f\x7f]*$"
# Text with line breaks (LF, CR, tab): no other control characters.
MULTI_LINE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST_WITH_TLD = rf"({_LABEL}\.)+[a-z0-9-]{{2,63}}"
_IPV4 = r"[0-9]{1,3}(\.[0-9]{1,3}){3}"
_IPV6 = r"\[[a-f0-9]*:[a-f0-9:]+\]"
_PCHAR = r"([a-z0-9._~!$&'()*+,;=:@-]|%[0-9a-f]{2})"
_PATH_AND_QUERY = rf"(/({_PCHAR}|/)*)?(\?({_PCHAR}|[/?])*)?"


def http_url_pattern(*, require_tld: bool, blank_clears: bool = False) -> str:
    """An http(s) URL in lower case: a host name (dotless too unless `require_tld`), an IPv4
    or IPv6 address or localhost, an optional port, path and query. A subset of what marshmallow's
    URL validator accepts, so the two together accept exactly this pattern. `blank_clears`:
    "" is accepted too (the field's way to clear the value)."""
    hosts = [_HOST_WITH_TLD, "localhost", _IPV4, _IPV6] + ([] if require_tld else [_LABEL])
    url = rf"https?://({'|'.join(hosts)})(:[0-9]{{1,5}})?{_PATH_AND_QUERY}"
    return f"^({url})?$" if blank_clears else f"^{url}$"


def http_url_field(
    *, max_length: int, require_tld: bool, blank_clears: bool = False, **kwargs: Any
) -> ma.fields.Url:
    """An http(s) URL field whose rules the document states (pattern, length)."""
    if not blank_clears:  # "" is no URI: the format would refuse the clearing value
        kwargs.setdefault("metadata", {}).setdefault("format", "uri")
    return ma.fields.Url(
        schemes={"http", "https"},
        require_tld=require_tld,
        validate=[
            ma.validate.Length(min=0 if blank_clears else 1, max=max_length),
            FullMatch(
                http_url_pattern(require_tld=require_tld, blank_clears=blank_clears),
                error="Must be a lower-case http:// or https:// address.",
            ),
        ],
        error_messages={"invalid": "Must be an http:// or https:// address."},
        **kwargs,
    )


def text_field(*, max_length: int, multiline: bool = False, **kwargs: Any) -> ma.fields.String:
    """Plain text of at most `max_length` characters without control characters."""
    what = "control characters" if multiline else "line breaks or control characters"
    return ma.fields.String(
        validate=[
            ma.validate.Length(max=max_length),
            FullMatch(MULTI_LINE if multiline else SINGLE_LINE, error=f"Must not contain {what}."),
        ],
        **kwargs,
    )


# Idempotency-Key: 1 to 255 printable ASCII characters, as market.idempotency checks it. HTTP
# strips blanks around a header value, so the key neither starts nor ends with one.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$"
IDEMPOTENCY_DOC = {
    "parameters": [
        {
            "in": "header",
            "name": "Idempotency-Key",
            "required": False,
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": idempotency.MAX_KEY_LENGTH,
                "pattern": IDEMPOTENCY_KEY_PATTERN,
            },
            "description": "Same key and body: the same answer again (with "
            "`Idempotent-Replayed: true`); same key, other body: 422.",
        }
    ]
}


class AcceptedSchema(ma.Schema):
    """The answer to work that runs in the background (202)."""

    task_id = ma.fields.UUID(required=True)
    status_url = ma.fields.String(required=True)


def _is_cursor(value: str) -> None:
    try:
        pagination.decode_cursor(value)
    except ValidationError as exc:
        raise ma.ValidationError(str(exc)) from exc


class CursorArgs(ma.Schema):
    """`cursor`: continue a keyset-paged list after the page that gave it (see `Link`)."""

    class Meta:
        unknown = ma.EXCLUDE  # page and page_size belong to the pagination schema

    cursor = ma.fields.String(
        load_default=None,
        validate=[ma.validate.Length(min=1, max=200), _is_cursor],
        metadata={"description": "The `next` cursor of the previous page (Link header)"},
    )


def next_link(cursor: str | None, page_size: int) -> dict[str, str]:
    """The `Link: <…?cursor=…>; rel="next"` header of a keyset page (none on the last)."""
    if cursor is None:
        return {}
    url = f"{request.base_url}?{urlencode({'cursor': cursor, 'page_size': page_size})}"
    return {"Link": f'<{url}>; rel="next"', "X-Next-Cursor": cursor}


def cursor_or_numbered_page(
    args: dict[str, Any],
    page_params: Any,
    *,
    by_cursor: Callable[[str, int], tuple[list[Any], str | None]],
    numbered: Callable[[int, int, int], tuple[list[Any], int]],
) -> tuple[Any, int, dict[str, str]]:
    """A list's answer, newest first: the keyset page after `args["cursor"]` (`by_cursor(cursor,
    limit)`: its rows and the next cursor; not counted, no X-Pagination), or numbered page
    `page` (`numbered(offset, limit, count_up_to)`: its rows and the total, counted only as
    far as page 1000 reaches)."""
    size = page_params.page_size
    if args["cursor"] is not None:
        rows, after = by_cursor(args["cursor"], size)
        page_params.item_count = UNCOUNTED
        return rows, 200, next_link(after, size)
    rows, total = numbered(page_params.first_item, size, count_bound(size))
    return numbered_page(rows, total, page_params)


def numbered_page(rows: list[Any], total: int, page_params: Any) -> tuple[Any, int, dict[str, str]]:
    """The answer of a numbered page (`page`): X-Pagination from `total`, and the same
    `Link: rel="next"` cursor a keyset page carries when more rows follow this page."""
    page_params.item_count = total
    more = page_params.first_item + len(rows) < total
    after = pagination.encode_cursor(rows[-1].created_at, rows[-1].id) if more else None
    return rows, 200, next_link(after, page_params.page_size)


BOUNDED_PAGINATION = "BOUNDED_PAGINATION"


class BoundedPaginationMetadataSchema(SmorestPaginationMetadata):
    """flask-smorest's X-Pagination, and whether its total is only where counting stopped."""

    total_is_lower_bound = ma.fields.Boolean(
        metadata={
            "description": "There are more than `total` items: the numbered pages stop at "
            '`last_page`, the `Link: rel="next"` cursor goes on (absent: `total` is exact)'
        }
    )


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint whose `paginate` bounds `page` (1..MAX_PAGE, else 400),
    leaves out X-Pagination on keyset pages (`item_count = UNCOUNTED`), and reports a total
    counted up to `count_bound` as at least the pages' reach (`total_is_lower_bound`)."""

    PAGINATION_ARGUMENTS_PARSER = QueryParser()

    def paginate(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        decorate = super().paginate(*args, **kwargs)

        def bounded(func: Any) -> Any:
            wrapper = decorate(func)
            # The schema flask-smorest parses with is the one it documents: bound it once.
            schema = wrapper._apidoc["pagination"]["parameters"]["schema"]
            page = schema._declared_fields["page"]
            page.validators = [
                *page.validators,
                ma.validate.Range(max=MAX_PAGE, error=f"page must be at most {MAX_PAGE}"),
            ]
            return wrapper

        return bounded

    def _set_pagination_metadata(self, page_params: Any, result: Any, headers: Any) -> Any:
        if page_params.item_count == UNCOUNTED:
            return result, headers
        return super()._set_pagination_metadata(page_params, result, headers)

    @staticmethod
    def _make_pagination_metadata(page: int, page_size: int, item_count: int) -> Any:
        reach = MAX_PAGE * page_size
        metadata = flask_smorest.Blueprint._make_pagination_metadata(
            page, page_size, min(item_count, reach)
        )
        if item_count > reach:
            metadata["total_is_lower_bound"] = True
        return metadata

    def _document_pagination_metadata(self, spec: Any, resp_doc: Any) -> None:
        # One header component, as flask-smorest's own (lazy: written once referenced).
        with contextlib.suppress(DuplicateComponentNameError):
            spec.components.header(
                BOUNDED_PAGINATION,
                {"description": "Pagination metadata", "schema": BoundedPaginationMetadataSchema},
                lazy=True,
            )
        resp_doc.setdefault("headers", {})[self.PAGINATION_HEADER_NAME] = BOUNDED_PAGINATION
