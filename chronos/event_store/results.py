"""What an accepted command answers, as stored for idempotent replay."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountBalance:
    account_id: str
    currency: str
    balance_minor: int
    version: int
    pending_debits_minor: int = 0
    pending_credits_minor: int = 0

    @property
    def available_minor(self) -> int:
        """Posted balance less pending debits (pending credits never count)."""
        return self.balance_minor - self.pending_debits_minor


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandResult:
    """The answer to an accepted command.

    ``position`` is the global position of the command's last event: the consistency
    token a client passes to the query service as ``min_position``.
    """

    position: int
    account_id: str
    entry_id: str
    balances: tuple[AccountBalance, ...]
    event_ids: tuple[str, ...]
    replayed: bool = False
    # The hold a hold command placed or changed ("" otherwise).
    pending_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The stored form (JSON-ready); :meth:`from_json` reads it back."""
        return {
            "position": self.position,
            "account_id": self.account_id,
            "entry_id": self.entry_id,
            "balances": [
                [
                    b.account_id,
                    b.currency,
                    b.balance_minor,
                    b.version,
                    b.pending_debits_minor,
                    b.pending_credits_minor,
                ]
                for b in self.balances
            ],
            "event_ids": list(self.event_ids),
            "pending_id": self.pending_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CommandResult:
        return cls(
            position=int(data["position"]),
            account_id=str(data["account_id"]),
            entry_id=str(data["entry_id"]),
            balances=tuple(_balance_from_json(row) for row in data["balances"]),
            event_ids=tuple(data["event_ids"]),
            # Answers stored before holds existed have neither pending_id nor pending sums.
            pending_id=str(data.get("pending_id", "")),
        )

    def as_replay(self) -> CommandResult:
        return replace(self, replayed=True)


def _balance_from_json(row: list[Any]) -> AccountBalance:
    account_id, currency, balance, version, *pending = row
    debits, credits = (int(pending[0]), int(pending[1])) if pending else (0, 0)
    return AccountBalance(
        account_id=account_id,
        currency=currency,
        balance_minor=int(balance),
        version=int(version),
        pending_debits_minor=debits,
        pending_credits_minor=credits,
    )
