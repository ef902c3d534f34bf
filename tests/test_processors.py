"""The logits processors: each rule on hand-worked cases, then against transformers' own
processors on random scores and sequences (live; tests/test_references.py holds the same
comparisons stored, for machines without torch)."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2np import InputError
from gpt2np.processors import Processors, ban_bad_words, ban_eos, no_repeat_ngram, repetition_penalty

NEG = -np.inf


def test_repetition_penalty_divides_positive_and_multiplies_negative_scores():
    """CTRL's sign rule: a seen token always becomes less likely with penalty > 1."""
    scores = np.array([[2.0, -2.0, 3.0, -1.0]], dtype=np.float32)
    seq = np.array([[0, 1, 1]])  # tokens 0 and 1 seen (1 twice: still penalised once)
    out = repetition_penalty(scores, seq, 2.0, first_real=np.array([0]))
    np.testing.assert_array_equal(out, [[1.0, -4.0, 3.0, -1.0]])
    out = repetition_penalty(scores, seq, 0.5, first_real=np.array([0]))  # < 1: encouraged
    np.testing.assert_array_equal(out, [[4.0, -1.0, 3.0, -1.0]])
    assert out.dtype == np.float32


def test_a_repetition_penalty_that_overflows_a_score_is_refused_never_nan():
    """Issue 30: 1e-37 divides a logit of 100 to 1e39, inf in float32: sampling from it gave NaN
    and token 0 every time. Refused, naming the score; an unseen large score is no concern."""
    scores = np.array([[100.0, 1e5, -3.0]], dtype=np.float32)
    with (
        np.errstate(all="raise"),
        pytest.raises(InputError, match=r"takes the score 100 of token 0 .* beyond float32's range"),
    ):
        repetition_penalty(scores, np.array([[0, 2]]), 1e-37, first_real=np.array([0]))
    with np.errstate(all="raise"):  # token 1 (1e5) is not in the sequence: untouched, no warning
        out = repetition_penalty(scores, np.array([[2]]), 1e-30, first_real=np.array([0]))
    np.testing.assert_array_equal(out, [[100.0, 1e5, np.float32(-3e-30)]])


def test_repetition_penalty_skips_the_pads_before_the_first_real_token():
    scores = np.array([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]], dtype=np.float32)
    seq = np.array([[2, 2, 0], [2, 1, 0]])  # row 0: two pads (id 2) then token 0
    out = repetition_penalty(scores, seq, 2.0, first_real=np.array([2, 0]))
    np.testing.assert_array_equal(out, [[1.0, 2.0, 2.0], [1.0, 1.0, 1.0]])


def test_no_repeat_ngram_bans_the_token_that_would_repeat_an_ngram():
    scores = np.zeros((1, 10), dtype=np.float32)
    seq = np.array([[1, 2, 3, 1, 2]])  # the suffix (1, 2) was followed by 3: 3 would repeat (1, 2, 3)
    np.testing.assert_array_equal(np.isneginf(no_repeat_ngram(scores, seq, 3))[0], np.arange(10) == 3)
    # n = 2: the suffix (2,) was followed by 3 once
    np.testing.assert_array_equal(np.isneginf(no_repeat_ngram(scores, seq, 2))[0], np.arange(10) == 3)
    # n = 1: every token already there
    np.testing.assert_array_equal(np.isneginf(no_repeat_ngram(scores, seq, 1))[0], np.isin(np.arange(10), [1, 2, 3]))
    # shorter than n: nothing yet
    assert not np.isneginf(no_repeat_ngram(scores, seq[:, :2], 3)).any()


def test_no_repeat_ngram_window_is_exactly_n_minus_1_tokens():
    """(5, 1, 2) was followed by 9, but the suffix is only (1, 2) for n = 3: the windows that
    start with (1, 2) decide, and (7, 1, 2, 4) bans 4. A window one token too long or too
    short would ban 9, or nothing, or everything after a 2."""
    scores = np.zeros((1, 10), dtype=np.float32)
    seq = np.array([[5, 1, 2, 9, 7, 1, 2, 4, 8, 2, 6, 1, 2]])
    np.testing.assert_array_equal(np.isneginf(no_repeat_ngram(scores, seq, 3))[0], np.isin(np.arange(10), [9, 4]))
    np.testing.assert_array_equal(np.isneginf(no_repeat_ngram(scores, seq, 4))[0], np.zeros(10, bool))
    seq = np.array([[5, 1, 2, 9, 3, 6, 1, 2]])
    np.testing.assert_array_equal(np.isneginf(no_repeat_ngram(scores, seq, 3))[0], np.arange(10) == 9)
    np.testing.assert_array_equal(np.isneginf(no_repeat_ngram(scores, seq, 2))[0], np.arange(10) == 9)


def test_bad_words_single_tokens_always_and_longer_words_only_at_their_last_token():
    scores = np.zeros((2, 10), dtype=np.float32)
    seq = np.array([[4, 5, 6], [4, 5, 7]])
    out = ban_bad_words(scores, seq, ((3,), (5, 6, 8), (6, 9)))
    np.testing.assert_array_equal(np.isneginf(out[0]), np.isin(np.arange(10), [3, 8, 9]))  # ends with (5, 6) and (6,)
    np.testing.assert_array_equal(np.isneginf(out[1]), np.arange(10) == 3)
    out = ban_bad_words(scores, seq, ((4, 5, 7, 1, 2),))  # longer than the sequence: nothing
    assert not np.isneginf(out).any()
    out = ban_bad_words(scores, seq, ((5, 7, 1),))
    np.testing.assert_array_equal(np.isneginf(out), [np.zeros(10, bool), np.arange(10) == 1])


def test_min_length_bans_eos_until_the_sequence_is_long_enough():
    scores = np.zeros((1, 10), dtype=np.float32)
    p = Processors(eos_token_id=9, min_length=5)
    assert p.active
    assert np.isneginf(p(scores, np.zeros((1, 4), int))[0, 9])  # 4 tokens: the 5th may not be eos
    assert not np.isneginf(p(scores, np.zeros((1, 5), int))).any()  # 5 tokens: it may
    np.testing.assert_array_equal(np.isneginf(ban_eos(scores, 9))[0], np.arange(10) == 9)


def test_no_processor_active_leaves_the_scores_untouched():
    assert not Processors().active
    assert not Processors(eos_token_id=3, min_length=0).active
    assert not Processors(min_length=5).active  # no eos: nothing to ban
    scores = np.ones((1, 4), dtype=np.float32)
    assert Processors()(scores, np.zeros((1, 2), int)) is scores


def test_processors_do_not_write_into_the_scores_they_are_given():
    """generate() records the raw logits (output_logits) before processing them."""
    scores = np.arange(20, dtype=np.float32).reshape(2, 10) - 5
    kept = scores.copy()
    seq = np.array([[1, 2, 1], [3, 4, 3]])
    Processors(1.5, np.zeros(2, int), 1, ((7,), (1, 8)), 9, 10)(scores, seq)
    np.testing.assert_array_equal(scores, kept)


# --- against transformers, live ----------------------------------------------------------

rng = np.random.default_rng(5)
V = 300


def random_case(rows=6, t=14, pads=(0, 3, 7, 0, 1, 13)):
    """Scores [rows, V] and left-padded sequences [rows, t] with many repeats (few distinct ids)."""
    scores = (rng.standard_normal((rows, V)) * 3).astype(np.float32)
    seq = rng.integers(0, 6, size=(rows, t))
    first_real = np.array(pads[:rows])
    seq[np.arange(t)[None, :] < first_real[:, None]] = V - 1  # pads carry the pad id
    return scores, seq, first_real


@pytest.mark.parametrize(
    "settings",
    [
        dict(repetition_penalty=1.3),
        dict(repetition_penalty=0.6),
        dict(no_repeat_ngram_size=1),
        dict(no_repeat_ngram_size=2),
        dict(no_repeat_ngram_size=3),
        dict(bad_words_ids=[[5], [3, 4], [1, 2, 0], [2, 2, 2, 2]]),
        dict(min_new_tokens=3),
        dict(min_length=20),
        dict(repetition_penalty=1.2, no_repeat_ngram_size=2, bad_words_ids=[[6], [2, 1]], min_new_tokens=3),
    ],
)
def test_processors_match_transformers(transformers, settings):
    """Our chain against the list transformers' generate builds itself (`_get_logits_processor`,
    its order and its arguments: the pads' lengths from the attention mask)."""
    import torch

    scores, seq, first_real = random_case()
    t = seq.shape[1]
    prompt_len = t - 2  # the sequences hold 2 new tokens
    eos = V - 1
    expected = transformers_chain(transformers, settings, seq, first_real, prompt_len, eos, torch.tensor(scores))
    min_new = settings.get("min_new_tokens")
    ours = Processors(
        repetition_penalty=settings.get("repetition_penalty", 1.0),
        first_real=first_real,
        no_repeat_ngram_size=settings.get("no_repeat_ngram_size", 0),
        bad_words_ids=tuple(tuple(w) for w in settings.get("bad_words_ids", ())),
        eos_token_id=eos,
        min_length=prompt_len + min_new if min_new else settings.get("min_length", 0),
    )
    got = ours(scores, seq)
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    finite = np.isfinite(expected)
    assert (np.isneginf(expected).any() or "repetition_penalty" in settings) and finite.any()
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-6)


def transformers_chain(transformers, settings, seq, first_real, prompt_len, eos, scores):
    """transformers' own processor list for these settings, applied to `scores` -> numpy."""
    import torch
    from transformers import GenerationConfig

    config = GenerationConfig(eos_token_id=eos, pad_token_id=eos, **settings)
    config._eos_token_tensor = torch.tensor([eos])
    mask = torch.tensor((np.arange(seq.shape[1])[None, :] >= first_real[:, None]).astype(np.int64))
    tiny_config = transformers.GPT2Config(
        n_layer=1, n_embd=8, n_head=2, vocab_size=V, bos_token_id=eos, eos_token_id=eos
    )
    model = transformers.GPT2LMHeadModel(tiny_config)  # only its _get_logits_processor is used
    chain = model._get_logits_processor(
        config, input_ids_seq_length=prompt_len, model_kwargs={"attention_mask": mask}, device="cpu"
    )
    return chain(torch.tensor(seq), scores).numpy()
