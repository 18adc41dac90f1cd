"""``python -m chronos_dev.bench``: see :mod:`chronos_dev.bench.cli`."""

import sys

from chronos_dev.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
