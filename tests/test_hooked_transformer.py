"""gpt2np.hooked_transformer (TransformerLens's surface) and gpt2np.factored_matrix, without
TransformerLens or torch: each convention pinned by a fact of its own (the head split of W_Q is the
forward pass's, BOS first, hook_normalized before the gain, -inf in masked scores), so the planted
bugs in scripts/ci/mutants.py are caught torch-free. tests/test_tl_gallery.py compares the whole
surface with TransformerLens itself."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2np import InputError
from gpt2np.factored_matrix import FactoredMatrix
from gpt2np.hooked_transformer import HookedTransformer

MODEL = "small-outliers"


@pytest.fixture(scope="module")
def view(model_dir):
    return HookedTransformer.from_pretrained(str(model_dir(MODEL)))


def test_to_tokens_prepends_bos_unless_told_not_to(view):
    assert view.to_tokens("My dog is").tolist() == [[50256, 3666, 3290, 318]]
    assert view.to_tokens("My dog is", prepend_bos=False).tolist() == [[3666, 3290, 318]]
    assert view.to_tokens(["My dog is", "Hi"]).tolist() == [[50256, 3666, 3290, 318], [50256, 17250, 50256, 50256]]


def test_w_q_splits_c_attn_into_heads_as_the_forward_pass_does(view):
    """hook_q of head h is ln1's output @ W_Q[h] + b_Q[h]: the head split of W_Q is the forward pass's."""
    tokens = view.to_tokens("The head split must be the forward pass's own")
    _, cache = view.model.run_with_cache(tokens)  # gpt2np's own cache: ln1 after its gain and bias
    x = cache["blocks.2.ln1.hook_normalized"].astype(np.float64)  # [B, T, C]
    for h in range(view.cfg.n_heads):
        for W, b, point in (("W_Q", "b_Q", "q"), ("W_K", "b_K", "k"), ("W_V", "b_V", "v")):
            expected = x @ getattr(view.blocks[2].attn, W)[h] + getattr(view.blocks[2].attn, b)[h]  # [B, T, D]
            np.testing.assert_allclose(cache[point, 2][:, :, h], expected, rtol=1e-4, atol=1e-4)
    z = cache["z", 2].astype(np.float64)  # [B, T, H, D]
    by_heads = np.einsum("bthd,hdc->btc", z, view.blocks[2].attn.W_O) + view.blocks[2].attn.b_O
    np.testing.assert_allclose(cache["attn_out", 2], by_heads, rtol=1e-4, atol=1e-4)


def test_hook_normalized_is_before_the_gain_and_masked_scores_are_minus_inf(view):
    tokens = view.to_tokens("Normalised before the gain")
    _, cache = view.run_with_cache(tokens)
    n = cache["blocks.1.ln2.hook_normalized"].astype(np.float64)
    np.testing.assert_allclose(n.mean(-1), 0, atol=1e-5)  # centred and scaled to variance 1:
    np.testing.assert_allclose(n.var(-1), 1, atol=1e-3)  # no gain, no bias applied
    scores = cache["attn_scores", 0]
    future = np.triu(np.ones(scores.shape[-2:], dtype=bool), 1)
    assert np.isneginf(scores[..., future]).all() and np.isfinite(scores[..., ~future]).all()


def test_a_hook_on_hook_normalized_changes_what_follows(view):
    tokens = view.to_tokens("Zeroing the normalised stream leaves the bias")
    seen = {}

    def zero(n, hook):
        seen["n"] = n.copy()
        return np.zeros_like(n)

    logits = view.run_with_hooks(tokens, fwd_hooks=[("ln_final.hook_normalized", zero)])
    bias_only = np.asarray(view.ln_final.b) @ np.asarray(view.W_U)  # [V]: what is left is ln_f's bias
    np.testing.assert_allclose(logits[0, -1], bias_only, rtol=1e-4, atol=1e-4)
    assert abs(seen["n"].std() - 1) < 0.05  # the hook saw the normalised value, before the gain


def test_factored_matrix_never_builds_a_huge_product_unless_forced():
    A = np.ones((60000, 2), dtype=np.float32)
    big = FactoredMatrix(A, A.T)  # [60000, 60000]: 13 GiB dense
    with pytest.raises(InputError, match="GiB"):
        _ = big.AB
    np.testing.assert_allclose(big.S, [120000, 0], rtol=1e-6, atol=1e-2)  # rank 1: ||ones(60000, 2)||^2 = 120000
    assert big.shape == (60000, 60000)
    small = FactoredMatrix(A[:5], A.T[:, :3])
    np.testing.assert_array_equal(small.AB, np.full((5, 3), 2.0))


def test_processing_is_refused_not_ignored(model_dir):
    with pytest.raises(InputError, match="never processes"):
        HookedTransformer.from_pretrained(str(model_dir(MODEL)), fold_ln=True)


def test_to_single_token_refuses_several_tokens(view):
    with pytest.raises(InputError, match="is 2 tokens, not one"):
        view.to_single_token(" Johnathan")
