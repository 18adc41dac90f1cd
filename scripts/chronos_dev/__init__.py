"""Chronos development tooling, apart from the product: the local stack, the launcher of
the four services, the benchmark and the load test.

The ``chronos-dev`` distribution (``scripts/pyproject.toml``) installs this package and
the ``chronos-dev`` command (:mod:`chronos_dev.cli`). It imports the product
(``chronos``); the product never imports it (``tests/unit/test_architecture.py``).
"""
