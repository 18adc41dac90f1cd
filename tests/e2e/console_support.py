"""The ledger console for the browser tests: a secured pipeline, a query server of the
console's own (which a test stops, points at a dead Elasticsearch, and restarts), the
console process reading through it with a ``ledger:read`` token, and a headless Chromium."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chronos.security import scopes
from chronos.security.tokens import issue_token, load_signing_key
from chronos.v1 import commands_pb2, queries_pb2
from chronos_dev import browser
from chronos_dev.console import console_environment, start_console
from chronos_dev.launcher import service_environment, stop
from chronos_dev.pki import LocalPki
from tests.e2e.helpers import free_port
from tests.e2e.secure_servers import credentials, secure_env, secure_server
from tests.e2e.secured_pipeline import SecuredPipeline
from tests.integration.authorization_support import AUDIENCE, ISSUER, Metadata, eur, new_id

CALL_TIMEOUT_SECONDS = 15
TRACE_TEMPLATE = "http://127.0.0.1:16686/trace/{trace_id}"
CONSOLE_START_SECONDS_MAX = 30.0


def require_chromium() -> None:
    """Skips (fails in CI) when the browser is missing."""
    missing = browser.chromium_missing()
    if missing is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the browser tests: {missing}")
    pytest.skip(missing)


@dataclass
class ReadServer:
    """The query server the console reads through, restartable with another ES address."""

    env: dict[str, str]
    address: str
    log_path: Path
    pki: LocalPki
    _stack: ExitStack = field(default_factory=ExitStack)

    def start(self, es_url: str | None = None) -> None:
        env = self.env | ({"CHRONOS_ES_URL": es_url} if es_url else {})
        creds = credentials(self.pki.ca_cert)
        self._stack.enter_context(
            secure_server("query_server", env, self.log_path, self.address, creds)
        )

    def stop(self) -> None:
        self._stack.close()


@dataclass
class Console:
    pipeline: SecuredPipeline
    read_server: ReadServer
    url: str
    writer: Metadata
    reader: Metadata
    token_file: Path

    def open(self, minor: int, owner: str = "Owner") -> str:
        account_id = new_id()
        self.pipeline.commands.OpenAccount(
            commands_pb2.OpenAccountRequest(
                request_id=new_id(), account_id=account_id, owner_name=owner, currency="EUR"
            ),
            metadata=self.writer,
            timeout=CALL_TIMEOUT_SECONDS,
        )
        if minor:
            self.pipeline.commands.Deposit(
                commands_pb2.DepositRequest(
                    request_id=new_id(), account_id=account_id, amount=eur(minor)
                ),
                metadata=self.writer,
                timeout=CALL_TIMEOUT_SECONDS,
            )
        return account_id

    def transfer(
        self, source: str, target: str, minor: int, caller: Metadata | None = None, **fields: Any
    ) -> Any:
        return self.pipeline.commands.TransferFunds(
            commands_pb2.TransferFundsRequest(
                request_id=fields.pop("request_id", new_id()),
                from_account_id=source,
                to_account_id=target,
                amount=eur(minor),
                **fields,
            ),
            metadata=caller or self.writer,
            timeout=CALL_TIMEOUT_SECONDS,
        )

    def query(self, method: str, **fields: Any) -> Any:
        """A QueryService answer, as the test reads it directly (not through the console)."""
        request = getattr(queries_pb2, f"{method}Request")(**fields)
        rpc = getattr(self.pipeline.queries, method)
        return rpc(request, metadata=self.reader, timeout=CALL_TIMEOUT_SECONDS)


def read_server_env(pipeline: SecuredPipeline, es_url: str, address: str) -> dict[str, str]:
    """What a query server over the pipeline's indices needs (ES credentials come from
    the environment the launcher passes on)."""
    return secure_env(pipeline.tokens.pki) | {
        "CHRONOS_ES_URL": es_url,
        "CHRONOS_INDEX_PREFIX": pipeline.names.prefix,
        "CHRONOS_QUERY_ADDR": address,
    }


@contextmanager
def running_console(pipeline: SecuredPipeline, es_url: str, directory: Path) -> Iterator[Console]:
    """The console's query server and the console; both stopped on exit."""
    pki = pipeline.tokens.pki
    read_address = f"127.0.0.1:{free_port()}"
    read_server = ReadServer(
        read_server_env(pipeline, es_url, read_address), read_address, directory / "query.log", pki
    )
    token_file = directory / "console-token"
    token_file.write_text(
        issue_token(
            load_signing_key(pki.signing_key),
            subject="console",
            scopes=(scopes.LEDGER_READ,),
            issuer=ISSUER,
            audience=AUDIENCE,
        )
    )
    address = f"127.0.0.1:{free_port()}"
    env = service_environment(
        console_environment(
            {
                "CHRONOS_TLS_CA_FILE": str(pki.ca_cert),
                "CHRONOS_INSECURE_NO_TLS": "",
                "CHRONOS_CONSOLE_TRACE_URL_TEMPLATE": TRACE_TEMPLATE,
            },
            address=address,
            query_addr=read_address,
            token_file=token_file,
        )
    )
    read_server.start()
    try:
        deadline = time.monotonic() + CONSOLE_START_SECONDS_MAX
        process = start_console(env, address, directory / "console.log", deadline=deadline)
        try:
            writer = pipeline.tokens.caller(
                scopes.ACCOUNTS_WRITE, scopes.FUNDS_WRITE, scopes.JOURNAL_WRITE
            )
            reader = pipeline.tokens.caller(scopes.LEDGER_READ)
            url = f"http://{address}/"
            yield Console(pipeline, read_server, url, writer, reader, token_file)
        finally:
            stop(process)
    finally:
        read_server.stop()


def unique_name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def chromium_page() -> Iterator[Any]:
    """A page of a fresh headless Chromium, in UTC, 1280×800."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = browser.launch(playwright)
        try:
            context = chromium.new_context(viewport=browser.VIEWPORT, timezone_id="UTC")
            yield context.new_page()
        finally:
            chromium.close()
