"""Choosing the next token from the logits: greedy, or sampled after temperature, top-k, top-p.

The filters have transformers' semantics (its TemperatureLogitsWarper, TopKLogitsWarper and
TopPLogitsWarper with min_tokens_to_keep=1, applied in that order). Filtered-out tokens get
-inf, so softmax gives them probability exactly 0. The random draw itself cannot match
torch's generator, but the distribution it draws from does.
"""

from __future__ import annotations

import numpy as np

from .layers import softmax


def greedy(logits: np.ndarray) -> np.ndarray:
    """[B, vocab] -> [B]: the most likely token (the first one on a tie, as torch.argmax)."""
    return logits.argmax(axis=-1)


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Divide by T: T < 1 sharpens the distribution, T > 1 flattens it."""
    return logits / np.asarray(temperature, dtype=logits.dtype)


def top_k_filter(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Keep the k largest logits of each row (and any tied with the k-th); 0 keeps all."""
    vocab = logits.shape[-1]
    if top_k == 0 or top_k >= vocab:
        return logits
    kth = np.partition(logits, vocab - top_k, axis=-1)[:, vocab - top_k, None]  # [B, 1] k-th largest
    return np.where(logits < kth, -np.inf, logits).astype(logits.dtype)


def top_p_filter(logits: np.ndarray, top_p: float) -> np.ndarray:
    """Nucleus: keep the most likely tokens whose probabilities add up to top_p. As
    transformers, sort ascending and drop the tokens whose cumulative probability is
    <= 1 - top_p; the most likely token is always kept."""
    if top_p >= 1.0:
        return logits
    order = np.argsort(logits, axis=-1, kind="stable")  # [B, vocab] ascending
    sorted_logits = np.take_along_axis(logits, order, axis=-1)
    cumulative = np.cumsum(softmax(sorted_logits.copy()), axis=-1)  # [B, vocab] rising to 1
    drop_sorted = cumulative <= (1 - top_p)
    drop_sorted[:, -1] = False  # min_tokens_to_keep = 1
    drop = np.empty_like(drop_sorted)
    np.put_along_axis(drop, order, drop_sorted, axis=-1)  # back to vocabulary order
    return np.where(drop, -np.inf, logits).astype(logits.dtype)


def filter_logits(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """The full warper chain: temperature, then top-k, then top-p. [B, vocab] -> [B, vocab]."""
    if temperature != 1.0:
        logits = apply_temperature(logits, temperature)
    logits = top_k_filter(logits, top_k)
    return top_p_filter(logits, top_p)


def sample(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[B, vocab] filtered logits -> [B] tokens drawn from softmax(logits)."""
    probs = softmax(logits.astype(np.float64))  # float64: the cumulative sum must reach 1 cleanly
    cumulative = np.cumsum(probs, axis=-1)  # [B, vocab]
    u = rng.random((logits.shape[0], 1)) * cumulative[:, -1:]  # [B, 1] uniform in [0, total)
    return (cumulative <= u).sum(axis=-1)  # [B] first index whose cumulative mass exceeds u
