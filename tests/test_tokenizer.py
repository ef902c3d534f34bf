"""GPT-2's tokenizer: the published facts, padding, decoding, errors, and parity with transformers.

The tokenizer is the package's own copy of GPT-2's files (gpt2np/tokenizer_files/); parity is checked live against
transformers' GPT2Tokenizer loaded from the same files (skipped locally without transformers,
a failure in CI).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS, SEED_SENTENCES

from gpt2np import BatchEncoding, CheckpointError, InputError, Tokenizer

TRICKY = [
    "Hello world",
    " leading space",
    "trailing space ",
    "  two leading spaces",
    "multiple   inner    spaces",
    "It will rain in the",
    "don't won't I'm they've we'll she'd it's DON'T",
    "tabs\tand\nnewlines\r\nand\n\n\nblank lines",
    "<|endoftext|>",
    "before<|endoftext|>after",
    "<|endoftext|><|endoftext|> twice",
    "<|endoftext",  # not the special token
    "emoji 🤖🎉👩‍👩‍👧 and flags 🇫🇷",
    "ünïcödé àçcénts, ß, Ω, Ж, 中文字符, 日本語, 한국어, العربية",
    "zero\u200bwidth and non\u00a0breaking",
    "numbers 3.14159 and 1,000,000 and 2024-01-01",
    "code: def f(x):\n    return x**2  # comment",
    "URL https://example.com/a?b=c&d=e#f",
    "\u0000 control \u0007 chars \x7f",
    "a" * 300,
    "   ",
    "\n",
]


# --- published facts and defaults --------------------------------------------------------


@pytest.mark.parametrize(
    "text, ids",
    [
        ("It will rain in the", [1026, 481, 6290, 287, 262]),
        ("I want to eat a big bowl of", [40, 765, 284, 4483, 257, 1263, 9396, 286]),
        ("My dog is", [3666, 3290, 318]),
        ("<|endoftext|>", [50256]),
    ],
)
def test_the_readme_facts(tokenizer, text, ids):
    assert tokenizer.encode(text) == ids
    assert tokenizer(text)["input_ids"].tolist() == [ids]
    assert tokenizer.decode(ids) == text


def test_defaults_are_transformers_gpt2_defaults(tokenizer_dir):
    tok = Tokenizer.from_pretrained(tokenizer_dir)  # a fresh one: the session fixture may be modified
    assert tok.eos_token == tok.bos_token == "<|endoftext|>"
    assert tok.eos_token_id == tok.bos_token_id == 50256
    assert tok.pad_token is None and tok.pad_token_id is None  # GPT-2 has no pad token
    assert tok.padding_side == "right"
    assert tok.vocab_size == len(tok) == 50257
    assert tok.encode("Hello")[0] != 50256  # no BOS added
    batch = tok("Hello")
    assert batch["attention_mask"].tolist() == [[1]]


@pytest.fixture
def tok(tokenizer):
    """The session's tokenizer; tests change padding_side / pad_token, so they are put back."""
    saved = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side, tokenizer.pad_token = "right", None
    yield tokenizer
    tokenizer.padding_side, tokenizer.pad_token = saved


@pytest.fixture
def gen_tok(tok):
    tok.padding_side, tok.pad_token = "left", tok.eos_token
    return tok


def test_the_seed_batch_left_padded(gen_tok):
    batch = gen_tok(SEED_SENTENCES, padding=True)
    assert isinstance(batch, BatchEncoding)
    expected = [[50256, 50256, 50256, 1026, 481, 6290, 287, 262],
                [40, 765, 284, 4483, 257, 1263, 9396, 286],
                [50256, 50256, 50256, 50256, 50256, 3666, 3290, 318]]  # fmt: skip
    assert batch["input_ids"].tolist() == expected == SEED_INPUT_IDS.tolist()
    assert batch["attention_mask"].tolist() == [[0, 0, 0, 1, 1, 1, 1, 1], [1] * 8, [0, 0, 0, 0, 0, 1, 1, 1]]
    np.testing.assert_array_equal(batch.attention_mask, SEED_ATTENTION_MASK)
    assert batch.input_ids.dtype == batch.attention_mask.dtype == np.int64


def test_right_padding(tok):
    tok.pad_token = tok.eos_token
    batch = tok(SEED_SENTENCES, padding=True)
    assert batch["input_ids"].tolist()[2] == [3666, 3290, 318] + [50256] * 5
    assert batch["attention_mask"].tolist()[0] == [1, 1, 1, 1, 1, 0, 0, 0]


@pytest.mark.parametrize("padding", [True, "longest"])
def test_padding_true_is_longest(gen_tok, padding):
    np.testing.assert_array_equal(gen_tok(SEED_SENTENCES, padding=padding)["input_ids"], SEED_INPUT_IDS)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_to_max_length(tok, side):
    tok.padding_side, tok.pad_token = side, tok.eos_token
    batch = tok(SEED_SENTENCES, padding="max_length", max_length=11)
    assert batch["input_ids"].shape == (3, 11)
    for row, mask, text in zip(batch["input_ids"], batch["attention_mask"], SEED_SENTENCES):
        real = row[mask == 1].tolist()
        assert real == tok.encode(text)
        assert (row[mask == 0] == 50256).all()
        n_pad = 11 - len(real)
        assert mask.tolist() == ([0] * n_pad + [1] * len(real) if side == "left" else [1] * len(real) + [0] * n_pad)
    assert tok(["x"], padding="max_length")["input_ids"].shape == (1, 1024)  # model_max_length by default


def test_max_length_padding_refuses_a_longer_text_unless_truncating(gen_tok):
    with pytest.raises(
        InputError, match="a text is longer than max_length=4 tokens; pass truncation=True or a larger max_length"
    ):
        gen_tok(SEED_SENTENCES, padding="max_length", max_length=4)
    batch = gen_tok(SEED_SENTENCES, padding="max_length", max_length=4, truncation=True)
    assert batch["input_ids"].tolist() == [[1026, 481, 6290, 287], [40, 765, 284, 4483], [50256, 3666, 3290, 318]]


def test_truncation_keeps_the_beginning(tok):
    assert tok(SEED_SENTENCES[:2], truncation=True, max_length=3)["input_ids"].tolist() == [
        [1026, 481, 6290],
        [40, 765, 284],
    ]
    long_text = "word " * 2000
    assert tok(long_text, truncation=True)["input_ids"].shape == (1, 1024)  # model_max_length


def test_equal_lengths_need_no_padding(tok):
    batch = tok(["It will rain", "My dog is"])
    assert batch["input_ids"].tolist() == [[1026, 481, 6290], [3666, 3290, 318]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 1]]


def test_an_empty_text_in_a_padded_batch_is_all_padding(gen_tok):
    batch = gen_tok(["", "My dog is"], padding=True)
    assert batch["input_ids"].tolist()[0] == [50256] * 3
    assert batch["attention_mask"].tolist()[0] == [0, 0, 0]


# --- errors ------------------------------------------------------------------------------


def test_ragged_texts_without_padding(tok):
    with pytest.raises(InputError, match=r"the texts have different lengths in tokens \(5, 8, 3\).*pass padding=True"):
        tok(SEED_SENTENCES)


@pytest.mark.parametrize("padding", [True, "longest", "max_length"])
def test_padding_without_a_pad_token(tok, padding):
    with pytest.raises(
        InputError,
        match=r"asked to pad, but the tokenizer has no pad token \(GPT-2 has none\); set tok.pad_token = tok.eos_token first",
    ):
        tok(SEED_SENTENCES, padding=padding, max_length=10)


@pytest.mark.parametrize("side", ["middle", "LEFT", "", None, 0])
def test_an_unknown_padding_side(tok, side):
    with pytest.raises(
        InputError, match=r"padding_side must be 'left' or 'right', got .* \(use 'left' for generation\)"
    ):
        tok.padding_side = side
    assert tok.padding_side == "right"  # unchanged


def test_a_pad_token_outside_the_vocabulary(tok):
    with pytest.raises(
        InputError,
        match="pad_token '<pad>' is not in the vocabulary; GPT-2 has no pad token, use tok.pad_token = tok.eos_token",
    ):
        tok.pad_token = "<pad>"
    assert tok.pad_token is None
    tok.pad_token = "!"  # any token of the vocabulary will do (id 0)
    assert tok.pad_token_id == 0


@pytest.mark.parametrize("padding", ["yes", "left", 1.5, "LONGEST"])
def test_an_unknown_padding_mode(gen_tok, padding):
    with pytest.raises(InputError, match="padding must be False, True, 'longest' or 'max_length'"):
        gen_tok(SEED_SENTENCES, padding=padding)


@pytest.mark.parametrize("max_length", [0, -1, 2.5, True, "8"])
def test_a_bad_max_length(gen_tok, max_length):
    with pytest.raises(InputError, match=f"max_length must be a positive integer, got {max_length!r}"):
        gen_tok(SEED_SENTENCES, padding="max_length", max_length=max_length)


@pytest.mark.parametrize("text", [None, 5, [], ["a", 5], b"bytes", [["nested"]], ("a", None)])
def test_text_that_is_not_strings(tok, text):
    with pytest.raises(InputError, match="the tokenizer takes a string or a non-empty list of strings"):
        tok(text)


@pytest.mark.parametrize("text", [None, 5, ["a"], b"a"])
def test_encode_takes_a_string(tok, text):
    with pytest.raises(InputError, match="encode takes a string, got"):
        tok.encode(text)


def test_a_lone_surrogate_is_refused_with_the_reason(tok):
    """json.loads('"\\ud83d"') is a str holding half of a UTF-16 pair: no UTF-8 bytes, so no tokens.
    The `tokenizers` library answers with a bare TypeError; we say what is wrong and where."""
    cut_emoji = json.loads('"emoji cut in half \\ud83d"')
    assert cut_emoji.endswith("\ud83d")  # the premise: a lone surrogate in a str
    with pytest.raises(InputError, match=r"the text holds a lone surrogate \('\\ud83d' at character 18\)"):
        tok.encode(cut_emoji)
    with pytest.raises(InputError, match=r"text 1 holds a lone surrogate"):
        tok(["fine", cut_emoji])
    with pytest.raises(InputError, match=r"the text holds a lone surrogate"):
        tok(cut_emoji)
    whole = json.loads('"emoji whole \\ud83d\\ude00"')  # a surrogate pair: one character, fine
    assert tok.encode(whole) == tok.encode("emoji whole \U0001f600")


@pytest.mark.parametrize(
    ("filename", "content"),
    [("vocab.json", '{"a": 1,'), ("vocab.json", "[1, 2]"), ("merges.txt", "#version: 0.2\nonly-one-piece\n")],
)
def test_malformed_vocab_or_merges_get_a_clear_error(tokenizer_dir, tmp_path, filename, content):
    folder = tmp_path / "tok"
    shutil.copytree(tokenizer_dir, folder)
    (folder / filename).write_text(content)
    with pytest.raises(CheckpointError, match=r"are not a readable vocab.json \+ merges.txt pair \(.+\); restore them"):
        Tokenizer.from_pretrained(folder, verify=False)


@pytest.mark.parametrize("content", ["[1, 2", "[]", "{}"])
def test_a_malformed_tokenizer_json_gets_a_clear_error(tmp_path, content):
    (tmp_path / "tokenizer.json").write_text(content)
    with pytest.raises(CheckpointError, match=r"tokenizer.json is not a readable tokenizer.json \(.+\); restore it"):
        Tokenizer.from_pretrained(tmp_path, verify=False)


def test_a_vocabulary_without_endoftext_is_refused(tmp_path):
    from tokenizers import Tokenizer as Backend
    from tokenizers import models

    backend = Backend(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    with pytest.raises(InputError, match=r"the vocabulary has no '<\|endoftext\|>' token; is this a GPT-2 tokenizer\?"):
        Tokenizer(backend)


# --- decoding ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", TRICKY)
def test_decode_inverts_encode(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_skip_special_tokens(tok):
    ids = tok.encode("<|endoftext|>My dog is<|endoftext|>")
    assert ids == [50256, 3666, 3290, 318, 50256]
    assert tok.decode(ids) == "<|endoftext|>My dog is<|endoftext|>"
    assert tok.decode(ids, skip_special_tokens=True) == "My dog is"


def test_batch_decode_of_the_seed_batch(tok):
    assert tok.batch_decode(SEED_INPUT_IDS, skip_special_tokens=True) == SEED_SENTENCES
    assert tok.batch_decode(SEED_INPUT_IDS)[2] == "<|endoftext|>" * 5 + "My dog is"
    assert tok.batch_decode([[3666, 3290, 318], [40]]) == ["My dog is", "I"]  # rows may be ragged lists


def test_decode_accepts_lists_and_integer_arrays(tok):
    for ids in (
        [3666, 3290, 318],
        np.array([3666, 3290, 318], dtype=np.int32),
        np.array([3666, 3290, 318], dtype=np.uint16),
    ):
        assert tok.decode(ids) == "My dog is"
    assert tok.decode([]) == "" and tok.decode(np.zeros(0, dtype=np.int64)) == ""


def test_decode_errors(tok):
    with pytest.raises(
        InputError, match=r"decode takes a 1-D sequence of token ids, got shape \[3, 8\].*use batch_decode for a batch"
    ):
        tok.decode(SEED_INPUT_IDS)
    with pytest.raises(InputError, match="decode takes a 1-D sequence of token ids, got shape \\[2\\] of float64"):
        tok.decode([1.0, 2.0])
    for bad in ([-1], [50257], [3666, 10**6]):
        with pytest.raises(InputError, match="decode got ids outside 0 .. 50256"):
            tok.decode(bad)


def test_convert_ids_to_tokens(tok):
    assert tok.convert_ids_to_tokens([1026, 481, 50256]) == ["It", "Ġwill", "<|endoftext|>"]  # Ġ: the space
    with pytest.raises(InputError, match="convert_ids_to_tokens got ids outside 0 .. 50256"):
        tok.convert_ids_to_tokens([50257])
    with pytest.raises(InputError, match="convert_ids_to_tokens takes a 1-D sequence"):
        tok.convert_ids_to_tokens([[1, 2]])


# --- tokenizer.json ----------------------------------------------------------------------


def test_tokenizer_json_gives_the_same_ids(tok, tokenizer_dir, tmp_path):
    folder = tmp_path / "json-only"
    folder.mkdir()
    tok.backend.save(str(folder / "tokenizer.json"))
    from_json = Tokenizer.from_pretrained(folder)
    for text in TRICKY:
        assert from_json.encode(text) == tok.encode(text), text
        assert from_json.decode(tok.encode(text)) == text
    from_json.padding_side, from_json.pad_token = "left", from_json.eos_token
    np.testing.assert_array_equal(from_json(SEED_SENTENCES, padding=True)["input_ids"], SEED_INPUT_IDS)


def test_a_tokenizer_json_with_padding_settings_does_not_pad_by_itself(tokenizer_dir, tmp_path):
    tok = Tokenizer.from_pretrained(tokenizer_dir)  # its own: the backend is changed below
    tok.backend.enable_padding(pad_id=50256, pad_token="<|endoftext|>", length=20)
    tok.backend.enable_truncation(max_length=2)
    tok.backend.save(str(tmp_path / "tokenizer.json"))
    tok.backend.no_padding()
    tok.backend.no_truncation()
    loaded = Tokenizer.from_tokenizer_json(tmp_path / "tokenizer.json")
    assert loaded.encode("It will rain in the") == [1026, 481, 6290, 287, 262]  # neither padded nor cut


def test_files_written_by_transformers_save_pretrained(transformers, tokenizer_dir, tmp_path):
    hf = transformers.GPT2Tokenizer.from_pretrained(str(tokenizer_dir))
    hf.save_pretrained(str(tmp_path / "saved"))
    saved = {p.name for p in (tmp_path / "saved").iterdir()}
    assert "tokenizer.json" in saved or {"vocab.json", "merges.txt"} <= saved
    if "tokenizer.json" in saved:
        (tmp_path / "json").mkdir()
        shutil.copy(tmp_path / "saved" / "tokenizer.json", tmp_path / "json" / "tokenizer.json")
        folders = [tmp_path / "saved", tmp_path / "json"]
    else:
        folders = [tmp_path / "saved"]
    reference = Tokenizer.from_pretrained(tokenizer_dir)
    for folder in folders:
        ours = Tokenizer.from_pretrained(folder)
        for text in TRICKY:
            assert ours.encode(text) == reference.encode(text), (folder.name, text)


# --- parity with transformers ------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_tokenizer(transformers, tokenizer_dir):
    return transformers.GPT2Tokenizer.from_pretrained(str(tokenizer_dir))


def test_transformers_defaults_agree(hf_tokenizer, tok):
    assert hf_tokenizer.padding_side == tok.padding_side == "right"
    assert hf_tokenizer.pad_token is None and tok.pad_token is None
    assert hf_tokenizer.eos_token_id == tok.eos_token_id == 50256
    assert len(hf_tokenizer) == len(tok)


@pytest.mark.parametrize("text", TRICKY)
def test_encode_and_decode_match_transformers(hf_tokenizer, tok, text):
    ids = hf_tokenizer(text)["input_ids"]
    assert tok.encode(text) == ids
    assert tok(text)["input_ids"].tolist() == [ids]
    for skip in (False, True):
        assert tok.decode(ids, skip_special_tokens=skip) == hf_tokenizer.decode(ids, skip_special_tokens=skip)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(padding=True),
        dict(padding="longest"),
        dict(padding="max_length", max_length=200),
        dict(padding=True, truncation=True, max_length=6),
        dict(padding="max_length", max_length=6, truncation=True),
    ],
)
def test_batches_match_transformers(hf_tokenizer, tok, side, kwargs):
    texts = TRICKY + SEED_SENTENCES
    hf_tokenizer.padding_side, hf_tokenizer.pad_token = side, hf_tokenizer.eos_token
    tok.padding_side, tok.pad_token = side, tok.eos_token
    try:
        expected = hf_tokenizer(texts, return_tensors="np", **kwargs)
    finally:
        hf_tokenizer.padding_side, hf_tokenizer.pad_token = "right", None
    ours = tok(texts, **kwargs)
    np.testing.assert_array_equal(ours["input_ids"], expected["input_ids"])
    np.testing.assert_array_equal(ours["attention_mask"], expected["attention_mask"])
    assert tok.batch_decode(ours["input_ids"], skip_special_tokens=True) == hf_tokenizer.batch_decode(
        expected["input_ids"], skip_special_tokens=True
    )
