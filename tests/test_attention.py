"""Attention, the NaN that -inf masks produce for left-pad queries, and how it spreads."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS

import gpt2np.model
from gpt2np import GPT2, ModelError
from gpt2np.attention import attention, attention_in_blocks, merge_heads, split_heads
from gpt2np.layers import lm_head
from gpt2np.masks import AttentionMask, build_attention_mask, position_ids_from_mask

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
    guarded = {
        f: GPT2.from_pretrained(folder, mask_fill=f)(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK).logits
        for f in ("-inf", "-1e9", "min")
    }
    for logits in guarded.values():
        assert np.isfinite(logits).all()
        np.testing.assert_array_equal(logits[real], guarded["min"][real])  # bit for bit

    def without_guard(*args):
        return AttentionMask(build_attention_mask(*args).additive, empty_rows=None)

    monkeypatch.setattr(gpt2np.model, "build_attention_mask", without_guard)
    unguarded = GPT2.from_pretrained(folder, mask_fill="-inf")
    # The model refuses NaN logits, naming where the NaN began: a pad's all-masked softmax row.
    with pytest.raises(ModelError, match=r"non-finite at blocks\.0\.attn\.hook_pattern \(row 0, token 0 \(a pad\)\)"):
        unguarded(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK)
    with np.errstate(invalid="ignore"):  # the pass without that check, to watch the NaN spread
        hidden, _, _ = unguarded.transformer(
            SEED_INPUT_IDS, SEED_ATTENTION_MASK, position_ids_from_mask(SEED_ATTENTION_MASK)
        )
        raw = lm_head(hidden, unguarded.weights.lm_head)
    assert np.isnan(raw[0][real[0]]).all() and np.isnan(raw[2][real[2]]).all()  # padded rows: NaN everywhere
    assert np.isfinite(raw[1]).all()  # the unpadded row is untouched
    for fill in ("-1e9", "min"):  # finite fills never make NaN: pad rows are just uniform
        logits = GPT2.from_pretrained(folder, mask_fill=fill)(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK).logits
        np.testing.assert_array_equal(logits[real], guarded["min"][real])


# --- attention in blocks: the default path, with bounded memory --------------------------------


def block_inputs(B=3, H=2, Tq=8, Tk=8, D=4, fill=float("-inf"), seed=1):
    """q [B, H, Tq, D], k and v [B, H, Tk, D] (Tk > Tq: Tk - Tq cached keys) and the seed's
    padding mask stretched to Tk keys."""
    r = np.random.default_rng(seed)
    q = r.standard_normal((B, H, Tq, D)).astype(np.float32)
    k, v = (r.standard_normal((B, H, Tk, D)).astype(np.float32) for _ in range(2))
    pads = (np.arange(Tk)[None, :] >= np.array([3, 0, 5])[:B, None]).astype(np.int64)  # [B, Tk] left pads
    return q, k, v, build_attention_mask(pads, Tq, fill, np.float32)


@pytest.mark.parametrize("fill", [float("-inf"), -1e9, float(np.finfo(np.float32).min), -1.0])
@pytest.mark.parametrize("Tq,Tk", [(8, 8), (5, 12), (1, 9)])
@pytest.mark.parametrize("budget", [1, 7, 20, 50, 10_000])
def test_attention_in_blocks_equals_attention(fill, Tq, Tk, budget):
    """Every budget (1 = one query row per block), with pads, with cached keys, for every
    fill, including a leaky -1 (whose future weights are not 0, so nothing may be skipped)."""
    q, k, v, mask = block_inputs(Tq=Tq, Tk=Tk, fill=fill)
    full, _ = attention(q, k, v, mask, 0.5)
    blocks = attention_in_blocks(q, k, v, mask, 0.5, budget=budget)
    np.testing.assert_allclose(blocks, full, rtol=1e-5, atol=1e-6)
    assert np.isfinite(blocks).all()


def record_blocks(monkeypatch) -> list[tuple[int, int]]:
    """Wrap attend() to record the scores each block makes: (number of scores, keys)."""
    calls, real = [], gpt2np.attention.attend

    def spy(q, k, v, additive, empty_rows, scores):
        assert scores.shape == (*q.shape[:-1], k.shape[-2])  # the buffer holds exactly this block's scores
        calls.append((scores.size, k.shape[-2]))
        return real(q, k, v, additive, empty_rows, scores)

    monkeypatch.setattr(gpt2np.attention, "attend", spy)
    return calls


@pytest.mark.parametrize("budget", [1, 16, 40, 100])
def test_blocks_hold_at_most_the_budget_and_skip_the_future(monkeypatch, budget):
    B, H, T = 3, 2, 8
    q, k, v, mask = block_inputs(B, H, T, T, fill=float("-inf"))
    monkeypatch.setattr(gpt2np.attention, "QUERY_BLOCK", 3)  # blocks shorter than T: some future to skip
    calls = record_blocks(monkeypatch)
    attention_in_blocks(q, k, v, mask, 0.5, budget=budget)
    assert calls and max(n for n, _ in calls) <= max(budget, T)  # the promised bound
    assert sum(n for n, _ in calls) < B * H * T * T  # the masked upper triangle was skipped
    # a leaky fill: every block sees every key (nothing skipped), still within the bound
    q, k, v, leaky = block_inputs(B, H, T, T, fill=-1.0)
    calls.clear()
    attention_in_blocks(q, k, v, leaky, 0.5, budget=budget)
    assert all(keys == T for _, keys in calls) and max(n for n, _ in calls) <= max(budget, T)


def test_the_model_holds_a_bounded_block_of_scores_unless_weights_are_asked_for(model_dir, monkeypatch):
    """By inspection, through the whole model: with a small budget every layer's scores come in
    blocks within it, the logits equal the full-matrix path's, and output_attentions still
    returns the full [B, H, T, T] weights."""
    model = GPT2.from_pretrained(model_dir("tiny"))  # 2 heads, 2 layers
    full = model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, output_attentions=True)
    assert all(a.shape == (3, 2, 8, 8) for a in full.attentions)
    monkeypatch.setattr(gpt2np.attention, "SCORES_BUDGET", 20)
    calls = record_blocks(monkeypatch)
    blocked = model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK)
    assert blocked.attentions is None
    assert len(calls) > 2 * 3 and max(n for n, _ in calls) <= max(20, 8)  # many blocks, each small
    real = SEED_ATTENTION_MASK.astype(bool)
    np.testing.assert_allclose(blocked.logits[real], full.logits[real], rtol=1e-5, atol=1e-5)
