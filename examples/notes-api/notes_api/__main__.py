"""Run the server: `python3 -m notes_api`."""

import sys

from notes_api.server import main

sys.exit(main())
