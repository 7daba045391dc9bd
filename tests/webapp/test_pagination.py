"""Every paginated list bounds `page` in its schema: a page number past the bound (or past
bigint, which answered 500) is a 400 problem; up to the bound the list answers (issue 15)."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from webapp.schemas import MAX_PAGE


def paginated_templates(client) -> list[str]:
    spec = client.get("/api/openapi.json").get_json()
    found = []
    for path, operations in spec["paths"].items():
        params = (operations.get("get") or {}).get("parameters", []) + operations.get(
            "parameters", []
        )
        if any(p.get("in") == "query" and p.get("name") == "page" for p in params):
            found.append(path)
    return found


def paginated_paths(client) -> list[str]:
    return [re.sub(r"\{[^}]+\}", str(uuid.uuid4()), p) for p in paginated_templates(client)]


def test_the_lists_are_found(client):
    paths = {re.sub(r"\{[^}]+\}", "{id}", p) for p in paginated_templates(client)}
    assert {
        "/api/v1/advanced/credits/transactions",
        "/api/v1/profile/me/purchases",
        "/api/v1/notifications",
        "/api/v1/webhook-endpoints/{id}/deliveries",
    } <= paths


@pytest.mark.parametrize("page", ["99999999999999999999", str(MAX_PAGE + 1), "0", "x"])
def test_a_page_out_of_bounds_is_a_400_problem(client, admin, page):
    for path in paginated_paths(client):
        answer = client.get(f"{path}?page={page}", headers=admin)
        assert answer.status_code == 400, (path, answer.get_json())
        assert answer.content_type == "application/problem+json"


def test_the_last_page_allowed_still_answers(client, admin):
    for path in paginated_paths(client):
        answer = client.get(f"{path}?page={MAX_PAGE}", headers=admin)
        # A list under a random parent id is 404; every other list answers an empty page.
        assert answer.status_code in (200, 404), (path, answer.get_json())
        if answer.status_code == 200:
            assert answer.get_json() == []


def test_the_bound_is_documented(client):
    spec = client.get("/api/openapi.json").get_json()
    params = spec["paths"]["/api/v1/notifications"]["get"]["parameters"]
    page = next(p for p in params if p["name"] == "page")
    assert page["schema"]["maximum"] == MAX_PAGE


def test_transactions_walk_by_cursor_to_the_end_without_gaps_or_repeats(
    app, client, alice, user_id_of
):
    from market import ledger

    user_id = user_id_of(alice)
    with app.extensions["spartan.sessions"]() as session:
        posted = [
            ledger.credit_sale(session, user_id=user_id, credits=1, reference=f"t:{uuid.uuid4()}")
            for _ in range(7)
        ]
        session.commit()  # one transaction: every row has the same created_at (ties by id)
    first = client.get("/api/v1/advanced/credits/transactions?page_size=3", headers=alice)
    assert first.status_code == 200
    assert '"total": 7' in first.headers["X-Pagination"]
    seen = [t["id"] for t in first.get_json()]
    link = first.headers["Link"]
    pages = 1
    while link:
        url = re.match(r"<([^>]+)>; rel=\"next\"", link).group(1)
        answer = client.get(url.replace("http://localhost", ""), headers=alice)
        assert answer.status_code == 200
        assert "X-Pagination" not in answer.headers  # cursor pages are not counted
        seen += [t["id"] for t in answer.get_json()]
        link = answer.headers.get("Link")
        pages += 1
    assert pages == 3
    assert sorted(seen) == sorted(str(p.transaction_id) for p in posted)
    assert len(set(seen)) == 7


def test_a_cursor_that_is_not_ours_is_a_400(client, alice):
    for cursor in ("garbage", "Zm9vfGJhcg", "x" * 201):
        answer = client.get(f"/api/v1/advanced/credits/transactions?cursor={cursor}", headers=alice)
        assert answer.status_code == 400, (cursor, answer.get_json())


def _purchases(app, user_id, count: int, *, same_instant: bool = False) -> set[str]:
    """`count` purchases of the user, one statement (a second apart, or all at one instant)."""
    from sqlalchemy import text

    with app.extensions["spartan.sessions"]() as session:
        ids = session.execute(
            text(
                "INSERT INTO purchases (id, user_id, package_id, credits, amount, currency, "
                "external_reference, expires_at, created_at, updated_at) "
                "SELECT gen_random_uuid(), :u, 'credits-100', 100, 10, 'ARS', "
                "'pg-' || gen_random_uuid(), now() + interval '1 hour', t, t "
                "FROM generate_series(1, :n) i, "
                "LATERAL (SELECT now() - CASE WHEN :same THEN interval '0' "
                "ELSE make_interval(secs => i) END) s(t) RETURNING id"
            ),
            {"u": user_id, "n": count, "same": same_instant},
        ).scalars()
        made = {str(i) for i in ids}
        session.commit()
    return made


def _walk(client, headers, url: str) -> tuple[list[str], int]:
    """Every id from `url` on, following `Link: rel="next"`; and how many pages that took."""
    seen, pages = [], 0
    while url:
        answer = client.get(url.replace("http://localhost", ""), headers=headers)
        assert answer.status_code == 200, answer.get_json()
        if pages:
            assert "X-Pagination" not in answer.headers  # cursor pages are not counted
        if "Link" in answer.headers:  # the next cursor, in the link and on its own
            assert f"cursor={answer.headers['X-Next-Cursor']}&" in answer.headers["Link"]
        seen += [row["id"] for row in answer.get_json()]
        link = answer.headers.get("Link")
        url = re.match(r"<([^>]+)>; rel=\"next\"", link).group(1) if link else ""
        pages += 1
    return seen, pages


def test_purchases_walk_by_cursor_to_the_end_without_gaps_or_repeats(
    app, client, alice, user_id_of
):
    # One instant for all of them: the order, and the cursor, fall back on the id.
    made = _purchases(app, user_id_of(alice), 7, same_instant=True)
    first = client.get("/api/v1/profile/me/purchases?page_size=3", headers=alice)
    assert json.loads(first.headers["X-Pagination"])["total"] == 7
    assert "total_is_lower_bound" not in json.loads(first.headers["X-Pagination"])
    cursor = first.headers["X-Next-Cursor"]
    assert f"cursor={cursor}" in first.headers["Link"]
    seen, pages = _walk(client, alice, "/api/v1/profile/me/purchases?page_size=3")
    assert pages == 3
    assert len(seen) == 7 and set(seen) == made


def test_purchases_come_newest_first_on_numbered_and_cursor_pages(app, client, alice, user_id_of):
    _purchases(app, user_id_of(alice), 5)
    numbered = client.get("/api/v1/profile/me/purchases?page_size=5", headers=alice).get_json()
    walked, _ = _walk(client, alice, "/api/v1/profile/me/purchases?page_size=2")
    assert walked == [p["id"] for p in numbered]
    stamps = [p["created_at"] for p in numbered]
    assert stamps == sorted(stamps, reverse=True)


def test_a_purchase_cursor_that_is_not_ours_is_a_400(client, alice):
    for cursor in ("garbage", "Zm9vfGJhcg", "x" * 201):
        answer = client.get(f"/api/v1/profile/me/purchases?cursor={cursor}", headers=alice)
        assert answer.status_code == 400, (cursor, answer.get_json())
        assert answer.content_type == "application/problem+json"


def test_a_cursor_walks_only_its_owners_purchases(app, client, alice, bob, user_id_of):
    mine = _purchases(app, user_id_of(alice), 3)
    _purchases(app, user_id_of(bob), 3)
    seen, _ = _walk(client, alice, "/api/v1/profile/me/purchases?page_size=2")
    assert set(seen) == mine


def test_a_total_past_the_pages_reach_is_counted_no_further(app, client, alice, user_id_of):
    """Counting stops one row past what page MAX_PAGE reaches: X-Pagination says so, and the
    last numbered page's Link cursor goes on to the rest."""
    made = _purchases(app, user_id_of(alice), MAX_PAGE + 2)
    first = client.get("/api/v1/profile/me/purchases?page_size=1", headers=alice)
    meta = json.loads(first.headers["X-Pagination"])
    assert meta["total"] == MAX_PAGE and meta["total_is_lower_bound"] is True
    assert meta["last_page"] == MAX_PAGE and meta["next_page"] == 2
    last = client.get(f"/api/v1/profile/me/purchases?page_size=1&page={MAX_PAGE}", headers=alice)
    meta = json.loads(last.headers["X-Pagination"])
    assert meta["page"] == MAX_PAGE and "next_page" not in meta
    assert meta["total_is_lower_bound"] is True
    rest, pages = _walk(client, alice, re.match(r"<([^>]+)>", last.headers["Link"]).group(1))
    assert pages == 2 and len(rest) == 2
    assert last.get_json()[0]["id"] not in rest and set(rest) <= made


def test_an_exact_total_at_the_reach_is_not_a_lower_bound(app, client, alice, user_id_of):
    _purchases(app, user_id_of(alice), 6)
    meta = json.loads(
        client.get("/api/v1/advanced/credits/transactions?page_size=1", headers=alice).headers[
            "X-Pagination"
        ]
    )
    assert meta == {"total": 0, "total_pages": 0}
    answer = client.get("/api/v1/profile/me/purchases?page_size=3&page=2", headers=alice)
    meta = json.loads(answer.headers["X-Pagination"])
    assert meta["total"] == 6 and "total_is_lower_bound" not in meta
    assert "Link" not in answer.headers  # the last page


def test_the_lower_bound_is_documented(client):
    spec = client.get("/api/openapi.json").get_json()
    header = spec["paths"]["/api/v1/profile/me/purchases"]["get"]["responses"]["200"]["headers"][
        "X-Pagination"
    ]
    header = spec["components"]["headers"][header["$ref"].rsplit("/", 1)[1]]
    ref = header["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "total_is_lower_bound" in spec["components"]["schemas"][ref]["properties"]
    params = spec["paths"]["/api/v1/profile/me/purchases"]["get"]["parameters"]
    assert {"cursor", "page", "page_size"} <= {p["name"] for p in params}
