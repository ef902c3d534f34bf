"""`gpt2np score` (gpt2np/tools/score.py): what it prints and what it refuses, as a user meets it."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2np.scoring import summarize
from gpt2np.tools.cli import main
from gpt2np.tools.score import format_scores


@pytest.fixture(scope="module")
def tiny(model_dir):
    return model_dir("tiny")


def score_cli(capsys, tiny, *texts):
    code = main(["score", "--model", str(tiny), *texts])  # no --tokenizer: tiny has GPT-2's vocabulary
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_scored_token_whose_log_prob_is_nan_is_shown_as_nan(tokenizer):
    """The label comes from `scored`, not from NaN: a NaN where a score should be is shown."""
    ids = np.array([[3666, 3290, 318]])
    mask = np.ones_like(ids)
    scored = np.array([[False, True, True]])
    logprobs = np.array([[np.nan, -1.5, np.nan]])  # position 2 is scored, and NaN
    text = format_scores(summarize(ids, mask, logprobs, scored), tokenizer)
    assert text.count("(first token: no context)") == 1
    assert "'Ġis'" in text and text.split("'Ġis'")[1].split()[1] == "nan"


def test_a_one_token_text_says_there_is_nothing_to_score(capsys, tiny):
    code, out, err = score_cli(capsys, tiny, "Hello")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "nothing to score" in err and "at least two tokens" in err
    code, out, _ = score_cli(capsys, tiny, "Hello", "My dog is")  # with another text: that row says so
    assert code == 0 and "perplexity nan" not in out and "over 0 scored" not in out
    assert "nothing to score: a single token" in out
    assert "over 2 scored tokens" in out and "batch: mean loss" in out


def test_one_scored_token_is_singular(capsys, tiny):
    code, out, _ = score_cli(capsys, tiny, "My dog")
    assert code == 0 and "over 1 scored token," in out and "over 1 scored token (perplexity" in out


def test_a_text_longer_than_the_context_gets_scores_advice(capsys, tiny):
    code, out, err = score_cli(capsys, tiny, "ok then", " ".join(["word"] * 70))  # tiny's context is 64 tokens
    assert code == 1 and out == ""
    assert "text 1 is 70 tokens, longer than the model's context of 64 tokens" in err and "--stride" in err
    assert "fewer tokens" not in err  # generate's advice


def test_only_meaningful_digits_are_printed(capsys, tiny):
    """3 decimals for log-probs, 4 significant digits for perplexities: the float32 forward's
    last digits change with the BLAS and the thread count."""
    code, out, _ = score_cli(capsys, tiny, "My dog is", "It will rain in the")
    assert code == 0
    for line in out.splitlines():
        if "log-likelihood" in line:
            ll, ppl = line.split("log-likelihood ")[1].split()[0], line.split("perplexity ")[1]
            assert len(ll.split(".")[1]) == 3 and len(ppl.replace(".", "").replace("-", "").split("e")[0]) == 4
        elif line.lstrip().split(" ")[0].isdigit() and "first token" not in line:
            assert len(line.split()[-1].split(".")[1]) == 3
