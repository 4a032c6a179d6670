"""Per-address limits on Engine.IO sessions: how many one client address holds open, and how fast it opens them.

One address (a script, a botnet's one member, an office behind one NAT) must never be able to fill the capacity
everyone else shares, so it may hold at most MAX_SESSIONS_PER_ADDRESS sessions (by default half the capacity) and
open CONNECT_RATE_PER_ADDRESS per second with bursts of CONNECT_BURST_PER_ADDRESS. Admission (utils/admission.py)
takes a slot here in the same step as its own check, before the handshake runs; the slot then belongs to the
session python-engineio creates, or is given back when the handshake made none.
"""

from __future__ import annotations

import threading

from hub.ratelimit import RateLimiter


class AddressLimits:
    """Session slots and connect rate per client address (see utils/client_address.py for what an address is)."""

    def __init__(self, max_sessions: int, rate: float, burst: int) -> None:
        self.max_sessions = max_sessions
        self._rate = RateLimiter(rate, burst, max_keys=100_000) if rate > 0 else None
        self._lock = threading.Lock()  # guards _held and _session_address
        self._held: dict[str, int] = {}  # address -> slots taken (open sessions and handshakes under way)
        self._session_address: dict[str, str] = {}  # eio sid -> the address whose slot it holds

    def rate_wait(self, address: str) -> float:
        """Take one new-session token for `address`: 0.0, or the seconds until one would be there."""
        return self._rate.acquire(address) if self._rate is not None else 0.0

    def try_take(self, address: str) -> bool:
        """Take a slot for a handshake about to run; False when the address holds all it may."""
        with self._lock:
            held = self._held.get(address, 0)
            if held >= self.max_sessions:
                return False
            self._held[address] = held + 1
            return True

    def give_back(self, address: str) -> None:
        with self._lock:
            held = self._held.get(address, 0) - 1
            if held > 0:
                self._held[address] = held
            else:
                self._held.pop(address, None)

    def bind(self, sid: str, address: str) -> None:
        """The handshake's slot now belongs to session `sid`, until session_closed(sid)."""
        with self._lock:
            self._session_address[sid] = address

    def session_closed(self, sid: str) -> None:
        with self._lock:
            address = self._session_address.pop(sid, None)
        if address is not None:
            self.give_back(address)

    def held(self, address: str) -> int:
        with self._lock:
            return self._held.get(address, 0)

    def addresses(self) -> int:
        with self._lock:
            return len(self._held)
