"""``python -m cli``: the operator command."""

import sys

from cli.main import main

sys.exit(main())
