"""Choosing the next token from the logits: greedy, or sampled after temperature, top-k, top-p, min-p.

The filters have transformers' semantics (its TemperatureLogitsWarper, TopKLogitsWarper,
TopPLogitsWarper and MinPLogitsWarper with min_tokens_to_keep=1, applied in that order, after
the logits processors of processors.py). Filtered-out tokens get -inf, so softmax gives them
probability exactly 0. The random draw itself cannot match torch's generator, but the
distribution it draws from does.
"""

from __future__ import annotations

import numpy as np

from .errors import GenerationError
from .layers import softmax


def check_logits(logits: np.ndarray, step: int) -> None:
    """NaN or +inf logits have no next token: argmax of an all-NaN row is 0, and sampling from
    it gives 0 too, so without this check generation would quietly write token 0 ("!")."""
    bad = np.flatnonzero(np.isnan(logits).any(axis=-1) | np.isposinf(logits).any(axis=-1))
    if bad.size:
        raise GenerationError(
            f"the logits of row {int(bad[0])} at generation step {step} are NaN or +inf, so no next token can be chosen; "
            "the forward pass overflowed or was fed NaN (a hook that writes NaN or inf, or float32 overflow: "
            "try dtype='float64' to find out)"
        )


def greedy(logits: np.ndarray) -> np.ndarray:
    """[B, vocab] -> [B]: the most likely token (the first one on a tie, as torch.argmax)."""
    return logits.argmax(axis=-1)


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Divide by T: T < 1 sharpens the distribution, T > 1 flattens it; T -> 0 is greedy.

    A tiny T can overflow: float32 stops at 3.4e38, so a logit of 10 divided by T = 1e-38 is
    inf, softmax of a row holding inf is NaN, and a draw from NaN is token 0. Softmax does not
    change when a row is shifted by a constant, so such a row is divided after subtracting its
    max: the best token gets 0 and the others -inf or a very negative number, which is the
    T -> 0 limit (all probability on the best token, shared by ties). Rows that do not overflow
    are divided as they are, so their scores are transformers' own.
    """
    t = np.asarray(temperature, dtype=logits.dtype)  # generate() refuses a T the dtype rounds to 0
    with np.errstate(over="ignore"):  # overflow is detected below
        scaled = logits / t  # [B, V]
    top = scaled.max(axis=-1)  # [B]
    overflowed = ~np.isfinite(top)  # +inf, or every entry -inf (a row of negative logits)
    if overflowed.any():
        rows = logits[overflowed]  # [b, V]
        with np.errstate(over="ignore"):  # very negative values going to -inf is harmless: probability 0
            scaled[overflowed] = (rows - rows.max(axis=-1, keepdims=True)) / t
    return scaled


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


def min_p_filter(logits: np.ndarray, min_p: float) -> np.ndarray:
    """Min-p sampling (Nguyen et al. 2024, "Turning Up the Heat: Min-p Sampling for Creative and
    Coherent LLM Outputs", arXiv:2407.01082; transformers' MinPLogitsWarper): keep the tokens
    whose probability is at least min_p times the best token's. A confident model (one token
    near 1) keeps few, an unsure one many. The best token always passes (min_p <= 1), and
    tokens tied at the threshold stay. [B, vocab] -> [B, vocab]."""
    probs = softmax(logits.copy())  # [B, vocab] in the logits' dtype, as transformers
    threshold = probs.dtype.type(min_p) * probs.max(axis=-1, keepdims=True)  # [B, 1]
    return np.where(probs < threshold, -np.inf, logits).astype(logits.dtype)


def filter_logits(
    logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float | None = None
) -> np.ndarray:
    """The full warper chain: temperature, then top-k, then top-p, then min-p. [B, vocab] -> [B, vocab]."""
    if temperature != 1.0:
        logits = apply_temperature(logits, temperature)
    logits = top_k_filter(logits, top_k)
    logits = top_p_filter(logits, top_p)
    if min_p is not None:
        logits = min_p_filter(logits, min_p)
    return logits


def sample(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[B, vocab] filtered logits -> [B] tokens drawn from softmax(logits)."""
    probs = softmax(logits.astype(np.float64))  # float64: the cumulative sum must reach 1 cleanly
    cumulative = np.cumsum(probs, axis=-1)  # [B, vocab]
    u = rng.random((logits.shape[0], 1)) * cumulative[:, -1:]  # [B, 1] uniform in [0, total)
    return (cumulative <= u).sum(axis=-1)  # [B] first index whose cumulative mass exceeds u
