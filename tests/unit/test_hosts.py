"""Redirects and links are never built from an untrusted Host: no path redirect at all, and ALLOWED_HOSTS."""

from __future__ import annotations

from app import create_app
from tests.conftest import UNIT_CONFIG


def test_double_slash_is_not_a_redirect_to_the_host_header(client):
    """Before: `GET /static//x` with `Host: evil.example` answered 308 to http://evil.example/static/x."""
    response = client.get("/static//dashboard.css", headers={"Host": "evil.example"})
    assert response.status_code == 404 and "Location" not in response.headers
    with client.get("/static/dashboard.css") as served:
        assert served.status_code == 200


def test_allowed_hosts_refuse_foreign_hosts_everywhere():
    client = create_app({**UNIT_CONFIG, "ALLOWED_HOSTS": ("signalboard.example", ".example.org")}).test_client()
    for path in ("/livez", "/login", "/socket.io/?EIO=4&transport=polling", "/static//dashboard.css"):
        response = client.get(path, headers={"Host": "evil.example"})
        assert response.status_code == 400, path
        assert response.json == {"error": {"code": "invalid_host",
                                           "message": "This server does not answer to that Host."}}
    for host in ("signalboard.example", "signalboard.example:8443", "eu.example.org"):
        assert client.get("/livez", headers={"Host": host}).status_code == 200, host
    assert client.get("/livez", headers={"Host": "example.org.evil.example"}).status_code == 400
