"""``python -m workers --provider NAME``: the same as ``aigw worker``."""

import sys

from ingress.cli import main

sys.exit(main(["worker", *sys.argv[1:]]))
