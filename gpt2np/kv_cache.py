"""The key/value cache: what attention remembers between generation steps.

Without a cache, every new token would recompute the keys and values of the whole prompt.
Keys and values of past tokens never change (a token only attends backwards), so we keep
them: one preallocated buffer for the whole generation, so the decode loop never allocates
or concatenates.
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
