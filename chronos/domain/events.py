"""Events: immutable facts in an account's stream, named in the past tense.

Money movements are journal entries; each line of an entry is one event in the stream
of the account it touches, carrying the balance right after it. The event classes of
the four entry kinds share the fields of :class:`LinePosted`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from chronos.domain.commands import Side


class AccountKind(enum.Enum):
    USER = "USER"
    SYSTEM = "SYSTEM"


class EntryKind(enum.Enum):
    DEPOSIT = "DEPOSIT"
    WITHDRAWAL = "WITHDRAWAL"
    TRANSFER = "TRANSFER"
    JOURNAL = "JOURNAL"
    # The money a hold moves when it is posted.
    PENDING_TRANSFER = "PENDING_TRANSFER"
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
    # The account's open holds right after the line (unchanged by an ordinary line):
    # every line carries them, so a statement line shows the available balance.
    pending_debits_after_minor: int = 0
    pending_credits_after_minor: int = 0
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
class PendingTransferPosted(LinePosted):
    """The money a hold moves, as one line of its entry. The line takes the hold's whole
    amount off the account's pending side: ``amount_minor`` posted, ``released_minor``
    given back (a partial post releases the rest)."""

    pending_id: str = ""
    released_minor: int = 0
    # When the hold was placed, and its timeout (None: none), so that every event of a
    # hold describes it whole (the read side's hold documents are built from any one).
    placed_at: datetime | None = None
    expires_at: datetime | None = None
    # The metadata the hold was placed with (``metadata`` is the post's own).
    hold_metadata: tuple[tuple[str, str], ...] = ()
    kind: EntryKind = field(default=EntryKind.PENDING_TRANSFER, init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldLine:
    """A hold reserved or released, as seen from one of its two accounts: the debit side
    is the account the hold reserves money on, the credit side the account it would pay.
    The posted balance does not move; ``amount_minor`` is added to (placed) or taken off
    (released) the account's pending debits or credits."""

    pending_id: str
    account_id: str
    side: Side
    currency: str
    amount_minor: int
    balance_after_minor: int
    pending_debits_after_minor: int
    pending_credits_after_minor: int
    counterparty_account_id: str = ""
    description: str = ""
    line_index: int = 0
    # When the hold was placed, and its timeout (None: it never expires).
    placed_at: datetime | None = None
    expires_at: datetime | None = None
    # The metadata of the command that wrote the line (none on an expiry's), and the
    # metadata the hold was placed with (its create's), which every event of it carries.
    metadata: tuple[tuple[str, str], ...] = ()
    hold_metadata: tuple[tuple[str, str], ...] = ()

    @property
    def pending_change_minor(self) -> int:
        """How much the pending side of ``side`` changes: positive when placed."""
        return self.amount_minor


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingTransferCreated(HoldLine):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingTransferVoided(HoldLine):
    reason: str = ""

    @property
    def pending_change_minor(self) -> int:
        return -self.amount_minor


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingTransferExpired(HoldLine):
    @property
    def pending_change_minor(self) -> int:
        return -self.amount_minor


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryReversed(LinePosted):
    """A line of a reversal: the mirror of line ``line_index`` of ``reverses_entry_id``."""

    kind: EntryKind = field(default=EntryKind.REVERSAL, init=False)


LINE_EVENT_BY_KIND: dict[EntryKind, type[LinePosted]] = {
    EntryKind.DEPOSIT: FundsDeposited,
    EntryKind.WITHDRAWAL: FundsWithdrawn,
    EntryKind.TRANSFER: FundsTransferred,
    EntryKind.JOURNAL: JournalEntryPosted,
    EntryKind.PENDING_TRANSFER: PendingTransferPosted,
    EntryKind.REVERSAL: EntryReversed,
}

# Line events are matched by their base class: all four kinds share its fields and rules.
DomainEvent = (
    AccountOpened | AccountFrozen | AccountUnfrozen | AccountClosed | LinePosted | HoldLine
)
