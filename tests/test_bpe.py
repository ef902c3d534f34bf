"""gpt2np.bpe, GPT-2's tokenizer written out in plain Python, against the `tokenizers` library
(what gpt2np's Tokenizer runs): the same ids for every text, id for id."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt2np import InputError, Tokenizer
from gpt2np.bpe import BPE, bytes_to_unicode, split_words

SAMPLES = [
    "It will rain in the",
    "I want to eat a big bowl of",
    "My dog is",
    "Hello, world! How's it going? I'm fine; you'll see, we'd've known.",
    "don't DON'T 's 'S ''s it's",
    "  leading spaces, trailing spaces   ",
    "tabs\tand\nnewlines\n\nand\r\nwindows lines\n",
    "a  b   c    d\n \n  \n",
    "numbers: 3.14159, 1,000,000 and 2026-12-03; 12345678901234567890",
    "Ünïcödé àccents: café naïve façade Ærøskøbing Straße",
    "CJK: 日本語のテキスト 中文文本 한국어 텍스트",
    "emoji: 🙂👍🏽 👨‍👩‍👧 and flags 🇫🇷",
    "math ∑ x² ≤ ∞, ½ + ¼ = ¾, Ⅻ o'clock",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "punctuation runs!!! ... ?!?! --- (((nested))) [x] {y} <z> @#$%^&*",
    "non-breaking\u00a0space, em\u2003space, ideographic\u3000space, separators\x1c\x1f end, \x1c. \x1c\x1c.",
    "code: def f(x): return x**2  # comment\n    if x != 0:\n        pass",
    "mixed123abc 123abc abc123 a1b2c3",
    "",
    " ",
    "\n",
]

_bpe: BPE | None = None
_tok: Tokenizer | None = None


def ours(text: str) -> list[int]:
    global _bpe
    _bpe = _bpe or BPE.gpt2()
    return _bpe.encode(text)


def theirs(text: str) -> list[int]:
    global _tok
    _tok = _tok or Tokenizer.from_pretrained("gpt2")
    return _tok.encode(text)


@pytest.mark.parametrize("text", SAMPLES)
def test_the_same_ids_as_tokenizers(text):
    assert ours(text) == theirs(text)


# Any text of characters this Python's Unicode database knows: not lone surrogates (Cs, not text:
# the Tokenizer refuses them), nor code points unassigned here (Cn) that a newer Unicode gives a
# letter (U+13460, assigned in Unicode 16, is a letter to `tokenizers`, unknown to Python 3.11's
# Unicode 14 tables): bpe.py can only be as new as the interpreter's unicodedata.
ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cn")), max_size=40)


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_the_same_ids_as_tokenizers_on_any_text(text):
    assert ours(text) == theirs(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=" \t\n\xa0'sltdmrevAa1.!é日", max_size=30))
def test_the_same_ids_on_the_tricky_characters(text):
    """Runs of spaces of every kind, contractions, and letters, numbers and punctuation side by side."""
    assert ours(text) == theirs(text)


def their_words(text: str) -> list[str]:
    """The words of `tokenizers`' own GPT-2 pre-tokenizer (spelled in bytes_to_unicode's characters)."""
    from tokenizers.pre_tokenizers import ByteLevel

    return [word for word, _ in ByteLevel(add_prefix_space=False, use_regex=True).pre_tokenize_str(text)]


def our_words(text: str) -> list[str]:
    table = bytes_to_unicode()
    return ["".join(table[b] for b in word.encode("utf-8")) for word in split_words(text)]


@pytest.mark.parametrize("text", SAMPLES)
def test_the_same_words_as_tokenizers_pre_tokenizer(text):
    """The word boundaries themselves, not only the ids: a boundary in the wrong place often
    gives the same ids (no merge spans it), so the ids alone would not show it."""
    assert our_words(text) == their_words(text)


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_the_same_words_on_any_text(text):
    assert our_words(text) == their_words(text)


def test_the_seed_sentences_merge_as_shown():
    """The worked example: ' rain' is one token, 6290, reached from its 5 bytes."""
    steps = BPE.gpt2().merge_steps(" rain")
    assert steps[0] == ["Ġ", "r", "a", "i", "n"] and steps[-1] == ["Ġrain"]
    assert split_words("It will rain in the") == ["It", " will", " rain", " in", " the"]


def test_every_byte_has_its_own_printable_character():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256 and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"
    assert all(c.isprintable() and not c.isspace() for c in table.values())


def test_not_a_string_is_our_error():
    with pytest.raises(InputError, match="needs a str"):
        BPE.gpt2().encode(b"bytes")  # type: ignore[arg-type]
