"""The scope names: a public contract that clients and operators depend on.

A token grants scopes in its ``scope`` claim (space-separated, as OAuth 2.0 and most
identity providers write it) or ``scp`` (a list). ``admin`` grants everything.
"""

from __future__ import annotations

from typing import Final

LEDGER_READ: Final = "ledger:read"
ACCOUNTS_WRITE: Final = "accounts:write"
FUNDS_WRITE: Final = "funds:write"
JOURNAL_WRITE: Final = "journal:write"
ADMIN: Final = "admin"

ALL_SCOPES: Final = (LEDGER_READ, ACCOUNTS_WRITE, FUNDS_WRITE, JOURNAL_WRITE, ADMIN)

# The private claim that restricts a token to some accounts (a list of account ids).
ACCOUNTS_CLAIM: Final = "chronos_accounts"
