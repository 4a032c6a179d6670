"""Connection tokens: HS256 JWTs that carry who the holder is and which channels it may use."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm

from hub.channels import validate_pattern
from hub.errors import InvalidChannel, InvalidPayload, Unauthorized

ALGORITHM = "HS256"
# The same floor config.py puts on SECRET_KEY, which signs these tokens as the interface requires.
MIN_SECRET_BYTES = 16
SUB_MAX_LENGTH = 256
JTI_MAX_LENGTH = 128
MAX_PATTERNS = 100
DEFAULT_MAX_TTL = 7 * 24 * 3600
# Seconds a token's `nbf` or `iat` may lie in the future: the clocks of the instances and of a backend minting its
# own tokens differ a little. Beyond it the token is refused (RFC 7519 4.1.5: not accepted before `nbf`).
DEFAULT_CLOCK_SKEW = 30


@dataclass(frozen=True)
class Claims:
    """The verified content of a token."""

    sub: str
    channels: tuple[str, ...]
    publish: tuple[str, ...]
    exp: int
    iat: int
    jti: str | None = None  # tokens minted before jti existed have none: revocable by sub only


def check_jti(jti: object) -> str:
    """A token id as revocation names it: 1 to 128 printable ASCII characters."""
    if not isinstance(jti, str) or not 1 <= len(jti) <= JTI_MAX_LENGTH or not (jti.isascii() and jti.isprintable()):
        raise InvalidPayload(f"jti must be a string of 1 to {JTI_MAX_LENGTH} printable ASCII characters")
    return jti


def check_sub(sub: object) -> str:
    if not isinstance(sub, str) or not 1 <= len(sub) <= SUB_MAX_LENGTH:
        raise InvalidPayload(f"sub must be a string of 1 to {SUB_MAX_LENGTH} characters")
    return sub


def check_patterns(name: str, patterns: object) -> tuple[str, ...]:
    if not isinstance(patterns, list | tuple):
        raise InvalidPayload(f"{name} must be a list of channel names or patterns")
    if len(patterns) > MAX_PATTERNS:
        raise InvalidPayload(f"{name} may hold at most {MAX_PATTERNS} entries")
    return tuple(validate_pattern(p) for p in patterns)


class _HS256(HMACAlgorithm):
    """HS256 whose key-length advice is our documented minimum.

    PyJWT warns below 32 bytes (RFC 7518's digest-size advice) on every call; SECRET_KEY is allowed from
    16 characters, and a per-call warning would flood logs (and fail tests run with warnings as errors).
    """

    def __init__(self) -> None:
        super().__init__(HMACAlgorithm.SHA256)

    def check_key_length(self, key: bytes) -> str | None:
        return None if len(key) >= MIN_SECRET_BYTES else f"HS256 key must be at least {MIN_SECRET_BYTES} bytes"


def _signer() -> jwt.PyJWS:
    # Only HS256 is known to this signer, so "none" and asymmetric algorithms cannot even be looked up.
    jws = jwt.PyJWS(algorithms=[ALGORITHM])
    jws.unregister_algorithm(ALGORITHM)
    jws.register_algorithm(ALGORITHM, _HS256())
    return jws


class TokenIssuer:
    """Issues and verifies tokens signed with one shared secret (the app's SECRET_KEY).

    Only HS256 is accepted on verification, so tokens with ``alg: none`` or an asymmetric algorithm
    (the classic key-confusion attack) are refused.
    """

    def __init__(
        self,
        secret: str | bytes,
        *,
        max_ttl: int = DEFAULT_MAX_TTL,
        leeway: int = 0,
        clock_skew: int = DEFAULT_CLOCK_SKEW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < MIN_SECRET_BYTES:
            raise ValueError(f"token secret must be at least {MIN_SECRET_BYTES} bytes long")
        if max_ttl < 1:
            raise ValueError("max_ttl must be at least 1 second")
        self._key = key
        self._jws = _signer()
        self.max_ttl = max_ttl
        self._leeway = leeway
        self._clock_skew = clock_skew
        self._clock = clock

    def issue(
        self,
        sub: object,
        channels: object,
        ttl: object,
        publish: object = None,
    ) -> str:
        """Return a signed token; raises InvalidPayload/InvalidChannel on bad arguments (checked here, whatever
        their type: they come from clients)."""
        sub = check_sub(sub)
        if isinstance(ttl, float) and ttl.is_integer():
            ttl = int(ttl)  # JSON has one number type: 600.0 is the whole number JSON Schema calls an integer
        # bool is an int subclass; ttl=True is a client mistake, not one second.
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= self.max_ttl:
            raise InvalidPayload(f"ttl must be a whole number of seconds from 1 to {self.max_ttl}")
        claims: dict[str, Any] = {"sub": sub, "channels": list(check_patterns("channels", channels))}
        if publish is not None:
            claims["publish"] = list(check_patterns("publish", publish))
        now = int(self._clock())
        claims["iat"] = now
        claims["exp"] = now + ttl
        claims["jti"] = uuid.uuid4().hex  # names this one token for POST /api/v1/tokens/revoke
        payload = json.dumps(claims, separators=(",", ":")).encode()
        return self._jws.encode(payload, self._key, algorithm=ALGORITHM)

    def verify(self, token: object) -> Claims:
        """Return the token's claims; raises Unauthorized with reason token_missing/expired/invalid."""
        if token is None or token == "":
            raise Unauthorized("a token is required", reason="token_missing")
        if not isinstance(token, str):
            raise Unauthorized("token must be a string", reason="token_invalid")
        invalid = Unauthorized("token is invalid", reason="token_invalid")
        try:
            payload = json.loads(self._jws.decode(token, self._key, algorithms=[ALGORITHM]))
        # ValueError covers malformed JSON and non-UTF-8 bytes inside a correctly signed token.
        except (jwt.InvalidTokenError, ValueError):
            raise invalid from None
        # Claims are checked here rather than by PyJWT's JWT layer so that expiry uses the same clock as issue().
        if not isinstance(payload, dict):
            raise invalid
        exp, iat = payload.get("exp"), payload.get("iat")
        if type(exp) is not int or type(iat) is not int:
            raise invalid
        nbf = payload.get("nbf", iat)
        if type(nbf) is not int:
            raise invalid
        now = int(self._clock())
        if exp + self._leeway <= now:
            raise Unauthorized("token has expired", reason="token_expired")
        if iat > now + self._clock_skew:
            raise invalid  # issued in the future: a wrong clock or a forgery, never a token to honour
        if nbf > now + self._clock_skew:
            raise Unauthorized("token is not valid yet", reason="token_not_yet_valid")
        # Revocations are kept for max_ttl (hub.revocations): a token living longer would outlive its revocation.
        if exp - iat > self.max_ttl:
            raise invalid
        try:
            return Claims(
                sub=check_sub(payload.get("sub")),
                channels=check_patterns("channels", payload.get("channels", [])),
                publish=check_patterns("publish", payload.get("publish", [])),
                exp=exp,
                iat=iat,
                jti=None if payload.get("jti") is None else check_jti(payload["jti"]),
            )
        except (InvalidPayload, InvalidChannel):
            raise invalid from None
