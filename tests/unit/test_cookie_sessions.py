"""utils/cookie_sessions.py: one signing serializer per key set, and sessions that still verify as Flask's do."""

from __future__ import annotations

import pytest
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import BadSignature

from utils.cookie_sessions import CachedSigningSessions


def test_the_app_signs_sessions_with_one_serializer_until_its_keys_change(app):
    sessions = app.session_interface
    assert isinstance(sessions, CachedSigningSessions)
    first = sessions.get_signing_serializer(app)
    assert sessions.get_signing_serializer(app) is first
    app.config["SECRET_KEY_FALLBACKS"] = [app.secret_key]
    app.secret_key = "another-secret-key-0123456789abcdef"
    assert sessions.get_signing_serializer(app) is not first


@pytest.mark.parametrize("fallback, loads", [(True, True), (False, False)])
def test_a_cookie_signed_before_a_key_change_verifies_only_through_the_fallbacks(app, fallback, loads):
    stock = SecureCookieSessionInterface()
    cookie = app.session_interface.get_signing_serializer(app).dumps({"user": "ops"})
    old_key = app.secret_key
    app.secret_key = "another-secret-key-0123456789abcdef"
    app.config["SECRET_KEY_FALLBACKS"] = [old_key] if fallback else []
    for interface in (app.session_interface, stock):  # the same answer as Flask's own interface
        serializer = interface.get_signing_serializer(app)
        if loads:
            assert serializer.loads(cookie) == {"user": "ops"}
        else:
            with pytest.raises(BadSignature):
                serializer.loads(cookie)


def test_a_request_without_a_cookie_header_gets_an_empty_session_without_parsing_cookies(app):
    with app.test_request_context("/livez") as ctx:
        assert "HTTP_COOKIE" not in ctx.request.environ
        assert dict(ctx.session) == {} and not ctx.session.modified
        assert "cookies" not in ctx.request.__dict__  # before: werkzeug parsed (and cached) the absent header


def test_a_request_with_its_session_cookie_still_loads_it(app):
    cookie = app.session_interface.get_signing_serializer(app).dumps({"user": "ops"})
    name = app.config["SESSION_COOKIE_NAME"]
    with app.test_request_context("/livez", headers={"Cookie": f"{name}={cookie}"}) as ctx:
        assert dict(ctx.session) == {"user": "ops"}
    with app.test_request_context("/livez", headers={"Cookie": "other=1"}) as ctx:
        assert dict(ctx.session) == {}
