"""Stop strings on GPT-2's real tokenizer: across tokens, inside the last token, not before it,
in bytes; then against transformers' StopStringCriteria on random token sequences (live)."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2np import Tokenizer
from gpt2np.stopping import StopStrings, byte_decoder, token_bytes


@pytest.fixture(scope="module")
def vocab_bytes(tokenizer):
    return token_bytes(tokenizer, tokenizer.vocab_size)


def ids(tokenizer, *pieces):
    """Token ids of these pieces, each one GPT-2 token (checked)."""
    out = []
    for p in pieces:
        (token,) = tokenizer.encode(p)
        out.append(token)
    return np.array([out])


def test_byte_decoder_is_gpt2s_alphabet(tokenizer, vocab_bytes):
    d = byte_decoder()
    assert len(d) == 256 and sorted(d.values()) == list(range(256))
    assert d["Ġ"] == ord(" ") and d["Ċ"] == ord("\n") and d["A"] == ord("A")
    assert vocab_bytes[tokenizer.eos_token_id] == b"<|endoftext|>"
    for i in (262, 1026, 3290, 13, 198):  # " the", "It", " dog", ".", "\n"
        assert vocab_bytes[i] == tokenizer.decode([i]).encode("utf-8")


def test_a_string_across_tokens_and_inside_the_last_token(tokenizer):
    stop = StopStrings(["dog is"], tokenizer, tokenizer.vocab_size)
    assert stop(ids(tokenizer, "My", " dog", " is")).tolist() == [True]  # across two tokens, ending with the last
    assert stop(ids(tokenizer, "My", " dog", " island")).tolist() == [True]  # ends inside the last token
    assert stop(ids(tokenizer, "My", " dog", " is", " big")).tolist() == [False]  # ended before the last token
    assert stop(ids(tokenizer, "My", " cat", " is")).tolist() == [False]


def test_a_string_inside_a_single_token_and_the_boundary_byte(tokenizer):
    stop = StopStrings(["and"], tokenizer, tokenizer.vocab_size)
    assert stop(ids(tokenizer, "It", " island")).tolist() == [True]  # "and" inside the last token
    stop = StopStrings(["t i"], tokenizer, tokenizer.vocab_size)
    # "It" + " is": the string starts at the last byte of "It" and ends in " is"
    assert stop(ids(tokenizer, "It", " is")).tolist() == [True]
    assert stop(ids(tokenizer, "It", " was")).tolist() == [False]


def test_bytes_of_a_character_split_across_tokens(tokenizer):
    """An emoji is 4 UTF-8 bytes; GPT-2 splits some across tokens. The string matches the bytes."""
    text = "I 🤗"
    tokens = np.array([tokenizer.encode(text)])
    assert tokenizer.decode(tokens[0, :-1]).endswith("\ufffd")  # the last token completes the character
    stop = StopStrings(["🤗"], tokenizer, tokenizer.vocab_size)
    assert stop(tokens).tolist() == [True]
    assert stop(tokens[:, :-1]).tolist() == [False]


def test_several_rows_and_strings(tokenizer_dir):
    """Each row on its own: a left-padded batch whose pads (eos) are text too, as in transformers."""
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    tokenizer.padding_side, tokenizer.pad_token = "left", tokenizer.eos_token
    stop = StopStrings(["\n\n", "The end"], tokenizer, tokenizer.vocab_size)
    rows = tokenizer(["a b.\n\n", "x y The end", "The end is x", "end"], padding=True)["input_ids"]
    assert stop(rows).tolist() == [True, True, False, False]
    assert StopStrings(["|>end"], tokenizer, tokenizer.vocab_size)(rows).tolist() == [False, False, False, True]


# --- against transformers, live ----------------------------------------------------------


def test_stop_strings_match_transformers(transformers, tokenizer, tokenizer_dir):
    """Random sequences of tokens made of few characters, so stop strings really occur
    there, across tokens, in the middle of tokens, and not at the end."""
    import torch
    from transformers.generation.stopping_criteria import StopStringCriteria

    hf_tok = transformers.GPT2Tokenizer.from_pretrained(str(tokenizer_dir))
    small = [
        i for i in range(tokenizer.vocab_size) if set(tokenizer.decode([i])) <= set(" ab")
    ]  # ' a', 'ab', 'bb', ...
    assert len(small) > 10
    rng = np.random.default_rng(3)
    seqs = rng.choice(small, size=(400, 6))
    strings = ["aba", " b", "bbb a", "aaaaaaaa"]
    ours = StopStrings(strings, tokenizer, tokenizer.vocab_size)(seqs)
    theirs = StopStringCriteria(hf_tok, strings)(torch.tensor(seqs), None).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert 40 < ours.sum() < 360  # both outcomes are well represented
