"""GPT-2 on one page: the plain math, to read top to bottom.

The whole model in textbook form, batched and left-padded, with no cache, no hooks and no
chunks: every function is the formula, and every array is whole (all the [B, H, T, T] scores at
once). The fast path (model.py, attention.py, layers.py) computes the same things faster, and
each of its functions names the one here it equals; tests/test_plain.py holds the two equal
(float64 to 1e-12, float32 to its rounding noise) and this page equal to transformers.

    from gpt2np import GPT2, plain
    model = GPT2.from_pretrained("gpt2")
    logits = plain.forward(model.weights, model.config, input_ids, attention_mask)  # [B, T, V]
    ids = plain.generate(model.weights, model.config, input_ids, attention_mask, max_new_tokens=10)

Shapes: B rows, T tokens, C = n_embd, H heads of D = C / H, F = the MLP's width, V = vocab.
The weights keep their checkpoint names (weights.py): wte, wpe, h[i].ln_1, .attn.c_attn, ...
Everything stays in the weights' dtype (float32, or float64 for a float64 model): Python
numbers do not promote NumPy arrays, and the masks are made in that dtype on purpose.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from .config import GPT2Config
from .errors import InputError
from .inputs import check_attention_mask, check_input_ids, check_length
from .masks import resolve_fill
from .weights import MLP, Attention, Block, LayerNorm, Linear, Weights

# --- the position-wise layers: each token on its own ---------------------------------------


def gelu(x: np.ndarray) -> np.ndarray:
    """GPT-2's activation: GELU in the tanh form of Hendrycks & Gimpel (2016), as GPT-2 was trained."""
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def layer_norm(x: np.ndarray, ln: LayerNorm, eps: float) -> np.ndarray:
    """Each token's vector to mean 0 and variance 1, then scaled (gamma) and shifted (beta)."""
    mean = x.mean(axis=-1, keepdims=True)  # [B, T, 1]
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # [B, T, 1] biased (divided by C), as torch
    return (x - mean) / np.sqrt(variance + eps) * ln.weight + ln.bias  # [B, T, C]


def linear(x: np.ndarray, layer: Linear) -> np.ndarray:
    """OpenAI's "Conv1D": the weight is stored [in, out], so x @ W + b with no transpose."""
    return x @ layer.weight + layer.bias  # [..., in] -> [..., out]


def mlp(x: np.ndarray, m: MLP) -> np.ndarray:
    """Widen each token to F numbers, GELU, and back to C: 67% of a block's parameters (45.5% of
    GPT-2 124M's; the embeddings hold 31.6%)."""
    return linear(gelu(linear(x, m.c_fc)), m.c_proj)  # [B, T, C] -> [B, T, F] -> [B, T, C]


# --- attention: the only layer that mixes tokens --------------------------------------------


def softmax(x: np.ndarray) -> np.ndarray:
    """exp(x) / sum(exp(x)) over the last axis, shifted by the max so exp never overflows."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))  # a row of -inf only: -inf - -inf = NaN (see attention)
    return e / e.sum(axis=-1, keepdims=True)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, additive: np.ndarray, scale: float) -> np.ndarray:
    """softmax(q k^T * scale + additive) v: each query's average of the values, weighted by how
    well it matches each key. q, k, v [B, H, T, D]; additive [B, 1, T, T], the additive mask (0
    allowed, the fill forbidden; not the 0/1 attention_mask of forward, where 0 is a pad)."""
    weights = softmax(q @ k.swapaxes(-1, -2) * scale + additive)  # [B, H, T, T] each row sums to 1
    # The empty-row rule: the query of a left pad may see no key at all (its own key is a pad, and
    # so is all before it). Under fill -inf its row is 0/0 = NaN, and 0 * NaN would carry that NaN
    # into every real token one layer later; under a finite fill, a meaningless uniform average.
    # Such a query attends to nothing: weights 0. Real tokens never see pads, so they are the same.
    weights = np.where((additive == 0).any(axis=-1, keepdims=True), weights, 0)  # [B, H, T, T]
    return weights @ v  # [B, H, T, D]


def self_attention(x: np.ndarray, attn: Attention, additive: np.ndarray, n_head: int, scale: float) -> np.ndarray:
    """Queries, keys and values from one matmul, split into heads; attend; mix the heads."""
    B, T, C = x.shape
    q, k, v = np.split(linear(x, attn.c_attn), 3, axis=-1)  # [B, T, 3C] -> 3 x [B, T, C]
    q, k, v = (a.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3) for a in (q, k, v))  # [B, H, T, D]
    z = attention(q, k, v, additive, scale)  # [B, H, T, D] each head's weighted sum of values
    return linear(z.transpose(0, 2, 1, 3).reshape(B, T, C), attn.c_proj)  # heads side by side, mixed: [B, T, C]


# --- the model --------------------------------------------------------------------------------


def block(x: np.ndarray, b: Block, additive: np.ndarray, config: GPT2Config, scale: float) -> np.ndarray:
    """One transformer block. Pre-LayerNorm (GPT-2's change to the 2017 Transformer): each
    sub-layer reads a normalised copy and adds its result to the residual stream x, untouched."""
    eps = config.layer_norm_epsilon
    x = x + self_attention(
        layer_norm(x, b.ln_1, eps), b.attn, additive, config.n_head, scale
    )  # tokens look at each other
    x = x + mlp(layer_norm(x, b.ln_2, eps), b.mlp)  # each token thinks alone
    return x  # [B, T, C]


def attention_scale(config: GPT2Config, layer: int) -> float:
    """1/sqrt(D) keeps the scores' spread independent of the head size (some GPT-2-shaped models
    also divide by the layer's number)."""
    scale = 1 / math.sqrt(config.n_embd // config.n_head) if config.scale_attn_weights else 1.0
    return scale / (layer + 1) if config.scale_attn_by_inverse_layer_idx else scale


def additive_mask(attention_mask: np.ndarray, fill: float, dtype: np.dtype) -> np.ndarray:
    """[B, T] 1 real / 0 pad -> [B, 1, T, T]: 0 where query i may see key j (j <= i, j real), else fill."""
    T = attention_mask.shape[1]
    allowed = np.tri(T, dtype=bool) & (attention_mask[:, None, None, :] == 1)  # [B, 1, T, T] causal and not a pad
    return np.where(allowed, 0, fill).astype(dtype)  # one cell, one fill: never "masked twice" into -inf


def check_model(weights: object, config: object) -> None:
    """The page's functions take a model as its two parts: model.weights and model.config."""
    if not isinstance(weights, Weights) or not isinstance(config, GPT2Config):
        raise InputError(
            f"the plain functions take a model's weights and config, as plain.forward(model.weights, model.config, "
            f"input_ids); got {type(weights).__name__} and {type(config).__name__}"
        )


def forward(
    weights: Weights,
    config: GPT2Config,
    input_ids: ArrayLike,
    attention_mask: ArrayLike | None = None,
    mask_fill: str | float = "min",
) -> np.ndarray:
    """The logits [B, T, V] of a (left-padded) batch: at each position, a score for every token
    of the vocabulary being the next one. weights, config: a GPT2's model.weights, model.config.
    mask_fill: "min" (transformers'), "-inf", "-1e9" or a negative number."""
    check_model(weights, config)
    ids, one_sequence = check_input_ids(input_ids, config.vocab_size)  # [B, T] (a [T] input: B = 1)
    check_length(ids.shape[1], config.n_positions, "the input")
    attention_mask = check_attention_mask(attention_mask, ids.shape)  # [B, T] 1 real, 0 pad
    dtype = weights.wte.dtype
    # A real token's position counts only the real tokens before it: the same alone or padded.
    positions = np.where(attention_mask == 1, np.cumsum(attention_mask, axis=-1) - 1, 0)  # [B, T] (pads: 0, never read)
    additive = additive_mask(attention_mask, resolve_fill(mask_fill, dtype), dtype)  # [B, 1, T, T] 0 / fill
    x = weights.wte[ids] + weights.wpe[positions]  # [B, T, C] what each token is + where it stands
    with np.errstate(invalid="ignore"):  # a pad's empty row under -inf: see attention()
        for i, b in enumerate(weights.h):
            x = block(x, b, additive, config, attention_scale(config, i))  # [B, T, C]
    x = layer_norm(x, weights.ln_f, config.layer_norm_epsilon)  # the last block's output, normalised
    # The output layer: a score for every token of the vocabulary. GPT-2 ties it to the input
    # embedding (lm_head is wte), so a token's score is x . that token's own embedding.
    logits = x @ weights.lm_head.T  # [B, T, C] @ [C, V] -> [B, T, V]
    return logits[0] if one_sequence else logits


def generate(
    weights: Weights,
    config: GPT2Config,
    input_ids: ArrayLike,
    attention_mask: ArrayLike | None = None,
    max_new_tokens: int = 20,
    mask_fill: str | float = "min",
) -> np.ndarray:
    """Greedy continuation, without a cache: each new token runs the whole sequence again, as
    picoGPT does. That is O(T) passes of O(T) tokens; generation.py's KV cache keeps each step at
    one token. Runs max_new_tokens steps (stopping at eos is generation.py's job). -> [B, T + n]."""
    check_model(weights, config)
    ids, one_sequence = check_input_ids(input_ids, config.vocab_size)  # [B, T]
    attention_mask = check_attention_mask(attention_mask, ids.shape)  # [B, T] 1 real, 0 pad
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    check_length(ids.shape[1] + max_new_tokens, config.n_positions, f"the prompt plus {max_new_tokens} new tokens")
    for _ in range(max_new_tokens):
        logits = forward(weights, config, ids, attention_mask, mask_fill)  # [B, T, V] (the last column is all we use)
        next_ids = logits[:, -1].argmax(axis=-1)  # [B] the most likely next token of each row
        ids = np.concatenate([ids, next_ids[:, None]], axis=1)  # [B, T + 1]: appended on the right,
        attention_mask = np.concatenate([attention_mask, np.ones_like(attention_mask[:, :1])], axis=1)  # pads go left
    return ids[0] if one_sequence else ids
