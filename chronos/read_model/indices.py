"""Index names, explicit mappings and the aliases the read side works through.

Every data index is versioned (``<prefix>-accounts-v3``) and reached only through its
alias (``<prefix>-accounts``), which is also the alias's write index: the projector
writes through the alias, so after ``chronos projection rebuild`` swaps an alias to a
new version the live projection simply continues there (blue/green). The watermark
index ``<prefix>-projection`` is not versioned: it records how far the projector has
consumed Kafka, which a rebuild does not change.

Mappings are strict and use core Elasticsearch only (no scripts, no analysis-common):
the local server is the integ-test distribution.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from elasticsearch import ApiError, Elasticsearch, TransportError

from chronos.read_model import ReadModelError, ReadModelUnavailable

DEFAULT_PREFIX = "chronos"
_PREFIX_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

# Data indices refresh this often on their own (Elasticsearch's default). The projector
# refreshes them itself (CHRONOS_PROJECTOR_SEARCH_REFRESH_SECONDS), so this is only a
# backstop: a short interval adds scheduled refreshes on top of the projector's, each a
# new segment to write and merge, which costs Elasticsearch much CPU under load. With
# CHRONOS_PROJECTOR_REFRESH=wait_for a write waits on average half of this interval
# before it is searchable.
REFRESH_INTERVAL = "1s"

# Only the fields the queries filter, sort or search on are indexed; the others live in
# _source alone, for the answers. Indexing them costs Elasticsearch CPU on every write of
# a hot path that writes each account once per event, for fields no query uses. A query
# that needs another field gets it indexed in a new mapping version, which
# `chronos projection rebuild` builds and swaps in.
_STORED: dict[str, Any] = {"index": False, "doc_values": False}

ACCOUNTS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "account_id": {"type": "keyword"},
        "owner_name": {"type": "text", "analyzer": "standard"},
        "currency": {"type": "keyword"},
        "balance_minor": {"type": "long", **_STORED},
        "overdraft_limit_minor": {"type": "long", **_STORED},
        "status": {"type": "keyword"},
        "kind": {"type": "keyword"},
        "version": {"type": "long", **_STORED},
        "last_position": {"type": "long", **_STORED},
        "opened_at": {"type": "date_nanos", **_STORED},
        "updated_at": {"type": "date_nanos", **_STORED},
        # Client-chosen keys (dots included) kept as they came, not parsed into fields.
        "metadata": {"type": "object", "enabled": False},
        "pending_debits_minor": {"type": "long", **_STORED},
        "pending_credits_minor": {"type": "long", **_STORED},
        "available_minor": {"type": "long", **_STORED},
    },
}

TRANSACTIONS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "event_id": {"type": "keyword", **_STORED},
        "entry_id": {"type": "keyword", **_STORED},
        "account_id": {"type": "keyword"},
        "counterparty_account_id": {"type": "keyword", **_STORED},
        "direction": {"type": "keyword", **_STORED},
        "amount_minor": {"type": "long", **_STORED},
        "currency": {"type": "keyword", **_STORED},
        "balance_after_minor": {"type": "long", **_STORED},
        "kind": {"type": "keyword", **_STORED},
        "description": {"type": "text", "index": False},
        # Nanosecond dates: the event store records microseconds, and time-window
        # queries (start inclusive, end exclusive) must not round them to milliseconds.
        "recorded_at": {"type": "date_nanos"},
        "position": {"type": "long"},
        "stream_version": {"type": "long", **_STORED},
        "line_index": {"type": "integer", **_STORED},
        # Who caused the line (the token subject); absent when none was recorded.
        "principal": {"type": "keyword", **_STORED},
        # The hold of a hold's line; absent on other lines.
        "pending_id": {"type": "keyword", **_STORED},
        # The account's open holds after the line; absent when none are open.
        "pending_debits_after_minor": {"type": "long", **_STORED},
        "pending_credits_after_minor": {"type": "long", **_STORED},
        # The money movement's metadata; absent when it had none. Flattened: every
        # client-chosen key is searchable by exact match (``metadata.<key>``) with one
        # field in the mapping, however many keys clients use, and keys with dots stay
        # whole; an object mapping would add a field per key (the strict mapping would
        # refuse them) and split dotted keys.
        "metadata": {"type": "flattened"},
        # Of a reversal's line: the entry it reverses; absent on every other line.
        "reverses_entry_id": {"type": "keyword", **_STORED},
    },
}

# One document per hold (chronos.read_model.hold_documents), for ListPendingTransfers.
PENDING_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "pending_id": {"type": "keyword"},
        "from_account_id": {"type": "keyword"},
        "to_account_id": {"type": "keyword"},
        "currency": {"type": "keyword", **_STORED},
        "amount_minor": {"type": "long", **_STORED},
        "posted_minor": {"type": "long", **_STORED},
        "state": {"type": "keyword"},
        "description": {"type": "text", "index": False},
        "placed_at": {"type": "date_nanos"},
        "expires_at": {"type": "date_nanos", **_STORED},
        "updated_at": {"type": "date_nanos", **_STORED},
        "last_position": {"type": "long", **_STORED},
        "version": {"type": "long", **_STORED},
        # The metadata the hold was placed with; absent when none. Flattened, as the
        # statement lines' (see TRANSACTIONS_MAPPING): filtered by exact match.
        "metadata": {"type": "flattened"},
    },
}

# One document per event, id = position (chronos.read_model.event_documents), for
# ListEvents and GetEntry: the event log itself, filtered by the derived keyword fields.
EVENTS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "position": {"type": "long"},
        "event_id": {"type": "keyword"},
        "event_type": {"type": "keyword"},
        "schema_version": {"type": "integer", **_STORED},
        "stream_id": {"type": "keyword"},
        "stream_version": {"type": "long", **_STORED},
        "recorded_at": {"type": "date_nanos"},
        # The Kafka headers' metadata (request id, correlation, trace, principal), kept
        # whole for the answer; the keys filters use are copied to fields of their own.
        "metadata": {"type": "object", "enabled": False},
        # The payload as protobuf JSON, kept for the answer only; ``words`` is searched.
        "payload": {"type": "object", "enabled": False},
        # The words of the payload's and the metadata's values, cut by the writer
        # (chronos.read_model.event_documents.words): matched exactly, never sorted on.
        "words": {"type": "keyword", "doc_values": False},
        "account_ids": {"type": "keyword"},
        "entry_id": {"type": "keyword"},
        "pending_id": {"type": "keyword"},
        "reverses_entry_id": {"type": "keyword"},
        "request_id": {"type": "keyword"},
        "principal": {"type": "keyword"},
        # Empty until the hash chain is recorded with the events (issue 18).
        "chain_hash": {"type": "keyword", **_STORED},
    },
}

PROJECTION_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "topic": {"type": "keyword"},
        "partition": {"type": "integer"},
        "partition_count": {"type": "integer"},
        "position": {"type": "long"},
        "updated_at": {"type": "date_nanos"},
    },
}


def index_settings(*, refresh_interval: str = REFRESH_INTERVAL) -> dict[str, Any]:
    """Settings of every read-side index: one node, so one shard and no replica."""
    return {
        "number_of_shards": 1,
        "number_of_replicas": 0,
        "refresh_interval": refresh_interval,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexNames:
    """Names of the read-side indices under one prefix (tests use a unique prefix)."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not _PREFIX_PATTERN.match(self.prefix):
            raise ValueError(
                f"index prefix must be lower-case letters, digits, '_', '.' or '-' "
                f"(at most 64), got {self.prefix!r}"
            )

    @property
    def accounts(self) -> str:
        """The accounts alias."""
        return f"{self.prefix}-accounts"

    @property
    def transactions(self) -> str:
        """The transactions (statement lines) alias."""
        return f"{self.prefix}-transactions"

    @property
    def pending(self) -> str:
        """The pending transfers (holds) alias."""
        return f"{self.prefix}-pending"

    def pending_version(self, version: int) -> str:
        assert version >= 1
        return f"{self.pending}-v{version}"

    @property
    def events(self) -> str:
        """The event log alias (one document per event)."""
        return f"{self.prefix}-events"

    def events_version(self, version: int) -> str:
        assert version >= 1
        return f"{self.events}-v{version}"

    @property
    def data_aliases(self) -> tuple[str, ...]:
        """Every data alias."""
        return (self.accounts, self.transactions, self.pending, self.events)

    def data_versions(self, version: int) -> tuple[tuple[str, str, dict[str, Any]], ...]:
        """(alias, concrete index, mapping) of each data index of ``version``."""
        return (
            (self.accounts, self.accounts_version(version), ACCOUNTS_MAPPING),
            (self.transactions, self.transactions_version(version), TRANSACTIONS_MAPPING),
            (self.pending, self.pending_version(version), PENDING_MAPPING),
            (self.events, self.events_version(version), EVENTS_MAPPING),
        )

    @property
    def projection(self) -> str:
        """The watermark index (one document per Kafka partition)."""
        return f"{self.prefix}-projection"

    def accounts_version(self, version: int) -> str:
        assert version >= 1
        return f"{self.accounts}-v{version}"

    def transactions_version(self, version: int) -> str:
        assert version >= 1
        return f"{self.transactions}-v{version}"

    def version_of(self, index: str) -> int | None:
        """The version number of a concrete data index of this prefix, else None."""
        for alias in self.data_aliases:
            match = re.fullmatch(re.escape(alias) + r"-v(\d+)", index)
            if match:
                return int(match.group(1))
        return None


def translate(error: Exception, action: str) -> Exception:
    """Maps an Elasticsearch client error to the read side's errors."""
    if isinstance(error, ApiError):
        status = error.meta.status if error.meta is not None else 0
        if status in (429, 502, 503, 504):
            return ReadModelUnavailable(f"{action}: Elasticsearch answered {status}: {error}")
        return ReadModelError(f"{action}: Elasticsearch answered {status}: {error}")
    if isinstance(error, TransportError):
        return ReadModelUnavailable(f"{action}: Elasticsearch unreachable: {error}")
    return error


def found_documents(docs: list[Any], action: str) -> dict[str, dict[str, Any]]:
    """The documents an ``mget`` found, by id; a per-document error raises ReadModelError."""
    found: dict[str, dict[str, Any]] = {}
    for doc in docs:
        if "error" in doc:
            raise ReadModelError(f"{action}: {doc['error']}")
        if doc.get("found"):
            found[doc["_id"]] = doc
    return found


def alias_targets(es: Elasticsearch, alias: str) -> list[str]:
    """The concrete indices ``alias`` points to (empty when the alias does not exist)."""
    try:
        response = es.options(ignore_status=404).indices.get_alias(name=alias)
    except (ApiError, TransportError) as error:
        raise translate(error, f"reading alias {alias}") from error
    if response.meta.status == 404:
        return []
    return sorted(index for index in response.body if index != "error")


def current_version(es: Elasticsearch, names: IndexNames) -> int | None:
    """The version the accounts alias points to, or None before ``ensure_indices``."""
    targets = alias_targets(es, names.accounts)
    versions = [v for v in (names.version_of(index) for index in targets) if v is not None]
    return max(versions) if versions else None


def create_data_indices(
    es: Elasticsearch, names: IndexNames, version: int, *, refresh_interval: str
) -> None:
    """Creates the data indices of ``version`` without aliases."""
    for _, index, mapping in names.data_versions(version):
        try:
            es.indices.create(
                index=index,
                mappings=mapping,
                settings=index_settings(refresh_interval=refresh_interval),
            )
        except (ApiError, TransportError) as error:
            raise translate(error, f"creating index {index}") from error


def _create_if_missing(es: Elasticsearch, index: str, **body: Any) -> None:
    try:
        es.options(ignore_status=400).indices.create(index=index, **body)
    except (ApiError, TransportError) as error:
        raise translate(error, f"creating index {index}") from error
    # 400 is "already exists" (another process won the race); anything else must exist now.
    if not es.indices.exists(index=index):
        raise ReadModelError(f"index {index} could not be created")


def ensure_indices(es: Elasticsearch, names: IndexNames) -> int:
    """Creates version 1 of the data indices with their aliases, and the watermark index,
    when missing. Safe to call concurrently and repeatedly.

    Returns:
        The version the aliases point to.
    """
    _create_if_missing(es, names.projection, mappings=PROJECTION_MAPPING, settings=index_settings())
    version = current_version(es, names)
    existing = version is not None
    # An upgrade in place: the aliases' version gains the indices added since (the holds').
    for alias, index, mapping in names.data_versions(version or 1):
        if existing and alias_targets(es, alias):
            continue
        _create_if_missing(
            es,
            index,
            mappings=mapping,
            settings=index_settings(),
            aliases={alias: {"is_write_index": True}},
        )
    if existing:
        add_new_fields(es, names)
    version = current_version(es, names)
    assert version is not None, "aliases missing right after creating them"
    return version


def add_new_fields(es: Elasticsearch, names: IndexNames) -> None:
    """Adds the fields the mappings gained since the aliases' indices were created.

    The mappings are strict, so a document with a field its index does not map is
    refused: without this, a projector upgraded in place could not write the new field
    (e.g. a statement line's ``principal``) into the indices an older version created.
    Adding a field is the one change a mapping accepts in place; putting the fields
    that already exist, unchanged, is a no-op, and changing one is refused loudly.
    """
    for alias, _, mapping in names.data_versions(1):
        try:
            es.indices.put_mapping(index=alias, properties=mapping["properties"])
        except (ApiError, TransportError) as error:
            raise translate(error, f"adding new fields to {alias}") from error


def swap_aliases(es: Elasticsearch, names: IndexNames, new_version: int) -> list[str]:
    """Points every data alias at ``new_version`` in one atomic ``_aliases`` call.

    Returns:
        The indices the aliases pointed to before (to delete or keep).
    """
    actions: list[dict[str, Any]] = []
    previous: list[str] = []
    for alias, index, _ in names.data_versions(new_version):
        for old in alias_targets(es, alias):
            if old != index:
                previous.append(old)
                actions.append({"remove": {"index": old, "alias": alias}})
        actions.append({"add": {"index": index, "alias": alias, "is_write_index": True}})
    try:
        es.indices.update_aliases(actions=actions)
    except (ApiError, TransportError) as error:
        raise translate(error, "swapping aliases") from error
    return previous
