"""gpt2np/training_data.py: a data file to one token stream, the stream to seeded windows.

- Text: documents at blank lines, eos between them (not before the first, not after the last);
  JSONL: one field a line; llm.c's token file read as written by llmc.write_tokens.
- The batcher: every window once an epoch, each epoch its own seeded order; a batcher rebuilt
  from a saved (epoch, index) gives the very batches the first one would have given next.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpt2np import InputError, Tokenizer
from gpt2np.llmc import write_tokens
from gpt2np.training_data import Batcher, load_tokens, n_windows, split, validation_batches


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_pretrained("gpt2")


def test_documents_are_joined_with_eos_between_them(tok, tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("First line\nof one.\n\n\n  \nSecond.\n\nThird one.\n")
    tokens = load_tokens(path, tok, 50257)
    eos = tok.eos_token_id
    expected = tok.encode("First line of one.") + [eos] + tok.encode("Second.") + [eos] + tok.encode("Third one.")
    assert tokens.tolist() == expected


def test_a_jsonl_field(tok, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["A b.", "C d."])) + "\n")
    assert load_tokens(path, tok, 50257, jsonl_field="text").tolist() == tok.encode("A b.") + [
        tok.eos_token_id
    ] + tok.encode("C d.")
    with pytest.raises(InputError, match="line 1: no text in field 'body'"):
        load_tokens(path, tok, 50257, jsonl_field="body")
    path.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(InputError, match="line 2: not valid JSON"):
        load_tokens(path, tok, 50257, jsonl_field="text")


def test_an_llmc_token_file(tmp_path):
    ids = np.random.default_rng(0).integers(0, 50257, size=100)
    write_tokens(tmp_path / "d.bin", ids)
    assert load_tokens(tmp_path / "d.bin", None, 50257).tolist() == ids.tolist()
    (tmp_path / "cut.bin").write_bytes((tmp_path / "d.bin").read_bytes()[:-3])
    with pytest.raises(InputError, match="truncated or damaged"):
        load_tokens(tmp_path / "cut.bin", None, 50257)


def test_every_window_once_an_epoch_in_a_seeded_order():
    tokens = np.arange(41)  # windows of T=4: 10 of them (tokens 0..4, 4..8, ..., 36..40)
    assert n_windows(tokens, 4) == 10
    b = Batcher(tokens, seq_len=4, seed=0)
    firsts = [b.next_batch(2)[0][:, 0] // 4 for _ in range(5)]  # each row's window number
    epoch0 = np.concatenate(firsts)
    assert sorted(epoch0.tolist()) == list(range(10))  # each window once
    x, y = b.next_batch(2)
    assert np.array_equal(y, x + 1)  # the targets are the inputs shifted by one token
    assert b.position == {"epoch": 1, "index": 2}
    assert not np.array_equal(b.order(0), b.order(1))  # each epoch its own order
    assert np.array_equal(Batcher(tokens, 4, seed=0).order(0), b.order(0))  # the same seed, the same order
    assert not np.array_equal(Batcher(tokens, 4, seed=1).order(0), b.order(0))


def test_a_batcher_rebuilt_from_its_position_goes_on_the_same():
    tokens = np.arange(101)
    a = Batcher(tokens, seq_len=5, seed=3)
    for _ in range(7):
        a.next_batch(3)  # 21 windows: past the first epoch of 20
    b = Batcher(tokens, seq_len=5, seed=3, **a.position)
    for _ in range(10):
        xa, _ = a.next_batch(3)
        xb, _ = b.next_batch(3)
        assert np.array_equal(xa, xb)


def test_the_validation_part_is_the_end_in_order():
    tokens = np.arange(100)
    train, val = split(tokens, 0.2, seq_len=9)
    assert train.tolist() == list(range(80)) and val.tolist() == list(range(80, 100))
    batches = validation_batches(val, 9, batch_size=1, max_batches=5)
    assert [b[0, 0] for b in batches] == [80, 89]  # (20 - 1) // 9 = 2 windows, in order
    with pytest.raises(InputError, match="shorter than one sequence"):
        split(np.arange(10), 0.0, seq_len=10)
