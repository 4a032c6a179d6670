"""Token issue and verification, including the forgeries a verifier must refuse."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest

from hub.errors import InvalidChannel, InvalidPayload, Unauthorized
from hub.tokens import TokenIssuer

SECRET = "unit-secret-0123456789abcdef"  # 28 bytes: above our minimum, below PyJWT's advice
NOW = 1_700_000_000


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, claims: dict, key: bytes | None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def issuer(clock):
    return TokenIssuer(SECRET, clock=clock)


def reason_of(issuer: TokenIssuer, token) -> str:
    with pytest.raises(Unauthorized) as info:
        issuer.verify(token)
    assert info.value.status == 401
    assert SECRET not in json.dumps(info.value.to_dict())
    assert info.value.reason is not None
    return info.value.reason


def test_round_trip(issuer):
    token = issuer.issue("alice", ["orders.*", "public:news"], 60, publish=["orders.eu"])
    claims = issuer.verify(token)
    assert claims.sub == "alice"
    assert claims.channels == ("orders.*", "public:news")
    assert claims.publish == ("orders.eu",)
    assert claims.iat == NOW
    assert claims.exp == NOW + 60


def test_standard_jwt_readable_with_the_secret(issuer):
    """Anyone holding SECRET_KEY can verify with an ordinary JWT library, as the interface promises."""
    token = issuer.issue("bob", ["a"], 60)
    with pytest.warns(jwt.InsecureKeyLengthWarning):
        decoded = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    jti = decoded.pop("jti")
    assert decoded == {"sub": "bob", "channels": ["a"], "iat": NOW, "exp": NOW + 60}
    assert isinstance(jti, str) and len(jti) == 32 and issuer.verify(token).jti == jti
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}


def test_no_publish_claim_means_no_publish_rights(issuer):
    assert issuer.verify(issuer.issue("bob", ["a"], 60)).publish == ()


def test_expired(issuer, clock):
    token = issuer.issue("alice", ["a"], 10)
    clock.now += 9
    issuer.verify(token)
    clock.now += 1
    assert reason_of(issuer, token) == "token_expired"


def test_leeway():
    clock = Clock()
    issuer = TokenIssuer(SECRET, leeway=5, clock=clock)
    token = issuer.issue("alice", ["a"], 10)
    clock.now += 14
    issuer.verify(token)
    clock.now += 1
    assert reason_of(issuer, token) == "token_expired"


@pytest.mark.parametrize("token", [None, ""])
def test_missing(issuer, token):
    assert reason_of(issuer, token) == "token_missing"


@pytest.mark.parametrize("token", [123, ["x"], {"token": "x"}, "garbage", "a.b.c", "a.b"])
def test_garbage(issuer, token):
    assert reason_of(issuer, token) == "token_invalid"


def test_tampered_payload(issuer):
    token = issuer.issue("alice", ["a"], 60)
    header, _, signature = token.split(".")
    payload = b64(json.dumps({"sub": "alice", "channels": ["**"], "iat": NOW, "exp": NOW + 60}).encode())
    assert reason_of(issuer, f"{header}.{payload}.{signature}") == "token_invalid"


def test_tampered_signature(issuer):
    token = issuer.issue("alice", ["a"], 60)
    flipped = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    assert reason_of(issuer, flipped) == "token_invalid"


def test_wrong_secret(issuer, clock):
    other = TokenIssuer("another-secret-0123456789", clock=clock)
    assert reason_of(issuer, other.issue("alice", ["a"], 60)) == "token_invalid"


def test_alg_none_refused(issuer):
    claims = {"sub": "mallory", "channels": ["**"], "iat": NOW, "exp": NOW + 60}
    assert reason_of(issuer, forge({"alg": "none", "typ": "JWT"}, claims, None)) == "token_invalid"


def test_other_hmac_alg_refused(issuer):
    """HS512 signed with the right secret is still refused: the algorithm is pinned, not negotiated."""
    claims = {"sub": "mallory", "channels": ["**"], "iat": NOW, "exp": NOW + 60}
    token = jwt.encode(claims, SECRET * 3, algorithm="HS512")  # long key: HS512 wants 64 bytes
    assert reason_of(TokenIssuer(SECRET * 3, clock=Clock()), token) == "token_invalid"


def test_rs256_header_with_hmac_signature_refused(issuer):
    claims = {"sub": "mallory", "channels": ["**"], "iat": NOW, "exp": NOW + 60}
    token = forge({"alg": "RS256", "typ": "JWT"}, claims, SECRET.encode())
    assert reason_of(issuer, token) == "token_invalid"


@pytest.mark.parametrize(
    "claims",
    [
        {"channels": ["a"], "iat": NOW, "exp": NOW + 60},  # no sub
        {"sub": "a", "channels": ["a"], "iat": NOW},  # no exp
        {"sub": "a", "channels": ["a"], "exp": NOW + 60},  # no iat
        {"sub": "a", "channels": ["a"], "iat": NOW, "exp": "tomorrow"},
        {"sub": "a", "channels": ["a"], "iat": NOW, "exp": True},
        {"sub": "", "channels": ["a"], "iat": NOW, "exp": NOW + 60},
        {"sub": "a", "channels": "a", "iat": NOW, "exp": NOW + 60},
        {"sub": "a", "channels": ["bad name"], "iat": NOW, "exp": NOW + 60},
        {"sub": "a", "channels": ["a"], "publish": ["**.x"], "iat": NOW, "exp": NOW + 60},
    ],
)
def test_correctly_signed_but_malformed_claims(issuer, claims):
    token = forge({"alg": "HS256", "typ": "JWT"}, claims, SECRET.encode())
    assert reason_of(issuer, token) == "token_invalid"


def test_signed_non_object_payload(issuer):
    signing_input = f"{b64(json.dumps({'alg': 'HS256'}).encode())}.{b64(b'[1, 2]')}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    assert reason_of(issuer, f"{signing_input}.{b64(signature)}") == "token_invalid"


@pytest.mark.parametrize("ttl", [0, -1, 7 * 24 * 3600 + 1, 1.5, "60", True, None])
def test_ttl_bounds(issuer, ttl):
    with pytest.raises(InvalidPayload, match="ttl"):
        issuer.issue("alice", ["a"], ttl)


def test_ttl_as_a_whole_json_float(issuer, clock):
    claims = issuer.verify(issuer.issue("alice", ["a"], 600.0))  # JSON Schema's integer: 600.0 is 600
    assert claims.exp == int(clock()) + 600


def test_ttl_upper_bound_is_configurable(clock):
    issuer = TokenIssuer(SECRET, max_ttl=100, clock=clock)
    issuer.issue("alice", ["a"], 100)
    with pytest.raises(InvalidPayload, match="1 to 100"):
        issuer.issue("alice", ["a"], 101)


@pytest.mark.parametrize("sub", ["", None, 5, "x" * 257])
def test_bad_sub(issuer, sub):
    with pytest.raises(InvalidPayload, match="sub"):
        issuer.issue(sub, ["a"], 60)


def test_bad_channels(issuer):
    with pytest.raises(InvalidPayload):
        issuer.issue("alice", "orders", 60)
    with pytest.raises(InvalidChannel):
        issuer.issue("alice", ["bad name"], 60)
    with pytest.raises(InvalidPayload, match="at most"):
        issuer.issue("alice", [f"c{i}" for i in range(101)], 60)
    with pytest.raises(InvalidChannel):
        issuer.issue("alice", ["a"], 60, publish=["a.**.b"])


def test_short_secret_refused():
    with pytest.raises(ValueError, match="16 bytes"):
        TokenIssuer("too-short")


def signed(claims: dict) -> str:
    return forge({"alg": "HS256", "typ": "JWT"}, claims, SECRET.encode())


def test_token_not_accepted_before_its_nbf(issuer, clock):
    """RFC 7519 4.1.5: a token must not be accepted before `nbf`, beyond a small clock skew."""
    token = signed({"sub": "a", "channels": ["a"], "iat": NOW, "nbf": NOW + 3600, "exp": NOW + 7200})
    assert reason_of(issuer, token) == "token_not_yet_valid"
    clock.now = NOW + 3600 - 30  # within the skew of nbf
    assert issuer.verify(token).sub == "a"


def test_token_issued_in_the_future_is_refused(issuer, clock):
    token = signed({"sub": "a", "channels": ["a"], "iat": NOW + 31, "exp": NOW + 7200})
    assert reason_of(issuer, token) == "token_invalid"
    assert issuer.verify(signed({"sub": "a", "channels": ["a"], "iat": NOW + 30, "exp": NOW + 7200})).sub == "a"


@pytest.mark.parametrize("nbf", ["now", 1.5, None, True])
def test_nbf_must_be_a_whole_number(issuer, nbf):
    token = signed({"sub": "a", "channels": ["a"], "iat": NOW, "nbf": nbf, "exp": NOW + 60})
    assert reason_of(issuer, token) == "token_invalid"
