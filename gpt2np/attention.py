"""Causal self-attention: the only layer that mixes information across time.

Each token asks a question (query), every token offers an answer to be matched (key) and a
content (value). A token's output is the average of the values, weighted by softmax of how
well its query matches each key, over the keys it is allowed to see (masks.py). Heads do
this in parallel on slices of the embedding, each with its own notion of "matching".
"""

from __future__ import annotations

import numpy as np

from .hooks import NO_HOOKS, Hooks
from .kv_cache import KVCache
from .layers import linear, softmax
from .masks import AttentionMask
from .weights import Attention

SCORES_BUDGET = 1 << 18  # scores attention_in_blocks holds at once: 1 MB of float32, about a core's L2 cache
QUERY_BLOCK = 64  # at most this many queries per block: the causal skip leaves out more of the future
ZERO_WEIGHT_FILL = -1e4  # a mask fill at or below this gives masked keys a weight of exactly 0 (see below)


def split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """[B, T, C] -> [B, H, T, D] with D = C // H (a view, no copy)."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """[B, H, T, D] -> [B, T, H*D]: the heads' outputs side by side again."""
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: AttentionMask,
    scale: float,
    hook: Hooks = NO_HOOKS,
    layer: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """softmax(q k^T * scale + mask) v, for every head at once: plain.attention with the hook
    points and the weights kept (tests/test_plain.py::test_each_fast_function_equals_its_plain_one).

    q [B, H, Tq, D], k and v [B, H, Tk, D], mask.additive [B, 1, Tq, Tk].
    Returns the output [B, H, Tq, D] and the attention weights [B, H, Tq, Tk].
    """
    # 1/sqrt(D) keeps the scores' spread independent of the head size. Applied to q (Tq x D
    # numbers) rather than to the scores (Tq x Tk), and the same way in attention_in_blocks, so
    # the two paths give the same bits when the blocked one runs in one block (a decode step, a
    # short prompt: tests/test_plain.py::test_one_block_gives_attentions_bits).
    scores = (q * q.dtype.type(scale)) @ k.swapaxes(-1, -2)  # [B, H, Tq, Tk] how well each query matches each key
    scores += mask.additive  # forbidden cells (pads, the future) -> fill
    scores = hook(f"blocks.{layer}.attn.hook_attn_scores", scores)
    probs = softmax(scores)  # [B, H, Tq, Tk] each row sums to 1 over the allowed keys
    if mask.empty_rows is not None:
        # The query of a left-pad token may see no key at all: its own key is a pad and so is
        # everything before it. With fill=-inf softmax gives NaN for that row (0/0); with a
        # finite fill, a uniform average over keys it should not see. Neither means anything,
        # and the NaN is dangerous: the pad's output becomes NaN, and in the next layer every
        # real token multiplies that pad's value by its weight 0, and 0 * NaN = NaN. We define
        # the row instead: a query with nothing to attend to attends to nothing (weights 0, so
        # its attention output is 0), whatever the fill. Real tokens never see pads, so their
        # outputs are identical for every fill.
        np.copyto(probs, 0, where=mask.empty_rows)
    probs = hook(f"blocks.{layer}.attn.hook_pattern", probs)
    return probs @ v, probs  # [B, H, Tq, D]


def future_weights_are_zero(mask: AttentionMask) -> bool:
    """Do the keys in a query's future get weight exactly 0, so that leaving them out changes nothing?

    A masked key's weight is exp(score + fill - row max). With fill = -inf, min or -1e9 that is
    exp of a huge negative number: 0.0 exactly, in float32 and float64 alike. A mild custom fill
    such as -1 leaks a little weight to the future; then we must not skip it, or the result
    would change. The fill is read from a cell that is always in the future: query 0 never sees
    the last key when there are at least 2 queries (with 1 query there is no future to skip).
    """
    Tq = mask.additive.shape[2]
    return Tq < 2 or mask.additive[0, 0, 0, -1] <= ZERO_WEIGHT_FILL


def attend(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, additive: np.ndarray, empty_rows: np.ndarray | None, scores: np.ndarray
) -> np.ndarray:
    """attention()'s output, lean: q already scaled, scores written into the given buffer, no weights kept.

    q [..., n, D], k and v [..., keys, D], scores [..., n, keys] (any contents; overwritten).
    additive [..., n, m]: the mask of the last m keys; the keys before those are allowed for
    every query here, so nothing is added to them (for a causal block with no pads, only the
    diagonal square can be masked). The same operations in the same order as attention(): over
    the same keys, the same bits (adding a 0 of the mask changes nothing). Over fewer keys (the
    future skipped, whose weights are exactly 0) BLAS may sum the rows of k in another order and
    softmax's sum has fewer terms, so a block differs from attention() by rounding only (at most a
    few ulps: tests/test_plain.py::test_attention_in_many_blocks_equals_the_plain_one).
    """
    np.matmul(q, k.swapaxes(-1, -2), out=scores)  # [..., n, keys]
    lo = scores.shape[-1] - additive.shape[-1]
    scores[..., lo:] += additive  # forbidden cells -> fill
    out = softmax(scores) @ v  # [..., n, D] (softmax in place: the buffer now holds the weights)
    if empty_rows is not None:  # a query with nothing to attend to attends to nothing (see attention())
        np.copyto(out, 0, where=empty_rows)
    return out


def attention_in_blocks(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: AttentionMask, scale: float, budget: int | None = None
) -> np.ndarray:
    """attention()'s output without its weights, holding at most `budget` scores at a time.
    plain.attention is the formula (tests/test_plain.py::test_attention_in_many_blocks_equals_the_plain_one).

    The full [B, H, Tq, Tk] scores of a long batch are large (8 x 1024 tokens: 400 MB per
    layer) and mostly wasted: in causal attention the upper triangle is masked away. So a
    long input is taken one sequence, one head (or a few) and one block of queries at a time, and each
    block gets only the keys up to its last query: the keys after that are every query's
    future, weight 0. This halves the work of a long prefill, and a block's scores
    ([rows, keys], at most `budget` of them: 1 MB) stay in the CPU's cache through the five
    passes softmax makes over them. A decode step or a short prompt fits the budget whole and
    is done in one go, every head at once. The arithmetic is attention()'s (see attend()).

    The bound: max(budget, Tk) scores (a block has at least one query row); budget defaults
    to SCORES_BUDGET.
    """
    budget = SCORES_BUDGET if budget is None else budget
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    q = q * q.dtype.type(scale)  # [B, H, Tq, D] scaled once, as attention() does
    if B * H * Tq * Tk <= budget:  # a decode step, a short prompt: one block, nothing to save
        scores = np.empty((B, H, Tq, Tk), dtype=q.dtype)
        return attend(q, k, v, mask.additive, mask.empty_rows, scores)
    past = Tk - Tq  # keys from the cache: query i sits at absolute position past + i
    rows = min(Tq, QUERY_BLOCK, max(1, budget // Tk))  # queries per block
    heads = min(H, max(1, budget // (rows * Tk)))  # heads per block: all of them for a short sequence
    skip_future = future_weights_are_zero(mask)
    buffer = np.empty(heads * rows * Tk, dtype=q.dtype)  # one block's scores, reused by every block
    out = np.empty_like(q)  # [B, H, Tq, D]
    for b in range(B):
        # The mask's last row is the last query's, which may see every key but the pads: its
        # non-zero cells are the columns no query of this sequence may see.
        masked_columns = np.flatnonzero(mask.additive[b, 0, -1])
        first_masked = masked_columns[0] if masked_columns.size else Tk
        for start in range(0, Tq, rows):
            stop = min(start + rows, Tq)
            keys = past + stop if skip_future else Tk  # the block's last query sees keys [0, past + stop)
            lo = min(first_masked, past + start)  # keys before lo: allowed for every query of the block
            additive = mask.additive[b, :, start:stop, lo:keys]  # [1, rows, keys - lo] a view, for every head
            empty = None if mask.empty_rows is None else mask.empty_rows[b, :, start:stop]  # [1, rows, 1]
            for h in range(0, H, heads):
                n_heads = min(heads, H - h)
                group = slice(h, h + n_heads)  # a few heads, or just one when the sequence is long
                scores = buffer[: n_heads * (stop - start) * keys].reshape(n_heads, stop - start, keys)
                out[b, group, start:stop] = attend(
                    q[b, group, start:stop], k[b, group, :keys], v[b, group, :keys], additive, empty, scores
                )
    return out


def self_attention(
    x: np.ndarray,
    attn: Attention,
    mask: AttentionMask,
    n_head: int,
    scale: float,
    cache: KVCache | None = None,
    layer: int = 0,
    need_weights: bool = False,
    hook: Hooks = NO_HOOKS,
    queries: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One attention sub-layer: project to q, k, v; attend; project back. x: [B, T, C].

    Returns the output [B, T, C] and, when need_weights (output_attentions), the full attention
    weights [B, H, T, past + T]; otherwise None, and the scores are made a block at a time.
    queries=N > 0: outputs for the last N positions only ([B, N, C]); keys and values still
    come from all T. The hook points show q, k, v and z as [B, T, H, D] (TransformerLens's layout).
    plain.self_attention is the formula (tests/test_plain.py::test_each_fast_function_equals_its_plain_one)."""
    qkv = linear(x, attn.c_attn)  # [B, T, C] -> [B, T, 3C]
    C = x.shape[-1]
    q, k, v = qkv[..., :C], qkv[..., C : 2 * C], qkv[..., 2 * C :]  # 3 x [B, T, C] views
    q, k, v = split_heads(q, n_head), split_heads(k, n_head), split_heads(v, n_head)  # 3 x [B, H, T, D]
    q = hook(f"blocks.{layer}.attn.hook_q", q.swapaxes(1, 2)).swapaxes(1, 2)  # seen as [B, T, H, D]
    k = hook(f"blocks.{layer}.attn.hook_k", k.swapaxes(1, 2)).swapaxes(1, 2)
    v = hook(f"blocks.{layer}.attn.hook_v", v.swapaxes(1, 2)).swapaxes(1, 2)
    if cache is not None:
        # A decode step has T = 1: q [B, H, 1, D], and k, v become [B, H, past + 1, D], the cached
        # keys and values with this token's appended; mask.additive is the one new row [B, 1, 1, past + 1].
        k, v = cache.update(layer, k, v)  # [B, H, past + T, D]: this step's keys after the cached ones
    points = (f"blocks.{layer}.attn.hook_attn_scores", f"blocks.{layer}.attn.hook_pattern")
    if queries:  # only the last N queries' outputs are wanted (GPT2.transformer's keep)
        q = q[:, :, -queries:]  # [B, H, N, D]
        rows = slice(-queries, None)
        mask = AttentionMask(
            mask.additive[:, :, rows], None if mask.empty_rows is None else mask.empty_rows[:, :, rows]
        )
    if need_weights or any(hook.wants(p) for p in points):  # the whole weights are asked for
        out, probs = attention(q, k, v, mask, scale, hook, layer)  # [B, H, T, D], [B, H, T, past + T]
    else:
        out, probs = attention_in_blocks(q, k, v, mask, scale), None  # [B, H, T, D], bounded memory
    z = hook(f"blocks.{layer}.attn.hook_z", out.swapaxes(1, 2)).swapaxes(1, 2)  # seen as [B, T, H, D]
    return linear(merge_heads(z), attn.c_proj), probs  # [B, T, C]
