"""`python -m backend.render ...`: the render command without going through backend/main.py."""

import sys

from backend.render.cli import main

sys.exit(main(sys.argv[1:]))
