"""Composition root of the ledger console: ``python -m query_server.console``."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from chronos.rpc import parse_address
from chronos.settings import ConfigError
from query_server.console.config import ConsoleConfig
from query_server.console.query_client import QueryClient, TokenFile, open_channel
from query_server.console.server import ConsoleServer

_logger = logging.getLogger("query_server.console")


def run(config: ConsoleConfig) -> None:
    """Serves the console until SIGTERM or SIGINT."""
    token_file = None if config.token_file is None else TokenFile(Path(config.token_file))
    channel = open_channel(config)
    client = QueryClient(channel, token_file, config.call_timeout_seconds)
    server = ConsoleServer(parse_address(config.address), client, config.trace_url_template)

    def stop(signal_number: int, frame: FrameType | None) -> None:
        del signal_number, frame
        # shutdown() waits for serve_forever, so it runs on another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    _logger.info("serving http://%s:%s/ (query server %s)", host, port, config.query_address)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        channel.close()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = ConsoleConfig.from_env()
    except ConfigError as error:
        print(f"chronos console: {error}", file=sys.stderr)
        return 2
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
