"""``python -m sgdnoise.sweep PLAN.yaml --out DIR ...`` (see :mod:`sgdnoise.sweep.cli`)."""

import sys

from sgdnoise.sweep.cli import main

sys.exit(main())
