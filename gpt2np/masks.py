"""Attention masks and position ids for a left-padded batch.

A batch is a rectangle, sentences are not: shorter ones are padded on the left,

    input_ids       [[50256, 50256, 50256, 1026, 481, 6290, 287, 262],   "It will rain in the"
                     [   40,   765,   284, 4483, 257, 1263, 9396, 286],  "I want to eat a big bowl of"
                     [50256, 50256, 50256, 50256, 50256, 3666, 3290, 318]] "My dog is"
    attention_mask  [[0, 0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1, 1]]

(left, so that every row's last column is a real token: generation appends there). Two
things must then stay as if the pads were not there:

1. No real token may attend to a pad, and none may attend to the future. The attention mask
   says which (query, key) pairs are *allowed*; we turn it into an *additive* mask, 0 where
   allowed and a large negative `fill` where not, added to the scores before softmax so the
   forbidden weights come out 0.
2. Positions: a real token's position must not count the pads in front of it, or "My dog is"
   would start at position 5 in the batch and at 0 alone. So position ids come from the mask,
   `cumsum(mask) - 1` (pads get 0, they are never read), as transformers' `generate` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import DTypeLike

from .errors import InputError

MASK_FILLS = ("-inf", "-1e9", "min")


def resolve_fill(mask_fill: str | float, dtype: DTypeLike) -> float:
    """The number written into forbidden cells of the additive mask.

    "-inf"  exact: exp(-inf) = 0. But a row with nothing allowed becomes all -inf, and softmax
            of that is 0/0 = NaN (see attention.py for how we handle it).
    "-1e9"  a common finite stand-in (the Annotated Transformer; picoGPT uses -1e10, the
            original BERT -10000.0): exp(-1e9 - max) = 0, and in float32 an all-masked row
            becomes uniform. In float64 it does not: score - 1e9 keeps the scores' differences
            there, so such a row is softmax(scores), as if nothing were masked.
    "min"   np.finfo(dtype).min, what transformers writes. Finite, so no NaN either; adding
            two of these would overflow to -inf, which is why the mask is built with np.where
            from one boolean, never as padding_mask + causal_mask.
    a float any finite negative number (or -inf); the same rules apply.
    """
    dtype = np.dtype(dtype)
    if isinstance(mask_fill, str):
        if mask_fill == "min":
            return float(np.finfo(dtype).min)
        if mask_fill not in MASK_FILLS:
            raise InputError(
                f"mask_fill={mask_fill!r} is not one of {', '.join(repr(f) for f in MASK_FILLS)} or a negative number"
            )
        fill = float(mask_fill)
    elif isinstance(mask_fill, (int, float, np.floating, np.integer)) and not isinstance(mask_fill, bool):
        fill = float(mask_fill)
    else:
        raise InputError(
            f"mask_fill must be one of {', '.join(repr(f) for f in MASK_FILLS)} or a negative number, got {mask_fill!r}"
        )
    if math.isnan(fill):
        raise InputError(
            f"mask_fill={mask_fill!r} is NaN: every masked score would become NaN, and with it every output; "
            "use a negative number such as '-inf', '-1e9' or 'min'"
        )
    if fill >= 0:
        raise InputError(
            f"mask_fill={mask_fill!r} would not mask anything: it must be negative (e.g. '-inf', '-1e9' or 'min') "
            "so that exp(score + fill) is 0"
        )
    with np.errstate(over="ignore"):  # the overflow to -inf is what we are testing for: no warning
        fits = math.isfinite(float(dtype.type(fill)))  # type: ignore[call-overload]  # numpy types dtype.type loosely
    if math.isfinite(fill) and not fits:
        raise InputError(
            f"mask_fill={mask_fill!r} does not fit in {dtype} (it would silently become -inf); use '-inf' or 'min'"
        )
    return fill


def position_ids_from_mask(attention_mask: np.ndarray) -> np.ndarray:
    """[B, T] 0/1 mask -> [B, T] positions: each real token counts only the real tokens before it.

    [[0, 0, 0, 1, 1, 1, 1, 1]] -> [[0, 0, 0, 0, 1, 2, 3, 4]]  (pads get 0; nothing reads them)
    With no padding this is just arange(T).
    """
    positions = np.cumsum(attention_mask, axis=-1, dtype=np.int64) - 1  # [B, T]
    positions[attention_mask == 0] = 0
    return positions


@dataclass(frozen=True)
class AttentionMask:
    additive: np.ndarray  # [B, 1, Tq, Tk] 0 where a query may see a key, `fill` where not
    empty_rows: np.ndarray | None  # [B, 1, Tq, 1] True for queries that may see no key at all


def build_attention_mask(attention_mask: np.ndarray, n_queries: int, fill: float, dtype: DTypeLike) -> AttentionMask:
    """Padding + causal, as one additive mask.

    attention_mask: [B, Tk], 1 for real tokens, 0 for pads, covering every key: the cached
                    ones from earlier steps and the n_queries new ones (the last columns).
    The new queries sit at absolute indices Tk - n_queries ... Tk - 1 (the cache offset), and
    query i may see key j when j <= i (causal) and key j is not a pad.
    """
    B, Tk = attention_mask.shape
    offset = Tk - n_queries  # how many keys come from the cache
    query_index = offset + np.arange(n_queries)  # [Tq] absolute index of each query
    causal = np.arange(Tk)[None, :] <= query_index[:, None]  # [Tq, Tk] lower triangle (shifted)
    not_pad = attention_mask[:, None, None, :] != 0  # [B, 1, 1, Tk]
    allowed = causal[None, None, :, :] & not_pad  # [B, 1, Tq, Tk] one boolean per cell
    # One np.where from one boolean: a cell that is both a pad and in the future gets `fill`
    # once (adding a causal mask of finfo.min to a padding mask of finfo.min would give -inf).
    additive = np.where(allowed, np.array(0, dtype), np.array(fill, dtype))  # [B, 1, Tq, Tk]
    has_key = allowed.any(axis=-1, keepdims=True)  # [B, 1, Tq, 1]
    empty_rows = None if has_key.all() else ~has_key
    return AttentionMask(additive=additive, empty_rows=empty_rows)
