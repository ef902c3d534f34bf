"""Scoring: per-token log-probs, log-likelihood, perplexity, and transformers' loss."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS, SEED_SENTENCES

import gpt2np.model
import gpt2np.scoring
from gpt2np import GPT2, InputError, ModelError
from gpt2np.scoring import scored_positions, target_logprobs
from gpt2np.tools.cli import main

TOL = 1e-4  # the issue's bound against transformers' loss (float32)


@pytest.fixture(scope="module")
def tiny(model_dir):
    return GPT2.from_pretrained(model_dir("tiny"))


def hf_loss(hf, ids, mask, labels):
    """transformers' loss with the given labels (-100 = ignored), positions from the mask."""
    import torch

    positions = np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        out = hf(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            position_ids=torch.tensor(positions),
            labels=torch.tensor(labels),
        )
    return float(out.loss), out.logits.double()


# --- against transformers -------------------------------------------------------------------


@pytest.mark.transformers
@pytest.mark.parametrize("name", ["tiny", "small-outliers", "odd"])
def test_unpadded_batch_matches_transformers_plain_loss(name, model_dir, hf_model):
    folder = model_dir(name)
    model = GPT2.from_pretrained(folder)
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(3, 11))  # [3, 11], no padding
    scores = model.score(ids)
    loss, _ = hf_loss(hf_model(folder), ids, np.ones_like(ids), labels=ids)
    assert abs(scores.loss - loss) < TOL
    assert scores.n_scored.tolist() == [10, 10, 10]  # every token but the first


@pytest.mark.transformers
@pytest.mark.parametrize("name", ["tiny", "small-outliers"])
def test_padded_batch_matches_transformers_with_first_tokens_ignored(name, model_dir, hf_model):
    import torch

    folder = model_dir(name)
    model = GPT2.from_pretrained(folder)
    ids, mask = SEED_INPUT_IDS, SEED_ATTENTION_MASK
    scores = model.score(ids, attention_mask=mask)
    first_real = np.argmax(mask == 1, axis=1)  # [B] column of each row's first real token
    labels = np.where(mask == 1, ids, -100)
    labels[np.arange(len(ids)), first_real] = -100  # nothing real predicts it
    loss, logits = hf_loss(hf_model(folder), ids, mask, labels)
    assert abs(scores.loss - loss) < TOL
    # token by token, too: transformers' log_softmax at t - 1, read at token t
    logprobs = torch.log_softmax(logits, dim=-1).numpy()  # [B, T, V]
    rows, cols = np.nonzero(scores.scored)
    theirs = logprobs[rows, cols - 1, ids[rows, cols]]
    assert np.abs(scores.token_logprobs[rows, cols] - theirs).max() < TOL
    # The naive labels (-100 on pads only) also score each first token from a pad's logits:
    naive, _ = hf_loss(hf_model(folder), ids, mask, np.where(mask == 1, ids, -100))
    assert abs(naive - scores.loss) > 10 * TOL  # a different (meaningless) number


@pytest.mark.transformers
def test_float64_matches_transformers_float64(model_dir, hf_model):
    import torch

    folder = model_dir("small-outliers")
    model = GPT2.from_pretrained(folder, dtype="float64")
    ids, mask = SEED_INPUT_IDS, SEED_ATTENTION_MASK
    scores = model.score(ids, attention_mask=mask)
    _, logits = hf_loss(hf_model(folder, dtype="float64"), ids, mask, np.where(mask == 1, ids, -100))
    logprobs = torch.log_softmax(logits, dim=-1).numpy()  # [B, T, V] float64
    rows, cols = np.nonzero(scores.scored)
    assert np.abs(scores.token_logprobs[rows, cols] - logprobs[rows, cols - 1, ids[rows, cols]]).max() < 1e-9


# --- on its own -----------------------------------------------------------------------------


def test_scored_positions():
    left = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    right = np.array([[1, 1, 1, 0, 0]])
    assert scored_positions(left).tolist() == [[False, False, False, True, True], [False, True, True, True, True]]
    assert scored_positions(right).tolist() == [[False, True, True, False, False]]


def test_target_logprobs_is_log_softmax_and_stable():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((130, 50)).astype(np.float32) * 3  # more rows than one chunk
    targets = rng.integers(0, 50, size=130)
    x = logits.astype(np.float64)
    reference = np.log(np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True))[
        np.arange(130), targets
    ]  # naive, fine at this scale
    # float64 logits: float64 all the way
    assert np.abs(target_logprobs(x, targets) - reference).max() < 1e-12
    # float32 logits: float32 exponentials (each within ~1 ulp), summed in float64
    assert np.abs(target_logprobs(logits, targets) - reference).max() < 1e-6
    huge = logits + np.float32(1e4)  # exp would overflow without the max shift
    assert np.abs(target_logprobs(huge, targets) - reference).max() < 1e-3  # float32 lost digits at 1e4, not infinity


def test_target_logprobs_of_a_whole_vocabulary_of_very_negative_logits():
    """GPT-2's logits sit far below 0 (around -100): exp of them underflows to 0 in float32,
    so the shift by the max must come before exp. 50257 terms, within 1e-6 of the float64
    log-softmax of the same float32 logits."""
    rng = np.random.default_rng(2)
    logits = (rng.standard_normal((4, 50257)) * 2 - 120).astype(np.float32)
    targets = rng.integers(0, 50257, size=4)
    x = logits.astype(np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    reference = (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)))[np.arange(4), targets]
    assert np.abs(target_logprobs(logits, targets) - reference).max() < 1e-6


def test_undefined_positions_are_nan_and_totals_add_up(tiny):
    scores = tiny.score(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK)
    assert np.array_equal(np.isnan(scores.token_logprobs), ~scores.scored)
    assert scores.n_scored.tolist() == (SEED_ATTENTION_MASK.sum(axis=1) - 1).tolist()
    defined = scores.token_logprobs[scores.scored]
    assert (defined < 0).all()  # log of a probability below 1
    assert np.allclose(scores.total_logprob, np.nansum(scores.token_logprobs, axis=1))
    assert np.allclose(scores.perplexity, np.exp(-scores.total_logprob / scores.n_scored))
    assert np.isclose(scores.loss, -defined.mean())


def test_a_sentence_scores_the_same_alone_and_in_a_padded_batch(tiny):
    batch = tiny.score(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK)
    for b in range(len(SEED_INPUT_IDS)):
        real = SEED_ATTENTION_MASK[b] == 1
        alone = tiny.score(SEED_INPUT_IDS[b][real])
        assert alone.token_logprobs.shape == (1, real.sum())  # one sequence is still a batch of 1
        assert np.allclose(alone.token_logprobs[0], batch.token_logprobs[b][real], atol=1e-5, equal_nan=True)
        assert abs(alone.total_logprob[0] - batch.total_logprob[b]) < 1e-4


def test_right_padding_scores_the_same_as_left(tiny):
    left = tiny.score(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK)
    right_ids, right_mask = np.full_like(SEED_INPUT_IDS, 50256), np.zeros_like(SEED_ATTENTION_MASK)
    for b in range(len(SEED_INPUT_IDS)):
        n = SEED_ATTENTION_MASK[b].sum()
        right_ids[b, :n], right_mask[b, :n] = SEED_INPUT_IDS[b][SEED_ATTENTION_MASK[b] == 1], 1
    right = tiny.score(right_ids, attention_mask=right_mask)
    assert np.allclose(right.total_logprob, left.total_logprob, atol=1e-4)
    assert abs(right.loss - left.loss) < 1e-5


def test_texts_with_a_tokenizer(tiny, tokenizer):
    from_text = tiny.score(SEED_SENTENCES, tokenizer=tokenizer)
    from_ids = tiny.score(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK)
    assert np.array_equal(from_text.input_ids, SEED_INPUT_IDS)  # left-padded with eos
    assert np.array_equal(from_text.token_logprobs, from_ids.token_logprobs, equal_nan=True)
    assert tokenizer.padding_side == "right" and tokenizer.pad_token is None  # the caller's tokenizer is untouched
    one = tiny.score("My dog is", tokenizer=tokenizer)
    assert one.n_scored.tolist() == [2]


def test_a_one_token_text_has_nothing_to_score(tiny):
    """A row of one token has nothing scored (perplexity NaN, on purpose: 0 / 0); a batch of
    nothing but such rows has no loss either, and is refused (issue 30: loss NaN came back)."""
    scores = tiny.score([[3666, 3290], [50256, 3666]], attention_mask=[[1, 1], [0, 1]])
    assert scores.n_scored.tolist() == [1, 0] and scores.total_logprob[1] == 0.0
    assert np.isnan(scores.perplexity[1]) and np.isfinite(scores.loss)
    for one in ([[3666]], [[5], [7]], [3666]):
        with pytest.raises(InputError, match="nothing to score: every row is a single token"):
            tiny.score(one)


def test_bad_inputs(tiny, tokenizer):
    with pytest.raises(InputError, match="tokenizer="):
        tiny.score("My dog is")
    with pytest.raises(InputError, match="empty"):
        tiny.score(["My dog is", ""], tokenizer=tokenizer)
    with pytest.raises(InputError, match="attention_mask"):
        tiny.score("My dog is", attention_mask=[[1, 1, 1]], tokenizer=tokenizer)
    with pytest.raises(InputError, match="not a token id"):
        tiny.score([[1, 2, 60000]])
    with pytest.raises(InputError, match=r"text 1 holds a lone surrogate \('\\ud83d'"):  # an emoji cut in half
        tiny.score(["My dog is", "emoji \ud83d"], tokenizer=tokenizer)


def test_cli_refuses_an_argument_that_is_not_utf8(model_dir, tokenizer_dir, capsys):
    """A byte that is not UTF-8 in argv reaches Python as a lone surrogate (surrogateescape)."""
    text = b"caf\xe9 au lait".decode("utf-8", "surrogateescape")
    code = main(["score", "--model", str(model_dir("tiny")), "--tokenizer", str(tokenizer_dir), text])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "lone surrogate ('\\udce9' at character 3)" in err


def test_cli_prints_the_library_numbers(tiny, model_dir, tokenizer_dir, capsys):
    code = main(["score", "--model", str(model_dir("tiny")), "--tokenizer", str(tokenizer_dir), *SEED_SENTENCES])
    out = capsys.readouterr().out
    assert code == 0
    scores = tiny.score(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK)
    for b in range(3):
        assert f"log-likelihood {scores.total_logprob[b]:.3f} over {scores.n_scored[b]} scored tokens" in out
    assert f"mean loss {scores.loss:.4f}" in out
    assert f"{scores.token_logprobs[2, -1]:9.3f}" in out  # 'Ġis' after 'My dog'
    assert out.count("(first token: no context)") == 3


def test_cli_error_is_one_line(model_dir, tokenizer_dir, capsys):
    code = main(["score", "--model", str(model_dir("tiny")), "--tokenizer", str(tokenizer_dir), "ok", ""])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "empty" in err


def test_cli_reports_an_overflow_as_one_line_never_nan(overflowing_model_dir, capsys):
    """`gpt2np score "The cat sat"` on finite but overflowing weights printed "log-likelihood nan"
    and exited 0: now our error, one line, exit 1, and nothing on stdout."""
    code = main(["score", "--model", str(overflowing_model_dir), "The cat sat"])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "non-finite at ln_final.hook_normalized" in err and "nan" not in err.lower().replace("non-finite", "")


# --- a block of positions at a time ---------------------------------------------------------


def full_logits_reference(model, ids, mask):
    """The straightforward way, for comparison: the whole [B, T, V] logits, then a float64
    log-softmax at each scored position (positions from the mask, as score uses)."""
    logits = model(ids, attention_mask=mask).logits.astype(np.float64)  # [B, T, V]
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    ref = np.full(ids.shape, np.nan)
    scored = scored_positions(mask)
    rows, cols = np.nonzero(scored)
    ref[rows, cols] = logp[rows, cols - 1, ids[rows, cols]]
    return ref


@pytest.mark.parametrize("block", [1, 2, 5, 128])
def test_blockwise_scoring_equals_full_logits_scoring(tiny, monkeypatch, block):
    """Logits made `block` positions at a time, never as [B, T, V]: the same log-probs as the
    full logits give. The model's own output layer is never asked for the whole batch."""
    ref = full_logits_reference(tiny, SEED_INPUT_IDS, SEED_ATTENTION_MASK)
    shapes, real_lm_head = [], gpt2np.scoring.lm_head

    def spy(x, weight):
        shapes.append(x.shape)
        return real_lm_head(x, weight)

    def forbidden(*args):
        raise AssertionError("score computed the full logits")

    monkeypatch.setattr(gpt2np.scoring, "POSITIONS_PER_BLOCK", block)
    monkeypatch.setattr(gpt2np.scoring, "lm_head", spy)
    monkeypatch.setattr(gpt2np.model, "lm_head", forbidden)
    scores = tiny.score(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK)
    assert max(s[0] for s in shapes) <= block and all(len(s) == 2 for s in shapes)  # [n <= block, C] rows each time
    assert sum(s[0] for s in shapes) == scores.scored.sum()  # every scored position once, nothing else
    np.testing.assert_array_equal(np.isnan(scores.token_logprobs), np.isnan(ref))
    np.testing.assert_allclose(scores.token_logprobs, ref, rtol=0, atol=2e-5, equal_nan=True)


def test_an_overflow_is_an_error_never_a_nan_score(overflowing_model_dir, tokenizer):
    """Scoring runs its own forward pass (hidden states, then logits a block at a time): a model
    whose values overflow float32 gives our error, not a NaN log-likelihood; strided too."""
    model = GPT2.from_pretrained(overflowing_model_dir)
    with pytest.raises(ModelError, match=r"non-finite at ln_final\.hook_normalized \(row 0, token 0\)"):
        model.score("The cat sat", tokenizer=tokenizer)
    with pytest.raises(ModelError, match=r"non-finite at ln_final\.hook_normalized"):
        model.score(["The cat sat on the mat"] * 2, tokenizer=tokenizer, stride=3)
