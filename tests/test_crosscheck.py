"""`gpt2np crosscheck`: it agrees where the libraries agree, and it catches a difference."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS

from gpt2np import GPT2, GPT2npError
from gpt2np.tools.cli import main
from gpt2np.tools.crosscheck import TOLERANCES, Tolerance, compare, compare_greedy, crosscheck, format_report
from gpt2np.weights import LayerNorm


def left_padded_random_batch(vocab_size: int, lengths=(7, 4, 2), seed=0):
    """Random ids, left-padded with the last id: a batch for models whose vocab is not GPT-2's."""
    rng = np.random.default_rng(seed)
    T = max(lengths)
    ids = np.full((len(lengths), T), vocab_size - 1)
    mask = np.zeros((len(lengths), T), dtype=np.int64)
    for row, n in enumerate(lengths):
        ids[row, T - n :] = rng.integers(0, vocab_size - 1, size=n)
        mask[row, T - n :] = 1
    return ids, mask


@pytest.mark.transformers
def test_every_fill_and_dtype_agrees(transformers, model_dir):
    results = crosscheck(model_dir("tiny"), SEED_INPUT_IDS, SEED_ATTENTION_MASK, max_new_tokens=5)
    assert [(r.dtype, r.fill) for r in results] == [
        (d, f) for d in ("float32", "float64") for f in ("-inf", "-1e9", "min")
    ]
    for r in results:
        assert r.failures == [], r.failures
        assert len(r.hidden) == 3  # embeddings, after block 1, block 2 + ln_f
        assert r.logits <= TOLERANCES[r.dtype].logits
        assert (r.top1_agree, r.top1_total) == (16, 16)  # the seed batch has 16 real tokens
        assert (r.greedy_agree, r.greedy_total) == (15, 15)
    float32, float64 = results[0], results[3]
    assert float64.logits < float32.logits / 100  # float64 really ran in float64, on both sides


@pytest.mark.transformers
def test_odd_model_untied_and_scaled_by_layer(transformers, model_dir):
    folder = model_dir("odd")  # vocab 1000, untied lm_head, scale_attn_by_inverse_layer_idx
    ids, mask = left_padded_random_batch(1000)
    results = crosscheck(folder, ids, mask, fills=("-inf", "min"), max_new_tokens=4)
    assert all(r.failures == [] for r in results), [r.failures for r in results]


@pytest.mark.transformers
def test_a_wrong_model_is_caught(model_dir, hf_model):
    folder = model_dir("tiny")
    model = GPT2.from_pretrained(folder)
    w = model.weights
    broken = dataclasses.replace(w, ln_f=LayerNorm(w.ln_f.weight, w.ln_f.bias + np.float32(1e-3)))  # a tiny slip
    result = compare(
        GPT2(model.config, broken),
        hf_model(folder),
        SEED_INPUT_IDS,
        SEED_ATTENTION_MASK,
        3,
        TOLERANCES["float32"],
        50256,
    )
    assert any(f.startswith("logits") for f in result.failures)
    assert any(f.startswith("hidden state 2") for f in result.failures)  # the state after ln_f
    assert not any(f.startswith("hidden state 1") for f in result.failures)  # the blocks are untouched
    assert result.hidden[0] == 0.0  # embeddings: the same lookups, bit for bit


def test_greedy_divergence_is_an_error_except_at_a_near_tie():
    tol = Tolerance(logits=1e-4, hidden=1e-5)
    prompt = np.zeros((2, 3), dtype=np.int64)
    theirs = np.hstack([prompt, [[5, 6, 7], [5, 6, 7]]])
    ours = np.hstack([prompt, [[5, 6, 7], [5, 9, 9]]])  # row 1 differs from step 1
    logits = np.zeros((3, 2, 10))  # [steps, B, V]
    logits[1, 1, 6], logits[1, 1, 9] = 2.0, 1.0  # transformers' pick leads by 1.0: no excuse
    agree, total, failures, notes = compare_greedy(ours, theirs, logits, 3, pad=0, tol=tol)
    assert (
        (agree, total) == (4, 6) and len(failures) == 1 and "row 1 differs from step 1" in failures[0] and notes == []
    )
    logits[1, 1, 9] = 2.0 - 1e-5  # now a near tie: either token is right
    _, _, failures, notes = compare_greedy(ours, theirs, logits, 3, pad=0, tol=tol)
    assert failures == [] and "near tie" in notes[0]


def test_greedy_runs_of_different_lengths_are_compared_padded():
    tol = Tolerance(logits=1e-4, hidden=1e-5)
    ours = np.array([[1, 2, 0]])  # stopped early: every row finished
    theirs = np.array([[1, 2, 0, 0]])  # padded one step further
    agree, total, failures, _ = compare_greedy(ours, theirs, np.zeros((2, 1, 4)), 1, pad=0, tol=tol)
    assert (agree, total, failures) == (3, 3, [])


@pytest.mark.transformers
def test_cli_prints_the_librarys_report(transformers, model_dir, tokenizer_dir, capsys):
    folder = model_dir("tiny")
    code = main(
        [
            "crosscheck",
            "--model",
            str(folder),
            "--tokenizer",
            str(tokenizer_dir),
            "--max-new-tokens",
            "3",
            "--dtype",
            "float32",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    results = crosscheck(folder, SEED_INPUT_IDS, SEED_ATTENTION_MASK, dtypes=("float32",), max_new_tokens=3)
    assert out.endswith(format_report(results) + "\n")
    assert "after block 1" in out and "block 2 + ln_f" in out and "OK: all 3 runs" in out


@pytest.mark.transformers
def test_cli_exits_1_beyond_tolerance(transformers, model_dir, tokenizer_dir, capsys):
    args = ["crosscheck", "--model", str(model_dir("tiny")), "--tokenizer", str(tokenizer_dir), "--max-new-tokens", "2"]
    code = main([*args, "--dtype", "float32", "--fill=-inf", "--tol-float32", "1e-12"])  # float32 noise is ~1e-6
    out = capsys.readouterr().out
    assert code == 1
    assert "MISMATCH (float32, fill -inf): logits" in out and "FAILED: 1 of 1 runs" in out


@pytest.mark.transformers
def test_cli_exits_1_when_gpt2np_computes_something_else(transformers, model_dir, tokenizer_dir, monkeypatch, capsys):
    import gpt2np.layers

    # The sigmoid approximation of GELU instead of GPT-2's tanh one: close, but not the same.
    # (Patched where the forward pass looks it up: model.py imports gelu by name.)
    monkeypatch.setattr(gpt2np.layers, "gelu", lambda x: x / (1 + np.exp(-1.702 * x)))
    code = main(
        ["crosscheck", "--model", str(model_dir("tiny")), "--tokenizer", str(tokenizer_dir), "--max-new-tokens", "2"]
    )
    out = capsys.readouterr().out
    assert code == 1 and "FAILED: 6 of 6 runs" in out


@pytest.mark.transformers
def test_cli_refuses_a_tokenizer_too_big_for_the_model(transformers, model_dir, tokenizer_dir, capsys):
    code = main(["crosscheck", "--model", str(model_dir("odd")), "--tokenizer", str(tokenizer_dir)])
    err = capsys.readouterr().err
    assert code == 1 and "vocabulary has 1000" in err and "--tokenizer" in err


def test_without_transformers_it_says_how_to_install(monkeypatch, model_dir, capsys):
    from gpt2np.tools.crosscheck import import_torch_transformers

    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    with pytest.raises(GPT2npError, match=r"pip install -e '\.\[test\]'.*torch==2\.13\.0"):
        import_torch_transformers()
    code = main(["crosscheck", "--model", str(model_dir("tiny"))])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "pip install -e '.[test]'" in err
