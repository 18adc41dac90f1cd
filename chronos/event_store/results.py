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

    def to_dict(self) -> dict[str, Any]:
        """The stored form (JSON-ready); :meth:`from_json` reads it back."""
        return {
            "position": self.position,
            "account_id": self.account_id,
            "entry_id": self.entry_id,
            "balances": [
                [b.account_id, b.currency, b.balance_minor, b.version] for b in self.balances
            ],
            "event_ids": list(self.event_ids),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CommandResult:
        return cls(
            position=int(data["position"]),
            account_id=str(data["account_id"]),
            entry_id=str(data["entry_id"]),
            balances=tuple(
                AccountBalance(account_id=a, currency=c, balance_minor=int(b), version=int(v))
                for a, c, b, v in data["balances"]
            ),
            event_ids=tuple(data["event_ids"]),
        )

    def as_replay(self) -> CommandResult:
        return replace(self, replayed=True)
