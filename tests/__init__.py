"""Signalboard's test suite; a package, so `integration` names the library-hook package, not tests/integration."""
