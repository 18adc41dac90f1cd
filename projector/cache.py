"""The account documents this projector wrote last, so most batches fold without a read."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from chronos.read_model.documents import AccountDocument


class DocumentCache:
    """Account documents as this process last wrote them, least recently used first out.

    A cached document is used only when the batch's first event of its account is the very
    next version (``version + 1``). Folding is deterministic, so the cached state then
    equals the stored one, even after a rebuild swapped the index (same events, same
    documents). Anything else (a redelivery, a gap, an account never seen) is read from
    Elasticsearch as before.
    """

    def __init__(self, size_max: int) -> None:
        self._size_max = size_max
        self._documents: OrderedDict[str, AccountDocument] = OrderedDict()

    def continuing(
        self, first_versions: dict[str, int]
    ) -> tuple[dict[str, AccountDocument | None], list[str]]:
        """Splits accounts into those with a usable cached document and the rest.

        Args:
            first_versions: Each account's first stream version in the batch.

        Returns:
            The usable documents by account, and the accounts to read.
        """
        found: dict[str, AccountDocument | None] = {}
        missing: list[str] = []
        for account_id, version in first_versions.items():
            document = self._documents.get(account_id)
            if document is not None and document.version + 1 == version:
                found[account_id] = document
            else:
                missing.append(account_id)
        return found, missing

    def remember(self, documents: Iterable[AccountDocument]) -> None:
        """Keeps ``documents`` as the newest states, dropping the least recently used
        beyond the size limit."""
        for document in documents:
            self._documents[document.account_id] = document
            self._documents.move_to_end(document.account_id)
        while len(self._documents) > self._size_max:
            self._documents.popitem(last=False)

    def clear(self) -> None:
        """Forgets everything (another process may have written these accounts)."""
        self._documents.clear()
