"""The client's address for per-address limits and logs: the socket's peer, or what trusted proxies say it was."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[v6]:port", as some proxies write it
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # "v4:port"
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, proxies: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in proxies)


def client_address(environ: Mapping[str, Any], trusted_proxies: Sequence[Network] = ()) -> str:
    """REMOTE_ADDR, unless it is a trusted proxy: then the right-most `X-Forwarded-For` entry that is not one.

    Every proxy appends the peer it saw, so entries left of the last untrusted one were written by the client itself
    and may be forged; they are never used. A header from an untrusted peer is ignored altogether.
    """
    peer = str(environ.get("REMOTE_ADDR") or "unknown")
    if not trusted_proxies or not _trusted(_parse(peer), trusted_proxies):
        return peer
    hops = [hop for hop in str(environ.get("HTTP_X_FORWARDED_FOR", "")).split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            return peer  # garbage in the chain: not a name any trusted proxy wrote, so nothing past it is known
        if not _trusted(address, trusted_proxies):
            return str(address)
    return str(_parse(hops[0])) if hops else peer  # every hop a trusted proxy: the first is the origin


def is_trusted(address: str, trusted_proxies: Sequence[Network]) -> bool:
    """Whether a peer address (as the socket gives it) is one of the trusted proxies."""
    return _trusted(_parse(address), trusted_proxies)
