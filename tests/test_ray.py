"""The Ray integration (gpt2np/ray.py) on a local Ray (`ray.init(num_cpus=2)`): the same numbers
as scoring on one machine, rows in the input's order, failing rows reported and kept.

Ray is in the test extra, so CI runs these; without Ray they skip, except in CI
(GPT2NP_REQUIRE_TRANSFORMERS=1), where a missing Ray is a failure."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import IN_CI, WORDS

from gpt2np import GPT2, InputError, Tokenizer
from gpt2np.corpus import score_texts

try:
    import pandas as pd
    import ray
except ImportError as e:  # pragma: no cover - depends on the machine
    if IN_CI:
        raise ImportError(f"CI needs Ray for tests/test_ray.py ({e}); pip install -e '.[test]'") from e
    pytest.skip(f"Ray is not installed ({e}); pip install -e '.[ray]'", allow_module_level=True)

from gpt2np.ray import Scorer, score_dataset


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def corpus(n: int, seed: int) -> list:
    """n texts of 1 to 60 words, with bad rows planted: empty, null, not a string."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(1, 60))) for _ in range(n)]
    texts[3], texts[10], texts[17] = "", None, 12
    return texts


def check_against_one_machine(rows, texts, model_dir, tokenizer_dir, stride):
    model, tok = GPT2.from_pretrained(model_dir), Tokenizer.from_pretrained(tokenizer_dir)
    expected = score_texts(model, tok, texts, stride=stride)
    assert [r["id"] for r in rows] == list(range(len(texts)))  # every row, in the input's order
    assert [r["text"] for r in rows] == texts  # the input columns are kept
    for row, want in zip(rows, expected):
        assert row["n_tokens"] == want.n_tokens
        assert row["error"] == want.error
        if want.error is None:
            assert row["n_scored"] == want.n_scored == want.n_tokens - 1
            assert abs(row["log_likelihood"] - want.log_likelihood) < 1e-4  # float32 noise: other batches
            assert (
                row["perplexity"] is None
                if want.n_scored == 0
                else np.isclose(row["perplexity"], want.perplexity, rtol=1e-5)
            )
        else:
            assert row["n_scored"] is None and row["log_likelihood"] is None and row["perplexity"] is None
    return expected


def test_two_actors_give_the_one_machine_numbers_in_order(local_ray, short_context, tokenizer_dir):
    texts = corpus(60, seed=0)
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=12)
    rows = score_dataset(ds, model=short_context, tokenizer=tokenizer_dir, batch_size=5, concurrency=2).take_all()
    expected = check_against_one_machine(rows, texts, short_context, tokenizer_dir, stride=None)
    errors = [r["error"] for r in rows if r["error"] is not None]
    assert len(errors) >= 4  # the 3 planted rows and the texts longer than 32 tokens
    assert any("--stride" in e for e in errors) and sum(x.error is None for x in expected) > 20


def test_stride_on_ray(local_ray, short_context, tokenizer_dir):
    texts = corpus(30, seed=1)
    texts[0] = " ".join(WORDS * 100)  # 2000 tokens, 250 windows: its block finishes long after the others
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=6)
    rows = score_dataset(
        ds, model=short_context, tokenizer=tokenizer_dir, batch_size=8, concurrency=2, stride=8
    ).take_all()
    check_against_one_machine(rows, texts, short_context, tokenizer_dir, stride=8)
    assert any(r["n_tokens"] and r["n_tokens"] > 32 and r["error"] is None for r in rows)  # long texts scored


def test_each_actor_takes_one_batch_at_a_time(local_ray, short_context, monkeypatch):
    """Ray's default queues up to 4 batches on an actor, and the first actor up takes them: a
    small corpus then runs on one actor while the others idle (docs/scale.md measures it). Which
    actor scored a row is not visible from outside, so this checks the setting that prevents it."""
    seen = {}
    real = ray.data.Dataset.map_batches

    def spy(self, fn, **kwargs):
        seen.update(kwargs)
        return real(self, fn, **kwargs)

    monkeypatch.setattr(ray.data.Dataset, "map_batches", spy)
    score_dataset(ray.data.from_items([{"text": "My dog is"}]), model=short_context, concurrency=3)
    strategy = seen["compute"]
    assert (strategy.min_size, strategy.max_size) == (3, 3)
    assert strategy.max_tasks_in_flight_per_actor == 1


def test_scorer_on_a_pandas_batch(short_context, tokenizer_dir):
    """The callable class alone (what each actor runs): no Ray needed."""
    scorer = Scorer(model=short_context, tokenizer=tokenizer_dir, text_column="body")
    batch = pd.DataFrame({"body": ["My dog is", "", None, "Hi"], "k": [1, 2, 3, 4]})
    out = scorer(batch)
    assert list(out.columns) == ["body", "k", "n_tokens", "n_scored", "log_likelihood", "perplexity", "error"]
    assert out["k"].tolist() == [1, 2, 3, 4] and list(batch.columns) == ["body", "k"]  # the input is not modified
    assert out["error"].isna().tolist() == [True, False, False, True]
    assert pd.isna(out["perplexity"][3]) and out["n_scored"][3] == 0  # one token: nothing to score
    with pytest.raises(InputError, match="no column 'body'"):
        scorer(pd.DataFrame({"text": ["x"]}))


def test_bad_settings(short_context):
    ds = None  # refused before Ray is used
    with pytest.raises(InputError, match="concurrency"):
        score_dataset(ds, model=short_context, concurrency=0)
