"""Field checks that guard the ledger's own accounts, in every spelling a UUID parser takes."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from chronos.domain import validation
from chronos.domain.commands import OpenAccount
from chronos.domain.errors import Reason, Rejection
from chronos.domain.ledger import system_account_id

# Every form ``uuid.UUID`` reads, by name.
SPELLINGS: dict[str, Callable[[str], str]] = {
    "canonical": lambda u: u,
    "upper": str.upper,
    "braces": lambda u: f"{{{u}}}",
    "braces-upper": lambda u: f"{{{u.upper()}}}",
    "urn": lambda u: f"urn:uuid:{u}",
    "urn-upper": lambda u: f"urn:uuid:{u.upper()}",
    "no-hyphens": lambda u: u.replace("-", ""),
    "no-hyphens-upper": lambda u: u.replace("-", "").upper(),
}


@pytest.mark.parametrize("currency", ["ISK", "EUR"])
@pytest.mark.parametrize("spell", SPELLINGS.values(), ids=SPELLINGS.keys())
def test_no_spelling_of_a_system_account_id_can_be_opened(
    currency: str, spell: Callable[[str], str]
) -> None:
    spelling = spell(system_account_id(currency))
    command = OpenAccount(
        request_id="r-1", account_id=spelling, owner_name="Mallory", currency=currency
    )
    with pytest.raises(Rejection) as caught:
        validation.validate(command)
    assert caught.value.reason is Reason.VALIDATION_FAILED
    assert [v.field for v in caught.value.violations] == ["account_id"]
    assert "system account" in caught.value.violations[0].description


def test_a_user_account_id_in_any_spelling_is_accepted_and_canonicalized() -> None:
    account_id = str(uuid.uuid4())
    for spell in SPELLINGS.values():
        command = OpenAccount(
            request_id="r-1", account_id=spell(account_id), owner_name="Alice", currency="EUR"
        )
        validation.validate(command)
        canonical = validation.canonicalize(command)
        assert isinstance(canonical, OpenAccount) and canonical.account_id == account_id
