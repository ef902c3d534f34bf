"""The additive attention mask and the position ids of a left-padded batch."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK

from gpt2np.errors import InputError
from gpt2np.masks import build_attention_mask, position_ids_from_mask, resolve_fill


def allowed_by_definition(key_mask, n_queries):
    """Brute force: query i (absolute index offset + i) may see key j iff j <= that index and
    key j is a real token."""
    B, Tk = key_mask.shape
    offset = Tk - n_queries
    allowed = np.zeros((B, 1, n_queries, Tk), dtype=bool)
    for b in range(B):
        for i in range(n_queries):
            for j in range(Tk):
                allowed[b, 0, i, j] = j <= offset + i and key_mask[b, j] == 1
    return allowed


@pytest.mark.parametrize("n_queries", [8, 3, 1])  # whole prompt, a chunk after a cache, one decode step
@pytest.mark.parametrize("fill", ["-inf", "-1e9", "min", -30000.0])
def test_mask_is_padding_and_causal(fill, n_queries):
    value = resolve_fill(fill, np.float32)
    mask = build_attention_mask(SEED_ATTENTION_MASK, n_queries, value, np.float32)
    allowed = allowed_by_definition(SEED_ATTENTION_MASK, n_queries)
    assert mask.additive.shape == (3, 1, n_queries, 8) and mask.additive.dtype == np.float32
    assert (mask.additive[allowed] == 0).all()
    # every forbidden cell holds the fill exactly once: a pad in the future is not "masked
    # twice" into -inf (finfo.min + finfo.min would overflow)
    assert (mask.additive[~allowed] == np.float32(value)).all()
    empty = ~allowed.any(axis=-1, keepdims=True)
    if empty.any():
        np.testing.assert_array_equal(mask.empty_rows, empty)
    else:
        assert mask.empty_rows is None


def test_empty_rows_are_exactly_the_left_pad_queries():
    mask = build_attention_mask(SEED_ATTENTION_MASK, 8, float("-inf"), np.float32)
    np.testing.assert_array_equal(mask.empty_rows[:, 0, :, 0], SEED_ATTENTION_MASK == 0)


def test_position_ids_count_only_real_tokens():
    positions = position_ids_from_mask(SEED_ATTENTION_MASK)
    for b, row in enumerate(SEED_ATTENTION_MASK):
        seen = 0
        for t, real in enumerate(row):
            if real:
                assert positions[b, t] == seen
                seen += 1
            else:
                assert positions[b, t] == 0
    # each sentence starts at position 0, as it would alone
    firsts = SEED_ATTENTION_MASK.argmax(axis=1)
    assert (positions[np.arange(3), firsts] == 0).all()


def test_position_ids_without_padding_are_arange():
    np.testing.assert_array_equal(
        position_ids_from_mask(np.ones((2, 6), dtype=np.int64)), np.tile(np.arange(6), (2, 1))
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fill_values(dtype):
    assert resolve_fill("-inf", dtype) == float("-inf")
    assert resolve_fill("-1e9", dtype) == -1e9
    assert resolve_fill("min", dtype) == float(np.finfo(dtype).min)
    assert resolve_fill(-5.0, dtype) == -5.0


@pytest.mark.parametrize("bad", ["+inf", "inf", "max", "", 0, 0.0, 3.0, float("nan"), None, True, "-1e9 "])
def test_bad_fills_are_refused(bad):
    with pytest.raises(InputError, match="mask_fill"):
        resolve_fill(bad, np.float32)


def test_fill_that_overflows_float32_is_refused():
    with pytest.raises(InputError, match="does not fit in float32"):
        resolve_fill(-1e40, np.float32)
    assert resolve_fill(-1e40, np.float64) == -1e40
