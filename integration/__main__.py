"""`python -m integration`: start.sh checks the pinned libraries before gunicorn starts (integration/pins.py)."""

import sys

from integration.pins import main

sys.exit(main())
