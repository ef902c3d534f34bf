"""GPT-2's backward pass on one page: every gradient of the loss, the plain math, beside plain.py.

One `_backward` beside each forward function of plain.py, as llm.c's train_gpt2.c has them:
each takes what its forward took plus the gradient of the loss at its output (`dy`, same
shape as the output) and returns the gradients at its inputs and parameters. A forward
function's intermediates are recomputed from its inputs where the backward needs them, so the
page stays a set of pure functions; the whole pass keeps only each block's input (n_layer
arrays of [B, T, C]) and recomputes a block's insides when its turn comes, so at most one
layer's [B, H, T, T] attention weights exist at a time. No autograd, no tape: read it bottom up
(loss_and_grads first) or top down (the chain rule, one function at a time).

    from gpt2np import GPT2, plain_backward
    model = GPT2.from_pretrained("gpt2")
    loss, grads = plain_backward.loss_and_grads(model.weights, model.config, input_ids, attention_mask=mask)
    grads["transformer.h.0.attn.c_attn.weight"]  # [C, 3C], named as GPT2LMHeadModel.named_parameters()

Shapes: B rows, T tokens, C = n_embd, H heads of D = C / H, F = the MLP's width, V = vocab,
N = the number of labels counted. Everything stays in the weights' dtype. The fast twin is
GPT2.loss_and_grads (gpt2np/backward.py); tests/test_plain_backward.py checks each function
here, and the whole, against finite differences, and tests/test_backward.py the whole against
torch autograd on transformers' model.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from . import plain
from .config import GPT2Config
from .inputs import check_attention_mask, check_input_ids, check_length
from .labels import counted, labels_or_default
from .masks import resolve_fill
from .weights import MLP, Attention, Block, LayerNorm, Linear, Weights

Grads = dict[str, np.ndarray]  # parameter name -> its gradient, the parameter's shape and dtype

# --- the position-wise layers ------------------------------------------------------------------


def linear_backward(dy: np.ndarray, x: np.ndarray, layer: Linear) -> tuple[np.ndarray, Grads]:
    """y = x W + b: dx = dy W^T; dW = x^T dy summed over every token; db = dy summed over every token.
    dy [..., out], x [..., in] -> dx [..., in], {weight [in, out], bias [out]}."""
    rows, drows = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])  # [N, in], [N, out]
    dx = dy @ layer.weight.T  # [..., out] @ [out, in] -> [..., in]
    return dx, {"weight": rows.T @ drows, "bias": drows.sum(axis=0)}  # [in, out], [out]


def gelu_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """y = x * s with s = (1 + tanh(u)) / 2, u = sqrt(2/pi) (x + 0.044715 x^3): the product rule,
    dy/dx = s + x * ds/dx, and ds/dx = (1 - tanh(u)^2) / 2 * sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    (tanh' = 1 - tanh^2). dy, x [...] -> dx [...]."""
    c = math.sqrt(2 / math.pi)
    t = np.tanh(c * (x + 0.044715 * x**3))  # [...] tanh(u)
    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x))


def layer_norm_backward(dy: np.ndarray, x: np.ndarray, ln: LayerNorm, eps: float) -> tuple[np.ndarray, Grads]:
    """y = xhat * gamma + beta, xhat = (x - mean) / sqrt(var + eps). dgamma = sum dy * xhat,
    dbeta = sum dy (over every token). With g = dy * gamma, dx has three terms, one per path
    from x to xhat: g / sigma (x itself), minus mean(g) / sigma (x moves the mean, which every
    xhat subtracts), minus xhat * mean(g * xhat) / sigma (x moves the variance, which every xhat
    divides by). dy, x [B, T, C] -> dx [B, T, C], {weight [C], bias [C]}."""
    mean = x.mean(axis=-1, keepdims=True)  # [B, T, 1]
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + eps)  # [B, T, 1] 1 / sigma
    xhat = (x - mean) * rstd  # [B, T, C]
    g = dy * ln.weight  # [B, T, C] the gradient at xhat
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))  # [B, T, C]
    C = x.shape[-1]
    return dx, {"weight": (dy * xhat).reshape(-1, C).sum(axis=0), "bias": dy.reshape(-1, C).sum(axis=0)}


def mlp_backward(dy: np.ndarray, x: np.ndarray, m: MLP) -> tuple[np.ndarray, Grads]:
    """The MLP's three steps, last first. dy, x [B, T, C] -> dx [B, T, C], {c_fc.*, c_proj.*}."""
    h = plain.linear(x, m.c_fc)  # [B, T, F] recomputed: GELU's input
    dgelu, g_proj = linear_backward(dy, plain.gelu(h), m.c_proj)  # [B, T, F]
    dx, g_fc = linear_backward(gelu_backward(dgelu, h), x, m.c_fc)  # [B, T, C]
    return dx, {f"c_fc.{k}": v for k, v in g_fc.items()} | {f"c_proj.{k}": v for k, v in g_proj.items()}


# --- attention ---------------------------------------------------------------------------------


def softmax_backward(dp: np.ndarray, p: np.ndarray) -> np.ndarray:
    """p = softmax(x): dp_i/dx_j = p_i (delta_ij - p_j), so dx = p * (dp - sum_j dp_j p_j): each
    score moves its own weight and, through the shared normaliser, every weight of its row (the
    row-sum term). dp, p [..., n] -> dx [..., n]."""
    return p * (dp - (dp * p).sum(axis=-1, keepdims=True))


def attention_weights(q: np.ndarray, k: np.ndarray, mask: np.ndarray, scale: float) -> np.ndarray:
    """plain.attention's weights, recomputed: softmax(q k^T * scale + mask), empty rows 0. [B, H, T, T]."""
    weights = plain.softmax(q @ k.swapaxes(-1, -2) * scale + mask)  # [B, H, T, T]
    return np.where((mask == 0).any(axis=-1, keepdims=True), weights, 0)  # the empty-row rule


def attention_backward(
    dz: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z = P v, P = softmax(S), S = q k^T * scale + mask: dv = P^T dz; dP = dz v^T; dS through the
    softmax; dq = dS k * scale, dk = dS^T q * scale (the mask is a constant). An empty row (a pad's
    query, see plain.attention) has P = 0 whatever its scores: softmax_backward of P = 0 gives
    dS = 0 there, with no NaN even under fill -inf. dz, q, k, v [B, H, T, D] -> dq, dk, dv."""
    weights = attention_weights(q, k, mask, scale)  # [B, H, T, T]
    dv = weights.swapaxes(-1, -2) @ dz  # [B, H, T, T] @ [B, H, T, D] -> [B, H, T, D]
    dscores = softmax_backward(dz @ v.swapaxes(-1, -2), weights)  # [B, H, T, T]
    dq = dscores @ k * scale  # [B, H, T, D]
    dk = dscores.swapaxes(-1, -2) @ q * scale  # [B, H, T, D]
    return dq, dk, dv


def self_attention_backward(
    dy: np.ndarray, x: np.ndarray, attn: Attention, mask: np.ndarray, n_head: int, scale: float
) -> tuple[np.ndarray, Grads]:
    """plain.self_attention, last step first. dy, x [B, T, C] -> dx [B, T, C], {c_attn.*, c_proj.*}."""
    B, T, C = x.shape
    q, k, v = np.split(plain.linear(x, attn.c_attn), 3, axis=-1)  # 3 x [B, T, C], recomputed
    q, k, v = (a.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3) for a in (q, k, v))  # [B, H, T, D]
    z = plain.attention(q, k, v, mask, scale).transpose(0, 2, 1, 3).reshape(B, T, C)  # [B, T, C] heads side by side
    dz, g_proj = linear_backward(dy, z, attn.c_proj)  # [B, T, C]
    dz = dz.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)  # [B, H, T, D] split like z was merged
    dq, dk, dv = attention_backward(dz, q, k, v, mask, scale)  # 3 x [B, H, T, D]
    dqkv = np.concatenate([a.transpose(0, 2, 1, 3).reshape(B, T, C) for a in (dq, dk, dv)], axis=-1)  # [B, T, 3C]
    dx, g_attn = linear_backward(dqkv, x, attn.c_attn)  # [B, T, C]
    return dx, {f"c_attn.{k}": a for k, a in g_attn.items()} | {f"c_proj.{k}": a for k, a in g_proj.items()}


# --- the model ---------------------------------------------------------------------------------


def block_backward(
    dy: np.ndarray, x: np.ndarray, b: Block, mask: np.ndarray, config: GPT2Config, scale: float
) -> tuple[np.ndarray, Grads]:
    """x1 = x + attn(ln_1(x)); y = x1 + mlp(ln_2(x1)). A residual add passes its gradient to both
    branches unchanged, so dx1 = dy + (the MLP branch's), dx = dx1 + (the attention branch's).
    dy, x [B, T, C] (the block's input) -> dx [B, T, C], the block's gradients."""
    eps = config.layer_norm_epsilon
    h1 = plain.layer_norm(x, b.ln_1, eps)  # [B, T, C] recomputed
    x1 = x + plain.self_attention(h1, b.attn, mask, config.n_head, scale)  # [B, T, C]
    dh2, g_mlp = mlp_backward(dy, plain.layer_norm(x1, b.ln_2, eps), b.mlp)  # [B, T, C]
    dx2, g_ln_2 = layer_norm_backward(dh2, x1, b.ln_2, eps)
    dx1 = dy + dx2  # [B, T, C] the residual stream's gradient after attention
    dh1, g_attn = self_attention_backward(dx1, h1, b.attn, mask, config.n_head, scale)
    dx0, g_ln_1 = layer_norm_backward(dh1, x, b.ln_1, eps)
    grads = {f"ln_1.{k}": a for k, a in g_ln_1.items()} | {f"attn.{k}": a for k, a in g_attn.items()}
    grads |= {f"ln_2.{k}": a for k, a in g_ln_2.items()} | {f"mlp.{k}": a for k, a in g_mlp.items()}
    return dx1 + dx0, grads  # [B, T, C]


def cross_entropy(logits: np.ndarray, targets: np.ndarray, keep: np.ndarray) -> float:
    """The mean over counted positions of -log softmax(logits)[target]: the loss. logits [B, T-1, V]
    (the last position predicts nothing), targets, keep [B, T-1] (labels.counted)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)  # [B, T-1, V] <= 0
    logprobs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # [B, T-1, V] log softmax
    nll = -np.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]  # [B, T-1]
    return float(nll[keep].sum() / keep.sum())  # counted positions only: pads and -100 never enter the mean


def cross_entropy_backward(logits: np.ndarray, targets: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """-log softmax(z)[y] = -z_y + log sum exp z, whose derivative is softmax(z) - onehot(y): the
    probabilities, minus 1 at the target. Divided by N (the mean); 0 where nothing is counted.
    logits [B, T-1, V], targets, keep [B, T-1] -> dlogits [B, T-1, V]."""
    dlogits = plain.softmax(logits)  # [B, T-1, V]
    np.put_along_axis(dlogits, targets[..., None], np.take_along_axis(dlogits, targets[..., None], -1) - 1, -1)
    return np.where(keep[..., None], dlogits, 0) / logits.dtype.type(keep.sum())  # [B, T-1, V]


def embedding_backward(
    dx: np.ndarray, input_ids: np.ndarray, positions: np.ndarray, config: GPT2Config
) -> tuple[np.ndarray, np.ndarray]:
    """x = wte[ids] + wpe[positions]: a lookup copies a row, so its gradient adds dx back into that
    row, once per token that used it (np.add.at: a token seen twice gets both). dx [B, T, C] ->
    dwte [V, C], dwpe [n_positions, C]. Pads' dx is 0 (nothing counted reads them), so they add nothing."""
    dwte = np.zeros((config.vocab_size, dx.shape[-1]), dtype=dx.dtype)  # [V, C]
    dwpe = np.zeros((config.n_positions, dx.shape[-1]), dtype=dx.dtype)  # [n_positions, C]
    np.add.at(dwte, input_ids, dx)
    np.add.at(dwpe, positions, dx)
    return dwte, dwpe


def parameter_order(config: GPT2Config) -> list[str]:
    """transformers' GPT2LMHeadModel.named_parameters() names, in its order (lm_head only when untied)."""
    per_block = [
        f"{layer}.{p}"
        for layer in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")
        for p in ("weight", "bias")
    ]
    names = ["transformer.wte.weight", "transformer.wpe.weight"]
    names += [f"transformer.h.{i}.{name}" for i in range(config.n_layer) for name in per_block]
    names += ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    return names + ([] if config.tie_word_embeddings else ["lm_head.weight"])


def loss_and_grads(
    weights: Weights,
    config: GPT2Config,
    input_ids: ArrayLike,
    labels: ArrayLike | None = None,
    attention_mask: ArrayLike | None = None,
    mask_fill: str | float = "min",
) -> tuple[float, Grads]:
    """-> (loss, grads): transformers' GPT2LMHeadModel(input_ids, attention_mask, labels).loss and
    the gradient of it for every parameter, keyed by named_parameters()'s names.

    labels [B, T]: the token expected at each position, shifted inside, -100 ignored (gpt2np.labels);
    None: the inputs themselves, pads and each row's first real token ignored. Positions come from
    the mask, as in plain.forward. The tied output layer's gradient is part of wte's, as in torch."""
    ids, _ = check_input_ids(input_ids, config.vocab_size)  # [B, T]
    check_length(ids.shape[1], config.n_positions, "the input")
    mask = check_attention_mask(attention_mask, ids.shape)  # [B, T]
    targets, keep = counted(labels_or_default(labels, ids, mask, config.vocab_size), mask)  # [B, T-1] each
    dtype, eps = weights.wte.dtype, config.layer_norm_epsilon
    positions = np.where(mask == 1, np.cumsum(mask, axis=-1) - 1, 0)  # [B, T], as plain.forward
    additive = plain.additive_mask(mask, resolve_fill(mask_fill, dtype), dtype)  # [B, 1, T, T]
    scales = [plain.attention_scale(config, i) for i in range(config.n_layer)]
    with np.errstate(invalid="ignore"):  # a pad's empty row under -inf: see plain.attention
        # The forward pass, keeping each block's input: the backward recomputes the rest of a block.
        x = weights.wte[ids] + weights.wpe[positions]  # [B, T, C]
        inputs = []
        for i, b in enumerate(weights.h):
            inputs.append(x)
            x = plain.block(x, b, additive, config, scales[i])  # [B, T, C]
        xf = plain.layer_norm(x, weights.ln_f, eps)  # [B, T, C]
        logits = xf[:, :-1] @ weights.lm_head.T  # [B, T-1, V]: the last position predicts nothing
        loss = cross_entropy(logits, targets, keep)

        # The backward pass: the chain rule from the loss down to the embeddings.
        grads: Grads = {}
        dlogits = cross_entropy_backward(logits, targets, keep)  # [B, T-1, V]
        dxf = np.zeros_like(xf)  # [B, T, C]
        dxf[:, :-1] = dlogits @ weights.lm_head  # [B, T-1, V] @ [V, C]: logits = xf . each token's row
        d_lm_head = dlogits.reshape(-1, dlogits.shape[-1]).T @ xf[:, :-1].reshape(-1, xf.shape[-1])  # [V, C]
        dx, g = layer_norm_backward(dxf, x, weights.ln_f, eps)  # [B, T, C]
        grads |= {f"transformer.ln_f.{k}": a for k, a in g.items()}
        for i in reversed(range(config.n_layer)):
            dx, g = block_backward(dx, inputs[i], weights.h[i], additive, config, scales[i])  # [B, T, C]
            grads |= {f"transformer.h.{i}.{k}": a for k, a in g.items()}
    dwte, dwpe = embedding_backward(dx, ids, positions, config)  # [V, C], [n_positions, C]
    # The tied output layer: wte is used twice (the lookup at the bottom, the logits at the top),
    # so its gradient is the sum of both uses'.
    if config.tie_word_embeddings:
        dwte += d_lm_head
    else:
        grads["lm_head.weight"] = d_lm_head
    grads |= {"transformer.wte.weight": dwte, "transformer.wpe.weight": dwpe}
    return loss, {name: grads[name] for name in parameter_order(config)}
