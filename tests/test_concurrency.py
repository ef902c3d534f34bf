"""One loaded model, many threads: the same results as calling it sequentially.

GPT2 holds weights and settings only; every call builds its own masks, activations and KV
cache. NumPy releases the GIL inside its kernels, so these threads really do overlap: a
shared buffer anywhere would show up as a wrong (not merely slower) result.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS

from gpt2np import GPT2

N_THREADS = 8


def tasks(model, tokenizer):
    """A mix of calls of different shapes: forward passes, greedy and sampled generation,
    with and without the cache, and tokenization."""
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    out = []
    for i in range(24):
        kind = i % 6
        B, T = 1 + i % 3, 2 + (i * 5) % 20
        ids = rng.integers(0, vocab, size=(B, T))
        mask = np.ones((B, T), dtype=np.int64)
        mask[0, : i % T] = 0  # some left padding in row 0
        if kind == 0:
            out.append(
                (
                    "forward",
                    lambda ids=ids, mask=mask: model(ids, attention_mask=mask, output_hidden_states=True).logits,
                )
            )
        elif kind == 1:
            out.append(
                (
                    "greedy",
                    lambda ids=ids, mask=mask: model.generate(
                        ids, attention_mask=mask, max_new_tokens=6, eos_token_id=None
                    ),
                )
            )
        elif kind == 2:
            out.append(
                (
                    "sampled",
                    lambda ids=ids, mask=mask, s=i: model.generate(
                        ids, attention_mask=mask, max_new_tokens=5, do_sample=True, seed=s, top_k=10, eos_token_id=None
                    ),
                )
            )
        elif kind == 3:
            out.append(
                (
                    "no-cache",
                    lambda ids=ids, mask=mask: model.generate(
                        ids, attention_mask=mask, max_new_tokens=4, use_cache=False, eos_token_id=None
                    ),
                )
            )
        elif kind == 4:
            out.append(
                (
                    "seed batch",
                    lambda: model.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=8),
                )
            )
        else:
            out.append(
                (
                    "tokenize",
                    lambda n=i: tokenizer.batch_decode(
                        tokenizer([f"sentence number {n}", "My dog is"], padding=True)["input_ids"]
                    ),
                )
            )
    return out


def run_concurrently(calls, n_threads=N_THREADS):
    """Start every call at once (a barrier), several rounds over a thread pool."""
    barrier = threading.Barrier(n_threads)

    def at_once(call):
        with contextlib.suppress(threading.BrokenBarrierError):  # the last, smaller round: run anyway
            barrier.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        return list(pool.map(at_once, calls))


@pytest.fixture(scope="module")
def gen_tokenizer(tokenizer_dir):
    from gpt2np import Tokenizer

    tok = Tokenizer.from_pretrained(tokenizer_dir)
    tok.padding_side, tok.pad_token = "left", tok.eos_token
    return tok


@pytest.mark.parametrize("name", ["tiny", "small-outliers"])
def test_threads_give_the_sequential_results(model_dir, gen_tokenizer, name):
    model = GPT2.from_pretrained(model_dir(name))  # memory-mapped weights, shared by every thread
    calls = tasks(model, gen_tokenizer)
    sequential = [call() for _, call in calls]
    for _ in range(3):
        concurrent = run_concurrently([call for _, call in calls])
        for (kind, _), seq, con in zip(calls, sequential, concurrent):
            if kind == "tokenize":
                assert con == seq
            else:
                np.testing.assert_array_equal(con, seq, err_msg=kind)


def test_the_same_call_from_every_thread_at_once(model_dir):
    model = GPT2.from_pretrained(model_dir("tiny"))
    reference = model.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=10)
    results = run_concurrently(
        [lambda: model.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=10)]
        * (2 * N_THREADS)
    )
    for r in results:
        np.testing.assert_array_equal(r, reference)


def test_a_call_leaves_nothing_behind_in_the_model(model_dir):
    """No per-call state: the model's attributes are the same objects before and after calls."""
    model = GPT2.from_pretrained(model_dir("tiny"))
    before = dict(vars(model))
    model.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=3)
    model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, output_attentions=True)
    after = vars(model)
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)
    assert all(not a.flags.writeable for a in model.weights.arrays())  # nobody can write to shared weights
