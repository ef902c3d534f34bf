"""The position-wise layers: each acts on every token separately.

LayerNorm, GELU and the MLP never look at other tokens; only attention (attention.py) mixes
information across time. Every function keeps the dtype it is given: float32 stays float32
(Python float constants do not promote NumPy arrays), float64 stays float64.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import DTypeLike

from .hooks import NO_HOOKS, Hooks
from .weights import MLP, LayerNorm, Linear


def linear(x: np.ndarray, layer: Linear) -> np.ndarray:
    """GPT-2's "Conv1D": weight stored [n_in, n_out], so no transpose (plain.linear, tested
    equal in tests/test_plain.py::test_each_fast_function_equals_its_plain_one).

    The tokens are flattened into the rows of one 2-D matrix first: NumPy multiplies a
    [B, T, n_in] array by a matrix as B separate products, which for a decode step (T = 1)
    means B matrix-vector products each reading the whole weight, instead of one [B, n_in]
    matrix product reading it once (1.27x faster decode at batch 8, measured)."""
    rows = x.reshape(-1, x.shape[-1])  # [..., n_in] -> [N, n_in]
    out = rows @ layer.weight  # [N, n_out]
    out += layer.bias  # in place: saves allocating a second [N, n_out] array
    return out.reshape(*x.shape[:-1], out.shape[-1])  # [..., n_out]


def mlp(x: np.ndarray, m: MLP, hook: Hooks = NO_HOOKS, layer: int = 0) -> np.ndarray:
    """Each token alone: widen to F numbers, GELU, back to C (plain.mlp;
    tests/test_plain.py::test_each_fast_function_equals_its_plain_one).

    [B, T, C] -> [B, T, C]. GELU works in place on c_fc's output (a hook given hook_pre got a copy)."""
    h = hook(f"blocks.{layer}.mlp.hook_pre", linear(x, m.c_fc))  # [B, T, C] -> [B, T, F] the MLP widens
    h = hook(f"blocks.{layer}.mlp.hook_post", gelu(h))  # [B, T, F]
    return linear(h, m.c_proj)  # [B, T, F] -> [B, T, C]


LAYER_NORM_ROWS = 64  # tokens normalised at a time: their float64 copies are 384 KB, within a core's L2 cache


def layer_norm(
    x: np.ndarray, norm: LayerNorm, eps: float, dtype: DTypeLike | None = None, scale: np.ndarray | None = None
) -> np.ndarray:
    """Normalise each token's vector to mean 0, variance 1, then scale and shift: plain.layer_norm
    in float64 (tests/test_plain.py::test_each_fast_function_equals_its_plain_one).

    Computed in float64 and rounded once to `dtype` (default: x's; the model passes its own
    float32 for the float64 residual stream, see GPT2.transformer). LayerNorm is cheap (O(C) per token,
    against O(C^2) for the matmuls around it) and it is where GPT-2's outlier dimensions
    (residual values in the hundreds) meet float32's 7 digits: done in float32, each of its
    steps rounds (thousands of ulps off the exact value on an outlier model), while rounded
    once each output is within half an ulp (tests/test_layers.py checks both). Two passes
    (subtract the mean, then average the squares), never the cancellation-prone
    E[x^2] - E[x]^2. A few tokens at a time: each token is normalised on its own anyway, and
    the float64 copies of a long batch (8 x 1024 tokens: 50 MB) would not fit in any cache.

    scale [..., 1]: divide by it instead of each token's own sqrt(var + eps) (a hook on
    hook_scale that replaced it, see GPT2.norm); None, as always without hooks: the token's own.
    """
    rows = x.reshape(-1, x.shape[-1])  # [N, C]
    C = rows.shape[-1]
    scales = None if scale is None else scale.reshape(-1, 1)  # [N, 1]
    out = np.empty(rows.shape, dtype=x.dtype if dtype is None else dtype)  # [N, C]
    for start in range(0, len(rows), LAYER_NORM_ROWS):
        x64 = rows[start : start + LAYER_NORM_ROWS].astype(np.float64)  # [n, C] a fresh copy we may overwrite
        # sum / C is what np.mean computes (the same bits: tests/test_layers.py::
        # test_layer_norms_sum_over_c_is_np_mean_bit_for_bit), without its Python wrapper: a decode
        # step makes 25 LayerNorms of one token each, where the wrapper costs more than the sums.
        x64 -= np.add.reduce(x64, axis=-1, keepdims=True) / C  # centred
        var = np.add.reduce(x64 * x64, axis=-1, keepdims=True) / C  # [n, 1] biased variance, as torch
        x64 /= np.sqrt(var + eps) if scales is None else scales[start : start + LAYER_NORM_ROWS]  # normalised
        x64 *= norm.weight  # gamma
        x64 += norm.bias  # beta
        out[start : start + LAYER_NORM_ROWS] = x64  # rounded once to x's dtype
    return out.reshape(x.shape)


def layer_norm_scale(x: np.ndarray, eps: float) -> np.ndarray:
    """What LayerNorm divides each token by, sqrt(var + eps): [..., C] -> [..., 1] float64.

    TransformerLens's hook_scale. The same two passes in float64 as layer_norm, so the same bits
    (each token's sums are its own, whatever rows are computed with it). Only computed when that
    point is asked for: layer_norm itself never calls this."""
    x64 = x.astype(np.float64)  # [..., C] a fresh copy we may overwrite
    C = x64.shape[-1]
    x64 -= np.add.reduce(x64, axis=-1, keepdims=True) / C  # centred
    var = np.add.reduce(x64 * x64, axis=-1, keepdims=True) / C  # [..., 1] biased variance, as torch
    return np.sqrt(var + eps)  # [..., 1]


SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


GELU_CHUNK = 1 << 16  # elements per pass: 256 KB of float32, so the 8 passes below run in cache


def gelu(x: np.ndarray) -> np.ndarray:
    """GPT-2's GELU, the tanh approximation ("gelu_new"), computed in place on x (plain.gelu, to
    rounding: tests/test_plain.py::test_each_fast_function_equals_its_plain_one):

        0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))

    written as x * sigmoid(2u) with u = sqrt(2/pi) * (x + 0.044715 x^3), because
    0.5 * (1 + tanh(u)) == 1 / (1 + exp(-2u)), and NumPy's exp is faster than its tanh
    (this is the MLP's costliest elementwise step). For very negative x, exp(-2u) overflows
    to inf and the result is x / inf = -0.0: the right limit, and NumPy's overflow warning
    for it is silenced.

    NumPy makes one pass over the whole array per operation; over a [1024, 3072] activation
    (12 MB) that is 8 trips to main memory. So we go GELU_CHUNK elements at a time: the same
    operations in the same order (the same bits as one pass over the whole array:
    tests/test_layers.py checks it), each chunk staying in cache.
    """
    if not x.flags.c_contiguous:  # (a hook's replacement, say): work on a contiguous copy
        x[...] = gelu(np.ascontiguousarray(x))
        return x
    flat = x.reshape(-1)  # [N] a view of x
    u = np.empty(min(GELU_CHUNK, flat.size), dtype=x.dtype)  # scratch, reused by every chunk
    for start in range(0, flat.size, GELU_CHUNK):
        xc = flat[start : start + GELU_CHUNK]  # [n] a view: written in place
        uc = u[: xc.size]
        np.multiply(xc, xc, out=uc)  # x^2
        uc *= 0.044715
        uc += 1.0
        uc *= xc  # x + 0.044715 x^3
        uc *= -2.0 * SQRT_2_OVER_PI  # -2u
        with np.errstate(over="ignore"):
            np.exp(uc, out=uc)  # exp(-2u)
        uc += 1.0
        xc /= uc  # x * sigmoid(2u)
    return x


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x) / sum(exp(x)), shifted by the row's max so exp never overflows. In place on x
    (plain.softmax's arithmetic, the same bits: tests/test_plain.py::test_each_fast_function_equals_its_plain_one).

    A row that is all -inf has max -inf, and -inf - (-inf) is NaN: the whole row comes out
    NaN. That is mathematically honest (0/0) and is exactly what happens to a left-pad
    token's query under a -inf mask; attention.py decides what such a row should mean.
    """
    with np.errstate(invalid="ignore"):  # -inf - -inf; the NaN is the point, see above
        x -= x.max(axis=axis, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=axis, keepdims=True)
    return x


def log_softmax(x: np.ndarray) -> np.ndarray:
    """log(softmax(x)) along the last axis, [N, V] -> [N, V] in x's dtype: x - max - log(sum(exp(x - max))).

    Computed from the shifted logits, not as log() of softmax's output: a probability that
    underflows to 0 would become -inf, when its log is a perfectly ordinary -120. The sum is
    accumulated in float64 (50257 terms); the result is rounded once to x's dtype.
    """
    m = x.max(axis=-1, keepdims=True)  # [N, 1]
    shifted = x - m  # [N, V] <= 0: exp never overflows
    total = np.exp(shifted).sum(axis=-1, keepdims=True, dtype=np.float64)  # [N, 1] >= 1
    return shifted - np.log(total).astype(x.dtype)  # [N, V]


SUM_CHUNK = 128  # longest float32 running sum in the output layer (see lm_head)
VOCAB_BLOCK = 4096  # vocabulary columns per block: a [rows, 4096] partial result stays in cache


def lm_head(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """A score for every token of the vocabulary: x @ weight.T, [..., C] -> [..., vocab]
    (plain.forward's last line; tests/test_plain.py::test_each_fast_function_equals_its_plain_one).

    With the tied embedding (weight = wte [vocab, C]), a token's score is the dot product
    of the final hidden state with that token's own embedding.

    This is the model's largest matmul and the largest source of float32 rounding in the
    logits. A GEMM accumulates each output as one running float32 sum over C = 768 terms, and
    the rounding error grows with the length of that sum. For several rows we split C into
    chunks of 128 and add the partial products: measured with scripts/experiments/fidelity.py, this takes
    the logits' error below transformers' (whose BLAS sums more accurately than OpenBLAS),
    for ~8% of this matmul's time. For one row (batch-1 decoding) BLAS's matrix-vector
    product is already more accurate than torch's, and splitting it would cost ~45%, so we
    don't.
    """
    rows = x.reshape(-1, x.shape[-1])  # [N, C]
    W = weight.T  # [C, vocab] a view: wte is stored [vocab, C]
    if rows.shape[0] == 1:
        return (rows @ W).reshape(*x.shape[:-1], W.shape[1])
    C, vocab = W.shape
    out = np.empty((rows.shape[0], vocab), dtype=x.dtype)  # [N, vocab]
    for v in range(0, vocab, VOCAB_BLOCK):
        block = out[:, v : v + VOCAB_BLOCK]  # [N, 4096] a view we fill in place
        np.matmul(rows[:, :SUM_CHUNK], W[:SUM_CHUNK, v : v + VOCAB_BLOCK], out=block)
        for k in range(SUM_CHUNK, C, SUM_CHUNK):
            block += rows[:, k : k + SUM_CHUNK] @ W[k : k + SUM_CHUNK, v : v + VOCAB_BLOCK]
    return out.reshape(*x.shape[:-1], vocab)
