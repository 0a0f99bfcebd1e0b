"""textsafe.escape_text, the one sanitizer: whatever a text holds, what is shown is one line with nothing
that steers a terminal, reorders a line or hides, and each odd character is visible as an escape."""

from __future__ import annotations

import unicodedata
from typing import Final

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.hostile import FORBIDDEN, FORGED, HOSTILE, raw_in

from rpcdaemon.textsafe import escape_text, is_safe

DANGEROUS_CATEGORIES: Final = ("Cc", "Cf", "Cs", "Zl", "Zp")
# Any code point (lone surrogates too: st.text leaves them out), often one of the hostile ones.
any_text = st.lists(st.characters(exclude_categories=()) | st.sampled_from(sorted(FORBIDDEN | {"\udc80"}))).map("".join)


@pytest.mark.parametrize("text", HOSTILE)
def test_every_hostile_text_is_one_visible_line(text: str) -> None:
    shown = escape_text(text)
    assert not raw_in(shown)
    assert len(shown.splitlines()) == 1
    assert shown.startswith("net-1\\")  # the odd part is there to see, as an escape
    assert shown.endswith(FORGED)


def test_the_escapes_are_pythons() -> None:
    assert escape_text("a\nb\r\t\x00\x1b[2J\x7f\x85\x9b") == r"a\nb\r\t\x00\x1b[2J\x7f\x85\x9b"
    assert escape_text("\u2028\u2029\u202e\u2066\u061c\u200b\ufeff\U000e0041") == \
        r"\u2028\u2029\u202e\u2066\u061c\u200b\ufeff\U000e0041"
    assert escape_text("\udc80") == r"\udc80"  # a lone surrogate (surrogateescape) could not even be written


@pytest.mark.parametrize("text", ["node-1", "café ✓ 東京", "a b\\nc", "\u00a0nbsp", "\ue000private", "😀", ""])
def test_harmless_text_is_left_as_it_is(text: str) -> None:
    assert escape_text(text) == text
    assert is_safe(text)


@given(any_text)
def test_any_text_comes_out_one_line_with_nothing_dangerous(text: str) -> None:
    shown = escape_text(text)
    assert not any(c in FORBIDDEN for c in shown)
    assert not any(unicodedata.category(c) in DANGEROUS_CATEGORIES for c in shown)
    assert len(shown.splitlines()) <= 1
    assert is_safe(shown)
    assert escape_text(shown) == shown  # escapes are plain ASCII: escaping twice changes nothing
    assert is_safe(text) == (shown == text)


@given(st.text(alphabet=st.characters(exclude_categories=DANGEROUS_CATEGORIES)))
def test_text_without_dangerous_characters_is_unchanged(text: str) -> None:
    assert escape_text(text) == text
