"""Scoring text: how likely the model finds each token, given the tokens before it.

A language model's logits at position t are its guess for the token at t + 1, so

    log p(token t | tokens before it) = log_softmax(logits[t - 1])[token t]

Summed over a sequence this is its log-likelihood; the mean negative log-likelihood per token
is the loss GPT-2 was trained on, and exp(that) is the perplexity ("as unsure as a uniform
choice between this many tokens").

Two kinds of token get no score, and we write NaN there (not 0, which is a real log-prob:
certainty), so that a careless sum shows up as NaN instead of a quietly wrong number:
- pads: they are not part of any text;
- the first real token of each row: nothing comes before it, so nothing predicted it
  (GPT-2 was trained without a BOS token; we do not invent one).
A token t is scored when it is real and the token at t - 1 is real too: then the logits at
t - 1 are a real token's. With left padding that is every real token but the first.

transformers' loss (labels=input_ids, -100 on pads) on a left-padded batch would also score
each row's first real token, from the logits of the pad before it, which mean nothing. Put
-100 on each row's first real token too and its loss equals our `loss` (tests/test_scoring.py
checks it); on an unpadded batch that is exactly its plain loss.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .errors import InputError
from .inputs import check_attention_mask, check_input_ids, check_length
from .layers import lm_head
from .masks import position_ids_from_mask

POSITIONS_PER_CHUNK = 64  # log-softmax is done in float64 on this many positions at a time
POSITIONS_PER_BLOCK = 128  # logits exist for this many positions at a time: [128, vocab] float32 = 26 MB


@dataclass
class Scores:
    input_ids: np.ndarray  # [B, T] what was scored (the tokenizer's output when texts were given)
    attention_mask: np.ndarray  # [B, T] 1 real token, 0 pad
    token_logprobs: np.ndarray  # [B, T] float64 log p(token t | tokens before it); NaN where undefined
    scored: np.ndarray  # [B, T] bool, True where token_logprobs is defined
    total_logprob: np.ndarray  # [B] log-likelihood of each row: the sum of its scored log-probs
    n_scored: np.ndarray  # [B] how many tokens of each row were scored (real tokens - 1)
    perplexity: np.ndarray  # [B] exp(-total / n_scored); NaN for a row with nothing scored
    loss: float  # mean negative log-likelihood over every scored token of the batch (transformers' loss)


def scored_positions(attention_mask: np.ndarray) -> np.ndarray:
    """[B, T] mask -> [B, T] bool: a token is scored when it and the token before it are real.

    [[0, 0, 1, 1, 1]] -> [[False, False, False, True, True]]
    """
    previous_real = np.zeros_like(attention_mask, dtype=bool)  # [B, T]
    previous_real[:, 1:] = attention_mask[:, :-1] == 1  # column 0 has no previous token
    return (attention_mask == 1) & previous_real


def target_logprobs(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[N, V] logits, [N] token ids -> [N] float64 log softmax(logits)[target].

    log_softmax(x)[i] = x[i] - logsumexp(x), with logsumexp(x) = m + log(sum(exp(x - m))) and
    m = max(x), so exp never overflows (nor underflows to an all-zero sum: GPT-2's logits sit
    around -100). The sum of the 50257 terms is accumulated in float64. The exponentials are
    taken in the logits' own dtype: for float32 logits each is within about an ulp (relative
    1e-7), so the result is within ~1e-7 of the float64 log-softmax of the same logits (far
    below the logits' own float32 error), at less than half the cost of float64 exponentials
    (3.6 against 8.3 ns per logit, measured; 8 x 1024 tokens make 411 million logits).
    Float64 logits stay float64 throughout. Done on a few positions at a time, so the
    temporaries stay small even for a long text.
    """
    out = np.empty(len(targets), dtype=np.float64)  # [N]
    for start in range(0, len(targets), POSITIONS_PER_CHUNK):
        rows = slice(start, start + POSITIONS_PER_CHUNK)
        x = logits[rows]  # [n, V]
        m = x.max(axis=-1, keepdims=True)  # [n, 1]
        target = x[np.arange(len(x)), targets[rows]].astype(np.float64)  # [n]
        shifted = np.subtract(x, m)  # [n, V] <= 0: exp never overflows (exact near the max, Sterbenz)
        total = np.exp(shifted, out=shifted).sum(axis=-1, dtype=np.float64)  # [n] float64 sum
        out[rows] = target - (m[:, 0].astype(np.float64) + np.log(total))  # [n]
    return out


def logprobs_from_hidden(
    hidden: np.ndarray, lm_head_weight: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """[B, T, C] final hidden states of [B, T] ids -> ([B, T] log-probs with NaN where undefined, [B, T] scored)."""
    scored = scored_positions(attention_mask)  # [B, T]
    rows, cols = np.nonzero(scored)  # the (row, t) pairs to score
    logprobs = np.full(input_ids.shape, np.nan)  # [B, T] float64
    logprobs[rows, cols] = next_token_logprobs(hidden, lm_head_weight, input_ids, rows, cols)  # [N]
    return logprobs, scored


def next_token_logprobs(
    hidden: np.ndarray, lm_head_weight: np.ndarray, input_ids: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """[N] float64 log p(input_ids[row, t] | the tokens before it), for the N pairs (row, t).

    The hidden state at t - 1 predicts the token at t. Its logits are made POSITIONS_PER_BLOCK
    positions at a time and dropped once turned into log-probs: the whole [B, T, vocab] array
    would be 1.6 GB for 8 x 1024 tokens.
    """
    out = np.empty(len(rows), dtype=np.float64)  # [N]
    predictors = hidden[rows, cols - 1]  # [N, C]: the logits at t - 1 predict the token at t
    for start in range(0, len(rows), POSITIONS_PER_BLOCK):
        block = slice(start, start + POSITIONS_PER_BLOCK)
        logits = lm_head(predictors[block], lm_head_weight)  # [n, C] -> [n, V]
        out[block] = target_logprobs(logits, input_ids[rows[block], cols[block]])  # [n]
    return out


def summarize(input_ids: np.ndarray, attention_mask: np.ndarray, logprobs: np.ndarray, scored: np.ndarray) -> Scores:
    """Per-token log-probs -> per-row totals and perplexities, and the batch's mean loss."""
    total = np.where(scored, logprobs, 0.0).sum(axis=1)  # [B]
    n_scored = scored.sum(axis=1)  # [B]
    with np.errstate(invalid="ignore", divide="ignore"):  # a row of one token: 0 / 0 = NaN, on purpose
        perplexity = np.exp(-total / n_scored)  # [B]
        loss = float(-total.sum() / n_scored.sum())  # NaN if nothing at all was scored
    return Scores(input_ids, attention_mask, logprobs, scored, total, n_scored, perplexity, loss)


def encode_texts(tokenizer: Any, texts: str | Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """A string or list of strings -> left-padded [B, T] ids and mask (pad = eos)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    empty = [i for i, t in enumerate(texts) if isinstance(t, str) and not t]
    if empty:
        raise InputError(f"text {empty[0]} is empty: there is nothing to score; give some text")
    tok = copy.copy(tokenizer)  # a shallow copy, so the caller's padding settings stay untouched
    tok.padding_side, tok.pad_token = "left", tok.eos_token
    batch = tok(texts, padding=True)
    return batch["input_ids"], batch["attention_mask"]


# model: a GPT2, tokenizer: a Tokenizer (Any: both live in modules above or beside this one, see
# the layers in pyproject.toml, so they are not imported here, not even for their types).
def score(
    model: Any,
    inputs: ArrayLike | str | list[str],
    attention_mask: ArrayLike | None = None,
    tokenizer: Any = None,
    stride: int | None = None,
) -> Scores:
    """Per-token log-probabilities, log-likelihood and perplexity of each row, and the batch loss.

    inputs: [B, T] or [T] token ids with an optional [B, T] attention_mask (any padding side:
    positions come from the mask), or a string / list of strings together with `tokenizer`.
    The result is always batched: one sequence gives B = 1.

    stride: score texts longer than the context with sliding windows of n_positions tokens
    moved by `stride` (see `sliding_windows`); T may then exceed n_positions.
    """
    if isinstance(inputs, str) or (
        isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs)
    ):
        if tokenizer is None:
            raise InputError(
                "score got text; pass tokenizer= (e.g. Tokenizer.from_pretrained('gpt2')) or give token ids"
            )
        if attention_mask is not None:
            raise InputError("attention_mask goes with token ids; for text the tokenizer makes it, so leave it out")
        ids, mask = encode_texts(tokenizer, inputs)
    else:
        ids, _ = check_input_ids(inputs, model.config.vocab_size)  # [B, T]
        mask = check_attention_mask(attention_mask, ids.shape)  # [B, T]
    if not (mask.sum(axis=1) > 1).any():  # the loss would be 0 / 0: NaN (a row of one gets perplexity NaN, on purpose)
        raise InputError(
            "nothing to score: every row is a single token, and a text's first token has no context to be predicted "
            "from; give texts of at least two tokens"
        )
    return score_rows(model, ids, mask, stride)


def score_rows(model: Any, ids: np.ndarray, mask: np.ndarray, stride: int | None = None) -> Scores:
    """score() of checked [B, T] ids and mask, rows of one token included (corpus.py scores
    every text it is given: a one-token text gets n_scored 0 and perplexity NaN, not an error)."""
    ids, _ = check_input_ids(ids, model.config.vocab_size)  # [B, T] (corpus.py's token lists come from users)
    mask = check_attention_mask(mask, ids.shape)  # [B, T]
    if stride is not None:
        logprobs, scored = strided_logprobs(model, ids, mask, stride)
        return summarize(ids, mask, logprobs, scored)
    check_length(ids.shape[1], model.config.n_positions, "the input")
    positions = position_ids_from_mask(mask)  # [B, T]
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, as model.forward does
        hidden, _, _ = model.transformer(ids, mask, positions)  # [B, T, C], after ln_f
        logprobs, scored = logprobs_from_hidden(hidden, model.weights.lm_head, ids, mask)
    check_finite(model, logprobs[scored], ids, mask, positions)
    return summarize(ids, mask, logprobs, scored)


def check_finite(model: Any, logprobs: np.ndarray, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray) -> None:
    """A score is never NaN: log-probs from non-finite logits (an overflow) are an error naming
    where the forward pass of (ids, mask, positions) went non-finite (model.non_finite_error)."""
    if not np.isfinite(logprobs).all():
        raise model.non_finite_error(ids, mask, positions)


# --- Texts longer than the context: sliding windows ----------------------------------------
#
# GPT-2 sees at most n_positions tokens at once. To score a longer text, cut it into windows
# of n_positions tokens, each starting `stride` tokens after the previous one, and score in
# each window only the tokens no earlier window scored. Every token then gets a score exactly
# once, and at least n_positions - stride tokens of left context (except near the start, where
# there are fewer tokens before it). This is the method of transformers' docs, "Perplexity of
# fixed-length models"; a smaller stride means more context per token and more forward passes.


def check_stride(stride: Any, n_positions: int) -> int:  # stride: anything the caller passed
    """stride must leave each window at least one token of overlap with the previous one: the
    first token a window scores is predicted by the token before it, which must be inside."""
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or not 1 <= stride < n_positions:
        raise InputError(
            f"stride must be a whole number from 1 to n_positions - 1 = {n_positions - 1}, got {stride!r}; "
            f"e.g. stride={n_positions // 2} scores each token with at least {n_positions - n_positions // 2} tokens of context"
        )
    return int(stride)


def sliding_windows(n_tokens: int, n_positions: int, stride: int) -> list[tuple[int, int, int]]:
    """The windows covering a text of n_tokens: (begin, end, first_scored) each, meaning the
    window holds tokens [begin, end) and scores tokens [first_scored, end).

    sliding_windows(10, 6, 3) -> [(0, 6, 1), (3, 9, 6), (6, 10, 9)]: tokens 1..9 scored once
    each (token 0 has nothing before it), the window (3, 9) scores 6, 7, 8 with 3 tokens before.
    The loop is the transformers docs' one: windows start every `stride` tokens until one
    reaches the end of the text.
    """
    windows, scored_until = [], 1  # token 0 is never scored: nothing predicts it
    for begin in range(0, n_tokens, stride):
        end = min(begin + n_positions, n_tokens)
        if end > scored_until:  # a window with nothing new to score is skipped (a 1-token text)
            windows.append((begin, end, scored_until))
        scored_until = max(scored_until, end)
        if end == n_tokens:
            break
    return windows


def pack_windows(
    input_ids: np.ndarray, windows: list[tuple[int, np.ndarray, int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Windows (row, the row's columns in the window, how many leading tokens are context only)
    -> one left-padded batch: [W, L] ids, [W, L] mask, [W, L] bool which tokens to score, and
    [W, L] the batch column each came from (-1 on pads)."""
    L = max(len(cols) for _, cols, _ in windows)
    ids = np.zeros((len(windows), L), dtype=input_ids.dtype)  # [W, L]
    mask = np.zeros((len(windows), L), dtype=np.int64)  # [W, L]
    targets = np.zeros((len(windows), L), dtype=bool)  # [W, L]
    source = np.full((len(windows), L), -1)  # [W, L]
    for w, (row, cols, n_context) in enumerate(windows):
        pad = L - len(cols)  # left padding: the positions then run 0.. from the window's first token
        ids[w, pad:], mask[w, pad:], source[w, pad:] = input_ids[row, cols], 1, cols
        targets[w, pad + n_context :] = True
    return ids, mask, targets, source


def strided_logprobs(
    model: Any, input_ids: np.ndarray, attention_mask: np.ndarray, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Like `logprobs_from_logits(model(...))`, for rows of any length: each row's real tokens are
    cut into sliding windows, B windows run per forward pass (the memory of one unstrided batch of
    B full-length rows), and each token's log-prob comes from the one window that scores it."""
    n_positions = model.config.n_positions
    stride = check_stride(stride, n_positions)
    windows = []  # (row, [n] batch columns of the window's tokens, number of context-only tokens)
    for row in range(input_ids.shape[0]):
        cols = np.flatnonzero(attention_mask[row])  # the row's real tokens, in order
        for begin, end, first in sliding_windows(len(cols), n_positions, stride):
            windows.append((row, cols[begin:end], first - begin))
    logprobs = np.full(input_ids.shape, np.nan)  # [B, T] float64
    scored = np.zeros(input_ids.shape, dtype=bool)  # [B, T]
    per_pass = max(1, input_ids.shape[0])
    for start in range(0, len(windows), per_pass):
        group = windows[start : start + per_pass]
        ids, mask, targets, source = pack_windows(input_ids, group)  # [W, L] each
        positions = position_ids_from_mask(mask)  # [W, L]: each window's positions start at 0
        w, t = np.nonzero(targets)  # the (window, column) pairs this pass scores
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below
            hidden, _, _ = model.transformer(ids, mask, positions)  # [W, L, C]
            window_logprobs = next_token_logprobs(hidden, model.weights.lm_head, ids, w, t)  # [N]
        check_finite(model, window_logprobs, ids, mask, positions)
        rows = np.array([row for row, _, _ in group])[w]  # [N] their batch rows
        logprobs[rows, source[w, t]] = window_logprobs
        scored[rows, source[w, t]] = True
    return logprobs, scored
