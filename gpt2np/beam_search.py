"""Beam search: keep the K most likely partial sequences of each prompt, not only the best one.

Greedy decoding commits to the most likely token at every step, so it never sees a sequence
whose first token was only second best but whose whole is far more likely. Beam search keeps
K candidates ("beams") per prompt, each scored by the sum of its tokens' log-probabilities,
and at every step extends all of them by every token and keeps the K best results. With K = 1
it is greedy decoding.

One step, for each prompt (row) of the batch, independently of the others:

  1. score the next token of each of the K running beams: log_softmax of the logits, then the
     processors (processors.py)                                        -> [K, V] log-probs
  2. candidates: beam score + the token's log-prob, for every beam and token -> K * V scores
  3. keep the 2K best candidates: even if K of them end here (with eos), K go on
  4. a candidate among the K best that ends (eos, a stop string, or the length limit) is
     offered to the row's list of finished sequences with its score divided by
     new_tokens ** length_penalty (> 0 favours long sequences, < 0 short ones); the list keeps
     its K best
  5. the K best candidates that do not end are the next running beams. Each is a parent beam
     plus one token, so the KV cache's rows are reordered by parent (KVCache.reorder: the
     prompt is never run again) and the new tokens go through the model in one pass of
     B * K rows
  6. a row is done when its finished list cannot improve any more: with early_stopping=True
     as soon as it holds K sequences; with False when it holds K and the best running beam,
     normalised at its current length, cannot beat the worst of them; with "never" the same,
     but a length_penalty > 0 is applied at the longest length the beam could still reach
     (with "never" and length_penalty=0 this is the textbook beam search)

Returned: each row's num_return_sequences best finished sequences, best first.

This is transformers 5.24's `_beam_search` (generation/utils.py), step for step, including
its arithmetic: a running beam that must not be chosen gets -1e9 added to its score (NEVER
below) rather than being removed, in float32 like the logits. The same float32 numbers then give
the same beams. One departure: the list of finished sequences marks an empty slot, and a
candidate that may not join it, with -inf, not -1e9. With a negative length_penalty a finished
sequence's score is multiplied by its length ** |length_penalty| and can fall below -1e9 (-50
over 40 tokens at -5: -5e9); with -1e9 it would lose to "no sequence" and the search would
return nothing (issue 30). Wherever transformers' finished scores lie above -1e9, -inf ranks
them exactly as -1e9 does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .kv_cache import KVCache
from .layers import log_softmax
from .masks import position_ids_from_mask
from .processors import Processors
from .sampling import check_logits
from .stopping import StopStrings

NEVER = -1e9  # added to a score that must lose every comparison (transformers' value): far below any real sum


@dataclass
class BeamSearchOutput:
    sequences: np.ndarray  # [B * R, T + n]: each prompt's R best sequences, best first
    sequences_scores: np.ndarray  # [B * R] sum of the new tokens' log-probs / n_new_tokens ** length_penalty
    beam_indices: (
        np.ndarray
    )  # [B * R, n]: for each new token, the row of that step's scores it was chosen from; -1 after the end
    scores: list[np.ndarray] | None  # per step, [B * K, V] processed log-probs (output_scores)
    logits: list[np.ndarray] | None  # per step, [B * K, V] raw logits (output_logits)


def top_k_indices(x: np.ndarray, k: int) -> np.ndarray:
    """[B, M] -> [B, k] column indices of each row's k largest values, largest first (equal
    values: lower index first). argpartition then a sort of the k: no sort of all M."""
    part = np.argpartition(-x, k - 1, axis=-1)[:, :k]  # [B, k] the k largest, in no order
    values = np.take_along_axis(x, part, axis=-1)
    order = np.lexsort((part, -values), axis=-1)  # by value descending, then by index
    return np.take_along_axis(part, order, axis=-1)


def take(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Gather along the beam axis: x [B, M, ...], index [B, k] -> [B, k, ...]."""
    return np.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def beam_search(
    model: Any,  # a GPT2
    ids: np.ndarray,  # [B, T] left-padded prompts
    mask: np.ndarray,  # [B, T]
    n_new: int,
    num_beams: int,
    num_return_sequences: int,
    length_penalty: float,
    early_stopping: bool | str,
    eos: int | None,
    pad: int | None,
    processors: Processors,  # for B * num_beams rows
    stop: StopStrings | None,
    use_cache: bool,
    output_scores: bool,
    output_logits: bool,
) -> BeamSearchOutput:
    cfg, dtype = model.config, model.dtype
    B, T = ids.shape
    K = num_beams
    N = B * K  # rows of every forward pass after the prompt
    max_length = T + n_new
    never = dtype.type(NEVER)

    # The running beams of each row, and the best finished sequences found so far.
    running = np.full((B, K, max_length), 0 if pad is None else pad, dtype=np.int64)  # [B, K, T + n]
    running[:, :, :T] = ids[:, None, :]  # every beam starts as its prompt
    running_scores = np.zeros((B, K), dtype=dtype)  # [B, K] sum of the beam's log-probs
    running_scores[:, 1:] = never  # only beam 0 grows at the first step: else K copies of one continuation
    running_parents = np.full((B, K, n_new), -1, dtype=np.int64)  # [B, K, n] the beam_indices of each beam
    finished = running.copy()  # [B, K, T + n] each row's K best finished sequences, best first
    finished_scores = np.full((B, K), -np.inf, dtype=dtype)  # [B, K] length-normalised; -inf: an empty slot
    finished_parents = running_parents.copy()  # [B, K, n]
    is_finished = np.zeros((B, K), dtype=bool)  # [B, K] which slots hold a sequence
    improvable = np.ones(B, dtype=bool)  # [B] can a running beam still beat the finished ones?

    full_mask = np.ones((N, max_length), dtype=np.int64)  # generated tokens are all real: 1
    full_mask[:, :T] = np.repeat(mask, K, axis=0)  # [N, T]: beam k of row b is row b * K + k
    positions = position_ids_from_mask(mask)  # [B, T]
    step_positions = np.repeat(positions[:, -1:], K, axis=0)  # [N, 1] each beam's last prompt position

    # The prompt once per row, its keys and values then copied to the row's K beams.
    cache = None
    if use_cache:
        prompt_cache = KVCache(cfg.n_layer, B, cfg.n_head, T, cfg.head_dim, dtype)
        logits = model.forward(ids, mask, positions, prompt_cache, logits_to_keep=1).logits[:, -1]  # [B, V]
        cache = prompt_cache.repeat_rows(K, max_length)  # [N] rows
        del prompt_cache
    else:
        logits = model.forward(ids, mask, positions, logits_to_keep=1).logits[:, -1]  # [B, V]
    logits = np.repeat(logits, K, axis=0)  # [N, V] every beam of a row sees the same prompt
    V = logits.shape[-1]
    all_scores: list[np.ndarray] | None = [] if output_scores else None
    all_logits: list[np.ndarray] | None = [] if output_logits else None

    for step in range(n_new):
        length = T + step  # tokens in every running beam
        # 1. each beam's next-token log-probs, processed
        check_logits(logits, step)
        log_probs = log_softmax(logits)  # [N, V]
        if processors.active:
            log_probs = processors(log_probs, running.reshape(N, max_length)[:, :length])
        if all_scores is not None:
            all_scores.append(log_probs)
        if all_logits is not None:
            all_logits.append(logits)

        # 2-3. the 2K best continuations of each row, over all its beams and tokens
        candidates = (log_probs.reshape(B, K, V) + running_scores[:, :, None]).reshape(B, K * V)  # [B, K * V]
        best = top_k_indices(candidates, 2 * K)  # [B, 2K] best first
        top_scores = np.take_along_axis(candidates, best, axis=-1)  # [B, 2K]
        parent, token = best // V, best % V  # [B, 2K] which beam, which token
        top_sequences = take(running, parent)  # [B, 2K, T + n] the parents' tokens (a copy) ...
        top_sequences[:, :, length] = token  # ... and the new one
        top_parents = take(running_parents, parent)  # [B, 2K, n]
        top_parents[:, :, step] = np.arange(B)[:, None] * K + parent  # the row of this step's scores

        # which candidates end with this token
        ends = np.full((B, 2 * K), length + 1 >= max_length)  # [B, 2K] the length limit
        if eos is not None:
            ends |= token == eos
        if stop is not None:
            ends |= stop(top_sequences.reshape(B * 2 * K, max_length)[:, : length + 1]).reshape(B, 2 * K)

        # 5. the next running beams: the K best candidates that go on
        going_on = top_scores + ends * never  # [B, 2K] an ended candidate drops behind every other
        keep = top_k_indices(going_on, K)  # [B, K]
        running, running_scores = take(top_sequences, keep), np.take_along_axis(going_on, keep, axis=-1)
        running_parents = take(top_parents, keep)

        # 4. ended candidates among the K best join the finished lists, if they are better
        offered = ends & (np.arange(2 * K) < K)  # [B, 2K] (beyond the K best: only a reserve of running beams)
        normalised = top_scores / dtype.type((length + 1 - T) ** length_penalty)  # [B, 2K]
        full = is_finished.all(axis=1, keepdims=True) & (early_stopping is True)  # [B, 1] rows that take no more
        joins = offered & ~full & improvable[:, None]  # [B, 2K] may join the finished list
        normalised = np.where(joins, normalised, -np.inf)  # -inf, not NEVER: a real score may lie below -1e9
        merged = np.concatenate([finished_scores, normalised], axis=1)  # [B, 3K]
        best_k = top_k_indices(merged, K)  # [B, K]
        finished = take(np.concatenate([finished, top_sequences], axis=1), best_k)
        finished_scores = np.take_along_axis(merged, best_k, axis=-1)
        finished_parents = take(np.concatenate([finished_parents, top_parents], axis=1), best_k)
        is_finished = take(np.concatenate([is_finished, joins], axis=1), best_k)

        # 6. is any row still open?
        if early_stopping == "never" and length_penalty > 0:
            best_length = max_length - T  # a longer beam would score higher: assume the longest
        else:
            best_length = length + 1 - T
        best_possible = running_scores[:, :1] / dtype.type(best_length**length_penalty)  # [B, 1]
        worst = np.where(is_finished, finished_scores.min(axis=1, keepdims=True), -np.inf)  # [B, K]
        improvable &= (best_possible > worst).any(axis=1)
        open_rows = improvable.any() and not (is_finished.all() and early_stopping is True)
        if not open_rows or ends.all():
            break

        # The next step: each running beam is its parent's row of the cache plus one token.
        parents = running_parents[:, :, step].reshape(N)  # [N] row of the old beam each new one grows from
        next_tokens = running[:, :, length].reshape(N)  # [N]
        if cache is not None:
            cache.reorder(parents)
            out = model.forward(next_tokens[:, None], full_mask[:, : length + 1], step_positions + step + 1, cache, 1)
        else:  # recompute every beam whole: slower, the same beams (a check of the reorder)
            beams = running.reshape(N, max_length)[:, : length + 1]
            beam_mask = full_mask[:, : length + 1]
            out = model.forward(beams, beam_mask, position_ids_from_mask(beam_mask), logits_to_keep=1)
        logits = out.logits[:, -1]  # [N, V]

    R = num_return_sequences
    beam_indices = finished_parents[:, :R].reshape(B * R, n_new)
    n_generated = int((beam_indices != -1).sum(axis=1).max())  # the longest returned sequence's new tokens
    return BeamSearchOutput(
        sequences=finished[:, :R].reshape(B * R, max_length)[:, : T + n_generated],
        sequences_scores=finished_scores[:, :R].reshape(B * R),
        beam_indices=beam_indices[:, :n_generated],
        scores=all_scores,
        logits=all_logits,
    )
