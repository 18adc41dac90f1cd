"""``python -m chronos_dev.loadtest``: see :mod:`chronos_dev.loadtest.cli`."""

import sys

from chronos_dev.loadtest.cli import main

if __name__ == "__main__":
    sys.exit(main())
