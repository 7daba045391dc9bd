"""/api/docs is served by us (pinned swagger-ui-bundle): no CDN, so it works offline."""

from __future__ import annotations

import re

from webapp.edge import SWAGGER_UI_FILES, SWAGGER_UI_URL


def test_docs_page_loads_every_asset_from_this_server(client):
    page = client.get("/api/docs").get_data(as_text=True)
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assets = [s for s in sources if s.endswith((".js", ".css"))]
    assert len(assets) == 3, sources
    for url in assets:
        assert url.startswith(SWAGGER_UI_URL), url  # a path of ours, not another host
        with client.get(url) as answer:
            assert answer.status_code == 200, url
            assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert len(answer.data) > 1000
    assert "//" not in "".join(assets)


def test_assets_have_their_types_and_nothing_else_is_served(client):
    with client.get(f"{SWAGGER_UI_URL}swagger-ui-bundle.js") as js:
        assert js.mimetype in ("text/javascript", "application/javascript")
    with client.get(f"{SWAGGER_UI_URL}swagger-ui.css") as css:
        assert css.mimetype == "text/css"
    for name in ("index.html", "swagger-initializer.js", "..%2f__init__.py", "nope.js"):
        assert name not in SWAGGER_UI_FILES
        assert client.get(f"{SWAGGER_UI_URL}{name}").status_code == 404, name
