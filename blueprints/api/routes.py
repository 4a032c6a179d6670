"""The `/api/v1` routes: thin translations between JSON over HTTP and hub calls."""

from __future__ import annotations

from typing import Any

from flask import g, jsonify, request
from flask.typing import ResponseReturnValue

from blueprints.api import bp
from blueprints.realtime.services import charge_channels, hub_services
from hub.errors import InvalidPayload
from utils.metrics import count_duplicates

DEFAULT_TOKEN_TTL = 3600


def _json_object() -> dict[str, Any]:
    # force: curl without a Content-Type header is still a JSON publisher; silent: bad JSON gets our own 400.
    try:
        body = request.get_json(force=True, silent=True)
    except RecursionError:  # nested deeper than the JSON decoder's recursion limit; silent only covers ValueError
        body = None
    if not isinstance(body, dict):
        raise InvalidPayload("the request body must be a JSON object")
    return body


def _fields(body: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    """Refuse fields the endpoint does not know: a misspelt `reconect` must not silently mean the default."""
    for name, value in body.items():
        if name not in allowed:
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise InvalidPayload(f"unknown field {shown!r}; this endpoint takes {', '.join(allowed)}")
        if value is None:
            raise InvalidPayload(f"{name} must not be null: leave it out instead")
    return body


def _optional_json_object() -> dict[str, Any]:
    return {} if not request.get_data() else _json_object()


def _query_int(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit():
        raise InvalidPayload(f"{name} must be a whole number from 0")
    return int(raw)


@bp.post("/publish")
def publish() -> ResponseReturnValue:
    """`{"channel" | "channels", "event", "data", "idempotency_key"?, "exclude"?}` (see Hub.publish_request)."""
    body = _json_object()
    services = hub_services()
    charge_channels(services.api_limiter, g.api_key_id, body)
    published = services.hub.publish_request(body, exclude=body.get("exclude"))
    count_duplicates(published.messages)
    return jsonify(published.answer())


@bp.post("/publish/batch")
def publish_batch() -> ResponseReturnValue:
    """`{"messages": [{"channel", "event", "data", "idempotency_key"?}, ...]}`: all stored in order, or none if any
    is invalid."""
    messages = hub_services().hub.publish_batch(_json_object().get("messages"))
    count_duplicates(messages)
    return jsonify(results=[m.answer() for m in messages])


@bp.post("/tokens")
def create_token() -> ResponseReturnValue:
    body = _json_object()
    tokens = hub_services().tokens
    ttl = body.get("ttl", DEFAULT_TOKEN_TTL)
    token = tokens.issue(body.get("sub"), body.get("channels"), ttl, publish=body.get("publish"))
    claims = tokens.verify(token)
    return jsonify(token=token, sub=claims.sub, expires_at=claims.exp, jti=claims.jti)


@bp.post("/tokens/revoke")
def revoke_tokens() -> ResponseReturnValue:
    """`{"sub"}`: every token of that user issued until now; `{"jti"}`: one token. Unknown ones are no error."""
    body = _fields(_json_object(), ("sub", "jti"))
    return jsonify(hub_services().users.revoke(sub=body.get("sub"), jti=body.get("jti")))


@bp.get("/users/<sub>")
def user_connections(sub: str) -> ResponseReturnValue:
    """That user's connections on every instance; a sub nobody is connected as has none (200, empty list)."""
    return jsonify(hub_services().users.connections(sub))


@bp.post("/users/<sub>/disconnect")
def disconnect_user(sub: str) -> ResponseReturnValue:
    body = _fields(_optional_json_object(), ("reason", "reconnect"))
    return jsonify(hub_services().users.disconnect(sub, body.get("reason"), body.get("reconnect", False)))


@bp.post("/users/<sub>/unsubscribe")
def unsubscribe_user(sub: str) -> ResponseReturnValue:
    body = _fields(_json_object(), ("channel",))
    return jsonify(hub_services().users.unsubscribe(sub, body.get("channel")))


@bp.get("/channels")
def channels() -> ResponseReturnValue:
    return jsonify(channels=hub_services().hub.channel_summaries())


@bp.get("/channels/<channel>/presence")
def presence(channel: str) -> ResponseReturnValue:
    return jsonify(hub_services().hub.who(channel))


@bp.get("/channels/<channel>/history")
def history(channel: str) -> ResponseReturnValue:
    page = hub_services().hub.read_history(channel, since=_query_int("since"), limit=_query_int("limit"))
    return jsonify(
        channel=page.channel,
        offset=page.latest,
        epoch=page.epoch,
        complete=page.complete,
        messages=[{"event": m.event, "data": m.data, **m.meta()} for m in page.messages],
    )
