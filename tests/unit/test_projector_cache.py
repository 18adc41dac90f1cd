"""The projector's document cache: used only for the very next version, and bounded."""

from __future__ import annotations

from dataclasses import replace

from chronos.read_model.documents import AccountDocument
from projector.cache import DocumentCache


def document(account_id: str, version: int) -> AccountDocument:
    return AccountDocument(
        account_id=account_id,
        owner_name="Ada",
        currency="EUR",
        balance_minor=100 * version,
        overdraft_limit_minor=0,
        status="ACTIVE",
        kind="USER",
        version=version,
        last_position=version,
        opened_at="2026-11-30T00:00:00.000000Z",
        updated_at="2026-11-30T00:00:00.000000Z",
    )


def test_only_the_next_version_is_served_from_the_cache() -> None:
    cache = DocumentCache(10)
    cache.remember([document("a", 3), document("b", 5)])
    found, missing = cache.continuing({"a": 4, "b": 5, "c": 1})
    assert found == {"a": document("a", 3)}
    # b: a redelivery (5 is not after 5); c: never seen. Both are read from the index.
    assert missing == ["b", "c"]


def test_a_later_document_replaces_the_earlier_one() -> None:
    cache = DocumentCache(10)
    cache.remember([document("a", 3)])
    cache.remember([replace(document("a", 4), balance_minor=7)])
    found, missing = cache.continuing({"a": 5})
    assert found["a"].balance_minor == 7 and missing == []
    assert cache.continuing({"a": 4}) == ({}, ["a"])


def test_the_least_recently_written_documents_leave_first() -> None:
    cache = DocumentCache(2)
    cache.remember([document("a", 1), document("b", 1)])
    cache.remember([document("a", 2)])
    cache.remember([document("c", 1)])
    found, missing = cache.continuing({"a": 3, "b": 2, "c": 2})
    assert set(found) == {"a", "c"} and missing == ["b"]


def test_clear_sends_reads_back_to_the_index() -> None:
    cache = DocumentCache(10)
    cache.remember([document("a", 1), document("b", 1)])
    assert cache.continuing({"b": 2}) == ({"b": document("b", 1)}, [])
    cache.clear()
    assert cache.continuing({"b": 2}) == ({}, ["b"])


def test_a_zero_size_cache_keeps_nothing() -> None:
    cache = DocumentCache(0)
    cache.remember([document("a", 1)])
    assert cache.continuing({"a": 2}) == ({}, ["a"])
