"""Attention, the NaN that -inf masks produce for left-pad queries, and how it spreads."""

from __future__ import annotations

import numpy as np
import pytest

import gpt2np.model
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS
from gpt2np import GPT2
from gpt2np.attention import attention, merge_heads, split_heads
from gpt2np.masks import AttentionMask, build_attention_mask

rng = np.random.default_rng(0)


def qkv(B=3, H=2, T=8, D=4):
    return [rng.standard_normal((B, H, T, D)).astype(np.float32) for _ in range(3)]


def test_split_and_merge_heads_are_inverse_views():
    x = rng.standard_normal((2, 5, 12)).astype(np.float32)
    heads = split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    assert np.shares_memory(heads, x)  # a view: no copy
    np.testing.assert_array_equal(heads[:, 1], x[:, :, 4:8])  # head 1 is the second slice of 4
    np.testing.assert_array_equal(merge_heads(heads), x)


def test_attention_matches_a_loop_over_heads():
    q, k, v = qkv()
    mask = build_attention_mask(SEED_ATTENTION_MASK, 8, float("-inf"), np.float32)
    out, probs = attention(q, k, v, mask, scale=0.5)
    for b in range(3):
        for h in range(2):
            for i in range(8):
                keys = [j for j in range(i + 1) if SEED_ATTENTION_MASK[b, j]]
                if not keys:  # a pad query: nothing to attend to, defined as zero
                    assert (probs[b, h, i] == 0).all() and (out[b, h, i] == 0).all()
                    continue
                s = np.array([q[b, h, i].astype(np.float64) @ k[b, h, j] * 0.5 for j in keys])
                w = np.exp(s - s.max())
                w /= w.sum()
                np.testing.assert_allclose(probs[b, h, i, keys], w, rtol=1e-5)
                np.testing.assert_allclose(out[b, h, i], w @ v[b, h, keys], rtol=1e-5, atol=1e-6)
                assert probs[b, h, i].sum() == pytest.approx(1, abs=1e-6)


def test_without_the_guard_minus_inf_gives_nan_that_spreads_to_real_tokens():
    """Two attention layers, the raw way: pad queries get NaN in layer 1; in layer 2 a real
    token gives that pad's value weight 0, and 0 * NaN = NaN."""
    q, k, v = qkv()
    mask = build_attention_mask(SEED_ATTENTION_MASK, 8, float("-inf"), np.float32)
    raw = AttentionMask(mask.additive, empty_rows=None)  # the guard switched off
    real = SEED_ATTENTION_MASK.astype(bool)
    with np.errstate(invalid="ignore"):
        out1, probs1 = attention(q, k, v, raw, 0.5)
    assert np.isnan(probs1[~real[:, None, :].repeat(2, 1)]).all()  # every pad query row
    assert not np.isnan(out1.transpose(0, 2, 1, 3)[real]).any()  # layer 1: real tokens still fine
    with np.errstate(invalid="ignore"):
        out2, _ = attention(q, k, out1, raw, 0.5)  # layer 2 reads layer 1's outputs as values
    assert np.isnan(out2.transpose(0, 2, 1, 3)[real]).any()  # ...and now real tokens are NaN too
    # rows 0 and 2 have pads; row 1 has none and stays clean
    assert np.isnan(out2[0]).any() and np.isnan(out2[2]).any() and not np.isnan(out2[1]).any()
    # with the guard, nothing is NaN
    out1, _ = attention(q, k, v, mask, 0.5)
    out2, _ = attention(q, k, out1, mask, 0.5)
    assert np.isfinite(out2).all()


def test_the_models_raw_nan_and_its_handling(model_dir, monkeypatch):
    """Through the whole model: with the guard removed, -inf turns real-token logits into NaN
    while -1e9 and min do not; with the guard, every fill gives the same real-token logits."""
    folder = model_dir("tiny")
    real = SEED_ATTENTION_MASK.astype(bool)
    guarded = {f: GPT2.from_pretrained(folder, mask_fill=f)(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK).logits
               for f in ("-inf", "-1e9", "min")}  # fmt: skip
    for logits in guarded.values():
        assert np.isfinite(logits).all()
        np.testing.assert_array_equal(logits[real], guarded["min"][real])  # bit for bit

    def without_guard(*args):
        return AttentionMask(build_attention_mask(*args).additive, empty_rows=None)

    monkeypatch.setattr(gpt2np.model, "build_attention_mask", without_guard)
    with np.errstate(invalid="ignore"):
        raw = GPT2.from_pretrained(folder, mask_fill="-inf")(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK).logits
    assert np.isnan(raw[0][real[0]]).all() and np.isnan(raw[2][real[2]]).all()  # padded rows: NaN everywhere
    assert np.isfinite(raw[1]).all()  # the unpadded row is untouched
    for fill in ("-1e9", "min"):  # finite fills never make NaN: pad rows are just uniform
        logits = GPT2.from_pretrained(folder, mask_fill=fill)(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK).logits
        np.testing.assert_array_equal(logits[real], guarded["min"][real])
