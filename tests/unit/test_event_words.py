"""The words an event-log document is searchable by, and a search text's words."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from chronos.read_model.event_documents import WORD_LENGTH_MAX, words


def test_words_are_case_folded_and_cut_at_punctuation_and_spaces() -> None:
    assert words("Rent, March (flat 3B); STRASSE Straße") == [
        "rent",
        "march",
        "flat",
        "3b",
        "strasse",
    ]


def test_ids_and_codes_with_inner_hyphens_stay_one_word() -> None:
    account = "A11CE000-0000-4000-8000-000000000001"
    assert words(f"{account} order A-17 under_score") == [
        account.lower(),
        "order",
        "a-17",
        "under_score",
    ]


def test_stray_hyphens_and_punctuation_alone_are_no_words() -> None:
    assert words("rent - march -- x-") == ["rent", "march", "x"]
    assert words(" -- !? ") == []


def test_each_word_once_in_order_of_first_occurrence() -> None:
    assert words("b a B c a") == ["b", "a", "c"]


def test_words_longer_than_any_search_text_are_left_out() -> None:
    longest = "x" * WORD_LENGTH_MAX
    assert words(f"{longest} {longest}y short") == [longest, "short"]


def test_letters_of_any_script_make_words() -> None:
    assert words("Zoë Ærøskøbing 東京") == ["zoë", "ærøskøbing", "東京"]


@settings(max_examples=500)
@given(st.text(alphabet=st.sampled_from("aZ9_-é東 \t.,-\u00a0½"), max_size=40))
def test_the_quick_path_cuts_as_the_regular_expression_does(text: str) -> None:
    # The definition: every maximal run of word characters with single inner hyphens.
    expected = dict.fromkeys(re.findall(r"\w+(?:-\w+)*", text.casefold()))
    assert words(text) == [word for word in expected if len(word) <= WORD_LENGTH_MAX]
