"""The cache run_with_cache returns (activation_cache.py), the hook_scale points, and
TransformerLens code run unchanged but for its import line, checked against transformers."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS

from gpt2np import GPT2, InputError
from gpt2np.activation_cache import ActivationCache, get_act_name
from gpt2np.errors import MissingActivationError, NotInGpt2npError
from gpt2np.hooks import activation_names, hook_names, scale_names

TOLERANCE = 1e-4  # relative to max(1, the compared values' scale), as tests/test_hooks.py


@pytest.fixture(scope="module")
def tiny(model_dir):
    return GPT2.from_pretrained(model_dir("tiny"))


@pytest.fixture(scope="module")
def cached(tiny):
    return tiny.run_with_cache(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK)


def close(ours, theirs) -> float:
    """max |ours - theirs| relative to max(1, max |theirs|)."""
    theirs = np.asarray(theirs, dtype=np.float64)
    return float(np.abs(np.asarray(ours, dtype=np.float64) - theirs).max() / max(1.0, np.abs(theirs).max()))


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, name",
    [  # TransformerLens's own examples (its utils.get_act_name docstring), and the issue's
        (("k", 6, "a"), "blocks.6.attn.hook_k"),
        (("pre", 2), "blocks.2.mlp.hook_pre"),
        (("embed",), "hook_embed"),
        (("normalized", 27, "ln2"), "blocks.27.ln2.hook_normalized"),
        (("k6",), "blocks.6.attn.hook_k"),
        (("scale4ln1",), "blocks.4.ln1.hook_scale"),
        (("pre5",), "blocks.5.mlp.hook_pre"),
        (("pattern", 0), "blocks.0.attn.hook_pattern"),
        (("resid_pre", 3), "blocks.3.hook_resid_pre"),
        (("scale",), "ln_final.hook_scale"),
        (("attn", 1), "blocks.1.attn.hook_pattern"),
        (("blocks.0.hook_mlp_out",), "blocks.0.hook_mlp_out"),
    ],
)
def test_get_act_name_as_transformer_lens(args, name):
    assert get_act_name(*args) == name


def test_the_cache_is_a_dict_that_answers_shorthands(tiny, cached):
    logits, cache = cached
    assert isinstance(cache, dict) and list(cache) == tiny.activation_names()
    L = tiny.config.n_layer
    assert cache["pattern", 0] is cache["blocks.0.attn.hook_pattern"]
    assert cache["resid_pre", 1] is cache["blocks.1.hook_resid_pre"]
    assert cache["resid_pre", -1] is cache[f"blocks.{L - 1}.hook_resid_pre"]  # counted from the end
    assert cache["normalized", 0, "ln2"] is cache["blocks.0.ln2.hook_normalized"]
    assert cache["embed"] is cache["hook_embed"] and cache["v1"] is cache["blocks.1.attn.hook_v"]
    stacked = cache.stack_activation("pattern")  # [L, B, H, T, T]
    np.testing.assert_array_equal(stacked, np.stack([cache[f"blocks.{i}.attn.hook_pattern"] for i in range(L)]))
    assert cache.stack_activation("resid_post", layer=1).shape == (1, *cache["hook_embed"].shape)


def test_what_the_cache_lacks_is_a_clear_key_error(cached):
    _, cache = cached
    with pytest.raises(MissingActivationError, match=r"\('result', 0\) \(blocks\.0\.attn\.hook_result\) is not in"):
        cache["result", 0]
    with pytest.raises(KeyError, match=r"nearest held: blocks\.0\.hook_resid_pre"):  # a KeyError too: dict habits
        cache["blocks.0.hook_resid_pr"]
    with pytest.raises(InputError, match=r"layer in cache.*must be an int"):
        cache["pattern", "0"]
    with pytest.raises(InputError, match=r"a tuple \(name, layer\[, sub-layer\]\)"):
        cache[("pattern", 0, "attn", 1)]
    with pytest.raises(NotInGpt2npError, match=r"get_neuron_results is TransformerLens's; .* offers accumulated_resid"):
        cache.get_neuron_results()
    assert not hasattr(cache, "logit_lens")  # an AttributeError as well
    with pytest.raises(NotInGpt2npError, match=r"stack_head_results needs the model's weights: .*HookedTransformer"):
        cache.stack_head_results()  # GPT2's own cache has no W_O (HookedTransformer's has)
    parts = cache.decompose_resid(layer=1)  # [embed, pos_embed, 0_attn_out, 0_mlp_out]: the stream entering block 1
    np.testing.assert_allclose(parts.sum(axis=0), cache["resid_pre", 1], rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="recompute_ln is not offered"):
        cache.apply_ln_to_stack(cache.accumulated_resid(), recompute_ln=True)
    with pytest.raises(InputError, match=r"layer must be None, -1 or 0 \.\. 2"):
        cache.accumulated_resid(layer=3)
    with pytest.raises(InputError, match="pos_slice must be"):
        cache.accumulated_resid(pos_slice="last")


def test_accumulated_resid_is_every_stream_up_to_the_layer(tiny, cached):
    _, cache = cached
    L = tiny.config.n_layer
    stack, labels = cache.accumulated_resid(incl_mid=True, return_labels=True)
    names = [f"blocks.{i}.hook_resid_{p}" for i in range(L) for p in ("pre", "mid")] + [
        f"blocks.{L - 1}.hook_resid_post"
    ]
    assert labels == [f"{i}_{p}" for i in range(L) for p in ("pre", "mid")] + ["final_post"]
    np.testing.assert_array_equal(stack, np.stack([cache[n] for n in names]))  # the final stream included
    stack, labels = cache.accumulated_resid(layer=1, mlp_input=True, pos_slice=(2, 5), return_labels=True)
    assert labels == ["0_pre", "1_pre", "1_mid"] and stack.shape == (3, 3, 3, tiny.config.n_embd)
    np.testing.assert_array_equal(stack[2], cache["blocks.1.hook_resid_mid"][:, 2:5])
    np.testing.assert_array_equal(
        cache.accumulated_resid(pos_slice=-1)[-1], cache[f"blocks.{L - 1}.hook_resid_post"][:, -1]
    )
    np.testing.assert_array_equal(
        cache.accumulated_resid(pos_slice=[0, 7])[0], cache["blocks.0.hook_resid_pre"][:, [0, 7]]
    )


# --- hook_scale ----------------------------------------------------------------------------


def test_scale_points_are_on_request_and_the_derived_ones_equal_the_recorded(tiny, cached):
    _, cache = cached
    L = tiny.config.n_layer
    assert not any(name.endswith("hook_scale") for name in cache)  # not recorded by default
    assert hook_names(L) == [n for n in hook_names(L) if n in set(activation_names(L)) | set(scale_names(L))]
    assert hook_names(L).index("blocks.0.ln1.hook_scale") == hook_names(L).index("blocks.0.ln1.hook_normalized") - 1
    _, scales = tiny.run_with_cache(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, names_filter=scale_names(L))
    assert list(scales) == scale_names(L)
    for name in scale_names(L):
        assert scales[name].shape == (3, 8, 1) and scales[name].dtype == np.float32
        # derived from the cached LayerNorm input: the same formula on the residual stream rounded to float32
        np.testing.assert_allclose(cache[name], scales[name], rtol=2e-7, err_msg=name)
    np.testing.assert_array_equal(scales["scale"], scales["ln_final.hook_scale"])


def test_hook_scale_in_float64_is_the_formula_the_layer_norm_divides_by(model_dir):
    """In float64 (nothing rounded): each scale is sqrt(var + eps) of its LayerNorm's input (NumPy's
    own np.var here), and that LayerNorm's output is exactly (x - mean) / scale * gain + bias."""
    model = GPT2.from_pretrained(model_dir("tiny"), dtype="float64")
    L, eps = model.config.n_layer, model.config.layer_norm_epsilon
    _, cache = model.run_with_cache(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, names_filter=hook_names(L))
    norms = {
        f"blocks.{i}.ln{j}": (model.weights.h[i].ln_1 if j == 1 else model.weights.h[i].ln_2)
        for i in range(L)
        for j in (1, 2)
    }
    norms["ln_final"] = model.weights.ln_f
    inputs = {
        f"blocks.{i}.ln{j}": cache[f"blocks.{i}.hook_resid_{'pre' if j == 1 else 'mid'}"]
        for i in range(L)
        for j in (1, 2)
    }
    inputs["ln_final"] = cache[f"blocks.{L - 1}.hook_resid_post"]
    for at, x in inputs.items():
        formula = np.sqrt(np.var(x, axis=-1, keepdims=True) + eps)  # [B, T, 1]
        np.testing.assert_allclose(cache[at + ".hook_scale"], formula, rtol=1e-12, err_msg=at)
        derived = ActivationCache({k: v for k, v in cache.items() if not k.endswith("hook_scale")}, L, eps)
        np.testing.assert_allclose(derived[at + ".hook_scale"], formula, rtol=1e-12, err_msg=at)
        ln = norms[at]
        normalized = (x - x.mean(axis=-1, keepdims=True)) / formula * ln.weight + ln.bias
        np.testing.assert_allclose(cache[at + ".hook_normalized"], normalized, rtol=1e-10, atol=1e-12, err_msg=at)


# --- one sequence (1-D input) ------------------------------------------------------------------


def test_one_sequence_hooks_see_what_the_cache_holds(tiny):
    """With a 1-D input the cache drops the batch axis; hooks see the points the same way, so
    patching code written against the cache runs (it used to crash with an IndexError)."""
    ids, other = SEED_INPUT_IDS[1], SEED_INPUT_IDS[1][::-1].copy()
    clean_logits, clean = tiny.run_with_cache(other)
    assert clean["resid_pre", 1].shape == (8, tiny.config.n_embd) and not clean.has_batch_dim
    shapes = {}

    def patch_position(resid, hook, position):
        shapes[hook.name] = resid.shape
        resid[position] = clean[hook.name][position]  # [T, C]: the cache's layout

    patched = tiny.run_with_hooks(ids, fwd_hooks=[("blocks.1.hook_resid_pre", partial(patch_position, position=0))])
    assert shapes == {"blocks.1.hook_resid_pre": (8, tiny.config.n_embd)}
    # the first token sees only itself: from block 1 on, its stream is the other run's
    assert close(patched[0], clean_logits[0]) <= 1e-5 < close(patched[0], tiny(ids).logits[0])
    returned = tiny.run_with_hooks(ids, fwd_hooks=[("blocks.1.hook_resid_pre", lambda a, hook: clean[hook.name])])
    assert close(returned, clean_logits) <= 1e-5
    with pytest.raises(InputError, match=r"returned shape \[1, 8, 32\], but .* has shape \[8, 32\] \[T, C\]"):
        tiny.run_with_hooks(ids, fwd_hooks=[("blocks.1.hook_resid_pre", lambda a, hook: a[None])])
    _, batched = tiny.run_with_cache(ids[None])
    assert batched.has_batch_dim and batched.remove_batch_dim() is batched and not batched.has_batch_dim
    one = tiny.run_with_cache(ids)[1]
    for name in one:
        np.testing.assert_array_equal(one[name], batched[name], err_msg=name)
    with pytest.raises(InputError, match="a batch of 3 rows"):
        tiny.run_with_cache(SEED_INPUT_IDS)[1].remove_batch_dim()


def test_a_one_sequence_hook_that_writes_nan_is_named(tiny):
    """The search for the first non-finite point watches every point with the batch axis, while
    the caller's hook sees one sequence without it."""
    from gpt2np.errors import ModelError

    def nan(a, hook):
        a[3, 0] = np.nan  # [T, C]

    with pytest.raises(ModelError, match=r"non-finite at blocks\.0\.hook_attn_out \(row 0, token 3\).*after a hook"):
        tiny.run_with_hooks(np.arange(8), fwd_hooks=[("blocks.0.hook_attn_out", nan)])


def test_a_hook_is_handed_a_name_that_is_also_transformer_lens_hook(tiny):
    seen = []

    def fn(a, hook):
        seen.append((hook, hook.name, hook.layer(), hook.startswith("blocks.")))

    tiny.run_with_hooks(SEED_INPUT_IDS, fwd_hooks=[("blocks.1.attn.hook_z", fn)])
    ((hook, name, layer, is_str),) = seen
    assert hook == name == "blocks.1.attn.hook_z" and isinstance(hook, str) and layer == 1 and is_str


# --- against transformers ------------------------------------------------------------------


def hf_logits(hf, tokens, module=None, hook=None, pre=False) -> np.ndarray:
    """transformers' logits for tokens, with one torch forward hook (pre=True: a pre-hook) on
    `module` for the run."""
    import torch

    handle = None
    if module is not None:
        handle = module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return hf(torch.tensor(tokens)).logits.numpy()
    finally:
        if handle is not None:
            handle.remove()


def ln_inputs(hf, input_ids):
    """{gpt2np scale name: the input of the transformers LayerNorm it belongs to} and the logits."""
    import torch

    got, handles = {}, []

    def keep(name):
        def hook(module, args):
            got[name] = args[0].detach().clone()

        return hook

    for i, block in enumerate(hf.transformer.h):
        handles.append(block.ln_1.register_forward_pre_hook(keep(f"blocks.{i}.ln1.hook_scale")))
        handles.append(block.ln_2.register_forward_pre_hook(keep(f"blocks.{i}.ln2.hook_scale")))
    handles.append(hf.transformer.ln_f.register_forward_pre_hook(keep("ln_final.hook_scale")))
    try:
        with torch.no_grad():
            logits = hf(torch.tensor(input_ids)).logits
    finally:
        for h in handles:
            h.remove()
    return got, logits


@pytest.mark.transformers
@pytest.mark.parametrize("name", ["tiny", "small-outliers", "gpt2-shaped"])
def test_hook_scale_is_transformers_layer_norm_scale(model_dir, hf_model, name):
    """Each hook_scale point is sqrt(var + eps) of what transformers' LayerNorm normalises
    (torch's biased variance of the module's own input), recorded or derived."""
    import torch

    folder = model_dir(name)
    model, hf = GPT2.from_pretrained(folder), hf_model(folder, "eager")
    ids = SEED_INPUT_IDS[1:2]  # one row: no pads, so every position's stream is real
    inputs, _ = ln_inputs(hf, ids)
    eps = hf.config.layer_norm_epsilon
    L = model.config.n_layer
    _, recorded = model.run_with_cache(ids, names_filter=scale_names(L))
    _, plain = model.run_with_cache(ids)
    for point, x in inputs.items():
        theirs = torch.sqrt(x.var(dim=-1, unbiased=False, keepdim=True) + eps).numpy()  # [1, T, 1]
        assert close(recorded[point], theirs) <= TOLERANCE, point
        assert close(plain[point], theirs) <= TOLERANCE, point


@pytest.mark.transformers
def test_replacing_a_scale_divides_the_layer_norm_by_it(model_dir, hf_model):
    """TransformerLens's "freeze the LayerNorm scale": a hook on ln_final.hook_scale returning twice
    the scale halves ln_f's normalised output; transformers: (ln_f(x) - bias) / 2 + bias."""

    folder = model_dir("tiny")
    model, hf = GPT2.from_pretrained(folder), hf_model(folder, "eager")
    ids = SEED_INPUT_IDS[1:2]

    def halve(module, args, out):
        return (out - module.bias) / 2 + module.bias

    theirs = hf_logits(hf, ids, hf.transformer.ln_f, halve)
    ours = model.run_with_hooks(ids, fwd_hooks=[("ln_final.hook_scale", lambda scale, hook: 2 * scale)])
    assert close(ours, model(ids).logits) > 100 * TOLERANCE  # the replacement does something
    assert close(ours, theirs) <= TOLERANCE


# The snippets below are written as TransformerLens's docs write them (its README's head
# ablation, the Main Demo's activation patching, the Exploratory Analysis Demo's logit lens);
# only the import line is changed, and `model.cfg.n_layers` reads `model.config.n_layer`.


@pytest.mark.transformers
@pytest.mark.parametrize("name", ["tiny", "gpt2-shaped"])
def test_transformer_lens_head_ablation(model_dir, hf_model, name):

    folder = model_dir(name)
    model, hf = GPT2.from_pretrained(folder), hf_model(folder, "eager")
    tokens = np.random.default_rng(1).integers(0, model.config.vocab_size, size=(2, 9))

    # --- TransformerLens ---
    import gpt2np.activation_cache as utils  # TransformerLens: from transformer_lens import utils

    layer_to_ablate = 0
    head_index_to_ablate = 1

    def head_ablation_hook(value, hook):
        assert hook.name == utils.get_act_name("v", layer_to_ablate)
        value[:, :, head_index_to_ablate, :] = 0.0
        return value

    original_logits = model(tokens).logits
    ablated_logits = model.run_with_hooks(
        tokens, fwd_hooks=[(utils.get_act_name("v", layer_to_ablate), head_ablation_hook)]
    )
    # --- end ---

    C, D = model.config.n_embd, model.config.head_dim

    def zero_value_slice(module, args, out):  # c_attn's output is q | k | v, each [.., C]: head h's v slice
        out = out.clone()
        out[..., 2 * C + head_index_to_ablate * D : 2 * C + (head_index_to_ablate + 1) * D] = 0
        return out

    theirs = hf_logits(hf, tokens, hf.transformer.h[layer_to_ablate].attn.c_attn, zero_value_slice)
    assert close(ablated_logits, original_logits) > 100 * TOLERANCE
    assert close(ablated_logits, theirs) <= TOLERANCE


@pytest.mark.transformers
def test_transformer_lens_activation_patching(model_dir, hf_model):
    import torch

    folder = model_dir("tiny")
    model, hf = GPT2.from_pretrained(folder), hf_model(folder, "eager")
    rng = np.random.default_rng(2)
    clean_tokens = rng.integers(0, model.config.vocab_size, size=(1, 6))
    corrupted_tokens = clean_tokens.copy()
    corrupted_tokens[0, 2] = (clean_tokens[0, 2] + 5) % model.config.vocab_size
    answer, wrong = 3, 4

    # --- TransformerLens ---
    import gpt2np.activation_cache as utils  # TransformerLens: from transformer_lens import utils

    def logits_to_logit_diff(logits):
        return logits[0, -1, answer] - logits[0, -1, wrong]

    clean_logits, clean_cache = model.run_with_cache(clean_tokens)

    def residual_stream_patching_hook(resid_pre, hook, position):
        clean_resid_pre = clean_cache[hook.name]
        resid_pre[:, position, :] = clean_resid_pre[:, position, :]
        return resid_pre

    num_positions = len(clean_tokens[0])
    ioi_patching_result = np.zeros((model.config.n_layer, num_positions))
    for layer in range(model.config.n_layer):
        for position in range(num_positions):
            temp_hook_fn = partial(residual_stream_patching_hook, position=position)
            patched_logits = model.run_with_hooks(
                corrupted_tokens, fwd_hooks=[(utils.get_act_name("resid_pre", layer), temp_hook_fn)]
            )
            ioi_patching_result[layer, position] = logits_to_logit_diff(patched_logits)
    # --- end ---

    with torch.no_grad():
        clean_states = hf(
            torch.tensor(clean_tokens), output_hidden_states=True
        ).hidden_states  # [0] .. [L-1]: resid_pre
    theirs = np.zeros_like(ioi_patching_result)
    for layer in range(model.config.n_layer):
        for position in range(num_positions):

            def patch(module, args, layer=layer, position=position):
                x = args[0].clone()
                x[:, position] = clean_states[layer][:, position]
                return (x, *args[1:])

            patched = hf_logits(hf, corrupted_tokens, hf.transformer.h[layer], patch, pre=True)
            theirs[layer, position] = logits_to_logit_diff(patched)
    assert np.ptp(theirs) > 100 * TOLERANCE  # positions matter: the patch does something
    assert close(ioi_patching_result, theirs) <= TOLERANCE


@pytest.mark.transformers
@pytest.mark.parametrize("name", ["tiny", "small-outliers"])
def test_transformer_lens_logit_lens(model_dir, hf_model, name):
    import torch
    from hf_points import hf_points

    folder = model_dir(name)
    model, hf = GPT2.from_pretrained(folder), hf_model(folder, "eager")
    tokens = np.random.default_rng(3).integers(0, model.config.vocab_size, size=(2, 7))
    ln_f, wte = model.weights.ln_f, model.weights.wte

    # --- TransformerLens ---
    logits, cache = model.run_with_cache(tokens)
    accumulated_residual, labels = cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1, return_labels=True)
    scaled_residual_stack = cache.apply_ln_to_stack(accumulated_residual, layer=-1, pos_slice=-1)
    # TransformerLens folds ln_final's gain and bias into W_U (fold_ln); gpt2np's weights are unfolded:
    lens_logits = (scaled_residual_stack * ln_f.weight + ln_f.bias) @ wte.T  # [layers, batch, d_vocab]
    # --- end ---

    L = model.config.n_layer
    assert labels == [f"{i}_{p}" for i in range(L) for p in ("pre", "mid")] + ["final_post"]
    positions = np.broadcast_to(np.arange(7), tokens.shape)
    points = hf_points(hf, tokens, np.ones_like(tokens), positions)  # transformers' own modules' values
    streams = [points[f"blocks.{i}.hook_resid_{p}"] for i in range(L) for p in ("pre", "mid")]
    streams.append(points[f"blocks.{L - 1}.hook_resid_post"])  # ln_f's input
    x = torch.tensor(np.stack(streams)[:, :, -1])  # [layers, B, C] at the last position
    final = x[-1]
    final_scale = torch.sqrt(final.var(dim=-1, unbiased=False, keepdim=True) + hf.config.layer_norm_epsilon)
    expected = (x - x.mean(dim=-1, keepdim=True)) / final_scale  # every stream over the final stream's scale
    ln = hf.transformer.ln_f
    with torch.no_grad():
        expected_logits = hf.lm_head(expected * ln.weight + ln.bias).numpy()
    assert close(scaled_residual_stack, expected.numpy()) <= TOLERANCE
    assert close(lens_logits, expected_logits) <= TOLERANCE
    assert close(lens_logits[-1], points["logits"][:, -1]) <= TOLERANCE  # the final stream: the model's logits
    ours = cache.accumulated_resid(apply_ln=True)[-1]  # every position, the final stream
    assert close(ours * ln_f.weight + ln_f.bias, points["ln_final.hook_normalized"]) <= TOLERANCE
