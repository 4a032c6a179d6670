"""The dashboard's routes and namespace in-process: login required, CSRF, origin checks, logout, headers, limits."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from extensions import socketio
from tests.conftest import UNIT_CONFIG

ROOT = Path(__file__).resolve().parents[2]
HTTPS = "https://localhost"  # production cookies are Secure: the test client only sends them back over https


@pytest.fixture
def dashboard_client(app):
    yield app.test_client()
    app.extensions["dashboard"]["sampler"].stop()  # started by any dashboard connection in the test


def csrf_of(client, path: str = "/login") -> str:
    page = client.get(path, base_url=HTTPS).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def log_in(client, password: str = "unit-test-api-key-0001"):
    return client.post("/login", base_url=HTTPS, data={"csrf_token": csrf_of(client), "password": password})


def test_dashboard_requires_login(dashboard_client):
    response = dashboard_client.get("/", base_url=HTTPS)
    assert response.status_code == 302 and response.headers["Location"] == "/login"


def test_login_with_an_api_key_then_logout(dashboard_client):
    response = log_in(dashboard_client)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    page = dashboard_client.get("/", base_url=HTTPS)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="connection-state"' in html and 'name="csrf-token"' in html
    token = re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)

    assert dashboard_client.post("/logout", base_url=HTTPS, data={}).status_code == 400  # no token: still in
    assert dashboard_client.get("/", base_url=HTTPS).status_code == 200
    response = dashboard_client.post("/logout", base_url=HTTPS, data={"csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert dashboard_client.get("/", base_url=HTTPS).status_code == 302


def test_wrong_password_is_refused(dashboard_client):
    response = log_in(dashboard_client, "not-the-key")
    assert response.status_code == 401
    assert "Wrong password or API key." in response.get_data(as_text=True)
    assert dashboard_client.get("/", base_url=HTTPS).status_code == 302


def test_login_without_csrf_token_is_refused(dashboard_client):
    dashboard_client.get("/login", base_url=HTTPS)
    response = dashboard_client.post("/login", base_url=HTTPS, data={"password": "unit-test-api-key-0001"})
    assert response.status_code == 400
    response = dashboard_client.post("/login", base_url=HTTPS,
                                     data={"password": "unit-test-api-key-0001", "csrf_token": "forged"})
    assert response.status_code == 400
    assert dashboard_client.get("/", base_url=HTTPS).status_code == 302


def test_login_from_a_foreign_origin_is_refused(dashboard_client):
    token = csrf_of(dashboard_client)
    response = dashboard_client.post("/login", base_url=HTTPS, headers={"Origin": "https://evil.example"},
                                     data={"csrf_token": token, "password": "unit-test-api-key-0001"})
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden_origin"
    assert dashboard_client.get("/", base_url=HTTPS).status_code == 302
    same = dashboard_client.post("/login", base_url=HTTPS, headers={"Origin": HTTPS},
                                 data={"csrf_token": token, "password": "unit-test-api-key-0001"})
    assert same.status_code == 302


def test_dashboard_password_replaces_api_keys():
    from app import create_app

    client = create_app({**UNIT_CONFIG, "DASHBOARD_PASSWORD": "correct horse battery"}).test_client()
    assert log_in(client, "unit-test-api-key-0001").status_code == 401
    assert log_in(client, "correct horse battery").status_code == 302


def test_login_disabled_without_any_secret():
    from app import create_app

    client = create_app({**UNIT_CONFIG, "API_KEYS": (), "DASHBOARD_PASSWORD": ""}).test_client()
    page = client.get("/login", base_url=HTTPS).get_data(as_text=True)
    assert "Dashboard login is disabled" in page and 'name="password"' not in page
    response = client.post("/login", base_url=HTTPS, data={"password": ""})
    assert response.status_code == 403


def test_failed_logins_are_rate_limited(app, dashboard_client):
    for _ in range(6):  # successful logins (from the same address) cost nothing
        assert log_in(app.test_client()).status_code == 302
    for _ in range(5):
        assert log_in(dashboard_client, "guess").status_code == 401
    limited = log_in(dashboard_client, "unit-test-api-key-0001")  # even the right key waits: guesses must not be free
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert dashboard_client.get("/", base_url=HTTPS).status_code == 302


def test_login_throttle_forgets_old_failures():
    from hub.ratelimit import FailureThrottle

    now = [1000.0]
    throttle = FailureThrottle(failures=2, window=60, max_addresses=2, clock=lambda: now[0])
    throttle.failed("a")
    assert throttle.wait("a") == 0
    throttle.failed("a")
    assert throttle.wait("a") == 60
    now[0] += 45
    assert throttle.wait("a") == 15
    now[0] += 15
    assert throttle.wait("a") == 0
    for address in ("b", "c", "d"):  # beyond max_addresses the least recent are forgotten
        throttle.failed(address)
        throttle.failed(address)
    assert throttle.wait("b") == 0 and throttle.wait("d") == 60


def test_session_cookie_flags(dashboard_client):
    log_in(dashboard_client)
    cookie = dashboard_client.get_cookie("session", domain="localhost")
    assert cookie is not None
    assert cookie.secure and cookie.http_only and cookie.same_site == "Lax"


def test_secure_flag_can_be_turned_off_for_plain_http():
    from app import create_app

    app = create_app({**UNIT_CONFIG, "SESSION_COOKIE_SECURE": False})
    assert app.config["SESSION_COOKIE_SECURE"] is False
    assert create_app(UNIT_CONFIG).config["SESSION_COOKIE_SECURE"] is True


@pytest.mark.parametrize("path", ["/login", "/static/dashboard.js"])
def test_security_headers(dashboard_client, path):
    with dashboard_client.get(path, base_url=HTTPS) as response:  # static files stay open until closed
        headers = response.headers
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"


def test_pages_are_not_cached(dashboard_client):
    log_in(dashboard_client)
    assert dashboard_client.get("/", base_url=HTTPS).headers["Cache-Control"] == "no-store"


class InlineCodeFinder(HTMLParser):
    """Collects what a strict CSP would block: inline <script>, event-handler attributes, style attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        if tag == "script":
            if "src" not in names:
                self.problems.append("inline <script>")
            else:
                self.scripts.append(names["src"])
        for name in names:
            if name.startswith("on") or name == "style":
                self.problems.append(f"{tag} {name}=")
        if tag == "style":
            self.problems.append("<style>")


def test_pages_have_no_inline_code_and_no_cdn(dashboard_client):
    finder = InlineCodeFinder()
    finder.feed(dashboard_client.get("/login", base_url=HTTPS).get_data(as_text=True))
    log_in(dashboard_client)
    finder.feed(dashboard_client.get("/", base_url=HTTPS).get_data(as_text=True))
    assert finder.problems == []
    assert finder.scripts and all(src.startswith("/static/") for src in finder.scripts)
    for src in finder.scripts:
        with dashboard_client.get(src, base_url=HTTPS) as response:
            assert response.status_code == 200


def test_vendored_libraries_match_their_notes():
    vendor = ROOT / "static" / "vendor"
    notes = (vendor / "README.md").read_text()
    assert "socket.io-client" in notes and "4.8.4" in notes and "uplot" in notes and "1.6.32" in notes
    assert (vendor / "socket.io-client" / "socket.io.min.js").read_text().startswith("/*!\n * Socket.IO v4.8.4")
    assert "(v1.6.32)" in (vendor / "uplot" / "uPlot.iife.min.js").read_text()[:100]
    for library in ("socket.io-client", "uplot"):
        assert "MIT License" in (vendor / library / "LICENSE").read_text()


# --- the '/dashboard' Socket.IO namespace ---

def dashboard_socket(app, client, auth):
    return socketio.test_client(app, namespace="/dashboard", flask_test_client=client, auth=auth)


def page_token(client) -> str:
    html = client.get("/", base_url=HTTPS).get_data(as_text=True)
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def test_namespace_refuses_anonymous_and_tokenless(app, dashboard_client):
    dashboard_client.get("/login", base_url=HTTPS)
    assert not dashboard_socket(app, dashboard_client, {"csrf": "x"}).is_connected("/dashboard")
    log_in(dashboard_client)
    assert not dashboard_socket(app, dashboard_client, {}).is_connected("/dashboard")
    assert not dashboard_socket(app, dashboard_client, {"csrf": "wrong"}).is_connected("/dashboard")


def test_namespace_watch_publish_and_kick(app, dashboard_client):
    log_in(dashboard_client)
    sock = dashboard_socket(app, dashboard_client, {"csrf": page_token(dashboard_client)})
    assert sock.is_connected("/dashboard")

    ack = sock.emit("watch", {"channels": ["orders.eu", "orders.eu"]}, namespace="/dashboard", callback=True)
    assert ack == {"ok": True, "channels": ["orders.eu"]}
    bad = sock.emit("watch", {"channels": ["bad..name"]}, namespace="/dashboard", callback=True)
    assert bad["ok"] is False and bad["error"]["code"] == "invalid_channel"

    ack = sock.emit("publish", {"channel": "orders.eu", "event": "created", "data": {"n": 1}},
                    namespace="/dashboard", callback=True)
    assert ack["ok"] is True and ack["offset"] == 1
    bad = sock.emit("publish", {"channel": "orders.eu", "event": "connect", "data": {}},
                    namespace="/dashboard", callback=True)
    assert bad["ok"] is False and bad["error"]["code"] == "invalid_event"

    assert sock.emit("filter_clients", {"text": "shop-eu"}, namespace="/dashboard", callback=True) == {"ok": True}
    bad = sock.emit("filter_clients", {"text": "x" * 101}, namespace="/dashboard", callback=True)
    assert bad["ok"] is False and bad["error"]["code"] == "invalid_payload"

    missing = sock.emit("kick", {"sid": "nobody"}, namespace="/dashboard", callback=True)
    assert missing["ok"] is False and missing["error"]["code"] == "not_found"
    sock.disconnect(namespace="/dashboard")


def test_sampler_snapshot_and_watched_events(app, dashboard_client):
    """One tick, run by hand: the snapshot's figures and the new events of a watched channel."""
    sampler = app.extensions["dashboard"]["sampler"]
    sampler.stop()  # so the task the connect starts ends at once; the ticks below are driven by hand
    log_in(dashboard_client)
    sock = dashboard_socket(app, dashboard_client, {"csrf": page_token(dashboard_client)})
    sock.emit("watch", {"channels": ["orders.eu"]}, namespace="/dashboard", callback=True)
    sock.emit("publish", {"channel": "orders.eu", "event": "created", "data": {"n": 1}},
              namespace="/dashboard", callback=True)
    sampler.tick()
    received = {packet["name"]: packet["args"][0] for packet in sock.get_received("/dashboard")}
    snapshot = received["snapshot"]
    assert snapshot["clients"]["dashboards"] == 1 and snapshot["clients"]["total"] == 0
    assert snapshot["channels"] == [{"channel": "orders.eu", "subscribers": 0, "offset": 1}]
    assert snapshot["client_rows"] == [] and snapshot["client_count"] == snapshot["client_matches"] == 0
    assert snapshot["rss_bytes"] > 0 and snapshot["threads"]["total"] >= 1
    assert set(snapshot["disconnect_races"]) >= {"unknown_session", "handler"}
    assert snapshot["webhooks"] == []  # no WEBHOOK_URLS: the card says off
    assert [e["data"] for e in received["events"]["events"]] == [{"n": 1}]

    sampler.tick()  # nothing new: no events packet
    assert [p["name"] for p in sock.get_received("/dashboard")] == ["snapshot"]
    sock.disconnect(namespace="/dashboard")


def test_sampler_says_once_that_redis_is_down_without_a_traceback(app, monkeypatch, caplog):
    from blueprints.dashboard.live import Sampler
    from hub.errors import Unavailable

    sampler: Sampler = app.extensions["dashboard"]["sampler"]
    ticks = []

    def failing_tick():
        ticks.append(1)
        if len(ticks) == 3:
            sampler.stop()
        raise Unavailable("message store unavailable, retry shortly")

    monkeypatch.setattr(sampler, "tick", failing_tick)
    monkeypatch.setattr("blueprints.dashboard.live.SAMPLE_INTERVAL", 0.01)
    with caplog.at_level("DEBUG", logger="blueprints.dashboard.live"):
        sampler.run()
    skipped = [r for r in caplog.records if "dashboard sample skipped" in r.getMessage()]
    assert [r.levelname for r in skipped] == ["WARNING", "DEBUG", "DEBUG"]
    assert not any(r.exc_info for r in caplog.records)


def test_a_cookie_kept_from_before_logout_opens_nothing(app, dashboard_client):
    """Before: the pre-logout cookie still opened `/` and the namespace (and could publish) for up to 12 hours."""
    log_in(dashboard_client)
    token = page_token(dashboard_client)
    kept = dashboard_client.get_cookie("session", domain="localhost").value
    assert dashboard_client.post("/logout", base_url=HTTPS, data={"csrf_token": token}).status_code == 302
    dashboard_client.set_cookie("session", kept, domain="localhost", secure=True)
    assert dashboard_client.get("/", base_url=HTTPS).status_code == 302
    assert not dashboard_socket(app, dashboard_client, {"csrf": token}).is_connected("/dashboard")
    log_in(dashboard_client)  # a new login is a new id: it works
    assert dashboard_client.get("/", base_url=HTTPS).status_code == 200


def test_an_open_dashboard_socket_refuses_events_once_its_login_is_revoked(app, dashboard_client):
    """A logout on another instance cannot disconnect this socket; its next event and the sampler refuse it."""
    from blueprints.dashboard.security import revoke_login

    log_in(dashboard_client)
    sock = dashboard_socket(app, dashboard_client, {"csrf": page_token(dashboard_client)})
    assert sock.emit("watch", {"channels": []}, namespace="/dashboard", callback=True)["ok"] is True
    with app.app_context():
        login_id = next(iter(app.extensions["dashboard"]["watchers"].by_login()))
        revoke_login(login_id)
    ack = sock.emit("publish", {"channel": "a", "event": "e", "data": 1}, namespace="/dashboard", callback=True)
    assert ack["ok"] is False and ack["error"]["reason"] == "logged_out"
    assert not sock.is_connected("/dashboard")


def test_the_sampler_ends_sockets_of_revoked_logins(app, dashboard_client):
    from blueprints.dashboard.security import revoke_login

    sampler = app.extensions["dashboard"]["sampler"]
    sampler.stop()
    log_in(dashboard_client)
    sock = dashboard_socket(app, dashboard_client, {"csrf": page_token(dashboard_client)})
    watchers = app.extensions["dashboard"]["watchers"]
    with app.app_context():
        revoke_login(next(iter(watchers.by_login())))
    sampler.tick()
    assert not sock.is_connected("/dashboard") and watchers.sids() == []


def test_a_revocation_store_that_cannot_answer_refuses_the_login(app, dashboard_client):
    """Redis down: a logged-out cookie cannot be told from a live one, so none passes (fail closed)."""
    import dataclasses

    from hub.errors import Unavailable

    class Unreachable:
        def revoke(self, key, ttl):
            raise Unavailable("revocations unavailable")

        def is_revoked(self, key):
            raise Unavailable("revocations unavailable")

        def revoked_at(self, keys):
            raise Unavailable("revocations unavailable")

    log_in(dashboard_client)
    assert dashboard_client.get("/", base_url=HTTPS).status_code == 200
    app.extensions["hub"] = dataclasses.replace(app.extensions["hub"], revocations=Unreachable())
    assert dashboard_client.get("/", base_url=HTTPS).status_code == 302


def test_logout_says_so_when_the_revocation_cannot_be_stored(app, dashboard_client):
    import dataclasses

    from hub.errors import Unavailable
    from hub.revocations import MemoryRevocations

    class Unwritable(MemoryRevocations):
        def revoke(self, key, ttl):
            raise Unavailable("revocations unavailable")

        def revoked_at(self, keys):  # the whole store is down: reads fail too
            raise Unavailable("revocations unavailable")

    log_in(dashboard_client)
    token = page_token(dashboard_client)
    app.extensions["hub"] = dataclasses.replace(app.extensions["hub"], revocations=Unwritable())
    response = dashboard_client.post("/logout", base_url=HTTPS, data={"csrf_token": token})
    assert response.status_code == 503 and response.json["error"]["code"] == "unavailable"
    app.extensions["hub"] = dataclasses.replace(app.extensions["hub"], revocations=MemoryRevocations())
    assert dashboard_client.get("/", base_url=HTTPS).status_code == 200  # the session was kept: logout can be retried


def test_sessions_that_joined_no_namespace_are_listed_and_can_be_ended(app, dashboard_client, monkeypatch):
    """Issue 14: 20 such websockets showed as "websocket: 20" with no row, so an operator could not see or kick them."""
    from types import SimpleNamespace

    sampler = app.extensions["dashboard"]["sampler"]
    sampler.stop()
    closed = []
    lurker = SimpleNamespace(closed=False, upgraded=True)
    monkeypatch.setitem(socketio.server.eio.sockets, "eio-lurker", lurker)
    monkeypatch.setattr(socketio.server.eio, "disconnect", lambda sid: closed.append(sid))
    log_in(dashboard_client)
    sock = dashboard_socket(app, dashboard_client, {"csrf": page_token(dashboard_client)})
    rows = sampler.client_rows()
    assert [(r["sid"], r["joined"], r["transport"]) for r in rows] == [("eio-lurker", False, "websocket")]
    assert "unjoined" in rows[0]["search"]
    assert sock.emit("kick", {"sid": "eio-lurker"}, namespace="/dashboard", callback=True) == {
        "ok": True, "sid": "eio-lurker"}
    assert closed == ["eio-lurker"]
    sock.disconnect(namespace="/dashboard")
