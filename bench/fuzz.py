"""Longer fuzzing than the suite runs: the same Hypothesis properties (tests/reliability/test_fuzz.py), many more
examples, random rather than derandomized.

    .venv/bin/python bench/fuzz.py --examples 2000

Prints the inputs tried per property and pytest's verdict; exits with pytest's status.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000, help="examples per property (suite: 30)")
    args = parser.parse_args()
    env = {**os.environ, "SIGNALBOARD_FUZZ_EXAMPLES": str(args.examples), "SIGNALBOARD_FUZZ_RANDOM": "1"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/reliability/test_fuzz.py", "-q", "-s", "-p", "no:cacheprovider",
         "--timeout", str(max(300, args.examples * 4))],
        cwd=ROOT, env=env, check=False)
    print(f"fuzz: {args.examples} examples per property, {time.monotonic() - started:.0f} s, exit {result.returncode}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
