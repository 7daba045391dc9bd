"""Real-browser checks: Debian's headless Chromium driven by selenium, and a tiny frontend.

`chrome` (session) starts Chromium through Debian's chromedriver, both by path, so Selenium
Manager never tries to download a driver (there is no network). `make test-tools` (part of
`make test`) installs the two packages when they are missing.

`frontend` serves, from a loopback port of its own (a browser origin unlike the API's), one
page whose script calls `GET /api/v1/advanced/credits/me` with a bearer token and shows the
balance, or the error the browser gave it: what a web frontend on FRONTEND_URL does.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

CHROMIUM, CHROMEDRIVER = "chromium", "chromedriver"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Spartan Market</title></head>
<body>
<p>Balance: <span id="balance">…</span></p>
<p>Rate limit left: <span id="ratelimit"></span></p>
<p id="error"></p>
<script>
const CONFIG = %(config)s;
async function show() {
  try {
    const answer = await fetch(CONFIG.api + "/api/v1/advanced/credits/me", {
      headers: {"Authorization": "Bearer " + CONFIG.token},
    });
    const body = await answer.json();
    document.getElementById("ratelimit").textContent =
      answer.headers.get("RateLimit-Remaining") || "hidden";
    if (body.balance < CONFIG.want) {  // credits arrive with MercadoPago's webhook
      setTimeout(show, 200);
      return;
    }
    document.getElementById("balance").textContent = String(body.balance);
  } catch (error) {
    document.getElementById("error").textContent = "refused: " + error.name;
  }
}
show();
</script>
</body></html>
"""


def serve(app: Flask) -> tuple[BaseWSGIServer, str]:
    """Serve `app` on a free loopback port from a daemon thread; `.shutdown()` stops it."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(
        target=lambda: server.serve_forever(poll_interval=0.05), name="browser-test", daemon=True
    ).start()
    return server, f"http://127.0.0.1:{server.port}"


@dataclass
class Frontend:
    """The frontend server; set `api`, `token` and `want` before a page is loaded."""

    url: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return self.url


@pytest.fixture()
def frontend() -> Iterator[Frontend]:
    state = Frontend()
    app = Flask("frontend")

    @app.get("/", defaults={"path": ""})
    @app.get("/<path:path>")  # every path (the checkout's back-URLs included): the page
    def page(path: str) -> str:
        return PAGE % {"config": json.dumps({"want": 0, **state.config})}

    server, state.url = serve(app)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def chrome() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which(CHROMIUM), shutil.which(CHROMEDRIVER)
    if not (binary and driver):
        pytest.fail("Chromium and chromedriver are missing: run `make test-tools` (as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()
