"""The ledger's rules for reversing a posted entry (``ReverseEntry``).

A reversal posts the mirror image of an entry: every line on the opposite side, same
amount, same account, in the same order, each line an :class:`EntryReversed` naming the
entry it reverses. An entry is reversed at most once, and a reversal is never reversed
itself (to undo a mistaken reversal, post the original movement again). Like
:func:`chronos.domain.ledger.decide` this is pure: the command server reads the entry's
lines and which entries are already reversed, and the rules here decide.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from chronos.domain.accounts import Account
from chronos.domain.commands import Money, OriginalLine, ReverseEntry, Side
from chronos.domain.errors import Reason, Rejection
from chronos.domain.events import AccountKind, DomainEvent, EntryKind, EntryReversed, LinePosted
from chronos.domain.ledger import Decision
from chronos.domain.postings import Leg, check_postable, line_events, require_account

# The kinds of entry a reversal may mirror. Anything else is refused as not reversible:
# a reversal; a hold's post (PENDING_TRANSFER), since a hold is undone by voiding it
# before it is posted, and a reversal would leave the hold reading POSTED with its money
# back; and any kind added later until it is decided that it may be reversed. (A hold's
# placing, void and expiry post no entry: their ids are no entry's.)
REVERSIBLE_KINDS = frozenset(
    {EntryKind.DEPOSIT, EntryKind.WITHDRAWAL, EntryKind.TRANSFER, EntryKind.JOURNAL}
)

_OPPOSITE = {Side.DEBIT: Side.CREDIT, Side.CREDIT: Side.DEBIT}


def decide_reversal(
    command: ReverseEntry,
    accounts: Mapping[str, Account | None],
    reversed_by: Mapping[str, str],
    new_id: Callable[[], str],
) -> Decision:
    """Decides the reversal of ``command.entry_id``.

    Args:
        command: Validated, with ``original`` read from the event store (empty when no
            entry has the id).
        accounts: Current state of every account of the entry.
        reversed_by: The reversal's entry id of every already reversed entry among those
            the batch names, as read under the accounts' locks.
        new_id: Generator of the reversal's entry id.

    Raises:
        Rejection: ENTRY_NOT_FOUND, ENTRY_NOT_REVERSIBLE, ENTRY_ALREADY_REVERSED, then
            the posting rules (closed, frozen debit, currency), then INSUFFICIENT_FUNDS
            (unless ``force``) and BALANCE_OVERFLOW, in Reason order.
    """
    check_reversible(command, reversed_by)
    legs = [_mirror(line) for line in command.original]

    def state(account_id: str) -> Account:
        account = require_account(accounts, account_id)
        # A forced reversal waives the account's floor, as a system account has none;
        # the signed 64-bit range still holds.
        return replace(account, kind=AccountKind.SYSTEM) if command.force else account

    check_postable(legs, state)
    entry_id = new_id()
    # The event store reads an entry's lines in line order, and they are numbered from 0,
    # so the mirror of line i is line i.
    assert [line.line_index for line in command.original] == list(range(len(legs)))
    lines = line_events(EntryKind.REVERSAL, entry_id, legs, command.reason, state)
    events: tuple[DomainEvent, ...] = tuple(
        replace(line, reverses_entry_id=command.entry_id, metadata=command.metadata)
        for line in lines
        if isinstance(line, EntryReversed)
    )
    assert len(events) == len(legs), "every leg posts one reversal line"
    return Decision(account_id=command.original[0].account_id, entry_id=entry_id, events=events)


def original_line(line: LinePosted) -> OriginalLine:
    """A posted line as a :class:`ReverseEntry` carries it."""
    return OriginalLine(
        account_id=line.account_id,
        side=line.side,
        currency=line.currency,
        amount_minor=line.amount_minor,
        counterparty_account_id=line.counterparty_account_id,
        kind=line.kind.value,
        line_index=line.line_index,
        reverses_entry_id=line.reverses_entry_id,
    )


def check_reversible(command: ReverseEntry, reversed_by: Mapping[str, str]) -> None:
    """Refuses an entry that does not exist, cannot be reversed, or was reversed."""
    meta = {"entry_id": command.entry_id}
    if not command.original:
        raise Rejection(
            Reason.ENTRY_NOT_FOUND, f"No posted entry has the id {command.entry_id}.", metadata=meta
        )
    kinds = {line.kind for line in command.original}
    if not kinds <= {kind.value for kind in REVERSIBLE_KINDS}:
        reversed_entry_id = command.original[0].reverses_entry_id
        if reversed_entry_id:
            message = (
                f"Entry {command.entry_id} is the reversal of entry {reversed_entry_id}, "
                "and a reversal cannot be reversed; to restore the movement, post it again."
            )
        elif EntryKind.PENDING_TRANSFER.value in kinds:
            message = (
                f"Entry {command.entry_id} is the post of a hold, and a hold cannot be "
                "reversed; void a hold before it is posted, or transfer the money back."
            )
        else:
            message = f"Entry {command.entry_id} is of a kind that cannot be reversed."
        raise Rejection(Reason.ENTRY_NOT_REVERSIBLE, message, metadata=meta)
    reversal_entry_id = reversed_by.get(command.entry_id)
    if reversal_entry_id is not None:
        raise Rejection(
            Reason.ENTRY_ALREADY_REVERSED,
            f"Entry {command.entry_id} was already reversed by entry {reversal_entry_id}; "
            "an entry is reversed at most once.",
            metadata={**meta, "reversal_entry_id": reversal_entry_id},
        )


def _mirror(line: OriginalLine) -> Leg:
    return Leg(
        line.account_id,
        _OPPOSITE[line.side],
        Money(currency=line.currency, minor_units=line.amount_minor),
        line.counterparty_account_id,
    )
