"""Scoring many texts: grouped by length into batches, so that little of each batch is padding,
with one result per text, and a text that cannot be scored reported in its result instead of
stopping the others.

`score` (scoring.py) scores one batch. A corpus has texts of every length: put a 10-token text
in a batch with a 500-token one and 490 of its columns are pads the model still computes.
Sorting the texts by length and cutting the sorted list into batches fixes that; the results
are put back in the texts' order. The command `gpt2np score --file` (tools/score_file.py) and
the Ray integration (ray.py) both score through `score_texts`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .errors import GPT2npError, InputError
from .scoring import check_stride, score_rows


@dataclass
class TextScore:
    """What one text got. The field names are the JSONL's and the Ray columns'."""

    n_tokens: int | None  # how many tokens the text has (None if it could not be tokenized)
    n_scored: int = 0  # n_tokens - 1: every token but the first, which nothing predicts
    log_likelihood: float = 0.0  # the sum of the scored tokens' log-probs
    perplexity: float = float("nan")  # exp(-log_likelihood / n_scored); NaN when nothing was scored
    token_logprobs: np.ndarray | None = None  # [n_tokens] float64, NaN for the first token (if asked for)
    error: str | None = None  # why the text was not scored; the other fields are then empty


def length_batches(lengths: list[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Indices of texts grouped into batches of similar length: the texts sorted by length, the
    sorted list cut whenever a batch would exceed batch_size texts or max_tokens padded tokens
    (texts x its longest text). A text longer than max_tokens gets a batch of its own.

    length_batches([5, 100, 6, 90], batch_size=2, max_tokens=1000) -> [[0, 2], [3, 1]]
    """
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):  # stable: equal lengths keep their order
        rows = len(current) + 1  # with text i, which is the longest so far (the list is sorted)
        if current and (rows > batch_size or rows * lengths[i] > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def left_pad(token_lists: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Token id lists -> [B, T] ids and mask, padded on the left (the pad's id is never read)."""
    T = max(len(t) for t in token_lists)
    ids = np.zeros((len(token_lists), T), dtype=np.int64)  # [B, T]
    mask = np.zeros((len(token_lists), T), dtype=np.int64)  # [B, T]
    for b, t in enumerate(token_lists):
        ids[b, T - len(t) :], mask[b, T - len(t) :] = t, 1
    return ids, mask


def check_text(text: object, n_tokens: int | None, n_positions: int, stride: int | None) -> str | None:
    """Why a text cannot be scored, or None. (Its n_tokens is None if it is not a string.)"""
    if text is None:
        return "there is no text (null): give text"
    if not isinstance(text, str):
        return f"the text is not a string but {type(text).__name__}: give text"
    if not text:
        return "the text is empty: there is nothing to score"
    if n_tokens > n_positions and stride is None:  # type: ignore[operator]  # a str has n_tokens
        return (
            f"the text is {n_tokens} tokens, more than this model's n_positions = {n_positions}; "
            f"score it in sliding windows with --stride (stride= in Python), e.g. {n_positions // 2}"
        )
    return None


def score_batch(model: Any, arrays: list[np.ndarray], stride: int | None, token_logprobs: bool) -> list[TextScore]:
    """Score token id arrays as one left-padded batch (in sliding windows if one is longer than
    the context); one TextScore per array."""
    ids, mask = left_pad(arrays)  # [B, T]
    long = ids.shape[1] > model.config.n_positions  # windows only where needed: a batch that fits runs as one pass
    scores = score_rows(model, ids, mask, stride=stride if long else None)  # one-token texts too (n_scored 0)
    return [
        TextScore(
            n_tokens=len(t),
            n_scored=int(scores.n_scored[b]),
            log_likelihood=float(scores.total_logprob[b]),
            perplexity=float(scores.perplexity[b]),
            token_logprobs=scores.token_logprobs[b, ids.shape[1] - len(t) :] if token_logprobs else None,
        )
        for b, t in enumerate(arrays)
    ]


def score_alone(model: Any, array: np.ndarray, stride: int | None, token_logprobs: bool) -> TextScore:
    """One text in a batch of its own; if even that fails, a TextScore saying why."""
    try:
        return score_batch(model, [array], stride, token_logprobs)[0]
    except GPT2npError as e:
        return TextScore(n_tokens=len(array), error=str(e))


# model: a GPT2 (model.py sits beside this module, so it is not imported here).
def score_token_lists(
    model: Any,
    token_lists: Iterable[ArrayLike],  # token ids, one list (or 1-D array) per text
    batch_size: int = 8,
    max_tokens: int = 4096,
    stride: int | None = None,
    token_logprobs: bool = False,
) -> list[TextScore]:
    """Score token id lists of any lengths, batched by length; results in the given order.
    Lists longer than n_positions need `stride` (see scoring.sliding_windows).

    A batch that fails (the forward pass of one text overflows to inf: a ModelError) is scored
    again one text at a time, so that only the text that fails gets an error (its TextScore's
    `error`) and its batch-mates get their numbers: one bad text never stops the others."""
    n_positions = model.config.n_positions
    if stride is not None:
        check_stride(stride, n_positions)
    check_batch_limits(batch_size, max_tokens)
    arrays = [np.asarray(t, dtype=np.int64) for t in token_lists]  # one [n] int64 array per list
    # A text longer than the context runs in windows of n_positions: that is its cost per row.
    cost = [min(len(t), n_positions) for t in arrays]
    results: list[TextScore | None] = [None] * len(arrays)
    for batch in length_batches(cost, batch_size, max_tokens):
        try:
            scored = score_batch(model, [arrays[i] for i in batch], stride, token_logprobs)
        except GPT2npError:
            # Which text failed is not known, and the others must not lose their numbers: score
            # each alone. (Deterministic, so an interrupted and resumed run gives the same bytes.)
            scored = [score_alone(model, arrays[i], stride, token_logprobs) for i in batch]
        for i, s in zip(batch, scored):
            results[i] = s
    # every slot is filled: each index is in exactly one batch (hence the ignore)
    return results  # type: ignore[return-value]


def check_batch_limits(batch_size: object, max_tokens: object) -> None:
    """batch_size and max_tokens must be positive whole numbers (checked before any work)."""
    for name, value in (("batch_size", batch_size), ("max_tokens", max_tokens)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} must be a positive whole number, got {value!r}")


def tokenize(tokenizer: Any, text: object) -> tuple[list[int] | None, str | None]:
    """A text's token ids, or (None, why it has none). Not a string: (None, None), check_text says why."""
    if not isinstance(text, str):
        return None, None
    try:
        return tokenizer.encode(text), None
    except InputError as e:  # a lone surrogate: not Unicode text (inputs.check_unicode)
        return None, str(e)


def score_texts(
    model: Any,  # a GPT2
    tokenizer: Any,  # a Tokenizer (tokenizer.py sits a layer below, but only its encode() is needed)
    texts: Iterable[object],
    batch_size: int = 8,
    max_tokens: int = 4096,
    stride: int | None = None,
    token_logprobs: bool = False,
) -> list[TextScore]:
    """Score a list of texts, batched by length; one TextScore per text, in order. A text that
    cannot be scored (not a string, not Unicode text, empty, longer than the context without
    `stride`, or one whose forward pass fails) gets a TextScore with `error` set; the others are
    scored as usual."""
    texts = list(texts)
    tokenized = [tokenize(tokenizer, t) for t in texts]
    n_tokens = [None if ids is None else len(ids) for ids, _ in tokenized]
    errors = [
        error or check_text(t, n, model.config.n_positions, stride)
        for t, n, (_, error) in zip(texts, n_tokens, tokenized)
    ]
    good = [i for i, e in enumerate(errors) if e is None]
    good_tokens = [tokenized[i][0] for i in good]  # every text without an error has tokens
    scored = iter(score_token_lists(model, good_tokens, batch_size, max_tokens, stride, token_logprobs))  # type: ignore[arg-type]
    return [TextScore(n_tokens[i], error=errors[i]) if errors[i] else next(scored) for i in range(len(texts))]
