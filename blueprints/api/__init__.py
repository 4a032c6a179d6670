"""HTTP API for backends: publish, mint tokens, read channels, presence and history (`/api/v1`, API key auth)."""

from __future__ import annotations

import hmac
import math

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from blueprints.realtime.services import hub_services
from hub.errors import HubError, PayloadTooLarge, RateLimited, Unauthorized
from hub.hub import MAX_BATCH
from utils.credential_throttle import credential_failed, credential_wait

bp = Blueprint("api", __name__, url_prefix="/api/v1", cli_group=None)

# Room for JSON around `data` (names, whitespace, pretty-printing) before a body is refused unread.
_BODY_SLACK = 64 * 1024


def _key_index(presented: str) -> int | None:
    """Which configured key was presented; every key is compared, in constant time, so timing tells nothing."""
    found = None
    for index, key in enumerate(current_app.config["API_KEYS"]):
        if hmac.compare_digest(key.encode(), presented.encode()):
            found = index
    return found


@bp.before_request
def authenticate_and_limit() -> None:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized("send the API key as 'Authorization: Bearer <key>'", reason="api_key_missing")
    wait = credential_wait("API key")
    if wait:  # the key is not even compared: a guesser learns nothing from a throttled attempt
        raise RateLimited("too many wrong API keys or passwords from this address", retry_after=wait)
    index = _key_index(presented.strip())
    if index is None:
        credential_failed("API key")
        raise Unauthorized("invalid API key", reason="api_key_invalid")
    g.api_key_id = f"key{index}"  # logs and limits name keys by position, never by value
    limiter = hub_services().api_limiter
    if limiter is not None:
        limiter.check(g.api_key_id)
    per_message = 2 * current_app.config["MAX_PAYLOAD_BYTES"] + _BODY_SLACK
    request.max_content_length = per_message * (MAX_BATCH if request.path.endswith("/batch") else 1)


@bp.errorhandler(HubError)
def hub_error(exc: HubError) -> Response:
    response = jsonify(error=exc.to_dict())
    response.status_code = exc.status
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="signalboard"'
    return response


@bp.errorhandler(RequestEntityTooLarge)
def body_too_large(exc: RequestEntityTooLarge) -> Response:
    return hub_error(PayloadTooLarge("request body too large"))


from blueprints.api import cli, routes  # noqa: E402,F401  (they attach to bp)
