"""Scoring many texts (gpt2np/corpus.py): batches of similar length, results in the texts'
order and equal to scoring each text alone, bad texts reported instead of raised."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import WORDS

import gpt2np.corpus
from gpt2np import GPT2, InputError, ModelError
from gpt2np.corpus import length_batches, score_texts, score_token_lists


def sentence(rng, n_words: int) -> str:
    return " ".join(rng.choice(WORDS, size=n_words))


@pytest.fixture(scope="module")
def short_model(short_context):
    return GPT2.from_pretrained(short_context)  # n_positions 32


@pytest.fixture(scope="module")
def tiny(model_dir):
    return GPT2.from_pretrained(model_dir("tiny"))  # n_positions 64


class CountingModel:
    """A model that records the [B, T] shape of every forward pass it runs (scoring runs
    `transformer`, everything before the output layer, and the output layer a block at a time)."""

    def __init__(self, model):
        self.model, self.config, self.weights, self.shapes = model, model.config, model.weights, []

    def __call__(self, ids, attention_mask=None, **kw):
        self.shapes.append(np.shape(ids))
        return self.model(ids, attention_mask=attention_mask, **kw)

    def transformer(self, ids, *args, **kw):
        self.shapes.append(np.shape(ids))
        return self.model.transformer(ids, *args, **kw)


def test_length_batches_example():
    assert length_batches([5, 100, 6, 90], batch_size=2, max_tokens=1000) == [[0, 2], [3, 1]]
    assert length_batches([5, 100, 6, 90], batch_size=4, max_tokens=199) == [[0, 2], [3], [1]]  # 3 x 90, 2 x 100 > 199
    assert length_batches([300], batch_size=4, max_tokens=200) == [[0]]  # too long for max_tokens: alone
    assert length_batches([], 4, 100) == []


def test_length_batches_keep_every_text_once_and_within_limits():
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(1, 60, size=rng.integers(0, 40)).tolist()
        batch_size, max_tokens = int(rng.integers(1, 9)), int(rng.integers(1, 300))
        batches = length_batches(lengths, batch_size, max_tokens)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        for b in batches:
            assert len(b) <= batch_size
            assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= max_tokens
        flat = [lengths[i] for b in batches for i in b]
        assert flat == sorted(flat)  # sorted by length: neighbours share a batch


def test_results_in_order_and_equal_to_each_text_alone(tiny, tokenizer):
    rng = np.random.default_rng(1)
    texts = [sentence(rng, n) for n in rng.integers(1, 40, size=13)]
    results = score_texts(tiny, tokenizer, texts, batch_size=4, max_tokens=400)
    assert len(results) == len(texts)
    for text, r in zip(texts, results):
        alone = tiny.score(text, tokenizer=tokenizer)
        assert r.error is None
        assert r.n_tokens == len(tokenizer.encode(text)) and r.n_scored == r.n_tokens - 1 == alone.n_scored[0]
        assert abs(r.log_likelihood - alone.total_logprob[0]) < 1e-4
        assert np.isclose(r.perplexity, alone.perplexity[0], rtol=1e-5)


def test_batches_group_similar_lengths_and_respect_the_limits(tiny):
    rng = np.random.default_rng(2)
    lengths = [3, 50, 4, 48, 5, 47, 6, 45]  # alternating: batches in input order would be half padding
    lists = [rng.integers(0, 50257, size=n) for n in lengths]
    spy = CountingModel(tiny)
    score_token_lists(spy, lists, batch_size=2, max_tokens=1000)
    padded = sum(b * t for b, t in spy.shapes)
    assert padded == 2 * (4 + 6 + 47 + 50)  # pairs (3, 4), (5, 6), (45, 47), (48, 50)
    assert padded < sum(2 * max(lengths[i : i + 2]) for i in range(0, 8, 2))  # input order: 4 x 2 x ~50
    spy.shapes.clear()
    score_token_lists(spy, lists, batch_size=8, max_tokens=100)
    assert all(b * t <= 100 for b, t in spy.shapes)


def test_bad_texts_are_reported_and_the_others_scored(tiny, tokenizer):
    long = "the cat sat " * 40  # more than 64 tokens
    results = score_texts(tiny, tokenizer, ["My dog is", "", None, long, 7, "Hi"])
    assert [r.error is None for r in results] == [True, False, False, False, False, True]
    assert "empty" in results[1].error
    assert "no text (null)" in results[2].error and "not a string but int" in results[4].error
    n = len(tokenizer.encode(long))
    assert f"{n} tokens" in results[3].error and "--stride" in results[3].error and results[3].n_tokens == n > 64
    assert results[5].n_tokens == 1 and results[5].n_scored == 0 and np.isnan(results[5].perplexity)
    assert abs(results[0].log_likelihood - tiny.score("My dog is", tokenizer=tokenizer).total_logprob[0]) < 1e-4


def test_long_texts_with_stride_equal_scoring_them_alone(short_model, tokenizer):
    rng = np.random.default_rng(3)
    texts = [sentence(rng, n) for n in (100, 5, 60, 2, 30)]  # some longer than 32 tokens
    spy = CountingModel(short_model)
    results = score_texts(spy, tokenizer, texts, batch_size=3, max_tokens=96, stride=12)
    assert all(t <= 32 for _, t in spy.shapes) and all(b * t <= 96 for b, t in spy.shapes)
    for text, r in zip(texts, results):
        alone = short_model.score(text, tokenizer=tokenizer, stride=12)
        assert r.n_scored == r.n_tokens - 1
        assert abs(r.log_likelihood - alone.total_logprob[0]) < 1e-4


def test_token_logprobs(tiny, tokenizer):
    (r,) = score_texts(tiny, tokenizer, ["The cat sat on the mat."], token_logprobs=True)
    assert r.token_logprobs.shape == (r.n_tokens,) and np.isnan(r.token_logprobs[0])
    assert np.isclose(np.sum(r.token_logprobs[1:]), r.log_likelihood)
    assert score_texts(tiny, tokenizer, ["x y"])[0].token_logprobs is None  # only when asked


def test_bad_settings(tiny, tokenizer):
    for kw, match in (
        ({"batch_size": 0}, "batch_size"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"stride": 64}, "stride"),
    ):
        with pytest.raises(InputError, match=match):
            score_texts(tiny, tokenizer, ["a b"], **kw)


def test_a_text_that_is_not_unicode_gets_an_error_and_the_others_are_scored(tiny, tokenizer):
    """A lone surrogate (JSON's "\\ud83d", an emoji cut in half) made the tokenizer raise a bare
    TypeError, which stopped the whole list (and the Ray dataset, and `score --file`)."""
    results = score_texts(tiny, tokenizer, ["My dog is", "emoji cut in half \ud83d", "Hi there"])
    assert [r.error is None for r in results] == [True, False, True]
    assert "lone surrogate ('\\ud83d' at character 18)" in results[1].error and results[1].n_tokens is None
    assert abs(results[2].log_likelihood - tiny.score("Hi there", tokenizer=tokenizer).total_logprob[0]) < 1e-4


def test_a_batch_that_fails_is_scored_again_one_text_at_a_time(tiny, tokenizer, monkeypatch):
    """A forward pass that overflows raises ModelError for its whole batch: each of the batch's
    texts is then scored alone, so only the text that fails gets an error record."""
    rng = np.random.default_rng(4)
    texts = [sentence(rng, n) for n in (5, 6, 7, 8, 20, 21)]
    texts[2] = "the cat sat on the mat poison"
    poison = tokenizer.encode(" poison")[0]
    real_score, shapes = gpt2np.corpus.score_rows, []

    def overflowing_score(model, ids, mask, stride=None):
        shapes.append(ids.shape)
        if (ids == poison).any():
            raise ModelError("the forward pass produced inf in blocks.1.hook_resid_post (planted by the test)")
        return real_score(model, ids, mask, stride=stride)

    monkeypatch.setattr(gpt2np.corpus, "score_rows", overflowing_score)
    results = score_texts(tiny, tokenizer, texts, batch_size=4)
    assert [r.error is None for r in results] == [True, True, False, True, True, True]
    assert results[2].error == "the forward pass produced inf in blocks.1.hook_resid_post (planted by the test)"
    assert results[2].n_tokens == 7
    assert [s[0] for s in shapes] == [4, 1, 1, 1, 1, 2]  # the failed batch of 4 again one by one; the last batch whole
    for i in (0, 1, 3):  # the failed batch's other texts: scored alone, exactly as alone
        assert results[i].log_likelihood == tiny.score(texts[i], tokenizer=tokenizer).total_logprob[0]
