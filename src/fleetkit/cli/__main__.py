"""``python -m fleetkit.cli``: the same as the ``fleetkit`` console script."""

from __future__ import annotations

import sys

try:
    from fleetkit.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command's modules load
    sys.exit(130)

sys.exit(main())
