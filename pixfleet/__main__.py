"""``python -m pixfleet``: the operator command."""

import sys

from pixfleet.cli import main

sys.exit(main())
