"""Activation points: run_with_cache, run_with_hooks, and every point against transformers."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS

from gpt2np import GPT2, InputError
from gpt2np.hooks import BLOCK_POINTS, activation_names, axes
from gpt2np.layers import gelu, softmax
from gpt2np.masks import position_ids_from_mask

FILLS = ["-inf", "-1e9", "min"]
MODELS = ["tiny", "small-outliers", "odd", "gpt2-shaped"]
TOLERANCE = 1e-4  # the core tests' (test_against_transformers.py): relative to max(1, the point's scale)


@pytest.fixture(scope="module")
def tiny(model_dir):
    return GPT2.from_pretrained(model_dir("tiny"))


def batch_for(model_name):
    """The seed batch, or for "odd" (1000 tokens) a random left-padded one."""
    if model_name != "odd":
        return SEED_INPUT_IDS, SEED_ATTENTION_MASK
    ids = np.random.default_rng(0).integers(0, 1000, size=(3, 10))
    return ids, (np.arange(10)[None, :] >= np.array([0, 4, 9])[:, None]).astype(np.int64)


def real_rows(name, shape, mask):
    """Boolean [shape] selecting real query positions (pads' values are meaningless by design)."""
    real = mask.astype(bool)  # [B, T]
    if axes(name)[:2] == ["B", "H"]:  # [B, H, T, Tk]: real query rows, every key
        return np.broadcast_to(real[:, None, :, None], shape)
    return np.broadcast_to(real.reshape(real.shape + (1,) * (len(shape) - 2)), shape)


# --- the names and the cache ---------------------------------------------------------------


def test_names_in_forward_order(tiny):
    names = tiny.activation_names()
    L = tiny.config.n_layer
    assert names[:2] == ["hook_embed", "hook_pos_embed"] and names[-2:] == ["ln_final.hook_normalized", "logits"]
    assert len(names) == 4 + L * len(BLOCK_POINTS) and len(set(names)) == len(names)
    assert names == activation_names(L)
    assert (
        names.index("blocks.0.attn.hook_z")
        < names.index("blocks.0.hook_attn_out")
        < names.index("blocks.1.hook_resid_pre")
    )


def test_cache_has_every_point_with_its_shape(tiny):
    cfg = tiny.config
    logits, cache = tiny.run_with_cache(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK)
    B, T = SEED_INPUT_IDS.shape
    sizes = dict(B=B, T=T, Tk=T, C=cfg.n_embd, H=cfg.n_head, D=cfg.head_dim, F=cfg.mlp_width, V=cfg.vocab_size)
    assert list(cache) == tiny.activation_names()  # forward order
    for name, a in cache.items():
        assert a.shape == tuple(sizes[ax] for ax in axes(name)), name
        assert a.dtype == np.float32, name
    np.testing.assert_array_equal(cache["logits"], logits)


def assert_sum_within_rounding(total, stream, added):
    """total = stream + added, where total and stream are the float64 residual stream rounded to
    float32: within half an ulp of each rounding and of the float32 sum."""
    error = np.abs(total.astype(np.float64) - (stream.astype(np.float64) + added))
    assert (error <= np.spacing(np.abs(stream)) + np.spacing(np.abs(total))).all()


def test_the_residual_stream_adds_up_exactly_in_float64(model_dir):
    """In float64 nothing is rounded: each residual point is exactly the one before plus what the
    sub-layer added (a hook point in the wrong place, or an add forgotten, shows here)."""
    model = GPT2.from_pretrained(model_dir("tiny"), dtype="float64")
    _, cache = model.run_with_cache(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK)
    np.testing.assert_array_equal(cache["blocks.0.hook_resid_pre"], cache["hook_embed"] + cache["hook_pos_embed"])
    for i in range(model.config.n_layer):
        p = f"blocks.{i}."
        assert cache[p + "hook_resid_pre"].dtype == np.float64
        np.testing.assert_array_equal(
            cache[p + "hook_resid_mid"], cache[p + "hook_resid_pre"] + cache[p + "hook_attn_out"]
        )
        np.testing.assert_array_equal(
            cache[p + "hook_resid_post"], cache[p + "hook_resid_mid"] + cache[p + "hook_mlp_out"]
        )


def test_cache_equals_the_plain_outputs_and_nothing_overwrites_it(tiny):
    """The forward pass works in place (x += ..., softmax, GELU): the cache must hold each
    value as it was at its point, not what the array became later."""
    out = tiny(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, output_hidden_states=True, output_attentions=True)
    logits, cache = tiny.run_with_cache(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK)
    np.testing.assert_array_equal(logits, out.logits)  # recording changes nothing
    np.testing.assert_array_equal(cache["blocks.0.hook_resid_pre"], cache["hook_embed"] + cache["hook_pos_embed"])
    L = tiny.config.n_layer
    for i in range(L):
        p = f"blocks.{i}."
        np.testing.assert_array_equal(cache[p + "hook_resid_pre"], out.hidden_states[i])
        # The residual stream is added to in float64 and shown rounded to float32, so the float32
        # sum of two shown values may differ from the next shown value in its last bit or two.
        assert_sum_within_rounding(cache[p + "hook_resid_mid"], cache[p + "hook_resid_pre"], cache[p + "hook_attn_out"])
        assert_sum_within_rounding(cache[p + "hook_resid_post"], cache[p + "hook_resid_mid"], cache[p + "hook_mlp_out"])
        np.testing.assert_array_equal(cache[p + "mlp.hook_post"], gelu(cache[p + "mlp.hook_pre"].copy()))
        np.testing.assert_array_equal(cache[p + "attn.hook_pattern"], out.attentions[i])
        probs = softmax(cache[p + "attn.hook_attn_scores"].copy())
        rows = real_rows("attn.hook_pattern", probs.shape, SEED_ATTENTION_MASK)
        np.testing.assert_array_equal(probs[rows], cache[p + "attn.hook_pattern"][rows])
        z = np.einsum("bhqk,bkhd->bqhd", cache[p + "attn.hook_pattern"], cache[p + "attn.hook_v"])  # [B, T, H, D]
        np.testing.assert_allclose(cache[p + "attn.hook_z"], z, atol=1e-6)
    np.testing.assert_array_equal(cache["ln_final.hook_normalized"], out.hidden_states[-1])


def test_names_filter_and_one_sequence(tiny):
    _, cache = tiny.run_with_cache(
        SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, names_filter="blocks.1.attn.hook_q"
    )
    assert list(cache) == ["blocks.1.attn.hook_q"]
    _, cache = tiny.run_with_cache(SEED_INPUT_IDS, names_filter=lambda n: n.endswith("hook_normalized"))
    assert list(cache) == [
        "blocks.0.ln1.hook_normalized",
        "blocks.0.ln2.hook_normalized",
        "blocks.1.ln1.hook_normalized",
        "blocks.1.ln2.hook_normalized",
        "ln_final.hook_normalized",
    ]
    logits, cache = tiny.run_with_cache(SEED_INPUT_IDS[1])  # 1-D: the batch axis is dropped, as for the outputs
    assert logits.shape == (8, tiny.config.vocab_size) and cache["blocks.0.attn.hook_pattern"].shape == (2, 8, 8)
    np.testing.assert_array_equal(logits, tiny(SEED_INPUT_IDS[1]).logits)


def test_bad_names_list_the_nearest(tiny):
    with pytest.raises(
        InputError, match=r"'blocks\.0\.hook_resid_pr' is not an activation point.*nearest: blocks\.0\.hook_resid_pre"
    ):
        tiny.run_with_cache(SEED_INPUT_IDS, names_filter=["blocks.0.hook_resid_pr"])
    with pytest.raises(InputError, match=r"nearest: blocks\.0\.ln1\.hook_normalized"):
        tiny.run_with_hooks(SEED_INPUT_IDS, fwd_hooks=[("blocks.0.ln1.hook_normalised", lambda a, n: None)])
    with pytest.raises(InputError, match=r"for i in 0 \.\. 1"):  # tiny has 2 blocks
        tiny.run_with_hooks(SEED_INPUT_IDS, fwd_hooks=[("blocks.7.hook_resid_pre", lambda a, n: None)])
    with pytest.raises(InputError, match="matches no activation point"):
        tiny.run_with_hooks(SEED_INPUT_IDS, fwd_hooks=[(lambda n: n.startswith("transformer."), lambda a, n: None)])
    with pytest.raises(InputError, match=r"\(name or predicate, fn\) pairs"):
        tiny.run_with_hooks(SEED_INPUT_IDS, fwd_hooks=["logits"])
    # issue 30: a number where a name goes was a bare TypeError ("'int' object is not iterable")
    with pytest.raises(InputError, match=r"a hook is chosen by a name \(str\) or a predicate name -> bool, got 5"):
        tiny.run_with_hooks(SEED_INPUT_IDS, fwd_hooks=[(5, lambda a, n: None)])
    with pytest.raises(InputError, match=r"a hook is chosen by a name \(str\) or a predicate name -> bool, got 3"):
        tiny.run_with_cache(SEED_INPUT_IDS, names_filter=3)


# --- run_with_hooks ------------------------------------------------------------------------


def test_hooks_see_every_point_in_forward_order_and_looking_changes_nothing(tiny):
    seen = []
    logits = tiny.run_with_hooks(
        SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, fwd_hooks=[(lambda n: True, lambda a, n: seen.append(n))]
    )
    assert seen == tiny.activation_names()
    plain = tiny(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK).logits
    np.testing.assert_array_equal(logits, plain)
    # TransformerLens's habit: a hook that only looks returns what it was given. That is no
    # replacement: the float64 residual stream must not be rounded to float32 by it.
    same = tiny.run_with_hooks(
        SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, fwd_hooks=[(lambda n: True, lambda a, n: a)]
    )
    np.testing.assert_array_equal(same, plain)


def test_what_a_hook_keeps_is_never_overwritten(tiny):
    kept = {}
    tiny.run_with_hooks(
        SEED_INPUT_IDS,
        attention_mask=SEED_ATTENTION_MASK,
        fwd_hooks=[(lambda n: True, lambda a, n: kept.setdefault(n, a))],
    )
    _, cache = tiny.run_with_cache(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK)
    for name in cache:
        np.testing.assert_array_equal(kept[name], cache[name], err_msg=name)


def test_a_replacement_is_used_and_the_callers_array_is_left_alone(model_dir):
    """Patching the residual stream of another input into block 1: everything after depends
    only on that stream, so the logits become the other input's. (In float64: in float32 the
    points show the float64 residual stream rounded, so a patched run differs in the last bits.)"""
    tiny = GPT2.from_pretrained(model_dir("tiny"), dtype="float64")
    ids, mask = SEED_INPUT_IDS, SEED_ATTENTION_MASK
    other = np.where(mask == 1, (ids + 7) % tiny.config.vocab_size, ids)  # other tokens, same padding
    other_logits, other_cache = tiny.run_with_cache(other, attention_mask=mask)
    patch = other_cache["blocks.1.hook_resid_pre"]
    kept = patch.copy()
    logits = tiny.run_with_hooks(ids, attention_mask=mask, fwd_hooks=[("blocks.1.hook_resid_pre", lambda a, n: patch)])
    np.testing.assert_array_equal(logits, other_logits)
    np.testing.assert_array_equal(patch, kept)  # the forward pass adds to the residual in place, but not into our array

    def patch_in_place(a, n):
        a[...] = patch

    in_place = tiny.run_with_hooks(ids, attention_mask=mask, fwd_hooks=[("blocks.1.hook_resid_pre", patch_in_place)])
    np.testing.assert_array_equal(in_place, other_logits)
    assert not np.allclose(logits, tiny(ids, attention_mask=mask).logits)


def test_wrong_shaped_replacement_names_the_point(tiny):
    with pytest.raises(
        InputError, match=r"blocks\.0\.attn\.hook_q.*shape \[3, 2, 8, 16\].*\[3, 8, 2, 16\] \[B, T, H, D\]"
    ):
        tiny.run_with_hooks(
            SEED_INPUT_IDS,
            attention_mask=SEED_ATTENTION_MASK,
            fwd_hooks=[("blocks.0.attn.hook_q", lambda a, n: a.swapaxes(1, 2))],
        )
    with pytest.raises(InputError, match=r"'logits' returned str"):
        tiny.run_with_hooks(SEED_INPUT_IDS, fwd_hooks=[("logits", lambda a, n: "zero")])


def test_plain_calls_are_not_recorded(tiny):
    from gpt2np.hooks import NO_HOOKS

    tiny(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK)
    tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=2)
    assert NO_HOOKS.cache == {} and not NO_HOOKS.fns and not NO_HOOKS.record


# --- against transformers ------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_every_point_equals_transformers(model_dir, hf_model, name):
    """Every activation point equals the value transformers' own module computes (hf_points.py),
    at real positions, on every test model and every fill."""
    from hf_points import hf_points

    folder = model_dir(name)
    ids, mask = batch_for(name)
    positions = position_ids_from_mask(mask)
    theirs = hf_points(hf_model(folder, "eager"), ids, mask, positions)
    assert set(theirs) == set(activation_names(GPT2.from_pretrained(folder).config.n_layer))
    for fill in FILLS:
        model = GPT2.from_pretrained(folder, mask_fill=fill)
        _, ours = model.run_with_cache(ids, attention_mask=mask)
        for point, a in ours.items():
            b = theirs[point]
            assert a.shape == b.shape, point
            rows = real_rows(point, a.shape, mask)
            if point.endswith("hook_attn_scores"):  # compare allowed cells; forbidden ones hold the fill
                allowed = rows & (b > np.finfo(np.float32).min)  # transformers' fill is finfo.min
                forbidden = a[rows & ~allowed]  # score + fill: the fill, up to its float32 rounding
                assert np.isclose(forbidden, np.float32(model.fill), rtol=1e-6, atol=0).all(), (fill, point)
                rows = allowed
            scale = max(1.0, float(np.abs(b[rows]).max()))
            diff = float(np.abs(a[rows] - b[rows]).max())
            assert diff <= TOLERANCE * scale, f"{name} fill={fill} {point}: max |diff| {diff:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("name", ["tiny", "odd", "gpt2-shaped"])
def test_zeroing_a_heads_z_equals_transformers_pre_hook_on_c_proj(model_dir, hf_model, name):
    """Patching: zero one head's slice of hook_z; transformers: a forward pre-hook zeroing the
    same slice of attn.c_proj's input. Same logits."""
    import torch

    folder = model_dir(name)
    model = GPT2.from_pretrained(folder)
    hf = hf_model(folder, "eager")
    cfg = model.config
    ids, mask = batch_for(name)
    layer, head, D = cfg.n_layer - 1, cfg.n_head - 1, cfg.head_dim

    def zero_head(z, point):
        z[:, :, head, :] = 0  # [B, T, H, D]

    def zero_slice(module, args):
        x = args[0].clone()
        x[..., head * D : (head + 1) * D] = 0  # [B, T, C]: the heads side by side
        return (x,)

    ours = model.run_with_hooks(ids, attention_mask=mask, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero_head)])
    handle = hf.transformer.h[layer].attn.c_proj.register_forward_pre_hook(zero_slice)
    try:
        with torch.no_grad():
            theirs = hf(
                torch.tensor(ids),
                attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(position_ids_from_mask(mask)),
            ).logits.numpy()
    finally:
        handle.remove()
    real = mask.astype(bool)
    plain = model(ids, attention_mask=mask).logits
    assert np.abs(ours - plain)[real].max() > 100 * TOLERANCE  # the ablation does something
    assert np.abs(ours - theirs)[real].max() <= TOLERANCE * max(1.0, float(np.abs(theirs[real]).max()))
