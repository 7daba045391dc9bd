"""Real Chromium: the API docs render offline; the sandbox checkout takes an Approve click, our
purchase page then shows the credits and leads back to the frontend, which reads them; a page
on FRONTEND_URL's origin reads the balance through CORS while another origin is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.browser import Frontend, serve
from tests.support.environment import worker_environment
from tests.support.mercadopago import balance, buy

TIMEOUT_S = 30
# The sandbox's checkout form (whatever its markup becomes): a button or submit input.
APPROVE = (
    "//button[normalize-space()='Approve']"
    " | //input[(@type='submit' or @type='button') and @value='Approve']"
)


def _text(chrome: Any, element_id: str, predicate) -> str:
    """The element's text once `predicate` accepts it (polled by the browser driver). A page
    that reloads itself (the pending purchase page refreshes every few seconds) can replace
    the element between finding it and reading it, or be between documents: poll again."""

    def probe(driver: Any) -> str | bool:
        text = driver.find_element(By.ID, element_id).text
        return text if predicate(text) else False

    return WebDriverWait(
        chrome,
        TIMEOUT_S,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    ).until(probe)


@pytest.fixture()
def api(app_with) -> Iterator[Any]:
    """Serve an app whose CORS allows `origins` on a real port; returns (url, app)."""
    servers = []

    def start(*origins: str, **changes: Any) -> tuple[str, Any]:
        app = app_with(cors_origins=tuple(origins), **changes)
        server, url = serve(app)
        servers.append(server)
        return url, app

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_api_docs_render_the_operations_offline(chrome, api):
    url, _ = api("http://127.0.0.1:1")
    chrome.get(f"{url}/api/docs")
    WebDriverWait(chrome, TIMEOUT_S).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, ".opblock"))
    )
    paths = {
        element.get_attribute("data-path")
        for element in chrome.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    }
    assert "/api/v1/advanced/credits/me" in paths
    assert "/api/v1/advanced/credits/buy" in paths
    assert len(chrome.find_elements(By.CSS_SELECTOR, ".opblock")) >= 30
    # Every script and stylesheet came from the API's own host.
    loaded = chrome.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert loaded and all(name.startswith(url + "/") for name in loaded), loaded


@pytest.fixture()
def returns_to(frontend: Frontend, api) -> Iterator[tuple[Frontend, str]]:
    """A live API whose CORS allows the frontend; the worker builds checkout back-URLs on that
    API (PUBLIC_API_URL) and its page links back to the frontend (FRONTEND_URL), re-read."""
    api_url, _ = api(frontend.origin, frontend_url=frontend.url)
    with worker_environment({"FRONTEND_URL": frontend.url, "PUBLIC_API_URL": api_url}):
        yield frontend, api_url


@pytest.mark.usefixtures("worker")
def test_checkout_approve_then_the_frontend_shows_the_credits(
    chrome, client, alice, mp_sandbox, returns_to
):
    frontend, api_url = returns_to
    frontend.config.update(api=api_url, token=alice["Authorization"].split()[1], want=500)
    checkout = buy(client, alice, "credits-500")
    assert checkout["checkout_url"].startswith(mp_sandbox.url)

    chrome.get(checkout["checkout_url"])
    WebDriverWait(chrome, TIMEOUT_S).until(ec.element_to_be_clickable((By.XPATH, APPROVE))).click()
    # MercadoPago sends the buyer back to our purchase page, which refreshes itself until the
    # webhook, the worker and the ledger have credited the purchase.
    WebDriverWait(chrome, TIMEOUT_S).until(
        lambda d: d.current_url.startswith(f"{api_url}/checkout/purchases/")
    )
    said = _text(chrome, "said", lambda t: "wallet" in t)
    assert said == "Your credits are in your wallet."
    # Its link leads back to the frontend, whose page asks the API (CORS) for the balance.
    chrome.find_element(By.ID, "back").click()
    WebDriverWait(chrome, TIMEOUT_S).until(lambda d: d.current_url.startswith(frontend.url))
    chrome.get(f"{frontend.url}/wallet")
    assert _text(chrome, "balance", lambda t: t.isdigit()) == "500"
    assert balance(client, alice) == 500


def test_frontend_origin_reads_the_balance_and_another_origin_is_refused(
    chrome, api, frontend, make_user
):
    stranger_app_url, _ = api("http://127.0.0.1:1")  # allows some other origin only
    api_url, _ = api(frontend.origin)
    token = make_user()["Authorization"].split()[1]

    frontend.config.update(api=api_url, token=token)
    chrome.get(f"{frontend.url}/wallet")
    assert _text(chrome, "balance", lambda t: t.isdigit()) == "0"
    # An exposed header is readable by the script (RateLimit-*).
    assert _text(chrome, "ratelimit", lambda t: t != "").isdigit()
    assert chrome.find_element(By.ID, "error").text == ""

    frontend.config.update(api=stranger_app_url)
    chrome.get(f"{frontend.url}/wallet")
    assert _text(chrome, "error", lambda t: t != "") == "refused: TypeError"
    assert chrome.find_element(By.ID, "balance").text == "…"
