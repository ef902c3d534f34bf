"""The loss and every gradient, fast: plain_backward.loss_and_grads with the forward's speed-ups.

The same function as gpt2np/plain_backward.py (tests/test_backward.py holds them equal, and
both equal to torch autograd on transformers' model), computed the way the fast forward
(model.py) computes: the residual stream and its gradient in float64, LayerNorm and its
backward in float64 (rounded once to the model's dtype), attention in blocks. Memory stays
bounded where the plain page holds whole arrays:

- only each block's input is kept (n_layer x [B, T, C] float64); a block's insides are
  recomputed when the backward reaches it, so one layer's attention exists at a time;
- attention's backward runs one row of the batch at a time, in float64: [H, T, T] weights, not
  [B, H, T, T] (float64 there keeps the float32 gradients' worst tensor below torch's on every
  BLAS kernel measured: tests/test_backward.py);
- the output layer and the loss run on the counted positions only, POSITIONS_PER_BLOCK at a
  time: the [B, T, V] logits (823 MB in float32 for 4 x 1024 tokens) never exist at once.

The backward formulas are plain_backward's own (linear_backward, gelu_backward,
layer_norm_backward, attention_backward): one derivation, read there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .attention import attention_in_blocks, merge_heads, split_heads
from .labels import counted, labels_or_default
from .layers import SUM_CHUNK, gelu, layer_norm, linear, lm_head
from .masks import AttentionMask, build_attention_mask
from .plain_backward import (
    Grads,
    attention_backward,
    embedding_backward,
    gelu_backward,
    layer_norm_backward,
    parameter_order,
)
from .weights import Linear

POSITIONS_PER_BLOCK = 128  # positions whose [n, V] logits exist at a time (26 MB of float32 for GPT-2)


def linear_backward(dy: np.ndarray, x: np.ndarray, layer: Linear) -> tuple[np.ndarray, Grads]:
    """plain_backward.linear_backward, with the bias's sum over the B x T tokens in float64 (then
    rounded once): in float32, NumPy's column sums are running sums whose error grows with the
    number of tokens. dy [..., out], x [..., in] -> dx [..., in], {weight [in, out], bias [out]}."""
    rows, drows = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])  # [N, in], [N, out]
    bias = drows.sum(axis=0, dtype=np.float64).astype(dy.dtype)  # [out]
    return linear(dy, Linear(layer.weight.T, np.zeros((), dy.dtype))), {"weight": rows.T @ drows, "bias": bias}


def nll_and_dlogits(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n, V] logits, [n] targets -> ([n] float64 -log softmax(logits)[target], [n, V] softmax - onehot
    in the logits' dtype: plain_backward.cross_entropy and its backward, before the mean). The sum
    of exponentials is taken in float64 (V terms), as scoring.target_logprobs does."""
    n = np.arange(len(targets))
    shifted = logits - logits.max(axis=-1, keepdims=True)  # [n, V] <= 0: exp never overflows
    e = np.exp(shifted)  # [n, V]
    total = e.sum(axis=-1, keepdims=True, dtype=np.float64)  # [n, 1] float64
    nll = np.log(total[:, 0]) - shifted[n, targets].astype(np.float64)  # [n]
    e /= total.astype(logits.dtype)  # [n, V] softmax
    e[n, targets] -= 1  # - onehot
    return nll, e


def cross_entropy(logits: np.ndarray, targets: np.ndarray, keep: np.ndarray) -> float:
    """transformers' loss from [B, T-1, V] logits (labels.counted's targets and keep): the mean of
    -log p(target) over the counted positions (plain_backward.cross_entropy, in float64 sums)."""
    rows, cols = np.nonzero(keep)  # [N] the counted positions
    total = 0.0
    for start in range(0, len(rows), POSITIONS_PER_BLOCK):
        r, c = rows[start : start + POSITIONS_PER_BLOCK], cols[start : start + POSITIONS_PER_BLOCK]
        total += float(nll_and_dlogits(logits[r, c], targets[r, c])[0].sum())
    return total / len(rows)


def logits_backward(dlogits: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """dlogits @ weight, [n, V] @ [V, C] -> [n, C], as SUM_CHUNK-term float32 products added in
    float64: one float32 running sum over V = 50257 terms would round at every add (lm_head's
    reasoning, backwards). Measured on the odd model: the gradients' error against the float64
    truth 3.7e-7 with one product, 3.1e-7 so, torch's 3.4e-7 (tests/test_backward.py)."""
    out = np.zeros((dlogits.shape[0], weight.shape[1]), dtype=np.float64)  # [n, C]
    for v in range(0, weight.shape[0], SUM_CHUNK):
        out += dlogits[:, v : v + SUM_CHUNK] @ weight[v : v + SUM_CHUNK]  # [n, 128] @ [128, C]
    return out.astype(dlogits.dtype)


def output_layer_backward(
    xf: np.ndarray, weight: np.ndarray, targets: np.ndarray, keep: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """The output layer and the loss, forward and backward, on the counted positions only, a block
    at a time (plain_backward.loss_and_grads's cross_entropy, its backward and the logits' product).
    xf [B, T, C] after ln_f, weight [V, C] -> (loss, dxf [B, T, C], dweight [V, C])."""
    rows, cols = np.nonzero(keep)  # [N] position (row, t) predicts targets[row, t]
    N = len(rows)
    dxf = np.zeros_like(xf)  # [B, T, C]: 0 at every position that predicts nothing counted
    dweight = np.zeros(weight.shape, dtype=np.float64)  # [V, C] the blocks' products added in float64
    total = 0.0
    for start in range(0, N, POSITIONS_PER_BLOCK):
        r, c = rows[start : start + POSITIONS_PER_BLOCK], cols[start : start + POSITIONS_PER_BLOCK]
        h = xf[r, c]  # [n, C]
        nll, dlogits = nll_and_dlogits(lm_head(h, weight), targets[r, c])  # [n], [n, V]
        total += float(nll.sum())
        dlogits /= dlogits.dtype.type(N)  # the mean over the N counted labels
        dxf[r, c] = logits_backward(dlogits, weight)  # [n, C]
        dweight += dlogits.T @ h  # [V, n] @ [n, C]
    return total / N, dxf, dweight  # dweight stays float64: the caller adds the embedding's share, then rounds


def block_backward(model: Any, i: int, dy: np.ndarray, x: np.ndarray, mask: AttentionMask) -> tuple[np.ndarray, Grads]:
    """plain_backward.block_backward, fast: dy, x [B, T, C] float64 (the block's input) -> dx
    [B, T, C] float64, the block's gradients in the model's dtype."""
    b, cfg, dtype = model.weights.h[i], model.config, model.dtype
    eps, H, scale = cfg.layer_norm_epsilon, cfg.n_head, model.scale(i)
    # The block's forward again, keeping what the backward reads.
    h1 = layer_norm(x, b.ln_1, eps, dtype)  # [B, T, C] in dtype
    C = h1.shape[-1]
    qkv = linear(h1, b.attn.c_attn)  # [B, T, 3C]
    q, k, v = (split_heads(qkv[..., j * C : (j + 1) * C], H) for j in range(3))  # 3 x [B, H, T, D] views
    z = merge_heads(attention_in_blocks(q, k, v, mask, scale))  # [B, T, C]
    x1 = x + linear(z, b.attn.c_proj)  # [B, T, C] float64: the stream after attention
    h2 = layer_norm(x1, b.ln_2, eps, dtype)  # [B, T, C]
    pre = linear(h2, b.mlp.c_fc)  # [B, T, F]
    # The MLP's backward, then ln_2's (in float64, like its forward).
    dpost, g_proj = linear_backward(dy.astype(dtype), gelu(pre.copy()), b.mlp.c_proj)  # [B, T, F]
    dpre = gelu_backward(dpost.astype(np.float64), pre.astype(np.float64)).astype(dtype)  # [B, T, F] rounded once
    dh2, g_fc = linear_backward(dpre, h2, b.mlp.c_fc)  # [B, T, C]
    dx2, g_ln_2 = layer_norm_backward(dh2.astype(np.float64), x1, b.ln_2, eps)  # [B, T, C] float64
    dx1 = dy + dx2  # the residual add passes dy on unchanged
    # Attention's backward, one row of the batch at a time: [H, T, T] weights, not [B, H, T, T].
    dz, g_c_proj = linear_backward(dx1.astype(dtype), z, b.attn.c_proj)  # [B, T, C]
    dz = split_heads(dz, H)  # [B, H, T, D]
    dqkv = np.empty(qkv.shape, dtype=dtype)  # [B, T, 3C]
    for row in range(x.shape[0]):
        one = slice(row, row + 1)
        q64, k64, v64, dz64 = (a[one].astype(np.float64) for a in (q, k, v, dz))  # [1, H, T, D] each
        dq_dk_dv = attention_backward(dz64, q64, k64, v64, mask.additive[one], scale)  # 3 x [1, H, T, D] float64
        for j, g in enumerate(dq_dk_dv):
            dqkv[one, :, j * C : (j + 1) * C] = merge_heads(g)  # [1, T, C]
    dh1, g_c_attn = linear_backward(dqkv, h1, b.attn.c_attn)  # [B, T, C]
    dx0, g_ln_1 = layer_norm_backward(dh1.astype(np.float64), x, b.ln_1, eps)  # [B, T, C] float64
    parts = {"ln_1": g_ln_1, "attn.c_attn": g_c_attn, "attn.c_proj": g_c_proj, "ln_2": g_ln_2}
    parts |= {"mlp.c_fc": g_fc, "mlp.c_proj": g_proj}
    grads = {f"{layer}.{p}": a.astype(dtype, copy=False) for layer, g in parts.items() for p, a in g.items()}
    return dx1 + dx0, grads


def loss_and_grads(
    model: Any,
    input_ids: ArrayLike,
    labels: ArrayLike | None = None,
    attention_mask: ArrayLike | None = None,
    position_ids: ArrayLike | None = None,
) -> tuple[float, Grads]:
    """GPT2.loss_and_grads: plain_backward.loss_and_grads, fast (tests/test_backward.py).
    model: a GPT2 (Any: model.py sits above this module). -> (loss, grads by transformers' names)."""
    ids, mask, positions, _ = model._check_inputs(input_ids, attention_mask, position_ids)  # [B, T] each
    targets, keep = counted(labels_or_default(labels, ids, mask, model.config.vocab_size), mask)  # [B, T-1] each
    # position t predicts targets[:, t]; the last position predicts nothing
    no_target = np.zeros((ids.shape[0], 1), dtype=bool)  # [B, 1]
    return gradients(
        model,
        ids,
        mask,
        positions,
        np.concatenate([targets, no_target], axis=1),
        np.concatenate([keep, no_target], axis=1),
    )


def gradients(
    model: Any, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, targets: np.ndarray, keep: np.ndarray
) -> tuple[float, Grads]:
    """The loss and gradients of checked inputs, with the targets already placed: position t of row b
    predicts targets[b, t] where keep[b, t] ([B, T] each; loss_and_grads shifts labels into them,
    llm.c's debug state gives its y as they are)."""
    cfg, w = model.config, model.weights
    additive = build_attention_mask(mask, ids.shape[1], model.fill, model.dtype)  # [B, 1, T, T]
    grads: Grads = {}
    with np.errstate(invalid="ignore", over="ignore"):  # a pad's empty row under -inf (plain.attention)
        x = model.embed(ids, positions)  # [B, T, C] float64
        inputs = []  # each block's input: all the backward keeps of the forward
        for i in range(cfg.n_layer):
            inputs.append(x)
            x, _ = model.block(i, x.copy(), additive)  # model.block adds to its x in place
        xf = layer_norm(x, w.ln_f, cfg.layer_norm_epsilon, model.dtype)  # [B, T, C]
        loss, dxf, d_lm_head = output_layer_backward(xf, w.lm_head, targets, keep)  # [B, T, C], [V, C]
        dx, g = layer_norm_backward(dxf.astype(np.float64), x, w.ln_f, cfg.layer_norm_epsilon)  # [B, T, C] float64
        grads |= {f"transformer.ln_f.{k}": a.astype(model.dtype) for k, a in g.items()}
        for i in reversed(range(cfg.n_layer)):
            dx, g = block_backward(model, i, dx, inputs.pop(), additive)  # popped: freed once used
            grads |= {f"transformer.h.{i}.{k}": a for k, a in g.items()}
    # The embeddings' sums (a token or position used many times) in float64, rounded once.
    dwte, dwpe = embedding_backward(dx, ids, positions, cfg)  # [V, C], [n_positions, C] float64
    if cfg.tie_word_embeddings:
        dwte += d_lm_head  # the tied output layer's share of wte's gradient
    else:
        grads["lm_head.weight"] = d_lm_head.astype(model.dtype)
    grads |= {"transformer.wte.weight": dwte.astype(model.dtype), "transformer.wpe.weight": dwpe.astype(model.dtype)}
    return loss, {name: grads[name] for name in parameter_order(cfg)}
