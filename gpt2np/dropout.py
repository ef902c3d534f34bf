"""Dropout for training: the loss and every gradient with GPT-2's three dropouts, from seeded masks.

GPT-2 (transformers' GPT2LMHeadModel in train mode, nanoGPT) drops, each with its config's
probability:
- embd_pdrop: the embeddings' sum wte[ids] + wpe[positions], before the first block;
- attn_pdrop: the attention weights, after the softmax (z = dropout(P) v);
- resid_pdrop: attention's output after c_proj, and the MLP's output after its c_proj, before
  each is added to the residual stream.
Dropping keeps each value with probability 1 - p and divides the kept ones by 1 - p (inverted
dropout), so the expected value is unchanged and evaluation needs no rescaling.

A mask is drawn from numpy.random.default_rng([seed, layer, site]): one seed a micro-batch
(the command draws it from its saved generator), and the layer and site make each mask its own.
The backward recomputes each block from its input (as backward.py does, to keep memory bounded)
and so draws the very same masks again. The arithmetic is backward.py's (the same functions
where there is no dropout); the differences: the attention weights are made whole ([B, H, T, T]
in float64, as plain_backward does) to be dropped, and the three masks multiply the forward and,
the same masks, the gradients on the way back. With every p = 0 the masks are all ones and the
result is backward.gradients' (tests/test_dropout.py; there also torch's gradient with the same masks).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .attention import merge_heads, split_heads
from .backward import gelu_backward, linear_backward, output_layer_backward
from .layers import gelu, layer_norm, linear
from .masks import build_attention_mask
from .plain_backward import (
    Grads,
    attention_weights,
    embedding_backward,
    layer_norm_backward,
    parameter_order,
    softmax_backward,
)

EMBD, ATTN, ATTN_RESID, MLP_RESID = 0, 1, 2, 3  # the sites of a layer's masks


def dropout_mask(seed: int, layer: int, site: int, shape: tuple[int, ...], p: float) -> np.ndarray:
    """[shape] float64: 0 where dropped (probability p), 1 / (1 - p) where kept. The same seed,
    layer and site give the same mask: the forward's and the recompute's are one."""
    if p == 0:
        return np.ones(shape)
    kept = np.random.default_rng([seed, layer, site]).random(shape) >= p  # [shape] bool
    return kept / (1.0 - p)


def block_forward(
    model: Any, i: int, x: np.ndarray, additive: np.ndarray, seed: int, rates: dict[str, float]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Block i with dropout: x [B, T, C] float64 -> the new stream, and what the backward reads."""
    b, cfg, dtype = model.weights.h[i], model.config, model.dtype
    eps, H, scale = cfg.layer_norm_epsilon, cfg.n_head, model.scale(i)
    h1 = layer_norm(x, b.ln_1, eps, dtype)  # [B, T, C]
    C = h1.shape[-1]
    qkv = linear(h1, b.attn.c_attn)  # [B, T, 3C]
    q, k, v = (split_heads(qkv[..., j * C : (j + 1) * C], H).astype(np.float64) for j in range(3))  # [B, H, T, D]
    weights = attention_weights(q, k, additive, scale)  # [B, H, T, T] float64
    m_attn = dropout_mask(seed, i + 1, ATTN, weights.shape, rates["attn"])  # [B, H, T, T]
    z = merge_heads((weights * m_attn) @ v).astype(dtype)  # [B, T, C]
    m_attn_out = dropout_mask(seed, i + 1, ATTN_RESID, x.shape, rates["resid"])  # [B, T, C]
    x1 = x + linear(z, b.attn.c_proj) * m_attn_out  # [B, T, C] float64
    h2 = layer_norm(x1, b.ln_2, eps, dtype)  # [B, T, C]
    pre = linear(h2, b.mlp.c_fc)  # [B, T, F]
    post = gelu(pre.copy())  # [B, T, F]
    m_mlp_out = dropout_mask(seed, i + 1, MLP_RESID, x.shape, rates["resid"])  # [B, T, C]
    y = x1 + linear(post, b.mlp.c_proj) * m_mlp_out  # [B, T, C] float64
    saved = dict(h1=h1, qkv=qkv, q=q, k=k, v=v, weights=weights, m_attn=m_attn, z=z, m_attn_out=m_attn_out)
    return y, saved | dict(x1=x1, h2=h2, pre=pre, post=post, m_mlp_out=m_mlp_out)


def block_backward(
    model: Any, i: int, dy: np.ndarray, x: np.ndarray, additive: np.ndarray, seed: int, rates: dict[str, float]
) -> tuple[np.ndarray, Grads]:
    """backward.block_backward with the block's masks: dy, x [B, T, C] float64 -> dx, the block's gradients."""
    b, cfg, dtype = model.weights.h[i], model.config, model.dtype
    eps, H, scale = cfg.layer_norm_epsilon, cfg.n_head, model.scale(i)
    _, s = block_forward(model, i, x, additive, seed, rates)  # the same masks: the same seed, layer, site
    dmlp = (dy * s["m_mlp_out"]).astype(dtype)  # [B, T, C]: a dropped value passes no gradient
    dpost, g_proj = linear_backward(dmlp, s["post"], b.mlp.c_proj)  # [B, T, F]
    dpre = gelu_backward(dpost.astype(np.float64), s["pre"].astype(np.float64)).astype(dtype)  # [B, T, F]
    dh2, g_fc = linear_backward(dpre, s["h2"], b.mlp.c_fc)  # [B, T, C]
    dx2, g_ln_2 = layer_norm_backward(dh2.astype(np.float64), s["x1"], b.ln_2, eps)  # [B, T, C] float64
    dx1 = dy + dx2  # [B, T, C] float64
    dattn = (dx1 * s["m_attn_out"]).astype(dtype)  # [B, T, C]
    dz, g_c_proj = linear_backward(dattn, s["z"], b.attn.c_proj)  # [B, T, C]
    dz64 = split_heads(dz, H).astype(np.float64)  # [B, H, T, D]
    q, k, v, weights, m_attn = s["q"], s["k"], s["v"], s["weights"], s["m_attn"]
    dv = (weights * m_attn).swapaxes(-1, -2) @ dz64  # [B, H, T, D]
    dweights = (dz64 @ v.swapaxes(-1, -2)) * m_attn  # [B, H, T, T]: through the dropped weights
    dscores = softmax_backward(dweights, weights)  # [B, H, T, T]
    dq, dk = dscores @ k * scale, dscores.swapaxes(-1, -2) @ q * scale  # [B, H, T, D] each
    C = x.shape[-1]
    dqkv = np.empty(s["qkv"].shape, dtype=dtype)  # [B, T, 3C]
    for j, g in enumerate((dq, dk, dv)):
        dqkv[..., j * C : (j + 1) * C] = merge_heads(g)
    dh1, g_c_attn = linear_backward(dqkv, s["h1"], b.attn.c_attn)  # [B, T, C]
    dx0, g_ln_1 = layer_norm_backward(dh1.astype(np.float64), x, b.ln_1, eps)  # [B, T, C] float64
    parts = {"ln_1": g_ln_1, "attn.c_attn": g_c_attn, "attn.c_proj": g_c_proj, "ln_2": g_ln_2}
    parts |= {"mlp.c_fc": g_fc, "mlp.c_proj": g_proj}
    grads = {f"{layer}.{p}": a.astype(dtype, copy=False) for layer, g in parts.items() for p, a in g.items()}
    return dx1 + dx0, grads


def gradients_with_dropout(
    model: Any, ids: np.ndarray, targets: np.ndarray, rates: dict[str, float], seed: int
) -> tuple[float, Grads]:
    """The loss and every gradient of whole windows (nothing padded: position t of row b predicts
    targets[b, t]) with dropout at rates {"embd", "attn", "resid"}, masks from seed. ids, targets
    [B, T] -> (loss, grads by transformers' names), as backward.gradients returns them."""
    cfg, w = model.config, model.weights
    B, T = ids.shape
    mask = np.ones((B, T), dtype=np.int64)  # [B, T]
    positions = np.broadcast_to(np.arange(T), (B, T))  # [B, T]
    keep = np.ones((B, T), dtype=bool)  # [B, T]
    additive = build_attention_mask(mask, T, model.fill, model.dtype).additive.astype(np.float64)  # [B, 1, T, T]
    m_embd = dropout_mask(seed, 0, EMBD, (B, T, cfg.n_embd), rates["embd"])  # [B, T, C]
    x = model.embed(ids, positions) * m_embd  # [B, T, C] float64
    inputs = []
    for i in range(cfg.n_layer):
        inputs.append(x)
        x, _ = block_forward(model, i, x, additive, seed, rates)
    xf = layer_norm(x, w.ln_f, cfg.layer_norm_epsilon, model.dtype)  # [B, T, C]
    loss, dxf, d_lm_head = output_layer_backward(xf, w.lm_head, targets, keep)  # [B, T, C], [V, C]
    dx, g = layer_norm_backward(dxf.astype(np.float64), x, w.ln_f, cfg.layer_norm_epsilon)  # [B, T, C] float64
    grads: Grads = {f"transformer.ln_f.{k}": a.astype(model.dtype) for k, a in g.items()}
    for i in reversed(range(cfg.n_layer)):
        dx, g = block_backward(model, i, dx, inputs.pop(), additive, seed, rates)
        grads |= {f"transformer.h.{i}.{k}": a for k, a in g.items()}
    dwte, dwpe = embedding_backward(dx * m_embd, ids, positions, cfg)  # [V, C], [n_positions, C] float64
    if cfg.tie_word_embeddings:
        dwte += d_lm_head
    else:
        grads["lm_head.weight"] = d_lm_head.astype(model.dtype)
    grads |= {"transformer.wte.weight": dwte.astype(model.dtype), "transformer.wpe.weight": dwpe.astype(model.dtype)}
    return loss, {name: grads[name] for name in parameter_order(cfg)}
