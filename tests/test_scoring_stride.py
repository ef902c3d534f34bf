"""Scoring texts longer than the context (scoring.score(..., stride=)): sliding windows, each
token scored once, checked against the transformers docs' "Perplexity of fixed-length models"
loop run with transformers on random models with a small context."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2np import GPT2, InputError
from gpt2np.scoring import check_stride, sliding_windows

TOL = 1e-4  # float32 noise per token, as in tests/test_scoring.py


def docs_method(hf, ids: np.ndarray, max_length: int, stride: int) -> tuple[float, int, int]:
    """The loop of transformers' docs ("Perplexity of fixed-length models"), run with
    transformers, returning (log-likelihood, number of scored tokens, the docs' count). One change: the docs
    count `num_valid_tokens - batch_size` per window (the label shift drops one label), which is
    right for the first window only; in a later window the first label is already -100, so
    nothing is dropped. We count the labels the loss really uses: those after the first."""
    import torch

    nll_sum, n_tokens, docs_n_tokens, prev_end_loc, seq_len = 0.0, 0, 0, 0, len(ids)
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
        input_ids = torch.tensor(ids[begin_loc:end_loc])[None]  # [1, L]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            neg_log_likelihood = hf(input_ids, labels=target_ids).loss
        num_loss_tokens = int((target_ids[:, 1:] != -100).sum())  # the exact count
        docs_n_tokens += int((target_ids != -100).sum()) - target_ids.size(0)  # the docs' count
        nll_sum += float(neg_log_likelihood) * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return -nll_sum, n_tokens, docs_n_tokens


@pytest.mark.transformers
@pytest.mark.parametrize("n_tokens, stride", [(300, 16), (300, 31), (97, 1 + 8), (32, 16), (33, 16), (20, 5)])
def test_stride_matches_the_transformers_docs_method(short_context, hf_model, n_tokens, stride):
    model = GPT2.from_pretrained(short_context)
    ids = np.random.default_rng(n_tokens + stride).integers(0, model.config.vocab_size, size=n_tokens)  # [N]
    scores = model.score(ids, stride=stride)
    theirs, their_count, docs_count = docs_method(hf_model(short_context), ids, 32, stride)
    assert scores.n_scored.tolist() == [n_tokens - 1] == [their_count]  # N tokens -> N - 1 scored
    n_windows = len(sliding_windows(n_tokens, 32, stride))
    assert docs_count == n_tokens - 1 - (n_windows - 1)  # the published count: one short per later window
    assert abs(scores.total_logprob[0] - theirs) < TOL * n_tokens
    assert np.isclose(scores.perplexity[0], np.exp(-theirs / their_count), rtol=1e-4)


@pytest.mark.transformers
def test_stride_token_by_token_against_transformers(model_dir, hf_model):
    """Each token's log-prob equals transformers' log_softmax in the window that scores it
    (the `odd` model: context 40, untied output layer, vocabulary 1000)."""
    import torch

    folder = model_dir("odd")
    model, hf = GPT2.from_pretrained(folder), hf_model(folder)
    ids = np.random.default_rng(3).integers(0, 1000, size=150)  # [150]
    scores = model.score(ids, stride=13)
    for begin, end, first in sliding_windows(150, 40, 13):
        with torch.no_grad():
            logits = hf(torch.tensor(ids[begin:end])[None]).logits[0].double()  # [L, V]
        logprobs = torch.log_softmax(logits, dim=-1).numpy()  # [L, V]
        t = np.arange(first, end)  # text positions this window scores
        np.testing.assert_allclose(scores.token_logprobs[0, t], logprobs[t - begin - 1, ids[t]], atol=TOL)


@pytest.mark.parametrize("n_positions", [2, 5, 32])
def test_sliding_windows_score_every_token_once(n_positions):
    for n_tokens in range(3 * n_positions + 2):
        for stride in range(1, n_positions):
            windows = sliding_windows(n_tokens, n_positions, stride)
            scored = np.concatenate([np.arange(first, end) for _, end, first in windows] or [np.zeros(0, int)])
            assert scored.tolist() == list(range(1, n_tokens)), (n_tokens, n_positions, stride)
            for begin, end, first in windows:
                assert end - begin <= n_positions and begin < first < end
                # as much left context as the window gives: every token of the window before it
                assert begin == 0 or first - begin >= n_positions - stride or end == n_tokens


def test_sliding_windows_example():
    assert sliding_windows(10, 6, 3) == [(0, 6, 1), (3, 9, 6), (6, 10, 9)]
    assert sliding_windows(5, 6, 3) == [(0, 5, 1)]  # fits: one window, as without stride
    assert sliding_windows(1, 6, 3) == [] and sliding_windows(0, 6, 3) == []


def test_stride_on_a_text_that_fits_changes_nothing(short_context):
    model = GPT2.from_pretrained(short_context)
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(3, 32))  # [3, 32]
    mask = np.ones_like(ids)
    mask[1, :10] = mask[2, :31] = 0  # left padding: 22 and 1 real tokens
    plain, strided = model.score(ids, attention_mask=mask), model.score(ids, attention_mask=mask, stride=8)
    assert np.array_equal(plain.scored, strided.scored)
    np.testing.assert_allclose(strided.token_logprobs, plain.token_logprobs, atol=1e-5)
    assert strided.n_scored.tolist() == [31, 21, 0]


def test_a_long_text_scores_the_same_alone_and_in_a_padded_batch(short_context):
    """Windows of several rows share forward passes; each row's numbers must not depend on it."""
    model = GPT2.from_pretrained(short_context)
    rng = np.random.default_rng(1)
    texts = [rng.integers(0, model.config.vocab_size, size=n) for n in (200, 7, 64, 1)]
    T = max(map(len, texts))
    ids, mask = np.zeros((4, T), dtype=np.int64), np.zeros((4, T), dtype=np.int64)
    for b, t in enumerate(texts):
        ids[b, T - len(t) :], mask[b, T - len(t) :] = t, 1  # left-padded
    batch = model.score(ids, attention_mask=mask, stride=10)
    assert batch.n_scored.tolist() == [199, 6, 63, 0]
    for b, t in enumerate(texts):
        if len(t) == 1:  # alone, a text of one token has nothing to score: refused (in the batch, n_scored 0)
            with pytest.raises(InputError, match="nothing to score"):
                model.score(t, stride=10)
            continue
        alone = model.score(t, stride=10)
        np.testing.assert_allclose(batch.token_logprobs[b, T - len(t) :], alone.token_logprobs[0], atol=1e-5)


def test_texts_with_a_tokenizer_and_stride(short_context, tokenizer):
    model = GPT2.from_pretrained(short_context)
    text = "The cat sat on the mat. " * 20  # 140 tokens, more than 32
    scores = model.score(text, tokenizer=tokenizer, stride=16)
    assert scores.n_scored.tolist() == [len(tokenizer.encode(text)) - 1]
    assert np.isfinite(scores.perplexity).all()


def test_too_long_without_stride_and_bad_strides(short_context):
    model = GPT2.from_pretrained(short_context)
    with pytest.raises(InputError, match="n_positions = 32"):
        model.score(np.zeros(33, dtype=np.int64))
    for bad in (0, 32, 40, -1, 1.5, True, "8"):
        with pytest.raises(InputError, match="stride must be a whole number from 1 to n_positions - 1 = 31"):
            model.score(np.zeros(33, dtype=np.int64), stride=bad)
    assert check_stride(np.int64(31), 32) == 31
