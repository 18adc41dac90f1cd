"""Stateless checks of a command's fields, before any state is read.

Every violation is collected (not only the first), so a client can fix a request in
one round trip.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from dataclasses import replace

from chronos.domain import limits
from chronos.domain.commands import (
    CloseAccount,
    Command,
    CreatePendingTransfer,
    Deposit,
    ExpirePendingTransfer,
    FreezeAccount,
    Money,
    OpenAccount,
    PostJournalEntry,
    PostPendingTransfer,
    ReverseEntry,
    Side,
    TransferFunds,
    UnfreezeAccount,
    VoidPendingTransfer,
    Withdraw,
)
from chronos.domain.currencies import currency_problem
from chronos.domain.errors import FieldViolation, validation_failed
from chronos.domain.ledger import SYSTEM_ACCOUNT_IDS

# The form clients normally send; checked by one regular expression before the slower
# uuid.UUID parse, which also accepts braces, "urn:uuid:" and missing hyphens.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# Control characters (Unicode category Cc: C0, DEL and C1). PostgreSQL cannot store NUL in
# text at all, and the rest have no place in a name or a key; free text (descriptions,
# reasons, metadata values) may keep tabs and line breaks.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINE_BREAKS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def canonical_account_id(raw: str) -> str | None:
    """Returns the canonical (lower-case, hyphenated) form of a UUID, or None."""
    if _CANONICAL_UUID.fullmatch(raw):
        return raw
    if len(raw) > 64:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def validate(command: Command) -> None:
    """Checks every field of ``command``.

    Raises:
        Rejection: ``VALIDATION_FAILED`` with one violation per invalid field.
    """
    violations: list[FieldViolation] = []
    _check_request_id(command.request_id, violations)
    match command:
        case OpenAccount():
            _check_open(command, violations)
        case Deposit() | Withdraw():
            _check_user_account(command.account_id, "account_id", violations)
            _check_money(command.amount, "amount", violations)
            _check_text(
                command.description, "description", limits.DESCRIPTION_LENGTH_MAX, violations
            )
            _check_metadata(command.metadata, violations)
        case TransferFunds() | CreatePendingTransfer():
            _check_user_account(command.from_account_id, "from_account_id", violations)
            _check_user_account(command.to_account_id, "to_account_id", violations)
            from_id = canonical_account_id(command.from_account_id)
            if from_id is not None and from_id == canonical_account_id(command.to_account_id):
                violations.append(
                    FieldViolation("to_account_id", "must differ from from_account_id")
                )
            _check_money(command.amount, "amount", violations)
            _check_text(
                command.description, "description", limits.DESCRIPTION_LENGTH_MAX, violations
            )
            if isinstance(command, CreatePendingTransfer):
                _check_timeout(command.timeout_seconds, violations)
            _check_metadata(command.metadata, violations)
        case PostJournalEntry():
            _check_journal(command, violations)
            _check_metadata(command.metadata, violations)
        case FreezeAccount() | UnfreezeAccount() | CloseAccount():
            _check_user_account(command.account_id, "account_id", violations)
            _check_text(command.reason, "reason", limits.REASON_LENGTH_MAX, violations)
        case PostPendingTransfer() | VoidPendingTransfer() | ExpirePendingTransfer():
            _check_account_id(command.pending_id, "pending_id", violations)
            if isinstance(command, PostPendingTransfer):
                _check_partial_amount(command.amount, violations)
            if isinstance(command, VoidPendingTransfer):
                _check_text(command.reason, "reason", limits.REASON_LENGTH_MAX, violations)
            if not isinstance(command, ExpirePendingTransfer):
                _check_metadata(command.metadata, violations)
        case ReverseEntry():
            # An entry id is a UUID like an account id, and is compared canonically.
            _check_account_id(command.entry_id, "entry_id", violations)
            _check_text(command.reason, "reason", limits.REASON_LENGTH_MAX, violations)
            _check_metadata(command.metadata, violations)
    if violations:
        raise validation_failed(violations)


def _check_open(command: OpenAccount, violations: list[FieldViolation]) -> None:
    if command.account_id:
        _check_account_id(command.account_id, "account_id", violations)
        # Compared in canonical form: braces, "urn:uuid:" or missing hyphens
        # spell the same id, which canonicalize() would then open.
        if canonical_account_id(command.account_id) in SYSTEM_ACCOUNT_IDS:
            violations.append(FieldViolation("account_id", "is reserved for a system account"))
    _check_text(
        command.owner_name,
        "owner_name",
        limits.OWNER_NAME_LENGTH_MAX,
        violations,
        line_breaks=False,
    )
    if not command.owner_name.strip():
        violations.append(FieldViolation("owner_name", "is required"))
    elif not _has_visible_character(command.owner_name):
        violations.append(FieldViolation("owner_name", "must contain a visible character"))
    _check_currency(command.currency, "currency", violations)
    if not 0 <= command.overdraft_limit_minor <= limits.INT64_MAX:
        violations.append(FieldViolation("overdraft_limit_minor", "must be zero or positive"))
    _check_metadata(command.metadata, violations)


def _check_request_id(request_id: str, violations: list[FieldViolation]) -> None:
    if not request_id:
        violations.append(FieldViolation("request_id", "is required"))
    elif len(request_id) > limits.REQUEST_ID_LENGTH_MAX:
        violations.append(
            FieldViolation(
                "request_id", f"must be at most {limits.REQUEST_ID_LENGTH_MAX} characters"
            )
        )
    elif not request_id.isprintable():
        violations.append(FieldViolation("request_id", "must be printable text"))


def _check_account_id(raw: str, field: str, violations: list[FieldViolation]) -> None:
    if not raw:
        violations.append(FieldViolation(field, "is required"))
    elif canonical_account_id(raw) is None:
        violations.append(FieldViolation(field, f"is not a valid UUID: {raw[:64]!r}"))


def _check_user_account(raw: str, field: str, violations: list[FieldViolation]) -> None:
    _check_account_id(raw, field, violations)
    if canonical_account_id(raw) in SYSTEM_ACCOUNT_IDS:
        violations.append(
            FieldViolation(field, "is a system account; use PostJournalEntry to post to it")
        )


def _check_currency(currency: str, field: str, violations: list[FieldViolation]) -> None:
    if not currency:
        violations.append(FieldViolation(field, "is required"))
    elif (problem := currency_problem(currency)) is not None:
        violations.append(FieldViolation(field, problem))


def _check_money(amount: Money | None, field: str, violations: list[FieldViolation]) -> None:
    if amount is None:
        violations.append(FieldViolation(field, "is required"))
        return
    _check_currency(amount.currency, f"{field}.currency", violations)
    if amount.minor_units <= 0:
        violations.append(FieldViolation(f"{field}.minor_units", "must be positive"))
    elif amount.minor_units > limits.INT64_MAX:
        violations.append(
            FieldViolation(f"{field}.minor_units", "does not fit a signed 64-bit integer")
        )


def _check_timeout(timeout_seconds: int, violations: list[FieldViolation]) -> None:
    if not 0 <= timeout_seconds <= limits.PENDING_TIMEOUT_SECONDS_MAX:
        violations.append(
            FieldViolation(
                "timeout_seconds",
                f"must be 0 (no expiry) to {limits.PENDING_TIMEOUT_SECONDS_MAX}",
            )
        )


def _check_partial_amount(amount: Money, violations: list[FieldViolation]) -> None:
    """A post's amount: absent or 0 posts the whole hold; a currency, when given, is
    checked like any other (against the hold's by the ledger)."""
    if amount.currency:
        _check_currency(amount.currency, "amount.currency", violations)
    if amount.minor_units < 0:
        violations.append(
            FieldViolation("amount.minor_units", "must be zero (the full hold) or positive")
        )
    elif amount.minor_units > limits.INT64_MAX:
        violations.append(
            FieldViolation("amount.minor_units", "does not fit a signed 64-bit integer")
        )


def _check_text(
    text: str,
    field: str,
    length_max: int,
    violations: list[FieldViolation],
    *,
    line_breaks: bool = True,
) -> None:
    if len(text) > length_max:
        violations.append(FieldViolation(field, f"must be at most {length_max} characters"))
    _check_control(text, field, violations, line_breaks=line_breaks)


def _has_visible_character(text: str) -> bool:
    # A letter, digit, punctuation or symbol (emoji included): a name of only format
    # characters (U+200B ...) or combining marks shows as nothing in a listing.
    return any(unicodedata.category(character)[0] in "LNPS" for character in text)


def _check_control(
    text: str, field: str, violations: list[FieldViolation], *, line_breaks: bool, what: str = ""
) -> None:
    control = (_CONTROL_BUT_LINE_BREAKS if line_breaks else _CONTROL).search(text)
    if control is not None:
        allowed = " other than tab and line breaks" if line_breaks else ""
        violations.append(
            FieldViolation(
                field,
                f"{what}must not contain control characters{allowed} "
                f"(U+{ord(control.group()):04X} at index {control.start()})",
            )
        )


def metadata_violations(metadata: tuple[tuple[str, str], ...]) -> list[FieldViolation]:
    """What is wrong with ``metadata`` (an account's, a money movement's, or a query's
    filter on it): the one check of its limits and characters."""
    violations: list[FieldViolation] = []
    _check_metadata(metadata, violations)
    return violations


def _check_metadata(
    metadata: tuple[tuple[str, str], ...], violations: list[FieldViolation]
) -> None:
    if len(metadata) > limits.METADATA_ENTRIES_MAX:
        violations.append(
            FieldViolation("metadata", f"must have at most {limits.METADATA_ENTRIES_MAX} entries")
        )
    for key, value in metadata:
        field = f"metadata[{key[:32]!r}]"
        if not key or len(key) > limits.METADATA_KEY_LENGTH_MAX:
            violations.append(
                FieldViolation(field, f"key must be 1-{limits.METADATA_KEY_LENGTH_MAX} characters")
            )
        _check_control(key, field, violations, line_breaks=False, what="key ")
        if len(value) > limits.METADATA_VALUE_LENGTH_MAX:
            violations.append(
                FieldViolation(
                    field, f"value must be at most {limits.METADATA_VALUE_LENGTH_MAX} characters"
                )
            )
        _check_control(value, field, violations, line_breaks=True, what="value ")


def _check_journal(command: PostJournalEntry, violations: list[FieldViolation]) -> None:
    _check_text(command.description, "description", limits.DESCRIPTION_LENGTH_MAX, violations)
    lines = command.lines
    if len(lines) < 2:
        violations.append(FieldViolation("lines", "a journal entry needs at least two lines"))
    if len(lines) > limits.JOURNAL_LINES_MAX:
        violations.append(
            FieldViolation("lines", f"must have at most {limits.JOURNAL_LINES_MAX} lines")
        )
        return
    # Net per currency: debits must equal credits in each currency separately.
    net_by_currency: dict[str, int] = {}
    lines_valid = True
    for index, line in enumerate(lines):
        before = len(violations)
        _check_account_id(line.account_id, f"lines[{index}].account_id", violations)
        _check_money(line.amount, f"lines[{index}].amount", violations)
        if line.side is None:
            violations.append(FieldViolation(f"lines[{index}].side", "must be DEBIT or CREDIT"))
        if len(violations) > before:
            lines_valid = False
            continue
        sign = 1 if line.side is Side.CREDIT else -1
        currency = line.amount.currency
        net_by_currency[currency] = (
            net_by_currency.get(currency, 0) + sign * line.amount.minor_units
        )
    if lines_valid and len(lines) >= 2:
        for currency, net in sorted(net_by_currency.items()):
            if net != 0:
                violations.append(
                    FieldViolation(
                        "lines",
                        f"debits and credits in {currency} differ by {abs(net)} minor units",
                    )
                )


def canonicalize(command: Command) -> Command:
    """Returns ``command`` with every account id in canonical UUID form.

    Call only after :func:`validate` accepted the command.
    """

    def canonical(raw: str) -> str:
        value = canonical_account_id(raw)
        assert value is not None, f"canonicalize() before validate(): {raw!r}"
        return value

    match command:
        case OpenAccount():
            if not command.account_id:
                return command
            return replace(command, account_id=canonical(command.account_id))
        case TransferFunds() | CreatePendingTransfer():
            return replace(
                command,
                from_account_id=canonical(command.from_account_id),
                to_account_id=canonical(command.to_account_id),
            )
        case PostPendingTransfer() | VoidPendingTransfer() | ExpirePendingTransfer():
            return replace(command, pending_id=canonical(command.pending_id))
        case PostJournalEntry():
            return replace(
                command,
                lines=tuple(
                    replace(line, account_id=canonical(line.account_id)) for line in command.lines
                ),
            )
        case ReverseEntry():
            return replace(command, entry_id=canonical(command.entry_id))
        case _:
            return replace(command, account_id=canonical(command.account_id))


def fingerprint(command: Command) -> bytes:
    """A digest of everything the command asks for, to tell a retry from a reuse of its
    request_id with a different payload. Compute it on the canonical command, before
    the server fills in generated values (such as a new account id)."""
    text = repr(command)
    # Money movements gained metadata (their last field) after requests were stored:
    # an empty one is left out, so a retry sent across the upgrade matches its record.
    if text.endswith(", metadata=())") and not isinstance(command, OpenAccount):
        text = text.removesuffix(", metadata=())") + ")"
    return hashlib.sha256(text.encode()).digest()
