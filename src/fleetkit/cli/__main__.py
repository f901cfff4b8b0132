"""``python -m fleetkit.cli``: the same as the ``fleetkit`` console script."""

from __future__ import annotations

import sys

from fleetkit.cli import main

sys.exit(main())
