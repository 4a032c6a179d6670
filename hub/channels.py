"""Channel and event name rules and the grant patterns that decide who may subscribe or publish where.

Names
    Channel: 1..128 characters from ``A-Z a-z 0-9 _ . : -``; dots separate segments, which must be non-empty
    (``orders.eu`` is fine, ``orders..eu`` and ``.orders`` are not).
    Event: 1..64 characters from the same set; Socket.IO's reserved names and ``signalboard:*`` are refused.
    Public channels start with ``public:``; anyone connected (anonymous too) may subscribe to them.

Grant patterns (in token claims ``channels`` and ``publish``), matched segment by segment:
    ``orders.eu``   exactly that channel;
    ``orders.*``    ``*`` matches exactly one segment: ``orders.eu`` but not ``orders`` or ``orders.eu.paris``;
    ``orders.**``   ``**`` (last segment only) matches one or more segments: ``orders.eu``, ``orders.eu.paris``;
    ``**``          every channel.
A wildcard is always a whole segment: ``ord*`` is not a pattern.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from hub.errors import HubError, InvalidChannel, InvalidEvent

CHANNEL_MAX_LENGTH = 128
EVENT_MAX_LENGTH = 64
PUBLIC_PREFIX = "public:"
# Events Socket.IO clients handle themselves; delivering a message under one of these names would be
# mistaken for a connection lifecycle event, so they are refused at publish.
SOCKETIO_RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)
# Events Signalboard itself emits (presence join/leave...), so publishers cannot forge them.
RESERVED_EVENT_PREFIX = "signalboard:"

_NAME_CHARS = re.compile(r"[A-Za-z0-9_.:\-]+")
_ONE_SEGMENT = "*"
_REST_SEGMENTS = "**"


def _check_name(kind: str, name: object, max_length: int, error: type[HubError]) -> str:
    if not isinstance(name, str):
        raise error(f"{kind} must be a string")
    if not 1 <= len(name) <= max_length:
        raise error(f"{kind} must be 1 to {max_length} characters long")
    if not _NAME_CHARS.fullmatch(name):
        raise error(f"{kind} may only contain letters, digits and _ . : -")
    return name


def validate_channel(channel: object) -> str:
    """Return `channel` if it is a valid channel name, else raise InvalidChannel saying why."""
    name = _check_name("channel", channel, CHANNEL_MAX_LENGTH, InvalidChannel)
    if "" in name.split("."):
        raise InvalidChannel("channel segments separated by '.' must not be empty")
    return name


def validate_event(event: object) -> str:
    """Return `event` if it may be published, else raise InvalidEvent saying why."""
    name = _check_name("event", event, EVENT_MAX_LENGTH, InvalidEvent)
    if name in SOCKETIO_RESERVED_EVENTS or name.startswith(RESERVED_EVENT_PREFIX):
        raise InvalidEvent(f"event name {name!r} is reserved")
    return name


def is_public(channel: str) -> bool:
    return channel.startswith(PUBLIC_PREFIX)


def validate_pattern(pattern: object) -> str:
    """Return `pattern` if it is a valid grant pattern, else raise InvalidChannel saying why."""
    if not isinstance(pattern, str):
        raise InvalidChannel("channel pattern must be a string")
    if len(pattern) > CHANNEL_MAX_LENGTH:  # '**' stands for longer names, but a pattern is held to a name's length
        raise InvalidChannel(f"channel pattern must be at most {CHANNEL_MAX_LENGTH} characters long")
    segments = pattern.split(".")
    literal = ".".join("x" if s in (_ONE_SEGMENT, _REST_SEGMENTS) else s for s in segments)
    try:
        validate_channel(literal)
    except InvalidChannel as exc:
        raise InvalidChannel(f"invalid channel pattern {pattern!r}: {exc.message}") from None
    if _REST_SEGMENTS in segments[:-1]:
        raise InvalidChannel(f"invalid channel pattern {pattern!r}: '**' is only allowed as the last segment")
    return pattern


def pattern_matches(pattern: str, channel: str) -> bool:
    """Whether grant `pattern` covers `channel` (both assumed valid; see the module docstring)."""
    wanted = pattern.split(".")
    actual = channel.split(".")
    if wanted[-1] == _REST_SEGMENTS:
        prefix = wanted[:-1]
        if len(actual) <= len(prefix):
            return False
        actual = actual[: len(prefix)]
        wanted = prefix
    if len(wanted) != len(actual):
        return False
    return all(w == _ONE_SEGMENT or w == a for w, a in zip(wanted, actual, strict=True))


def any_pattern_matches(patterns: Iterable[str], channel: str) -> bool:
    return any(pattern_matches(p, channel) for p in patterns)


def can_subscribe(grants: Iterable[str], channel: str) -> bool:
    """Public channels are open to every connection; any other needs a matching grant."""
    return is_public(channel) or any_pattern_matches(grants, channel)


def can_publish(grants: Iterable[str], channel: str) -> bool:
    """Client publishing always needs an explicit publish grant, public channels included."""
    return any_pattern_matches(grants, channel)
