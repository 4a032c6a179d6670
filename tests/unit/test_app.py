"""The factory, health endpoints and JSON errors, in process."""

from __future__ import annotations

from app import create_app


def test_factory_takes_test_config(app):
    assert app.config["TESTING"] is True
    assert app.config["PING_INTERVAL"] == 25
    assert app.config["SESSION_COOKIE_HTTPONLY"] and app.config["SESSION_COOKIE_SECURE"]


def test_livez(client):
    response = client.get("/livez")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_readyz_reports_budget_and_clients(client):
    body = client.get("/readyz").json
    assert body["status"] == "ready"
    assert body["clients"] == {"websocket": 0, "polling": 0, "sse": 0}
    assert body["budget"]["capacity"] == body["budget"]["threads"] - body["budget"]["reserved"]


def test_readyz_fails_while_draining(app, client):
    app.extensions["readiness"].start_draining()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["reasons"] == {"drain": "shutting down"}


def test_errors_are_json(client):
    assert client.get("/no-such-page").json["error"]["code"] == "not_found"
    response = client.post("/livez")
    assert response.status_code == 405 and response.json["error"]["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_unexpected_error_is_a_json_500_without_trace(app, caplog):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.json["error"] == {"code": "internal_error", "message": "The server could not handle this request."}
    assert "secret internals" not in response.get_data(as_text=True)


def test_cors_is_same_origin_unless_configured():
    from extensions import socketio

    create_app({"SECRET_KEY": "x" * 20})
    assert socketio.server.eio.cors_allowed_origins is None
    create_app({"SECRET_KEY": "x" * 20, "CORS_ALLOWED_ORIGINS": ("https://ops.example",)})
    assert socketio.server.eio.cors_allowed_origins == ["https://ops.example"]


def test_every_package_imports_on_its_own():
    """Each package imported first in a fresh interpreter, as gunicorn.conf.py imports blueprints.demo before the app:
    an import cycle that the factory's order happens to hide fails here."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    packages = sorted(f"blueprints.{p.parent.name}" for p in (root / "blueprints").glob("*/__init__.py"))
    packages += ["hub", "integration", "transport", "utils.drain"]
    for package in packages:
        done = subprocess.run([sys.executable, "-c", f"import {package}"], cwd=root, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, f"import {package}:\n{done.stderr[-2000:]}"
