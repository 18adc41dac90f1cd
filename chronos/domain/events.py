"""Events: immutable facts in an account's stream, named in the past tense.

Money movements are journal entries; each line of an entry is one event in the stream
of the account it touches, carrying the balance right after it. The event classes of
the four entry kinds share the fields of :class:`LinePosted`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from chronos.domain.commands import Side


class AccountKind(enum.Enum):
    USER = "USER"
    SYSTEM = "SYSTEM"


class EntryKind(enum.Enum):
    DEPOSIT = "DEPOSIT"
    WITHDRAWAL = "WITHDRAWAL"
    TRANSFER = "TRANSFER"
    JOURNAL = "JOURNAL"
    REVERSAL = "REVERSAL"


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountOpened:
    account_id: str
    owner_name: str
    currency: str
    overdraft_limit_minor: int
    kind: AccountKind
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountFrozen:
    account_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountUnfrozen:
    account_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountClosed:
    account_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LinePosted:
    """One line of a journal entry, in the stream of ``account_id``."""

    entry_id: str
    account_id: str
    side: Side
    currency: str
    amount_minor: int
    balance_after_minor: int
    counterparty_account_id: str = ""
    description: str = ""
    line_index: int = 0
    # The posting command's metadata, the same on every line of the entry.
    metadata: tuple[tuple[str, str], ...] = ()
    # Of a reversal's line (EntryReversed): the entry it reverses; empty on every other
    # line. (A reversal's request metadata is the line's ``metadata``, as for every
    # money movement.)
    reverses_entry_id: str = ""
    kind: EntryKind = field(init=False)

    @property
    def signed_amount_minor(self) -> int:
        return self.amount_minor if self.side is Side.CREDIT else -self.amount_minor


@dataclass(frozen=True, slots=True, kw_only=True)
class FundsDeposited(LinePosted):
    kind: EntryKind = field(default=EntryKind.DEPOSIT, init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class FundsWithdrawn(LinePosted):
    kind: EntryKind = field(default=EntryKind.WITHDRAWAL, init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class FundsTransferred(LinePosted):
    kind: EntryKind = field(default=EntryKind.TRANSFER, init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEntryPosted(LinePosted):
    kind: EntryKind = field(default=EntryKind.JOURNAL, init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryReversed(LinePosted):
    """A line of a reversal: the mirror of line ``line_index`` of ``reverses_entry_id``."""

    kind: EntryKind = field(default=EntryKind.REVERSAL, init=False)


LINE_EVENT_BY_KIND: dict[EntryKind, type[LinePosted]] = {
    EntryKind.DEPOSIT: FundsDeposited,
    EntryKind.WITHDRAWAL: FundsWithdrawn,
    EntryKind.TRANSFER: FundsTransferred,
    EntryKind.JOURNAL: JournalEntryPosted,
    EntryKind.REVERSAL: EntryReversed,
}

# Line events are matched by their base class: all four kinds share its fields and rules.
DomainEvent = AccountOpened | AccountFrozen | AccountUnfrozen | AccountClosed | LinePosted
