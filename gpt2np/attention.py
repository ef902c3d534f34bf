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


def split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """[B, T, C] -> [B, H, T, D] with D = C // H (a view, no copy)."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """[B, H, T, D] -> [B, T, H*D]: the heads' outputs side by side again."""
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: AttentionMask, scale: float, hook: Hooks = NO_HOOKS, layer: int = 0):
    """softmax(q k^T * scale + mask) v, for every head at once.

    q [B, H, Tq, D], k and v [B, H, Tk, D], mask.additive [B, 1, Tq, Tk].
    Returns the output [B, H, Tq, D] and the attention weights [B, H, Tq, Tk].
    """
    scores = q @ k.swapaxes(-1, -2)  # [B, H, Tq, Tk] how well each query matches each key
    scores *= scale  # 1/sqrt(D): keeps the scores' spread independent of the head size
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


def self_attention(
    x: np.ndarray,
    attn: Attention,
    mask: AttentionMask,
    n_head: int,
    scale: float,
    cache: KVCache | None = None,
    layer: int = 0,
    hook: Hooks = NO_HOOKS,
):
    """One attention sub-layer: project to q, k, v; attend; project back. x: [B, T, C].
    The hook points show q, k, v and z as [B, T, H, D] (TransformerLens's layout)."""
    qkv = linear(x, attn.c_attn)  # [B, T, C] -> [B, T, 3C]
    C = x.shape[-1]
    q, k, v = qkv[..., :C], qkv[..., C : 2 * C], qkv[..., 2 * C :]  # 3 x [B, T, C] views
    q, k, v = split_heads(q, n_head), split_heads(k, n_head), split_heads(v, n_head)  # [B, H, T, D]
    q = hook(f"blocks.{layer}.attn.hook_q", q.swapaxes(1, 2)).swapaxes(1, 2)  # seen as [B, T, H, D]
    k = hook(f"blocks.{layer}.attn.hook_k", k.swapaxes(1, 2)).swapaxes(1, 2)
    v = hook(f"blocks.{layer}.attn.hook_v", v.swapaxes(1, 2)).swapaxes(1, 2)
    if cache is not None:
        k, v = cache.update(layer, k, v)  # [B, H, past + T, D]: this step's keys after the cached ones
    out, probs = attention(q, k, v, mask, scale, hook, layer)  # [B, H, T, D], [B, H, T, past + T]
    z = hook(f"blocks.{layer}.attn.hook_z", out.swapaxes(1, 2)).swapaxes(1, 2)  # seen as [B, T, H, D]
    return linear(merge_heads(z), attn.c_proj), probs  # [B, T, C]
