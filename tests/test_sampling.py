"""Temperature, top-k, top-p, min-p: the same filtered distributions as transformers' warpers.

Live against transformers where it is installed; the rest needs no torch: hand-worked
distributions where the order of the filters (temperature, then top-k, then top-p) changes
which tokens survive, and tests/test_references.py holds transformers' stored outputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpt2np.layers import softmax
from gpt2np.sampling import apply_temperature, filter_logits, greedy, min_p_filter, sample, top_k_filter, top_p_filter

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


def test_min_p_keeps_tokens_at_least_min_p_times_the_best():
    """p = [0.5, 0.3, 0.15, 0.05], min_p = 0.4: the threshold is 0.2, so 0.5 and 0.3 stay."""
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]])).astype(np.float32)
    np.testing.assert_array_equal(np.isfinite(min_p_filter(logits, 0.4)), [[True, True, False, False]])
    np.testing.assert_array_equal(np.isfinite(min_p_filter(logits, 0.0)), [[True] * 4])  # 0: off
    kept = min_p_filter(logits, 0.4)
    np.testing.assert_array_equal(kept[np.isfinite(kept)], logits[np.isfinite(kept)])  # survivors unchanged


def test_min_p_keeps_tokens_exactly_at_the_threshold():
    """min_p = 1 keeps every token as likely as the best (ties: the same float exactly) and
    drops the rest: the threshold itself passes, as transformers' `probs < min_p * top`."""
    logits = np.array([[2.0, 1.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(np.isfinite(min_p_filter(logits, 1.0)), [[True, False, True, True], [True] * 4])


def test_min_p_comes_after_top_p():
    """p = [0.4, 0.3, 0.2, 0.1], top_p = 0.72, min_p = 0.45. transformers' order: top-p drops
    the tokens whose mass below is <= 0.28 (only the 0.1), then min-p (threshold 0.45 x 0.4 =
    0.18) keeps the other three. The other order: min-p keeps the same three, renormalised to
    [0.44, 0.33, 0.22], and top-p then drops the 0.22 (<= 0.28): two tokens."""
    logits = np.log(np.array([[0.4, 0.3, 0.2, 0.1]])).astype(np.float32)
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, 1.0, 0, 0.72, 0.45)), [[True, True, True, False]])
    other_order = top_p_filter(min_p_filter(logits, 0.45), 0.72)
    np.testing.assert_array_equal(np.isfinite(other_order), [[True, True, False, False]])


def test_a_tiny_temperature_is_greedy_not_nan():
    """Issue 21, item 8: T = 1e-38 overflowed float32 (10 / 1e-38 = inf), softmax gave NaN and the
    draw token 0. Rows that overflow are shifted by their max first: all mass on the best."""
    logits = random_logits(rows=4, vocab=500)
    logits[3] = -np.abs(logits[3]) - 1  # a row of negative logits only: every quotient is -inf unshifted
    scaled = apply_temperature(logits, 1e-38)
    assert scaled.dtype == np.float32 and np.isfinite(scaled.max(axis=-1)).all()
    probs = softmax(scaled.astype(np.float64))
    np.testing.assert_array_equal(probs.argmax(-1), logits.argmax(-1))
    np.testing.assert_allclose(probs.max(-1), 1.0)
    assert (sample(scaled, np.random.default_rng(0)) == logits.argmax(-1)).all()
    # a temperature that does not overflow is divided as it is: transformers' numbers
    np.testing.assert_array_equal(apply_temperature(logits, 0.01), logits / np.float32(0.01))


def test_a_tiny_temperature_keeps_ties_and_filtered_tokens():
    logits = np.array([[3.0, 3.0, -np.inf, 1.0]], dtype=np.float32)
    probs = softmax(apply_temperature(logits, 1e-40).astype(np.float64))
    np.testing.assert_allclose(probs, [[0.5, 0.5, 0.0, 0.0]])


@pytest.mark.parametrize(
    "temperature,top_k,top_p,min_p",
    [
        (1.0, 0, 1.0, 0.1),
        (0.7, 0, 1.0, 0.05),
        (1.3, 10, 1.0, 0.2),
        (1.0, 50, 0.9, 0.3),
        (0.5, 0, 0.8, 0.5),
        (2.0, 0, 1.0, 1.0),
    ],
)
def test_min_p_and_the_warper_order_match_transformers(transformers, temperature, top_k, top_p, min_p):
    """The whole warper list as transformers' generate builds it (`_get_logits_processor` with
    do_sample=True): its order is temperature, top-k, top-p, min-p."""
    import torch
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    config._eos_token_tensor = None
    tiny_config = transformers.GPT2Config(
        n_layer=1, n_embd=8, n_head=2, vocab_size=2000, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2LMHeadModel(tiny_config)  # only its _get_logits_processor is used
    chain = model._get_logits_processor(config, input_ids_seq_length=1, device="cpu")
    logits = random_logits()
    expected = chain(torch.zeros((16, 1), dtype=torch.long), torch.tensor(logits)).numpy()
    got = filter_logits(logits, temperature, top_k, top_p, min_p)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    kept = np.isfinite(expected)
    assert kept.sum() < kept.size  # something was filtered
    np.testing.assert_allclose(got[kept], expected[kept], rtol=1e-6)
