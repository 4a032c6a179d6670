"""Fails loudly when a library the shared transport leans on changes version or moves an internal it relies on."""

from __future__ import annotations

import pytest

from transport import TransportVersionError, install_transport, pins


def test_installed_versions_are_the_pinned_ones():
    assert pins.version_mismatches() == [], "transport/ was written for other versions: re-check its internals"


def test_internals_the_transport_relies_on_are_unchanged():
    assert pins.internal_mismatches() == []


def test_pins_match_requirements_txt():
    from tests.conftest import ROOT

    pinned = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            pinned[name.strip().lower()] = version.strip()
    for name, version in pins.PINNED_VERSIONS.items():
        if name in pinned:
            assert pinned[name] == version, name


def test_a_version_mismatch_stops_the_shared_transport(monkeypatch):
    monkeypatch.setitem(pins.PINNED_VERSIONS, "python-engineio", "0.0.1")
    with pytest.raises(TransportVersionError, match="python-engineio"):
        install_transport(object(), "shared", 1 << 20)


def test_threaded_installs_nothing():
    assert install_transport(object(), "threaded", 1 << 20) is None
