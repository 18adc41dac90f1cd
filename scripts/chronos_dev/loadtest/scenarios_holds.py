"""The ``holds`` scenario: holds placed and then posted, partly posted, voided, raced
or left to expire, and transfers reversed, with duplicates, from concurrent clients.

One operation is one of (drawn with :data:`HOLD_MIX`):

* ``post`` / ``partial`` / ``void``: place a hold, then post all of it, post part of it
  (the rest is released) or void it. Half of these holds have the short timeout
  ``--hold-timeout-seconds``; one that expires before its post or void is refused
  ``PENDING_TRANSFER_NOT_PENDING``, an expected refusal.
* ``race``: place a hold without a timeout, then send two *different* requests ending it
  at once (post and void, two posts, or two voids): exactly one may win, the other is
  refused ``PENDING_TRANSFER_NOT_PENDING`` (recorded with :meth:`Outcomes.record_race`).
* ``leave``: place a hold with the short timeout and leave it, so the command server's
  expiry job ends it. A duplicated one is re-sent after its timeout (it must replay the
  stored answer) and then posted (refused ``PENDING_TRANSFER_NOT_PENDING``).
* ``reverse``: a transfer, then ``ReverseEntry`` of its entry; half the time two
  different reversal requests race (one wins, the other is refused
  ``ENTRY_ALREADY_REVERSED``), and sometimes the reversal itself is reversed (refused
  ``ENTRY_NOT_REVERSIBLE``).

``--duplicate-fraction`` of the creates, posts, voids and reversals are sent twice with
the same request_id, half after the answer and half concurrently. An operation fails
when a request it needed got an unexpected answer; the expected refusals above count in
the recorder's ``expected_refusals`` and the error table, not as failures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from chronos.domain.errors import Reason
from chronos.v1 import commands_pb2
from chronos_dev.loadtest.scenarios import Client, OperationFailed, Scenario, money

Operation = Callable[[Client, float], Awaitable[None]]
Answer = tuple[commands_pb2.CommandResponse | None, grpc.StatusCode, str]

# (kind, weight): the share of each kind of operation.
HOLD_MIX = (
    ("post", 0.25),
    ("partial", 0.15),
    ("void", 0.15),
    ("race", 0.15),
    ("leave", 0.2),
    ("reverse", 0.1),
)
# A re-sent create waits this long past the hold's timeout: the server refuses a post of
# a hold whose timeout passed even before its expiry job ran, so no more is needed.
AFTER_EXPIRY_MARGIN_SECONDS = 0.5
REVERSAL_RACE_FRACTION = 0.5
REVERSE_REVERSAL_FRACTION = 0.3
NOT_PENDING = Reason.PENDING_TRANSFER_NOT_PENDING.value


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldPlan:
    """One drawn operation: everything random is fixed before it runs."""

    kind: str
    index: int
    from_account_id: str
    to_account_id: str
    amount_minor: int
    partial_minor: int
    timeout_seconds: int
    # "", "after" or "concurrent": how the duplicated requests of the operation are re-sent.
    duplicate: str
    # race: the two ending commands ("post" or "void" each).
    race: tuple[str, str]
    # reverse: whether two reversal requests race, and whether the reversal is reversed.
    reversal_race: bool
    reverse_reversal: bool


def hold_operation(scenario: Scenario, index: int) -> Operation:
    """The holds-scenario operation with run-wide index ``index``."""
    plan = draw_plan(scenario, index)
    if plan.kind == "reverse":
        return _reverse_operation(scenario, plan)
    return _hold_lifecycle(scenario, plan)


def draw_plan(scenario: Scenario, index: int) -> HoldPlan:
    rng, options = scenario.rng, scenario.options
    kind = rng.choices([k for k, _ in HOLD_MIX], weights=[w for _, w in HOLD_MIX])[0]
    source = scenario.pick_account()
    target = scenario.pick_account()
    while target == source:
        target = scenario.pick_account()
    amount = rng.randint(2, max(2, options.amount_max_minor))
    timeout = 0
    if kind == "leave" or (kind in ("post", "partial", "void") and rng.random() < 0.5):
        timeout = options.hold_timeout_seconds
    duplicate = ""
    if rng.random() < options.duplicate_fraction:
        duplicate = "after" if rng.random() < 0.5 else "concurrent"
    return HoldPlan(
        kind=kind,
        index=index,
        from_account_id=source,
        to_account_id=target,
        amount_minor=amount,
        partial_minor=rng.randint(1, amount - 1),
        timeout_seconds=timeout,
        duplicate=duplicate,
        race=(rng.choice(("post", "void")), rng.choice(("post", "void"))),
        reversal_race=rng.random() < REVERSAL_RACE_FRACTION,
        reverse_reversal=rng.random() < REVERSE_REVERSAL_FRACTION,
    )


async def send(client: Client, rpc: str, request: Any, started: float, duplicate: str) -> Answer:
    """Sends ``request``, and its copy as ``duplicate`` says; the first answer."""
    if duplicate == "concurrent":
        first: Answer
        first, _ = await asyncio.gather(
            client.command_answer(rpc, request, started),
            client.command_answer(rpc, request, started, retry=True),
        )
        return first
    first = await client.command_answer(rpc, request, started)
    if duplicate == "after":
        await client.command_answer(rpc, request, time.monotonic(), retry=True)
    return first


def expect_refusal(client: Client, reason: str, answer: Answer) -> bool:
    """True when ``answer`` is the refusal ``reason`` (counted as expected)."""
    if answer[0] is None and answer[2] == reason:
        client.recorder.expected_refusals += 1
        return True
    return False


def _hold_lifecycle(scenario: Scenario, plan: HoldPlan) -> Operation:
    currency = scenario.options.currency
    create = commands_pb2.CreatePendingTransferRequest(
        request_id=scenario.request_id("hold", plan.index),
        from_account_id=plan.from_account_id,
        to_account_id=plan.to_account_id,
        amount=money(currency, plan.amount_minor),
        description="load test hold",
        timeout_seconds=plan.timeout_seconds,
        metadata={"scenario": "holds", "kind": plan.kind},
    )

    def ending(rpc_kind: str, suffix: str, pending_id: str) -> tuple[str, Any]:
        request_id = scenario.request_id(f"{rpc_kind}{suffix}", plan.index)
        if rpc_kind == "void":
            return "VoidPendingTransfer", commands_pb2.VoidPendingTransferRequest(
                request_id=request_id, pending_id=pending_id, reason="load test void"
            )
        amount = plan.partial_minor if plan.kind == "partial" else 0
        return "PostPendingTransfer", commands_pb2.PostPendingTransferRequest(
            request_id=request_id,
            pending_id=pending_id,
            amount=money(currency, amount) if amount else None,
        )

    async def run(client: Client, scheduled_monotonic: float) -> None:
        created, _, _ = await send(
            client, "CreatePendingTransfer", create, scheduled_monotonic, plan.duplicate
        )
        if created is None:
            raise OperationFailed
        pending_id = created.pending_id
        if plan.kind == "leave":
            await _after_expiry(client, plan, create, pending_id, ending)
        elif plan.kind == "race":
            await _race(client, plan, pending_id, ending)
        else:
            rpc, request = ending("void" if plan.kind == "void" else "post", "", pending_id)
            answer = await send(client, rpc, request, time.monotonic(), plan.duplicate)
            if answer[0] is None and not (
                plan.timeout_seconds and expect_refusal(client, NOT_PENDING, answer)
            ):
                raise OperationFailed

    return run


async def _after_expiry(
    client: Client,
    plan: HoldPlan,
    create: commands_pb2.CreatePendingTransferRequest,
    pending_id: str,
    ending: Callable[[str, str, str], tuple[str, Any]],
) -> None:
    """A left hold: only a duplicated one is touched again, once its timeout passed."""
    if not plan.duplicate:
        return
    await asyncio.sleep(plan.timeout_seconds + AFTER_EXPIRY_MARGIN_SECONDS)
    again = await client.command("CreatePendingTransfer", create, time.monotonic(), retry=True)
    if again is None or not again.replayed or again.pending_id != pending_id:
        raise OperationFailed
    rpc, request = ending("post", "-late", pending_id)
    if not expect_refusal(
        client, NOT_PENDING, await client.command_answer(rpc, request, time.monotonic())
    ):
        raise OperationFailed


async def _race(
    client: Client,
    plan: HoldPlan,
    pending_id: str,
    ending: Callable[[str, str, str], tuple[str, Any]],
) -> None:
    """Two different requests end the same hold at once: exactly one may win."""
    (rpc_a, request_a), (rpc_b, request_b) = (
        ending(plan.race[0], "-a", pending_id),
        ending(plan.race[1], "-b", pending_id),
    )
    started = time.monotonic()
    answers = await asyncio.gather(
        client.command_answer(rpc_a, request_a, started),
        client.command_answer(rpc_b, request_b, started),
    )
    _judge_race(client, "hold", pending_id, NOT_PENDING, answers)


def _judge_race(
    client: Client,
    kind: str,
    subject: str,
    losing_reason: str,
    answers: Sequence[Answer],
) -> None:
    client.recorder.outcomes.record_race(
        kind, subject, [(code, reason) for _, code, reason in answers], losing_reason
    )
    winners = [answer for answer in answers if answer[0] is not None]
    losers = [answer for answer in answers if answer[0] is None]
    if len(winners) != 1 or not all(expect_refusal(client, losing_reason, a) for a in losers):
        raise OperationFailed


def _reverse_operation(scenario: Scenario, plan: HoldPlan) -> Operation:
    transfer = commands_pb2.TransferFundsRequest(
        request_id=scenario.request_id("transfer", plan.index),
        from_account_id=plan.from_account_id,
        to_account_id=plan.to_account_id,
        amount=money(scenario.options.currency, plan.amount_minor),
        description="load test transfer to reverse",
    )

    def reversal(suffix: str, entry_id: str) -> commands_pb2.ReverseEntryRequest:
        return commands_pb2.ReverseEntryRequest(
            request_id=scenario.request_id(f"reverse{suffix}", plan.index),
            entry_id=entry_id,
            reason="load test reversal",
            metadata={"scenario": "holds"},
        )

    async def run(client: Client, scheduled_monotonic: float) -> None:
        moved = await client.command("TransferFunds", transfer, scheduled_monotonic)
        if moved is None:
            raise OperationFailed
        started = time.monotonic()
        if plan.reversal_race:
            answers = await asyncio.gather(
                client.command_answer("ReverseEntry", reversal("-a", moved.entry_id), started),
                client.command_answer("ReverseEntry", reversal("-b", moved.entry_id), started),
            )
            _judge_race(
                client, "reversal", moved.entry_id, Reason.ENTRY_ALREADY_REVERSED.value, answers
            )
            winner = next(answer[0] for answer in answers if answer[0] is not None)
        else:
            answer = await send(
                client, "ReverseEntry", reversal("", moved.entry_id), started, plan.duplicate
            )
            if answer[0] is None:
                raise OperationFailed
            winner = answer[0]
        if plan.reverse_reversal:
            answer = await client.command_answer(
                "ReverseEntry", reversal("-again", winner.entry_id), time.monotonic()
            )
            if not expect_refusal(client, Reason.ENTRY_NOT_REVERSIBLE.value, answer):
                raise OperationFailed

    return run
