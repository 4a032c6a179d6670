"""A longer soak than the suite's: steady publishes, churn and a stalled subscriber against a fresh real server.

    .venv/bin/python bench/soak.py --seconds 600

Prints acknowledged publishes, what each healthy subscriber received (must equal them, in order), churn cycles and
the worker's sessions/threads/descriptors/memory before and after; exits 1 if any subscriber missed or repeated one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.reliability.support import running_server  # noqa: E402
from tests.reliability.test_soak import run_soak  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--transport", choices=("threaded", "shared"), default="threaded")
    args = parser.parse_args()
    with running_server(GUNICORN_THREADS=256, WEBSOCKET_TRANSPORT=args.transport) as server:
        result = run_soak(server, args.seconds)
        bad_lines = server.bad_log_lines()
    acked = result.pop("acked")
    received = result.pop("received")
    exact = {name: offsets == acked for name, offsets in received.items()}
    print(json.dumps({"acked": len(acked), "received": {n: len(o) for n, o in received.items()}, "exact": exact,
                      "bad_log_lines": len(bad_lines), **result}, indent=2))
    return 0 if all(exact.values()) and not bad_lines else 1


if __name__ == "__main__":
    sys.exit(main())
