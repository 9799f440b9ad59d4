"""``python -m cli ROLE ...``: the same as the ``aigw`` command."""

import sys

from cli.main import main

sys.exit(main())
