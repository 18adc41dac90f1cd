"""The read model's setting shared by the query server, the projector and the CLI.

Apart from ``chronos.config`` because checking a prefix needs ``IndexNames``, whose
module loads the Elasticsearch client, which the write side never imports.
"""

from __future__ import annotations

from chronos.read_model.indices import DEFAULT_PREFIX, IndexNames
from chronos.settings import text

INDEX_PREFIX = text(
    "CHRONOS_INDEX_PREFIX",
    DEFAULT_PREFIX,
    check=lambda prefix: IndexNames(prefix=prefix),
    bounds="lower-case letters, digits, `_`, `.`, `-`; at most 64",
    doc="Prefix of the read-side Elasticsearch indices.",
)
