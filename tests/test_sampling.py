"""Temperature, top-k, top-p: the same filtered distributions as transformers' warpers.

Live against transformers where it is installed; the rest needs no torch: hand-worked
distributions where the order of the filters (temperature, then top-k, then top-p) changes
which tokens survive, and tests/test_references.py holds transformers' stored outputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpt2np.layers import softmax
from gpt2np.sampling import filter_logits, greedy, sample, top_k_filter, top_p_filter

rng = np.random.default_rng(0)


def random_logits(rows=16, vocab=2000, scale=3.0):
    return (rng.standard_normal((rows, vocab)) * scale).astype(np.float32)


@pytest.mark.parametrize(
    "temperature,top_k,top_p",
    [
        (1.0, 50, 1.0),
        (0.7, 0, 0.9),
        (1.3, 10, 0.5),
        (1.0, 0, 0.95),
        (0.5, 200, 0.8),
        (2.0, 1, 1.0),
        (1.0, 5000, 0.3),
        (1.0, 0, 1e-6),
    ],
)
def test_filters_match_transformers_warpers(transformers, temperature, top_k, top_p):
    import torch
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = random_logits()
    scores = torch.tensor(logits)
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k=top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p=top_p)(None, scores)
    expected = scores.numpy()
    got = filter_logits(logits, temperature, top_k, top_p)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))  # the same tokens survive
    kept = np.isfinite(expected)
    np.testing.assert_allclose(got[kept], expected[kept], rtol=1e-6)


def test_top_k_keeps_k_and_ties():
    logits = np.array([[1.0, 5.0, 3.0, 5.0, 2.0]], dtype=np.float32)
    np.testing.assert_array_equal(np.isfinite(top_k_filter(logits, 2)), [[False, True, False, True, False]])
    np.testing.assert_array_equal(np.isfinite(top_k_filter(logits, 3)), [[False, True, True, True, False]])
    assert np.isfinite(top_k_filter(logits, 0)).all()


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = np.array([[0.5, 0.3, 0.15, 0.05]])
    logits = np.log(probs).astype(np.float32)
    np.testing.assert_array_equal(np.isfinite(top_p_filter(logits, 0.7)), [[True, True, False, False]])
    np.testing.assert_array_equal(np.isfinite(top_p_filter(logits, 0.5)), [[True, False, False, False]])
    np.testing.assert_array_equal(np.isfinite(top_p_filter(logits, 0.01)), [[True, False, False, False]])  # never empty


def test_sample_follows_the_distribution():
    probs = np.array([0.6, 0.25, 0.1, 0.05, 0.0])
    logits = np.tile(np.log(np.maximum(probs, 1e-300)), (20000, 1))
    logits[:, -1] = -np.inf
    draws = sample(logits, np.random.default_rng(0))
    counts = np.bincount(draws, minlength=5) / len(draws)
    assert counts[-1] == 0  # a filtered token is never drawn
    np.testing.assert_allclose(counts, probs, atol=0.015)  # 20k draws: binomial std <= 0.0035


def test_greedy_takes_the_first_of_equal_maxima():
    assert greedy(np.array([[0.0, 2.0, 2.0, 1.0]])).tolist() == [1]


def test_softmax_of_filtered_logits_is_zero_where_filtered():
    logits = random_logits(rows=3, vocab=50)
    p = softmax(filter_logits(logits, 1.0, 5, 1.0))
    assert ((p > 0).sum(-1) == 5).all()


def test_temperature_divides_the_logits():
    logits = random_logits(rows=2, vocab=30)
    for t in (0.5, 2.0):
        np.testing.assert_array_equal(filter_logits(logits, t, 0, 1.0), logits / np.float32(t))
    cold = softmax(filter_logits(logits, 0.5, 0, 1.0))  # T < 1 sharpens: the best token gains
    assert (cold.max(-1) > softmax(logits.copy()).max(-1)).all()


def test_temperature_comes_before_top_p():
    """p = [0.5, 0.3, 0.15, 0.05]. top_p=0.6 alone keeps 2 tokens. T=0.5 squares and
    renormalises first, p ~ [0.685, 0.247, 0.062, 0.007]: then the best alone passes 0.6."""
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]])).astype(np.float32)
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, 1.0, 0, 0.6)), [[True, True, False, False]])
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, 0.5, 0, 0.6)), [[True, False, False, False]])


def test_top_k_comes_before_top_p():
    """p = [0.4, 0.3, 0.2, 0.1], top_k=2, top_p=0.5. top-k first leaves [0.4, 0.3], which
    top-p renormalises to [0.57, 0.43]: the best alone passes 0.5, one token survives. The
    other order would keep two."""
    logits = np.log(np.array([[0.4, 0.3, 0.2, 0.1]])).astype(np.float32)
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, 1.0, 2, 0.5)), [[True, False, False, False]])
    np.testing.assert_array_equal(np.isfinite(top_k_filter(top_p_filter(logits, 0.5), 2)), [[True, True, False, False]])


def test_top_p_boundary_is_kept():
    """transformers drops a token when the mass below it is <= 1 - top_p: with p = [0.5, 0.25,
    0.25] and top_p = 0.5, the two 0.25s (mass 0.5 <= 0.5) go, the 0.5 stays."""
    logits = np.log(np.array([[0.5, 0.25, 0.25]]))  # float64: the sums are exact
    np.testing.assert_array_equal(np.isfinite(top_p_filter(logits, 0.5)), [[True, False, False]])
    np.testing.assert_array_equal(np.isfinite(top_p_filter(logits, 0.8)), [[True, True, True]])


def test_top_p_never_empties_a_row():
    """With a tiny top_p, 1 - top_p rounds to 1.0 in float32 and every cumulative probability
    is <= it: only min_tokens_to_keep = 1 saves the most likely token."""
    logits = random_logits()
    kept = np.isfinite(top_p_filter(logits, 1e-12))
    assert (kept.sum(-1) == 1).all()
    assert (kept.argmax(-1) == logits.argmax(-1)).all()
