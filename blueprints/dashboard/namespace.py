"""Socket.IO namespace '/dashboard': only a logged-in dashboard session may connect; it watches, publishes, kicks."""

from __future__ import annotations

import logging
from typing import Any

from flask import request, session
from flask_socketio import ConnectionRefusedError, Namespace

from blueprints.dashboard.live import MAX_FILTER_LENGTH, MAX_WATCHED_CHANNELS, Sampler, Watchers
from blueprints.dashboard.security import csrf_valid, current_login, origin_allowed, own_url
from blueprints.demo.snippets import client_snippets
from extensions import client_sid
from hub import Hub, TokenIssuer
from hub.channels import validate_channel
from hub.errors import InvalidPayload, NotFound, Unauthorized
from hub.users import UserControl
from utils.connect_timeout import joined_a_namespace

log = logging.getLogger(__name__)

SNIPPET_TOKEN_TTL = 600  # the panel's tokens are for trying a client out, not for keeping
SNIPPET_SUB = "dashboard-snippet"


def _body(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidPayload("the event payload must be an object")
    return payload


class DashboardNamespace(Namespace):
    """Handlers return ack dicts; HubErrors they raise become error acks through the default error handler."""

    def __init__(self, namespace: str, hub: Hub, sampler: Sampler, watchers: Watchers, tokens: TokenIssuer,
                 users: UserControl) -> None:
        super().__init__(namespace)
        self.hub = hub
        self.tokens = tokens
        self.users = users
        self.sampler = sampler
        self.watchers = watchers

    def on_connect(self, auth: Any = None) -> None:
        # The session seen here is the cookie's, copied at connect. The CSRF token in `auth` proves the page
        # itself opened the socket: a foreign page gets neither the cookie's contents nor the token.
        login_id = current_login(session)
        token = auth.get("csrf") if isinstance(auth, dict) else None
        if login_id is None or not csrf_valid(token, session) or not origin_allowed(request):
            log.info("dashboard connection refused (logged in: %s)", login_id is not None)
            raise ConnectionRefusedError("unauthorized", {"code": "unauthorized", "message": "log in again"})
        self.watchers.join(client_sid(), login_id)
        self.sampler.ensure_started()

    def on_disconnect(self, reason: Any = None) -> None:
        self.watchers.leave(client_sid())

    def _logged_in(self) -> None:
        """Every event checks the login again: it may have logged out (on any instance) since this socket opened."""
        if current_login(session) is None:
            self.socketio.server.disconnect(client_sid(), namespace=self.namespace)
            raise Unauthorized("logged out; log in again", reason="logged_out")

    def on_watch(self, payload: Any = None) -> dict[str, Any]:
        """Replace the channels whose events this dashboard receives; the first call also starts its snapshots."""
        self._logged_in()
        channels = _body(payload).get("channels")
        if not isinstance(channels, list) or len(channels) > MAX_WATCHED_CHANNELS:
            raise InvalidPayload(f"channels must be a list of at most {MAX_WATCHED_CHANNELS} names")
        names = tuple(dict.fromkeys(validate_channel(channel) for channel in channels))
        self.watchers.watch(client_sid(), names)
        return {"ok": True, "channels": list(names)}

    def on_filter_clients(self, payload: Any = None) -> dict[str, Any]:
        """Which rows of the clients table this dashboard gets: those containing `text` (sid, sub, transport,
        channel), so an operator can find one client among thousands."""
        self._logged_in()
        text = _body(payload).get("text")
        if not isinstance(text, str) or len(text) > MAX_FILTER_LENGTH:
            raise InvalidPayload(f"text must be a string of at most {MAX_FILTER_LENGTH} characters")
        self.watchers.filter_clients(client_sid(), text.strip())
        return {"ok": True}

    def on_publish(self, payload: Any = None) -> dict[str, Any]:
        """Publish as a trusted publisher, like the HTTP API with an API key."""
        self._logged_in()
        body = _body(payload)
        message = self.hub.publish(body.get("channel"), body.get("event"), body.get("data"))
        log.info("dashboard published", extra={"channel": message.channel, "event": message.event})
        return {"ok": True, **message.meta()}

    def on_client_snippets(self, payload: Any = None) -> dict[str, Any]:
        """Copy-paste clients for one channel, with a fresh short-lived token that may subscribe to it only."""
        channel = validate_channel(_body(payload).get("channel"))
        ttl = min(SNIPPET_TOKEN_TTL, self.tokens.max_ttl)
        token = self.tokens.issue(SNIPPET_SUB, [channel], ttl)
        claims = self.tokens.verify(token)
        log.info("dashboard minted a snippet token", extra={"channel": channel})
        return {"ok": True, "channel": channel, "expires_at": claims.exp,
                "snippets": client_snippets(own_url(request), channel, token)}

    def on_kick_user(self, payload: Any = None) -> dict[str, Any]:
        """Disconnect every connection of one user on every instance, like POST /api/v1/users/<sub>/disconnect."""
        self._logged_in()
        answer = self.users.disconnect(_body(payload).get("sub"), "disconnected by an operator", False)
        log.info("dashboard disconnected a user", extra={"sub": answer["sub"], "connections": answer["disconnected"]})
        return {"ok": True, **answer}

    def on_kick(self, payload: Any = None) -> dict[str, Any]:
        """Disconnect one realtime client; it may reconnect (a ban is not the dashboard's business)."""
        self._logged_in()
        sid = _body(payload).get("sid")
        server = self.socketio.server
        if isinstance(sid, str) and not server.manager.is_connected(sid, "/") and sid in server.eio.sockets \
                and not joined_a_namespace(server, sid):
            # An Engine.IO session that joined no namespace (its row's sid is the Engine.IO one): end it there.
            server.eio.disconnect(sid)
            log.info("dashboard disconnected a session that had joined no namespace", extra={"sid": sid})
            return {"ok": True, "sid": sid}
        if not isinstance(sid, str) or not server.manager.is_connected(sid, "/"):
            raise NotFound("no such client (it may have left already)")
        server.disconnect(sid, namespace="/")
        log.info("dashboard disconnected a client", extra={"sid": sid})
        return {"ok": True, "sid": sid}

