"""``python -m chronos.bench``: see :mod:`chronos.bench.cli`."""

import sys

from chronos.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
