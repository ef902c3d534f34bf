"""The key/value cache: what attention remembers between generation steps.

Without a cache, every new token would recompute the keys and values of the whole prompt.
Keys and values of past tokens never change (a token only attends backwards), so we keep
them: one preallocated buffer for the whole generation, so the decode loop never allocates
or concatenates.

Beam search (beam_search.py) needs two more things. Its K beams of a prompt all start as that
prompt: `repeat_rows` copies each row's cached prompt K times, so the prompt runs once per
row, not once per beam. And after each step the surviving beams are continuations of some of
the old ones, in a new order: `reorder` makes row i hold what its parent beam's row held, so
the next step attends to the right past without recomputing it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike


class KVCache:
    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int, dtype: DTypeLike) -> None:
        shape = (n_layer, batch, n_head, max_len, head_dim)
        self.keys = np.empty(shape, dtype)  # [L, B, H, max_len, D]
        self.values = np.empty(shape, dtype)  # [L, B, H, max_len, D]
        self.length = 0  # positions filled so far (the same for every layer)

    def update(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store the new keys/values [B, H, T, D] after the cached ones; return all of them as
        views [B, H, length + T, D]. `advance` moves `length` on once every layer is done."""
        start, end = self.length, self.length + k.shape[2]
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, n_tokens: int) -> None:
        self.length += n_tokens

    def repeat_rows(self, n: int, max_len: int) -> KVCache:
        """A new cache of B * n rows with room for max_len positions, row b repeated as rows
        b * n .. b * n + n - 1 (np.repeat's order, and transformers' repeat_interleave): the
        filled positions are copied, the rest is left for the steps to come."""
        L, B, H, _, D = self.keys.shape
        out = KVCache(L, B * n, H, max_len, D, self.keys.dtype)
        filled = slice(0, self.length)
        for layer in range(L):  # one layer at a time: no temporary of the whole cache
            out.keys[layer, :, :, filled] = np.repeat(self.keys[layer, :, :, filled], n, axis=0)
            out.values[layer, :, :, filled] = np.repeat(self.values[layer, :, :, filled], n, axis=0)
        out.length = self.length
        return out

    def reorder(self, parents: np.ndarray) -> None:
        """Row i takes the keys and values row parents[i] held ([B] indices along the batch axis,
        which may repeat: two beams can grow from one parent). In place, one layer at a time,
        and only the rows whose parent is another row are copied."""
        moved = np.flatnonzero(parents != np.arange(len(parents)))  # rows that change
        if moved.size == 0:
            return
        sources = parents[moved]
        filled = slice(0, self.length)
        for layer in range(self.keys.shape[0]):
            # the right-hand side is gathered (a copy) before any row is overwritten
            self.keys[layer, moved, :, filled] = self.keys[layer, sources, :, filled]
            self.values[layer, moved, :, filled] = self.values[layer, sources, :, filled]
