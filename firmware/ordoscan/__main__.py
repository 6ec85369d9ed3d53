"""`python -m ordoscan` is the `ordoscan` command."""

import sys

from ordoscan.cli import main

sys.exit(main())
