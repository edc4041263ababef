"""``python -m bench.fuzz``: the seeded bad-input campaign (``./just fuzz``)."""

from __future__ import annotations

import sys

from bench.fuzz.campaign import main

if __name__ == "__main__":
    sys.exit(main())
