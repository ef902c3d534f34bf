"""gpt2np/dropout.py: the loss and every gradient with GPT-2's three dropouts.

- Torch-free: a mask is 0 or exactly 1/(1 - p), kept with probability 1 - p, the same for the
  same (seed, layer, site) and another for another; every p = 0 gives backward.gradients'
  result exactly; the gradient equals a central finite difference of the loss in float64 (the
  masks held fixed by the seed) on entries of every kind of parameter.
- Against torch: transformers' GPT2LMHeadModel in train mode, its dropout replaced by
  multiplication with gpt2np's own masks (torch.nn.functional.dropout patched: transformers' four
  dropouts call it in a known order), gives the same loss and gradients in float64 (1e-9 of
  each tensor's scale).
"""

from __future__ import annotations

import numpy as np
import pytest

from gpt2np import GPT2
from gpt2np.backward import gradients
from gpt2np.dropout import ATTN, ATTN_RESID, EMBD, MLP_RESID, dropout_mask, gradients_with_dropout
from gpt2np.weights import named_parameters

RATES = {"embd": 0.1, "attn": 0.2, "resid": 0.3}


def batch(model, B=2, T=8, seed=0):
    w = np.random.default_rng(seed).integers(0, model.config.vocab_size, size=(B, T + 1))
    return w[:, :-1], w[:, 1:]


def test_a_mask_drops_with_probability_p_and_scales_the_rest():
    p = 0.25
    m = dropout_mask(7, 1, ATTN, (200, 300), p)
    kept = m != 0
    assert set(np.unique(m)) == {0.0, 1 / (1 - p)}  # inverted dropout: the kept values are divided by 1 - p
    assert abs(kept.mean() - (1 - p)) < 0.01  # 60000 draws: the standard deviation of the mean is 0.002
    assert abs(m.mean() - 1) < 0.015  # the expected value is kept
    assert np.array_equal(m, dropout_mask(7, 1, ATTN, (200, 300), p))  # the recompute draws the same mask
    assert not np.array_equal(m, dropout_mask(7, 2, ATTN, (200, 300), p))  # another layer another
    assert not np.array_equal(m, dropout_mask(8, 1, ATTN, (200, 300), p))  # another seed another
    assert np.array_equal(dropout_mask(7, 1, ATTN, (3, 4), 0.0), np.ones((3, 4)))


@pytest.mark.parametrize("name", ["tiny", "odd"])
def test_no_dropout_is_the_plain_backward(model_dir, name):
    model = GPT2.from_pretrained(model_dir(name), dtype="float64")
    x, y = batch(model)
    B, T = x.shape
    ones = np.ones((B, T), dtype=np.int64)
    expected = gradients(model, x, ones, np.broadcast_to(np.arange(T), (B, T)), y, ones.astype(bool))
    loss, grads = gradients_with_dropout(model, x, y, {"embd": 0.0, "attn": 0.0, "resid": 0.0}, seed=3)
    assert loss == pytest.approx(expected[0], rel=1e-14)
    for k, g in expected[1].items():
        np.testing.assert_allclose(grads[k], g, rtol=0, atol=1e-13 * np.abs(g).max(), err_msg=k)


def test_the_gradient_is_the_finite_difference_of_the_loss(model_dir):
    """float64, masks fixed by the seed: d loss / d theta against (L(theta + h) - L(theta - h)) / 2h."""
    model = GPT2.from_pretrained(model_dir("odd"), dtype="float64")
    params = {k: np.array(a) for k, a in named_parameters(model.weights).items()}
    from gpt2np.weights import weights_from_tensors

    model.weights = weights_from_tensors(params, model.config, dtype="float64")
    params = named_parameters(model.weights)  # the arrays the model computes with
    x, y = batch(model, B=2, T=6)
    loss, grads = gradients_with_dropout(model, x, y, RATES, seed=11)
    rng = np.random.default_rng(0)
    names = ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight",
             "transformer.h.1.attn.c_attn.weight", "transformer.h.2.attn.c_proj.bias", "transformer.h.0.mlp.c_fc.weight",
             "transformer.h.1.mlp.c_proj.weight", "transformer.ln_f.bias", "lm_head.weight"]  # fmt: skip
    for name in names:
        p, g = params[name], grads[name]
        flat = np.flatnonzero(np.abs(g) > 1e-3 * np.abs(g).max())  # entries the loss depends on
        for index in rng.choice(flat, size=3, replace=False):
            where = np.unravel_index(index, p.shape)
            h, old = 1e-5, p[where]
            p[where] = old + h
            up = gradients_with_dropout(model, x, y, RATES, seed=11)[0]
            p[where] = old - h
            down = gradients_with_dropout(model, x, y, RATES, seed=11)[0]
            p[where] = old
            numeric = (up - down) / (2 * h)
            assert numeric == pytest.approx(g[where], rel=1e-5, abs=1e-9 * np.abs(g).max()), (name, where)


@pytest.mark.parametrize("name", ["tiny", "odd"])
def test_dropout_gradients_equal_torch_with_the_same_masks(model_dir, hf_model, monkeypatch, name):
    import torch

    folder = model_dir(name)
    model = GPT2.from_pretrained(folder, dtype="float64")
    theirs = hf_model(folder, dtype="float64")
    theirs.train()
    x, y = batch(model)
    B, T = x.shape
    cfg, seed = model.config, 5
    # The masks in the order transformers draws them: the embeddings', then per block the
    # attention weights', attention's output's, the MLP's output's.
    masks = [dropout_mask(seed, 0, EMBD, (B, T, cfg.n_embd), RATES["embd"])]
    for i in range(cfg.n_layer):
        masks.append(dropout_mask(seed, i + 1, ATTN, (B, cfg.n_head, T, T), RATES["attn"]))
        masks.append(dropout_mask(seed, i + 1, ATTN_RESID, (B, T, cfg.n_embd), RATES["resid"]))
        masks.append(dropout_mask(seed, i + 1, MLP_RESID, (B, T, cfg.n_embd), RATES["resid"]))
    queue = list(masks)

    def our_masks(input, p=0.5, training=True, inplace=False):
        mask = queue.pop(0)
        assert tuple(input.shape) == mask.shape
        return input * torch.from_numpy(mask).to(input.dtype)

    monkeypatch.setattr(torch.nn.functional, "dropout", our_masks)
    theirs.zero_grad()
    logits = theirs(torch.tensor(x)).logits  # [B, T, V]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.tensor(y).reshape(-1))
    loss.backward()
    assert not queue  # every mask used: transformers dropped exactly where gpt2np does
    ours_loss, ours = gradients_with_dropout(model, x, y, RATES, seed)
    assert ours_loss == pytest.approx(loss.item(), rel=1e-9)
    theirs_grads = dict(theirs.named_parameters())
    for k, g in ours.items():
        expected = theirs_grads[k].grad.numpy()
        np.testing.assert_allclose(g, expected, rtol=0, atol=1e-9 * np.abs(expected).max(), err_msg=k)
    theirs.eval()
    theirs.zero_grad()
