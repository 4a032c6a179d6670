"""What keeps the dashboard to its operators: login check, CSRF tokens, same-origin checks, security headers."""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Request, Response, current_app, session

from blueprints.realtime.services import hub_services
from hub.errors import Unavailable
from hub.revocations import Revocations

# A login lasts this long even if the browser keeps its session cookie open for days.
LOGIN_MAX_AGE = 12 * 3600

# No inline script or style anywhere: every byte the page runs comes from /static.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
])

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # for browsers older than frame-ancestors
    # Not no-referrer: with it browsers send "Origin: null" on form posts, and the same-origin check needs it.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.mimetype == "text/html":
        # Pages carry the CSRF token and live figures: never from a shared cache or the back button of the next user.
        response.headers["Cache-Control"] = "no-store"
    return response


def login_configured(app: Flask | None = None) -> bool:
    config = (app or current_app).config
    return bool(config["DASHBOARD_PASSWORD"] or config["API_KEYS"])


def password_matches(presented: str) -> bool:
    """DASHBOARD_PASSWORD when set, otherwise any API key; every candidate is compared in constant time."""
    config = current_app.config
    candidates = [config["DASHBOARD_PASSWORD"]] if config["DASHBOARD_PASSWORD"] else list(config["API_KEYS"])
    found = False
    for candidate in candidates:
        if hmac.compare_digest(candidate.encode(), presented.encode()):
            found = True
    return found


def start_login() -> str:
    """A fresh session for a successful login (nothing from before survives); returns its login id."""
    session.clear()
    login_id = secrets.token_urlsafe(16)
    session["dashboard_login"] = {"id": login_id, "at": int(time.time())}
    session["csrf"] = secrets.token_urlsafe(32)
    return login_id


def session_login(state: Any = None) -> str | None:
    """The login id the session (or `state`, a session copy) carries, None when none or expired; not checked
    against revocations (logout needs it even when the store cannot answer)."""
    login = (session if state is None else state).get("dashboard_login")
    if not isinstance(login, dict) or not isinstance(login.get("id"), str) or not isinstance(login.get("at"), int):
        return None
    return login["id"] if time.time() - login["at"] <= LOGIN_MAX_AGE else None


def current_login(state: Any = None) -> str | None:
    """The login id of the session (or of `state`, a session copy), None when not logged in, expired or logged
    out (the cookie is signed, not server state: a copy kept from before a logout must not open anything)."""
    login_id = session_login(state)
    if login_id is None or login_revoked(hub_services().revocations, login_id):
        return None
    return login_id


def login_revoked(revocations: Revocations, login_id: str) -> bool:
    """True once `login_id` logged out, on every instance sharing the Revocations store (Redis with REDIS_URL)."""
    try:
        return revocations.is_revoked(_revocation_key(login_id))
    except Unavailable:
        return True  # the store cannot say: fail closed, a logged-out cookie must never pass (README)


def revoke_login(login_id: str) -> None:
    """End `login_id` everywhere: it is refused until the cookie would have expired by itself."""
    hub_services().revocations.revoke(_revocation_key(login_id), LOGIN_MAX_AGE)


def _revocation_key(login_id: str) -> str:
    return f"login:{login_id}"


def csrf_token() -> str:
    """The session's CSRF token, created on first use (the login form needs one before anyone is logged in)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_valid(presented: Any, state: Any = None) -> bool:
    expected = (session if state is None else state).get("csrf")
    if not isinstance(expected, str) or not isinstance(presented, str):
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def own_url(request: Request) -> str:
    """This server's origin as the browser addressed it, through a proxy's X-Forwarded-* headers when there is one."""
    forwarded_proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    forwarded_host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
    return f"{forwarded_proto}://{forwarded_host}"


def allowed_origins(request: Request) -> set[str]:
    """This server's own origin as the browser addressed it (directly or through a proxy), plus the explicit entries
    of CORS_ALLOWED_ORIGINS. A `*` there opens Socket.IO to public clients, never the dashboard's cookies."""
    own = {f"{request.scheme}://{request.host}", own_url(request)}
    return own | {o for o in current_app.config["CORS_ALLOWED_ORIGINS"] if o != "*"}


def origin_allowed(request: Request) -> bool:
    """Refuses cookie-carrying requests a foreign page started; no Origin header (same-origin GET, curl) passes.

    Browsers send Origin on every POST and on every WebSocket handshake, so a cross-site form or socket always
    carries a foreign one. Referer is the fallback for the rare POST without Origin.
    """
    origin = request.headers.get("Origin")
    if origin is None and request.method == "POST":
        referer = request.headers.get("Referer")
        if referer:
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
    return origin is None or origin in allowed_origins(request)
