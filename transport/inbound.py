"""What a client may send before python-socketio sees it: a rate limit per connection, and only joined namespaces.

Checked where python-engineio receives each packet (on the thread that read it, in the order the client sent them),
so a refused packet costs no handler thread:

- Socket.IO events (and, in a bucket of their own, connects, disconnects and acks) above CLIENT_RATE_LIMIT /
  CLIENT_RATE_BURST are not handled: an event that asked for an ack gets the `rate_limited` error ack, the rest are
  dropped and counted. A connection that has CLIENT_FLOOD_REFUSALS packets refused is closed as a flood.
- A packet for a namespace the client never asked to join closes the session, as the Node server does (python-socketio
  logs "... is not connected to namespace <ns>" at WARNING for every such packet, namespace verbatim).

Either way the session costs one WARNING line. The namespace a client asked for but is not (yet, or any more) in is
left to python-socketio, which drops the packet; its per-packet warning is brought to DEBUG (NotConnectedLogFilter).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engineio import packet as eio_packet
from prometheus_client import Counter

from hub.errors import RateLimited
from utils.metrics import PREFIX

log = logging.getLogger(__name__)

CLIENT_PACKETS_REFUSED = Counter(f"{PREFIX}_client_packets_refused", "Socket.IO packets refused before a handler "
                                 "thread was spent on them, by reason", ["reason"])
INBOUND_CLOSES = Counter(f"{PREFIX}_inbound_closes", "Sessions closed for what they sent, by reason", ["reason"])
for _reason in ("rate_limited",):
    CLIENT_PACKETS_REFUSED.labels(_reason)
for _reason in ("flood", "unjoined_namespace", "too_many_namespaces"):
    INBOUND_CLOSES.labels(_reason)

# Type, attachment count, namespace and ack id of a Socket.IO packet; the payload is never parsed here.
_HEADER = re.compile(r"([0-6])(\d+-)?(?:(/[^,]{0,200})(?:,|$))?(\d*)")
_EVENTS = frozenset("25")
_NEEDS_NAMESPACE = frozenset("12356")
MAX_NAMESPACES = 8  # namespaces one session may ask to join (Signalboard serves two)
_CHECKED = "_signalboard_inbound_checked"


@dataclass(frozen=True)
class InboundPolicy:
    """The limits of one server; rate 0 means events are not rate limited here."""

    rate: float
    burst: int
    flood_refusals: int
    serves: Callable[[str], bool] = lambda namespace: True  # whether the server has this namespace


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, burst: float) -> None:
        self.tokens = burst
        self.updated = time.monotonic()

    def take(self, rate: float, burst: float) -> float:
        """0.0 when one token was taken, else the seconds until one would be there."""
        now = time.monotonic()
        self.tokens = min(burst, self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / rate


class InboundGate:
    """One session's inbound state; used only by the thread that reads the session (one at a time)."""

    __slots__ = ("policy", "events", "control", "refused", "asked")

    def __init__(self, policy: InboundPolicy) -> None:
        self.policy = policy
        self.events = _Bucket(policy.burst)
        self.control = _Bucket(policy.burst)
        self.refused = 0
        self.asked: set[str] = set()

    def check(self, data: Any) -> tuple[str, str | None]:
        """('pass', None), ('drop', ack-to-send or None) or ('close', problem) for one Engine.IO message."""
        if not isinstance(data, str):
            return "pass", None  # a binary attachment: the malformed-input guard knows whether one is due
        header = _HEADER.match(data)
        if header is None:
            return "pass", None  # undecodable: the malformed-input guard closes it with its own line
        kind, namespace, ack_id = header.group(1), header.group(3) or "/", header.group(4)
        if header.group(3) is None and data.startswith("/", header.end(2) if header.group(2) else 1):
            return "close", "unjoined_namespace"  # a namespace too long to be one we serve
        if kind == "0":
            if not self.policy.serves(namespace):
                # The Node reference's answer (python-socketio's is `"Unable to connect"`), without a thread.
                return "drop", f'4{namespace},{{"message":"Invalid namespace"}}'
            if namespace not in self.asked and len(self.asked) >= MAX_NAMESPACES:
                return "close", "too_many_namespaces"
            self.asked.add(namespace)
        elif kind in _NEEDS_NAMESPACE and namespace not in self.asked:
            return "close", "unjoined_namespace"
        policy = self.policy
        if policy.rate <= 0:
            return "pass", None
        wait = (self.events if kind in _EVENTS else self.control).take(policy.rate, policy.burst)
        if not wait:
            return "pass", None
        self.refused += 1
        CLIENT_PACKETS_REFUSED.labels("rate_limited").inc()
        if self.refused >= policy.flood_refusals:
            return "close", "flood"
        if kind in _EVENTS and ack_id:
            prefix = "" if namespace == "/" else f"{namespace},"
            ack = RateLimited(retry_after=round(wait, 3)).to_ack()
            return "drop", f"3{prefix}{ack_id}{json.dumps([ack], separators=(',', ':'))}"
        return "drop", None


_PROBLEMS = {
    "flood": "more than {refusals} Socket.IO packets over CLIENT_RATE_LIMIT",
    "unjoined_namespace": "a packet for a namespace it has not joined",
    "too_many_namespaces": f"asked to join more than {MAX_NAMESPACES} namespaces",
}


def admit(eio_socket: Any, pkt: eio_packet.Packet) -> bool:
    """Whether python-engineio may handle this packet from `eio_socket` (which has an `inbound` gate).

    Refused packets are answered or dropped here; a session that must end is closed here, with its one line.
    Idempotent per packet: the shared transport checks before it routes, then python-engineio's receive again.
    """
    if getattr(pkt, _CHECKED, False):
        return True
    setattr(pkt, _CHECKED, True)
    if eio_socket.closed or eio_socket.closing:
        return False  # closed for an earlier packet of the same payload or frame batch
    gate: InboundGate | None = getattr(eio_socket, "inbound", None)
    if gate is None or pkt.packet_type != eio_packet.MESSAGE:
        return True
    verdict, detail = gate.check(pkt.data)
    if verdict == "pass":
        return True
    if verdict == "drop" or detail is None:  # (a close always names its problem: InboundGate.check)
        if detail is not None:
            eio_socket.send(eio_packet.Packet(eio_packet.MESSAGE, data=detail))
        return False
    INBOUND_CLOSES.labels(detail).inc()
    log.warning("closing Engine.IO session %s: %s", eio_socket.sid,
                _PROBLEMS[detail].format(refusals=gate.policy.flood_refusals))
    eio_socket.close(wait=False, abort=True, reason=eio_socket.server.reason.TRANSPORT_ERROR)
    eio_socket.server.sockets.pop(eio_socket.sid, None)
    return False


class NotConnectedLogFilter(logging.Filter):
    """python-socketio's per-packet "is not connected to namespace" warning, for a namespace the client did ask for
    (its connect still running, refused, or just left): an expected race, brought to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "%s is not connected to namespace %s":
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def install_not_connected_filter() -> None:
    logger = logging.getLogger("socketio.server")
    if not any(isinstance(f, NotConnectedLogFilter) for f in logger.filters):
        logger.addFilter(NotConnectedLogFilter())
