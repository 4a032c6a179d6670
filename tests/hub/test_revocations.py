"""The memory Revocations store: revoked until the ttl lapses, then forgotten (bounded by what is live)."""

from __future__ import annotations

from hub.revocations import MemoryRevocations


def test_revoked_until_the_ttl_lapses():
    now = [100.0]
    store = MemoryRevocations(clock=lambda: now[0])
    assert not store.is_revoked("login:a")
    store.revoke("login:a", 10)
    store.revoke("login:b", 30)
    assert store.is_revoked("login:a") and store.is_revoked("login:b") and not store.is_revoked("login:c")
    now[0] += 10
    assert not store.is_revoked("login:a") and store.is_revoked("login:b")
    assert len(store) == 1


def test_a_second_revocation_never_shortens_the_first():
    now = [0.0]
    store = MemoryRevocations(clock=lambda: now[0])
    store.revoke("jti:x", 60)
    store.revoke("jti:x", 5)
    now[0] += 30
    assert store.is_revoked("jti:x")
    now[0] += 30
    assert not store.is_revoked("jti:x") and len(store) == 0
