"""Apps built by the real factory plus one test-only handler, started through start.sh via SIGNALBOARD_APP."""
