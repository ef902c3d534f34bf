"""The loss and every gradient, fast: plain_backward.loss_and_grads with the forward's speed-ups.

The same function as gpt2np/plain_backward.py (tests/test_backward.py holds them equal, and
both equal to torch autograd on transformers' model), computed the way the fast forward
(model.py) computes: the residual stream and its gradient in float64, LayerNorm and its
backward in float64 (rounded once to the model's dtype), attention in blocks. Memory stays
bounded where the plain page holds whole arrays:

- each block's forward (block_forward) keeps its input and what its backward reads (qkv, z, the
  stream after attention, the MLP's input: 12 x C float32 per token and layer with the input),
  never the [B, H, T, T] attention weights, which the backward recomputes one row at a time;
  with gradient checkpointing (GPT2.gradient_checkpointing_enable) only the block's input is kept
  (2 x C) and block_forward runs again when the backward reaches the block (more time);
- attention's backward runs one row of the batch at a time, in float64: [H, T, T] weights, not
  [B, H, T, T] (float64 there keeps the float32 gradients' worst tensor below torch's on every
  BLAS kernel measured: tests/test_backward.py);
- the output layer and the loss run on the counted positions only, POSITIONS_PER_BLOCK at a
  time: the [B, T, V] logits (823 MB in float32 for 4 x 1024 tokens) never exist at once
  (unless a hook asks for the gradient at the logits).

The derivations are plain_backward's: layer_norm_backward and softmax_backward are its own
functions; gelu_backward, linear_backward, attention_backward and the embeddings' sums here are
its formulas computed in place, with float64 sums and the batch in rows. `gradients` also passes the gradient at each
activation point (hooks.py's names) through a hook: run_with_cache's incl_bwd, run_with_hooks'
bwd_hooks. Measured with scripts/experiments/train_memory.py: docs/how-it-works.md, "Backpropagation".
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .attention import attention, attention_in_blocks, merge_heads, split_heads
from .hooks import NO_HOOKS, Hooks
from .labels import counted, labels_or_default
from .layers import GELU_CHUNK, SQRT_2_OVER_PI, SUM_CHUNK, gelu, layer_norm, layer_norm_scale, linear, lm_head, softmax
from .masks import AttentionMask, build_attention_mask
from .plain_backward import (
    Grads,
    attention_weights,
    layer_norm_backward,
    parameter_order,
    softmax_backward,
)
from .weights import Linear

POSITIONS_PER_BLOCK = 512  # positions whose [n, V] logits exist at a time (103 MB of float32 for GPT-2)
Saved = dict[str, np.ndarray]  # what a block's forward keeps for its backward (block_forward)


def gelu_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """plain_backward.gelu_backward, fast (tests/test_backward.py::test_the_fast_gradients_equal_the_plain_ones):
    the same formula, s + x * ds/dx with s = (1 + tanh(u)) / 2, in x's dtype, GELU_CHUNK elements
    at a time and in place (layers.gelu's reasoning: a dozen passes over [B, T, 4C] in cache, not
    in memory; no x**3, which NumPy computes as a slow power): 9x faster than the plain page's on
    [8, 256, 3072] in float64 (51 ms against 462 ms on one thread, conversions included). The
    block calls it in float64 and rounds once, as before: in float32 it would be 4x faster again,
    but its error (2e-7 of the largest value, against 4e-8) moved the worst float32 gradient
    tensor of small-outliers from 1.4e-6 to 2.0e-6, torch's own. dy, x [...] -> dx [...] (new)."""
    flat_x, flat_dy = x.reshape(-1), dy.reshape(-1)  # [N] views (x, dy contiguous)
    out = np.empty_like(flat_x)  # [N]
    c, a = x.dtype.type(SQRT_2_OVER_PI), x.dtype.type(0.044715)
    for start in range(0, flat_x.size, GELU_CHUNK):
        xc, o = flat_x[start : start + GELU_CHUNK], out[start : start + GELU_CHUNK]  # [n] views
        x2 = xc * xc  # [n] x^2
        t = x2 * a  # [n] then u = c x (1 + a x^2), then tanh(u)
        t += 1
        t *= xc
        t *= c
        np.tanh(t, out=t)
        np.multiply(x2, 3 * a, out=x2)  # [n] then ds/dx * 2 = (1 - t^2) c (1 + 3 a x^2)
        x2 += 1
        x2 *= c
        np.multiply(t, t, out=o)
        np.subtract(1, o, out=o)
        x2 *= o
        x2 *= xc  # [n] x * 2 ds/dx
        t += 1  # [n] 2 s
        np.add(t, x2, out=o)  # [n] 2 (s + x ds/dx)
        o *= x.dtype.type(0.5)
        o *= flat_dy[start : start + GELU_CHUNK]
    return out.reshape(x.shape)


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
    """dlogits @ weight, [n, V] @ [V, C] -> [n, C], as SUM_CHUNK-term float32 products added
    in float64: one float32 running sum over V = 50257 terms would round at every add (lm_head's
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


def hooked_output_layer_backward(
    xf: np.ndarray, weight: np.ndarray, targets: np.ndarray, keep: np.ndarray, hook: Hooks
) -> tuple[float, np.ndarray, np.ndarray]:
    """output_layer_backward with the whole gradient at the logits [B, T, V] made, passed through
    hook("logits", ...) (which may replace it), and taken back through the output layer."""
    rows, cols = np.nonzero(keep)  # [N]
    N = len(rows)
    dlogits = np.zeros((*xf.shape[:2], weight.shape[0]), dtype=xf.dtype)  # [B, T, V]: 0 where nothing is counted
    total = 0.0
    for start in range(0, N, POSITIONS_PER_BLOCK):
        r, c = rows[start : start + POSITIONS_PER_BLOCK], cols[start : start + POSITIONS_PER_BLOCK]
        nll, d = nll_and_dlogits(lm_head(xf[r, c], weight), targets[r, c])  # [n], [n, V]
        total += float(nll.sum())
        dlogits[r, c] = d / d.dtype.type(N)
    dlogits = hook("logits", dlogits)  # [B, T, V]
    flat, h = dlogits.reshape(-1, dlogits.shape[-1]), xf.reshape(-1, xf.shape[-1])  # [B*T, V], [B*T, C]
    dxf = logits_backward(flat, weight).reshape(xf.shape)  # [B, T, C]
    return total / N, dxf, flat.T.astype(np.float64) @ h.astype(np.float64)  # [V, C] float64


def norm_backward(
    dy: np.ndarray, x: np.ndarray, ln: Any, eps: float, name: str, hook: Hooks, fwd: Hooks
) -> tuple[np.ndarray, Grads]:
    """plain_backward.layer_norm_backward, with the gradient at the LayerNorm's scale point `name`
    (hooks.py's "blocks.3.ln1.hook_scale", s = sqrt(var + eps) [B, T, 1]) when a hook asks for it,
    or when a forward hook replaced s (fwd: hooks.Replay). y = (x - mean) / s * gain + bias, so
    dL/ds = -sum(g * xhat) / s with g = dy * gain, and s moves with x as ds/dx = xhat / C: the
    variance term of dx is ds * xhat / C (with ds as computed it is the plain formula's third
    term; a hook's replacement, or 0 where a forward hook froze s, takes its place).
    dy, x [B, T, C] float64 -> dx [B, T, C] float64, {weight [C], bias [C]}."""
    if not (hook.wants(name) or fwd.wants(name)):
        return layer_norm_backward(dy, x, ln, eps)
    centred = x - x.mean(axis=-1, keepdims=True)  # [B, T, C]
    s = fwd(name, layer_norm_scale(x, eps))  # [B, T, 1] what the forward divided by (a hook's, if replaced)
    xhat = centred / s  # [B, T, C]
    g = dy * ln.weight  # [B, T, C] the gradient at xhat
    ds = hook(name, -(g * xhat).sum(axis=-1, keepdims=True) / s)  # [B, T, 1]
    dx = (g - g.mean(axis=-1, keepdims=True)) / s + ds * xhat / x.shape[-1]  # [B, T, C]
    C = x.shape[-1]
    return dx, {"weight": (dy * xhat).reshape(-1, C).sum(axis=0), "bias": dy.reshape(-1, C).sum(axis=0)}


def point(hook: Hooks, name: str, g: np.ndarray) -> np.ndarray:
    """hook(name, g) on a copy of g: for a gradient that also goes on elsewhere unchanged (a
    residual add hands dy to both branches; a hook on one branch must not change the other's)."""
    return hook(name, g.copy()) if hook.wants(name) else g


def replayed_weights(
    q: np.ndarray, k: np.ndarray, mask: AttentionMask, scale: float, fwd: Hooks, at: str
) -> tuple[np.ndarray, np.ndarray]:
    """The attention weights of a forward pass whose hooks replaced the scores or the pattern
    (fwd: hooks.Replay), float64 [B, H, T, T]: (softmax of the scores it ran with, empty rows 0;
    the pattern it went on with). The first is softmax's Jacobian, the second what weighs v."""
    scores = fwd(at + "attn.hook_attn_scores", q @ k.swapaxes(-1, -2) * scale + mask.additive)  # [B, H, T, T]
    probs = softmax(scores)  # [B, H, T, T]
    if mask.empty_rows is not None:
        np.copyto(probs, 0, where=mask.empty_rows)  # attention.attention's empty-row rule
    return probs, fwd(at + "attn.hook_pattern", probs.copy())


def attention_backward(
    dz: np.ndarray,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: AttentionMask,
    scale: float,
    hook: Hooks,
    at: str,
    fwd: Hooks = NO_HOOKS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """plain_backward.attention_backward, fast: in float64, one row of the batch at a time ([H, T, T]
    weights, not [B, H, T, T]), or all rows at once when a hook wants the gradient at the pattern or
    the scores (at + "attn.hook_pattern", "attn.hook_attn_scores": [B, H, T, T]), or a forward
    hook replaced one of them (fwd: hooks.Replay; the weights are then the replayed ones).
    dz, q, k, v [B, H, T, D] in the model's dtype -> dq, dk, dv [B, H, T, D] in it."""
    B = q.shape[0]
    points = (at + "attn.hook_pattern", at + "attn.hook_attn_scores")
    whole = any(hook.wants(p) for p in points)
    replayed = any(fwd.wants(p) for p in points)
    out = [np.empty_like(q), np.empty_like(k), np.empty_like(v)]  # dq, dk, dv
    for rows in [slice(0, B)] if whole or replayed else [slice(r, r + 1) for r in range(B)]:
        q64, k64, v64, dz64 = (a[rows].astype(np.float64) for a in (q, k, v, dz))  # [b, H, T, D] each
        if replayed:  # softmax's own output for its Jacobian; what weighs v, for dv
            weights, pattern = replayed_weights(q64, k64, mask, scale, fwd, at)  # [B, H, T, T] each
        else:
            weights = pattern = attention_weights(q64, k64, mask.additive[rows], scale)  # [b, H, T, T], empty rows 0
        dv = pattern.swapaxes(-1, -2) @ dz64  # [b, H, T, D]
        dweights = hook(at + "attn.hook_pattern", dz64 @ v64.swapaxes(-1, -2))  # [b, H, T, T]
        dscores = hook(at + "attn.hook_attn_scores", softmax_backward(dweights, weights))  # [b, H, T, T]
        out[0][rows] = dscores @ k64 * scale  # [b, H, T, D]
        out[1][rows] = dscores.swapaxes(-1, -2) @ q64 * scale
        out[2][rows] = dv
    return out[0], out[1], out[2]


def block_forward(model: Any, i: int, x: np.ndarray, mask: AttentionMask) -> tuple[np.ndarray, Saved]:
    """Block i's forward (model.block's, without hooks), keeping what block_backward reads:
    x [B, T, C] float64, the block's input (left unchanged) -> (the block's output [B, T, C] float64,
    {qkv [B, T, 3C], z [B, T, C], x1 [B, T, C] float64, pre [B, T, F]}). The LayerNorms' outputs
    are not kept: block_backward recomputes them from x and x1 (cheap, and the same bits)."""
    b, cfg, dtype = model.weights.h[i], model.config, model.dtype
    eps, H, scale = cfg.layer_norm_epsilon, cfg.n_head, model.scale(i)
    h1 = layer_norm(x, b.ln_1, eps, dtype)  # [B, T, C] in dtype
    C = h1.shape[-1]
    qkv = linear(h1, b.attn.c_attn)  # [B, T, 3C]
    q, k, v = (split_heads(qkv[..., j * C : (j + 1) * C], H) for j in range(3))  # 3 x [B, H, T, D] views
    z = merge_heads(attention_in_blocks(q, k, v, mask, scale))  # [B, T, C]
    x1 = x + linear(z, b.attn.c_proj)  # [B, T, C] float64: the stream after attention
    pre = linear(layer_norm(x1, b.ln_2, eps, dtype), b.mlp.c_fc)  # [B, T, F]
    out = x1 + linear(gelu(pre.copy()), b.mlp.c_proj)  # [B, T, C] float64
    return out, {"qkv": qkv, "z": z, "x1": x1, "pre": pre}


def replayed_forward(model: Any, i: int, x: np.ndarray, mask: AttentionMask, fwd: Hooks) -> Saved:
    """Block i's forward again with the forward hooks' replacements replayed (fwd: hooks.Replay,
    run_with_hooks with fwd_hooks and bwd_hooks), point by point as model.block runs them: what
    block_backward reads, with the LayerNorms' outputs and q, k, v as the hooked forward had them."""
    b, cfg, at = model.weights.h[i], model.config, f"blocks.{i}."
    H, scale = cfg.n_head, model.scale(i)
    h1 = fwd(at + "ln1.hook_normalized", model.norm(at + "ln1", x, b.ln_1, fwd))  # [B, T, C] in dtype
    C = h1.shape[-1]
    qkv = linear(h1, b.attn.c_attn)  # [B, T, 3C]
    q, k, v = (split_heads(qkv[..., j * C : (j + 1) * C], H) for j in range(3))  # 3 x [B, H, T, D] views
    q, k, v = (fwd(f"{at}attn.hook_{n}", a.swapaxes(1, 2)).swapaxes(1, 2) for n, a in zip("qkv", (q, k, v)))
    if fwd.wants(at + "attn.hook_attn_scores") or fwd.wants(at + "attn.hook_pattern"):
        heads = attention(q, k, v, mask, scale, fwd, i)[0]  # [B, H, T, D] with the replayed weights
    else:
        heads = attention_in_blocks(q, k, v, mask, scale)  # [B, H, T, D]
    z = merge_heads(fwd(at + "attn.hook_z", heads.swapaxes(1, 2)).swapaxes(1, 2))  # [B, T, C]
    x1 = fwd(at + "hook_resid_mid", x + fwd(at + "hook_attn_out", linear(z, b.attn.c_proj)))  # [B, T, C] float64
    h2 = fwd(at + "ln2.hook_normalized", model.norm(at + "ln2", x1, b.ln_2, fwd))  # [B, T, C]
    pre = fwd(at + "mlp.hook_pre", linear(h2, b.mlp.c_fc))  # [B, T, F]
    return {"h1": h1, "qkv": qkv, "q": q, "k": k, "v": v, "z": z, "x1": x1, "h2": h2, "pre": pre}


def block_backward(
    model: Any,
    i: int,
    dy: np.ndarray,
    x: np.ndarray,
    mask: AttentionMask,
    hook: Hooks = NO_HOOKS,
    saved: Saved | None = None,
    fwd: Hooks = NO_HOOKS,
) -> tuple[np.ndarray, Grads]:
    """plain_backward.block_backward, fast: dy, x [B, T, C] float64 (the block's input) -> dx
    [B, T, C] float64, the block's gradients in the model's dtype. saved: block_forward's, kept
    from the forward pass; None (gradient checkpointing, or forward hooks to replay) recomputes
    them here. Each `hook(name, g)` is the gradient at that point of the forward pass (hooks.py's
    names), g itself unless asked for. fwd(name, a): the forward hooks' replacements, replayed
    where the block is recomputed (replayed_forward); a itself otherwise."""
    b, cfg, dtype = model.weights.h[i], model.config, model.dtype
    eps, H, scale, at = cfg.layer_norm_epsilon, cfg.n_head, model.scale(i), f"blocks.{i}."
    if saved is None:  # the block's forward again
        saved = block_forward(model, i, x, mask)[1] if fwd is NO_HOOKS else replayed_forward(model, i, x, mask, fwd)
    qkv, z, x1, pre = saved["qkv"], saved["z"], saved["x1"], saved["pre"]
    C = qkv.shape[-1] // 3
    h1 = saved["h1"] if "h1" in saved else layer_norm(x, b.ln_1, eps, dtype)  # [B, T, C], recomputed unless replayed
    h2 = saved["h2"] if "h2" in saved else layer_norm(x1, b.ln_2, eps, dtype)  # [B, T, C]
    if "q" in saved:
        q, k, v = saved["q"], saved["k"], saved["v"]  # 3 x [B, H, T, D] as the hooked forward had them
    else:
        q, k, v = (split_heads(qkv[..., j * C : (j + 1) * C], H) for j in range(3))  # 3 x [B, H, T, D] views
    # The MLP's backward, then ln_2's (in float64, like its forward).
    dy = hook(at + "hook_resid_post", dy)  # [B, T, C] float64
    dmlp = point(hook, at + "hook_mlp_out", dy)  # y = x1 + mlp_out: the MLP's output gets dy too
    post = fwd(at + "mlp.hook_post", gelu(pre.copy()))  # [B, T, F]
    dpost, g_proj = linear_backward(dmlp.astype(dtype), post, b.mlp.c_proj)  # [B, T, F]
    dpost = hook(at + "mlp.hook_post", dpost)
    dpre = gelu_backward(dpost.astype(np.float64), pre.astype(np.float64)).astype(dtype)  # [B, T, F] rounded once
    dpre = hook(at + "mlp.hook_pre", dpre)
    dh2, g_fc = linear_backward(dpre, h2, b.mlp.c_fc)  # [B, T, C]
    dh2 = hook(at + "ln2.hook_normalized", dh2)
    dx2, g_ln_2 = norm_backward(dh2.astype(np.float64), x1, b.ln_2, eps, at + "ln2.hook_scale", hook, fwd)
    dx1 = hook(at + "hook_resid_mid", dy + dx2)  # the residual add passes dy on unchanged
    # Attention's backward.
    dattn = point(hook, at + "hook_attn_out", dx1)  # x1 = x + attn_out
    dz, g_c_proj = linear_backward(dattn.astype(dtype), z, b.attn.c_proj)  # [B, T, C]
    dz = hook(at + "attn.hook_z", split_heads(dz, H).swapaxes(1, 2)).swapaxes(1, 2)  # [B, H, T, D], seen [B, T, H, D]
    dq, dk, dv = attention_backward(dz, q, k, v, mask, scale, hook, at, fwd)  # 3 x [B, H, T, D]
    dqkv = np.empty(qkv.shape, dtype=dtype)  # [B, T, 3C]
    for j, name, g in [(2, "v", dv), (1, "k", dk), (0, "q", dq)]:  # the forward's order, reversed
        g = hook(f"{at}attn.hook_{name}", g.swapaxes(1, 2)).swapaxes(1, 2)  # seen as [B, T, H, D]
        dqkv[..., j * C : (j + 1) * C] = merge_heads(g)  # [B, T, C]
    dh1, g_c_attn = linear_backward(dqkv, h1, b.attn.c_attn)  # [B, T, C]
    dh1 = hook(at + "ln1.hook_normalized", dh1)
    dx0, g_ln_1 = norm_backward(dh1.astype(np.float64), x, b.ln_1, eps, at + "ln1.hook_scale", hook, fwd)
    parts = {"ln_1": g_ln_1, "attn.c_attn": g_c_attn, "attn.c_proj": g_c_proj, "ln_2": g_ln_2}
    parts |= {"mlp.c_fc": g_fc, "mlp.c_proj": g_proj}
    grads = {f"{layer}.{p}": a.astype(dtype, copy=False) for layer, g in parts.items() for p, a in g.items()}
    return hook(at + "hook_resid_pre", dx1 + dx0), grads


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
    targets, keep = placed_targets(labels, ids, mask, model.config.vocab_size)
    return gradients(model, ids, mask, positions, targets, keep, checkpointing=model.is_gradient_checkpointing)


def placed_targets(
    labels: ArrayLike | None, ids: np.ndarray, mask: np.ndarray, vocab_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """labels (transformers', shifted inside; None: next-token) -> targets, keep [B, T]: position t
    predicts targets[:, t] where keep[:, t]; the last position predicts nothing."""
    targets, keep = counted(labels_or_default(labels, ids, mask, vocab_size), mask)  # [B, T-1] each
    no_target = np.zeros((ids.shape[0], 1), dtype=bool)  # [B, 1]
    return np.concatenate([targets, no_target], axis=1), np.concatenate([keep, no_target], axis=1)


def gradients(
    model: Any,
    ids: np.ndarray,
    mask: np.ndarray,
    positions: np.ndarray,
    targets: np.ndarray,
    keep: np.ndarray,
    hook: Hooks = NO_HOOKS,
    fwd: Hooks = NO_HOOKS,
    checkpointing: bool = False,
) -> tuple[float, Grads]:
    """The loss and gradients of checked inputs, with the targets already placed: position t of row b
    predicts targets[b, t] where keep[b, t] ([B, T] each; loss_and_grads shifts labels into them,
    llm.c's debug state gives its y as they are). hook(name, g): the gradient at each activation
    point, from the loss back (run_with_cache's incl_bwd, run_with_hooks' bwd_hooks). fwd(name, a):
    the forward hooks' replacements (hooks.Replay), so that the loss and gradients are the hooked
    forward's (not on the logits: run_with_hooks refuses that); with them the blocks' insides are
    recomputed in the backward. checkpointing: keep only each block's input and recompute its
    insides in the backward (GPT2.gradient_checkpointing_enable)."""
    cfg, w = model.config, model.weights
    additive = build_attention_mask(mask, ids.shape[1], model.fill, model.dtype)  # [B, 1, T, T]
    grads: Grads = {}
    with np.errstate(invalid="ignore", over="ignore"):  # a pad's empty row under -inf (plain.attention)
        x = model.embed(ids, positions, fwd)  # [B, T, C] float64
        inputs: list[np.ndarray] = []  # each block's input
        kept: list[Saved | None] = []  # and (unless checkpointing or replaying) its insides
        for i in range(cfg.n_layer):
            x = fwd(f"blocks.{i}.hook_resid_pre", x)  # (model.block replays it too: the same array)
            inputs.append(x)
            if fwd is NO_HOOKS:
                x, saved = block_forward(model, i, x, additive)
                kept.append(None if checkpointing else saved)
            else:  # forward hooks: model.block runs them; the backward replays them (replayed_forward)
                x, _ = model.block(i, x.copy(), additive, hook=fwd)  # model.block adds to its x in place
                kept.append(None)
        xf = fwd("ln_final.hook_normalized", model.norm("ln_final", x, w.ln_f, fwd))  # [B, T, C]
        if hook.wants("logits"):  # the whole [B, T, V] gradient, for a hook to see (or replace)
            loss, dxf, d_lm_head = hooked_output_layer_backward(xf, w.lm_head, targets, keep, hook)
        else:
            loss, dxf, d_lm_head = output_layer_backward(xf, w.lm_head, targets, keep)  # [B, T, C], [V, C]
        dxf = hook("ln_final.hook_normalized", dxf)
        dx, g = norm_backward(
            dxf.astype(np.float64), x, w.ln_f, cfg.layer_norm_epsilon, "ln_final.hook_scale", hook, fwd
        )
        grads |= {f"transformer.ln_f.{k}": a.astype(model.dtype) for k, a in g.items()}
        for i in reversed(range(cfg.n_layer)):
            dx, g = block_backward(model, i, dx, inputs.pop(), additive, hook, kept.pop(), fwd)  # popped: freed
            grads |= {f"transformer.h.{i}.{k}": a for k, a in g.items()}
    # The embeddings' sums (a token or position used many times) in float64, rounded once:
    # plain_backward.embedding_backward's np.add.at, each table made once (tied: added straight
    # into the output layer's share). x = token + position embedding: each gets dx (and a hook on
    # one changes only that one).
    dwpe = np.zeros((cfg.n_positions, dx.shape[-1]))  # [n_positions, C] float64
    np.add.at(dwpe, positions, point(hook, "hook_pos_embed", dx))
    if cfg.tie_word_embeddings:
        dwte = d_lm_head  # [V, C] float64: the tied output layer's share of wte's gradient, the lookups' added below
    else:
        grads["lm_head.weight"] = d_lm_head.astype(model.dtype)
        dwte = np.zeros((cfg.vocab_size, dx.shape[-1]))  # [V, C] float64
    np.add.at(dwte, ids, point(hook, "hook_embed", dx))  # each token's row gets its dx
    grads |= {"transformer.wte.weight": dwte.astype(model.dtype), "transformer.wpe.weight": dwpe.astype(model.dtype)}
    return loss, {name: grads[name] for name in parameter_order(cfg)}
