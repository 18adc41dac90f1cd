"""``python -m chronos.loadtest``: see :mod:`chronos.loadtest.cli`."""

import sys

from chronos.loadtest.cli import main

if __name__ == "__main__":
    sys.exit(main())
