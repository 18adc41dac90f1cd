"""The principal on the record, without servers: event metadata, idempotency keys, the
group-commit admission, outbox envelopes, statement line documents and their protobuf,
the JSON log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime

from chronos.domain.commands import Deposit, Money, Side
from chronos.domain.events import FundsDeposited
from chronos.event_store import mapper
from chronos.event_store.committer import PendingCommand, admit
from chronos.event_store.context import CommandContext
from chronos.event_store.results import CommandResult
from chronos.outbox import contract
from chronos.read_model.documents import (
    record_from_envelope,
    record_from_stored,
    transaction_source,
)
from chronos.security.caller import Caller, reset_current_caller, set_current_caller
from chronos.telemetry import JsonFormatter
from chronos.v1 import events_pb2
from query_server.mapping import line_to_proto

ACCOUNT = "0b5f6f0e-1111-4c3a-9a57-0c7d3c1a0001"
OTHER = "0b5f6f0e-2222-4c3a-9a57-0c7d3c1a0002"


def test_the_metadata_holds_the_principal_and_token_id_when_there_is_one() -> None:
    context = CommandContext(request_id="r1", principal="alice", token_id="jti-1")
    assert context.metadata() == {
        "request_id": "r1",
        "correlation_id": "r1",
        "causation_id": "r1",
        contract.HEADER_PRINCIPAL: "alice",
        contract.HEADER_PRINCIPAL_TOKEN_ID: "jti-1",
    }
    assert context.idempotency_key == ("alice", "r1")
    anonymous = CommandContext(request_id="r1")
    assert set(anonymous.metadata()) == {"request_id", "correlation_id", "causation_id"}
    assert anonymous.idempotency_key == ("", "r1")


def test_admission_defers_a_request_id_only_for_the_same_principal() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()

        def pending(principal: str) -> PendingCommand:
            future: asyncio.Future[CommandResult] = loop.create_future()
            command = Deposit(
                request_id="r1", account_id=ACCOUNT, amount=Money(currency="EUR", minor_units=1)
            )
            context = CommandContext(request_id="r1", principal=principal)
            return PendingCommand(command, b"hash", context, future)

        batch = [pending("alice"), pending("bob"), pending("alice"), pending("")]
        admission = admit(batch)
        assert admission.run == [batch[0], batch[1], batch[3]]
        assert admission.deferred == [batch[2]]

    asyncio.run(body())


def _stored(metadata: dict[str, str]) -> mapper.StoredEvent:
    event = FundsDeposited(
        entry_id="e1",
        account_id=ACCOUNT,
        side=Side.CREDIT,
        currency="EUR",
        amount_minor=500,
        balance_after_minor=500,
        counterparty_account_id=OTHER,
    )
    event_type, schema_version, payload = mapper.encode(event)
    return mapper.StoredEvent(
        position=7,
        event_id=str(uuid.uuid4()),
        stream_id=ACCOUNT,
        stream_version=2,
        event_type=event_type,
        schema_version=schema_version,
        payload=payload,
        metadata=metadata,
        recorded_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    )


def test_the_outbox_envelope_carries_the_principal() -> None:
    stored = _stored({"request_id": "r1", "principal": "alice", "principal_token_id": "jti-1"})
    headers = {
        **stored.metadata,
        contract.HEADER_EVENT_ID: stored.event_id,
        contract.HEADER_EVENT_TYPE: stored.event_type,
        contract.HEADER_SCHEMA_VERSION: str(stored.schema_version),
        contract.HEADER_STREAM_VERSION: str(stored.stream_version),
        contract.HEADER_POSITION: str(stored.position),
        contract.HEADER_RECORDED_AT: stored.recorded_at.isoformat(),
    }
    value = mapper.envelope_from_outbox(ACCOUNT, stored.payload, headers)
    envelope = events_pb2.EventEnvelope.FromString(value)
    assert dict(envelope.metadata) == stored.metadata


def test_a_statement_line_carries_its_principal_from_either_source() -> None:
    stored = _stored({"request_id": "r1", "principal": "alice", "principal_token_id": "jti-1"})
    from_store = transaction_source(record_from_stored(stored))
    from_kafka = transaction_source(record_from_envelope(mapper.envelope(stored)))
    assert from_store is not None and from_store == from_kafka
    assert from_store["principal"] == "alice"
    # The token id stays in the event's metadata: a statement line says who, not how.
    assert "jti-1" not in from_store.values()
    assert line_to_proto(from_store).principal == "alice"

    anonymous = transaction_source(record_from_stored(_stored({"request_id": "r2"})))
    assert anonymous is not None and "principal" not in anonymous
    assert line_to_proto(anonymous).principal == ""


def test_log_lines_carry_the_subject_of_the_call_being_served() -> None:
    formatter = JsonFormatter("command-server")
    line = logging.LogRecord("t", logging.INFO, __file__, 1, "command rejected", None, None)
    assert "principal" not in json.loads(formatter.format(line))
    token = set_current_caller(Caller(subject="alice", token_id="jti-1"))
    try:
        entry = json.loads(formatter.format(line))
    finally:
        reset_current_caller(token)
    assert entry["principal"] == "alice"
    assert "jti-1" not in json.dumps(entry)
