"""The API reference page in headless Chromium: Swagger UI renders every operation of the document under the
dashboard's Content-Security-Policy, from this server's files only (the browser is cut off from every other host)."""

from __future__ import annotations

import pytest
import requests

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def test_reference_page_renders_offline_under_the_csp(server, open_page):
    document = requests.get(server.url + "/api/v1/openapi.json", timeout=5).json()
    page, console = open_page()
    foreign: list[str] = []

    def only_this_server(route):
        if route.request.url.startswith(server.url + "/"):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    response = page.goto(server.url + "/api/v1/docs")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector(".opblock-summary-path")
    shown = set(page.eval_on_selector_all(".opblock-summary-path", "nodes => nodes.map(n => n.dataset.path)"))
    assert shown == set(document["paths"])
    assert page.text_content(".info .title").startswith(document["info"]["title"])
    assert foreign == []
    assert console.errors() == []  # a CSP violation is logged as an error
