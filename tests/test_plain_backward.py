"""gpt2np.plain_backward, function by function, against central finite differences in float64.

Each backward function gets the gradient of a random linear function of its forward's output,
sum(forward(...) * g), so its output gradient is g. The numeric gradient of that scalar in an
input entry a is (f(a + h) - f(a - h)) / 2h with h = 1e-6: its error is about h^2 (the third
derivative) plus 1e-16 / h (rounding) relative, so analytic and numeric agree to ~1e-9 of the
gradient's size; the bound is FD_RELATIVE = 1e-7 of the largest gradient entry, and each
planted bug of scripts/mutants.py (a missing term of LayerNorm's or softmax's backward, the
erf GELU's derivative, a missing 1/sqrt(D)) is off by 1e-3 of it or more.

The whole pass is checked the same way against a loss written here from plain.forward's logits
(not by plain_backward), on entries of every parameter. The torch comparison is in
tests/test_backward.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_model

from gpt2np import GPT2, plain, plain_backward
from gpt2np.labels import IGNORE_INDEX, labels_from_mask
from gpt2np.weights import MLP, LayerNorm, Linear

H = 1e-6  # the finite difference's step
FD_RELATIVE = 1e-7  # of the largest gradient entry: the measured agreement is ~1e-9 (printed with -s)

rng = np.random.default_rng(31)


def numeric(f, a: np.ndarray, entries=None) -> np.ndarray:
    """Central differences of the scalar f() in a's entries (flat indices; all of them by default),
    a changed in place and put back."""
    flat = a.reshape(-1)
    assert np.shares_memory(flat, a)
    entries = range(flat.size) if entries is None else entries
    out = []
    for i in entries:
        old = flat[i]
        flat[i] = old + H
        up = f()
        flat[i] = old - H
        down = f()
        flat[i] = old
        out.append((up - down) / (2 * H))
    return np.array(out)


def check(name: str, analytic: np.ndarray, f, a: np.ndarray, entries=None) -> None:
    """The bound: FD_RELATIVE, plus the difference quotient's own rounding, 4 eps |f| / H, as a share
    of the gradient's scale. For the whole model's loss (|f| ~ 7) and a parameter with small
    gradients (LayerNorm biases, max |g| ~ 7e-3) that rounding alone is ~2e-7: the summation order
    of the BLAS kernel decides which side of FD_RELATIVE it falls (Haswell's did, SkylakeX's not)."""
    flat = analytic.reshape(-1)
    want = numeric(f, a, entries)
    got = flat if entries is None else flat[list(entries)]
    scale = max(np.abs(flat).max(), 1e-300)
    error = np.abs(got - want).max() / scale
    rounding = 4 * np.finfo(np.float64).eps * abs(float(f())) / H / scale
    print(f"{name}: max |analytic - numeric| / max |analytic| = {error:.1e} (bound {FD_RELATIVE + rounding:.1e})")
    assert error <= FD_RELATIVE + rounding, name


def some(a: np.ndarray, n: int = 8) -> list[int]:
    """n random entries of a (flat indices)."""
    return sorted(set(rng.choice(a.size, size=min(n, a.size), replace=False).tolist()))


def padded_mask(B: int, T: int, fill: str) -> tuple[np.ndarray, np.ndarray]:
    """[B, T] ids mask, every row but the first left-padded, and the additive mask for fill."""
    mask = np.ones((B, T), dtype=np.int64)
    for b in range(1, B):
        mask[b, : b * T // (B + 1)] = 0
    from gpt2np.masks import resolve_fill

    return mask, plain.additive_mask(mask, resolve_fill(fill, np.float64), np.float64)


def random_linear(n_in: int, n_out: int) -> Linear:
    return Linear(rng.standard_normal((n_in, n_out)) * 0.5, rng.standard_normal(n_out) * 0.1)


def random_norm(C: int) -> LayerNorm:
    return LayerNorm(1 + rng.standard_normal(C) * 0.3, rng.standard_normal(C) * 0.1)


# --- each backward function ----------------------------------------------------------------------


def test_linear_backward():
    x, layer = rng.standard_normal((2, 3, 5)), random_linear(5, 4)
    g = rng.standard_normal((2, 3, 4))
    dx, grads = plain_backward.linear_backward(g, x, layer)
    f = lambda: float((plain.linear(x, layer) * g).sum())
    check("linear dx", dx, f, x)
    check("linear dW", grads["weight"], f, layer.weight)
    check("linear db", grads["bias"], f, layer.bias)


def test_gelu_backward_is_the_tanh_forms_derivative():
    """Elementwise: the numeric derivative at each x, from -8 to 8 (the erf form's derivative is
    up to ~1e-3 away from it: the planted bug gelu-backward-of-the-erf-form)."""
    x = np.concatenate([np.linspace(-8, 8, 1601), rng.standard_normal(400) * 3])
    dx = plain_backward.gelu_backward(np.ones_like(x), x)
    want = (plain.gelu(x + H) - plain.gelu(x - H)) / (2 * H)
    error = np.abs(dx - want).max() / np.abs(dx).max()
    print(f"gelu: {error:.1e}")
    assert error <= FD_RELATIVE


def test_layer_norm_backward():
    x = rng.standard_normal((2, 3, 6)) * 3 + 1
    ln, g = random_norm(6), rng.standard_normal((2, 3, 6))
    dx, grads = plain_backward.layer_norm_backward(g, x, ln, 1e-5)
    f = lambda: float((plain.layer_norm(x, ln, 1e-5) * g).sum())
    check("layer_norm dx", dx, f, x)
    check("layer_norm dgamma", grads["weight"], f, ln.weight)
    check("layer_norm dbeta", grads["bias"], f, ln.bias)


def test_mlp_backward():
    x, g = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    m = MLP(random_linear(4, 7), random_linear(7, 4))
    dx, grads = plain_backward.mlp_backward(g, x, m)
    f = lambda: float((plain.mlp(x, m) * g).sum())
    check("mlp dx", dx, f, x)
    for name, a in [("c_fc.weight", m.c_fc.weight), ("c_fc.bias", m.c_fc.bias), ("c_proj.weight", m.c_proj.weight)]:
        check(f"mlp {name}", grads[name], f, a)


def test_softmax_backward():
    x = rng.standard_normal((3, 5)) * 2
    g = rng.standard_normal((3, 5))
    dx = plain_backward.softmax_backward(g, plain.softmax(x))
    check("softmax", dx, lambda: float((plain.softmax(x) * g).sum()), x)


@pytest.mark.parametrize("fill", ["-inf", "-1e9", "min"])
def test_attention_backward_with_pads_and_empty_rows(fill):
    """Padded rows (their pads' queries see no key: the empty-row rule), and a scale that is not 1,
    so a score gradient that forgets it is seen."""
    mask, additive = padded_mask(2, 5, fill)
    q, k, v = (rng.standard_normal((2, 2, 5, 3)) for _ in range(3))
    g = rng.standard_normal((2, 2, 5, 3))
    scale = 0.37
    with np.errstate(invalid="ignore"):
        dq, dk, dv = plain_backward.attention_backward(g, q, k, v, additive, scale)
        f = lambda: float((plain.attention(q, k, v, additive, scale) * g).sum())
        for name, d, a in [("dq", dq, q), ("dk", dk, k), ("dv", dv, v)]:
            assert np.isfinite(d).all()
            check(f"attention {name}", d, f, a)
    pads = mask[:, None, :, None] == 0  # [B, 1, T, 1]: a pad's query and key get nothing
    assert not np.broadcast_to(pads, dq.shape)[dq != 0].any() and not np.broadcast_to(pads, dk.shape)[dk != 0].any()


def test_self_attention_and_block_backward_on_a_models_weights():
    """The tiny model's block 1 (float64), a padded batch, fill -inf: dx everywhere, the parameters
    at sampled entries."""
    m = GPT2.from_pretrained(build_model("tiny"), dtype="float64")
    b, cfg = m.weights.h[1], m.config
    mask, additive = padded_mask(2, 6, "-inf")
    x = rng.standard_normal((2, 6, cfg.n_embd))
    g = rng.standard_normal((2, 6, cfg.n_embd))
    scale = plain.attention_scale(cfg, 1)
    with np.errstate(invalid="ignore"):
        dx, grads = plain_backward.self_attention_backward(g, x, b.attn, additive, cfg.n_head, scale)
        f = lambda: float((plain.self_attention(x, b.attn, additive, cfg.n_head, scale) * g).sum())
        check("self_attention dx", dx, f, x)
        attn = b.attn
        for name, a in [
            ("c_attn.weight", attn.c_attn.weight),
            ("c_attn.bias", attn.c_attn.bias),
            ("c_proj.weight", attn.c_proj.weight),
        ]:
            check(f"self_attention {name}", grads[name], f, a, some(a, 20))
        dx, grads = plain_backward.block_backward(g, x, b, additive, cfg, scale)
        f = lambda: float((plain.block(x, b, additive, cfg, scale) * g).sum())
        check("block dx", dx, f, x)
        for name, a in [
            ("ln_1.weight", b.ln_1.weight),
            ("ln_2.bias", b.ln_2.bias),
            ("mlp.c_fc.weight", b.mlp.c_fc.weight),
        ]:
            check(f"block {name}", grads[name], f, a, some(a, 20))


def test_cross_entropy_backward_counts_only_the_kept_labels():
    logits = rng.standard_normal((2, 4, 7)) * 3
    targets = rng.integers(0, 7, size=(2, 4))
    keep = np.array([[True, False, True, True], [False, False, True, False]])
    d = plain_backward.cross_entropy_backward(logits, targets, keep)
    f = lambda: plain_backward.cross_entropy(logits, targets, keep)
    check("cross_entropy", d, f, logits)
    assert not d[~keep].any()  # nothing flows back from an ignored label


# --- the whole pass against finite differences of a loss written here --------------------------


def reference_loss(weights, config, ids, labels, mask, fill) -> float:
    """transformers' loss, written from its definition on plain.forward's logits: the mean over
    counted labels (not -100, predicted from a real token) of -log softmax(logits[t - 1])[label t]."""
    logits = plain.forward(weights, config, ids, mask, mask_fill=fill)[:, :-1]  # [B, T-1, V]
    targets, predictor_real = labels[:, 1:], mask[:, :-1] == 1
    counted = (targets != IGNORE_INDEX) & predictor_real  # [B, T-1]
    z = logits - logits.max(axis=-1, keepdims=True)
    logprobs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(logprobs, np.where(counted, targets, 0)[..., None], axis=-1)[..., 0]
    return float(-picked[counted].sum() / counted.sum())


def batch(vocab: int, T: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 rows of T tokens: unpadded, left-padded by a third, by all but 2; one label set to -100."""
    r = np.random.default_rng(seed)
    ids = r.integers(0, vocab, size=(3, T))
    mask = np.ones((3, T), dtype=np.int64)
    mask[1, : T // 3] = 0
    mask[2, : T - 2] = 0
    labels = labels_from_mask(ids, mask)
    labels[0, T // 2] = IGNORE_INDEX
    return ids, mask, labels


@pytest.mark.parametrize("name", ["tiny", "odd"])
def test_every_parameters_gradient_against_finite_differences(name):
    """tiny: tied output layer, so wte's gradient has two parts; rows of wte no input uses get only
    the output layer's (the planted bug tied-embedding-misses-the-output-layer). odd: untied,
    3 heads, the inverse-layer-index scale. Fill -inf, padded rows, a -100 label."""
    m = GPT2.from_pretrained(build_model(name), dtype="float64")
    w, cfg = m.weights, m.config
    ids, mask, labels = batch(cfg.vocab_size, 7)
    loss, grads = plain_backward.loss_and_grads(w, cfg, ids, labels, mask, mask_fill="-inf")
    with np.errstate(invalid="ignore"):
        f = lambda: reference_loss(w, cfg, ids, labels, mask, "-inf")
        assert abs(loss - f()) <= 1e-12 * abs(loss)
        params = {"transformer.wte.weight": w.wte, "transformer.wpe.weight": w.wpe}
        params |= {"transformer.ln_f.weight": w.ln_f.weight, "transformer.ln_f.bias": w.ln_f.bias}
        for i, b in enumerate(w.h):
            for part, layer in [("ln_1", b.ln_1), ("attn.c_attn", b.attn.c_attn), ("attn.c_proj", b.attn.c_proj)]:
                params |= {
                    f"transformer.h.{i}.{part}.weight": layer.weight,
                    f"transformer.h.{i}.{part}.bias": layer.bias,
                }
            for part, layer in [("ln_2", b.ln_2), ("mlp.c_fc", b.mlp.c_fc), ("mlp.c_proj", b.mlp.c_proj)]:
                params |= {
                    f"transformer.h.{i}.{part}.weight": layer.weight,
                    f"transformer.h.{i}.{part}.bias": layer.bias,
                }
        if not cfg.tie_word_embeddings:
            params["lm_head.weight"] = w.lm_head
        assert set(params) == set(grads)
        for pname, a in params.items():
            entries = some(a, 6) + [int(np.abs(grads[pname]).argmax())]
            if pname == "transformer.wte.weight":  # a row no input uses: its gradient is the output layer's alone
                unused = next(t for t in range(cfg.vocab_size) if t not in ids)
                entries += [unused * cfg.n_embd, unused * cfg.n_embd + 1]
            check(pname, grads[pname], f, a, entries)
