"""``python -m ccarchive``: the same as the ``ccarchive`` command."""

import sys

from .cli.main import main

sys.exit(main())
