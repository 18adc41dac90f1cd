"""What became of each request_id the load test sent: pure bookkeeping, no I/O.

A request_id may be sent more than once (the duplicates scenario). Its final outcome:

* accepted: at least one attempt answered OK. Every OK answer must carry the same
  position and event count, and at most one of them may say ``replayed = false``
  (anything else is a *replay mismatch*: the idempotency guarantee broke).
* unknown: no OK, and at least one attempt failed in a way that leaves the effect open
  (deadline exceeded, unavailable, internal...). The event store may or may not hold it.
* rejected: every attempt was refused with a definite status (the ledger writes nothing
  for a rejection), so the event store must not hold it.

It also keeps the verdicts of *races* (the holds scenario): different requests sent at
once to end the same hold, or to reverse the same entry. Exactly one may win; a race
with two winners, or with none where each was refused as the loser of another, is a
violation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

# Statuses after which the command server has certainly written nothing: validation
# and business rejections, and a concurrency conflict it gave up retrying.
DEFINITE_REJECTION_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)

_MISMATCH_EXAMPLES_MAX = 20


@dataclass(frozen=True, slots=True)
class Accepted:
    """The answer to an accepted command."""

    # The RPC's name, e.g. "OpenAccount", "TransferFunds" or "CreatePendingTransfer".
    rpc: str
    event_count: int
    position: int


@dataclass(slots=True)
class Outcomes:
    """Final outcome per request_id, mergeable across client processes."""

    accepted: dict[str, Accepted] = field(default_factory=dict)
    # request_ids answered OK with replayed = false (at most once each).
    applied: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    replayed_answers: int = 0
    replay_mismatch_count: int = 0
    replay_mismatch_examples: list[str] = field(default_factory=list)
    # Race kind ("hold", "reversal") -> races run, violations, examples of violations.
    races: dict[str, int] = field(default_factory=dict)
    race_violations: dict[str, int] = field(default_factory=dict)
    race_violation_examples: dict[str, list[str]] = field(default_factory=dict)

    def record_ok(
        self, request_id: str, rpc: str, *, event_count: int, position: int, replayed: bool
    ) -> None:
        """One OK answer for ``request_id``."""
        answer = Accepted(rpc=rpc, event_count=event_count, position=position)
        if replayed:
            self.replayed_answers += 1
        previous = self.accepted.get(request_id)
        if previous is not None and previous != answer:
            self._mismatch(f"{request_id}: answered {previous} and then {answer}")
        if not replayed:
            if request_id in self.applied:
                self._mismatch(f"{request_id}: applied twice (two answers with replayed=false)")
            self.applied.add(request_id)
        if previous is None:
            self.accepted[request_id] = answer
        self.rejected.discard(request_id)
        self.unknown.discard(request_id)

    def record_failure(self, request_id: str, code: grpc.StatusCode) -> None:
        """One failed attempt for ``request_id``, with its status code."""
        if request_id in self.accepted:
            # An accepted request must be answered with its stored result on every retry;
            # only a transient failure (no answer at all) is excusable.
            if code in DEFINITE_REJECTION_CODES:
                self._mismatch(f"{request_id}: accepted, then a retry got {code.name}")
            return
        if code in DEFINITE_REJECTION_CODES:
            if request_id not in self.unknown:
                self.rejected.add(request_id)
            return
        # An attempt whose effect is open dominates an earlier rejection: a retry after a
        # rejection is a new attempt, and this one may still commit.
        self.rejected.discard(request_id)
        self.unknown.add(request_id)

    def record_race(
        self,
        kind: str,
        subject: str,
        answers: Sequence[tuple[grpc.StatusCode, str]],
        losing_reason: str,
    ) -> None:
        """The (status code, ErrorInfo reason) answers of requests that raced to end
        ``subject`` (a hold's or an entry's id) in different ways. Exactly one may win;
        none winning is a violation only when every one was refused ``losing_reason``
        (each lost to another: impossible without a winner)."""
        self.races[kind] = self.races.get(kind, 0) + 1
        winners = sum(1 for code, _ in answers if code == grpc.StatusCode.OK)
        all_lost = all(reason == losing_reason for _, reason in answers)
        if winners == 1 or (winners == 0 and not all_lost):
            return
        self.race_violations[kind] = self.race_violations.get(kind, 0) + 1
        examples = self.race_violation_examples.setdefault(kind, [])
        if len(examples) < _MISMATCH_EXAMPLES_MAX:
            examples.append(f"{kind} {subject}: {winners} of {len(answers)} racing requests won")

    def merge(self, other: Outcomes) -> None:
        """Adds another process's outcomes (request_ids never overlap across processes)."""
        assert not self.accepted.keys() & other.accepted.keys(), "request_id in two processes"
        self.accepted.update(other.accepted)
        self.applied |= other.applied
        self.rejected |= other.rejected
        self.unknown |= other.unknown
        self.replayed_answers += other.replayed_answers
        self.replay_mismatch_count += other.replay_mismatch_count
        room = _MISMATCH_EXAMPLES_MAX - len(self.replay_mismatch_examples)
        self.replay_mismatch_examples.extend(other.replay_mismatch_examples[: max(0, room)])
        for kind, count in other.races.items():
            self.races[kind] = self.races.get(kind, 0) + count
        for kind, count in other.race_violations.items():
            self.race_violations[kind] = self.race_violations.get(kind, 0) + count
        for kind, examples in other.race_violation_examples.items():
            mine = self.race_violation_examples.setdefault(kind, [])
            mine.extend(examples[: max(0, _MISMATCH_EXAMPLES_MAX - len(mine))])

    def _mismatch(self, description: str) -> None:
        self.replay_mismatch_count += 1
        if len(self.replay_mismatch_examples) < _MISMATCH_EXAMPLES_MAX:
            self.replay_mismatch_examples.append(description)
