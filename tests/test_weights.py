"""The weights tree: names and shapes GPT-2 needs, no copies, and errors for what does not fit."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2np import GPT2, CheckpointError, GPT2Config
from gpt2np.tools.random_model import random_tensors
from gpt2np.weights import IGNORED, expected_shapes, weights_from_tensors

CONFIG = GPT2Config(vocab_size=50, n_positions=10, n_embd=12, n_layer=3, n_head=3, n_inner=20, eos_token_id=49)


@pytest.fixture(scope="module")
def tensors():
    return random_tensors(CONFIG, seed=8)


def test_gpt2_124m_has_124_439_808_parameters():
    """The published count for GPT-2 small with tied embeddings (transformers' num_parameters)."""
    shapes = expected_shapes(GPT2Config())
    assert sum(int(np.prod(s)) for s in shapes.values()) == 124_439_808
    assert len(shapes) == 4 + 12 * 12  # wte, wpe, ln_f.{weight,bias}; 12 tensors per block
    assert "lm_head.weight" not in shapes  # tied: the output layer is wte


def test_shapes_follow_the_config():
    shapes = expected_shapes(CONFIG)
    assert shapes["wte.weight"] == (50, 12) and shapes["wpe.weight"] == (10, 12)
    assert shapes["h.2.attn.c_attn.weight"] == (12, 36) and shapes["h.2.attn.c_attn.bias"] == (36,)
    assert shapes["h.0.mlp.c_fc.weight"] == (12, 20) and shapes["h.0.mlp.c_proj.weight"] == (20, 12)  # n_inner
    assert "h.3.ln_1.weight" not in shapes
    untied = expected_shapes(
        GPT2Config(
            vocab_size=50, n_positions=10, n_embd=12, n_layer=1, n_head=3, tie_word_embeddings=False, eos_token_id=49
        )
    )
    assert untied["lm_head.weight"] == (50, 12)


def test_the_tree_holds_the_very_arrays_of_the_checkpoint(tensors):
    weights = weights_from_tensors(tensors, CONFIG)
    assert weights.wte is tensors["wte.weight"]  # float32 in, float32 out: no copy
    assert weights.lm_head is weights.wte  # tied
    assert weights.h[2].attn.c_attn.weight is tensors["h.2.attn.c_attn.weight"]
    assert weights.h[1].mlp.c_proj.bias is tensors["h.1.mlp.c_proj.bias"]
    assert weights.ln_f.weight is tensors["ln_f.weight"]
    assert len(weights.h) == CONFIG.n_layer


def test_arrays_counts_each_parameter_once(tensors):
    weights = weights_from_tensors(tensors, CONFIG)
    assert sum(a.size for a in weights.arrays()) == sum(v.size for v in tensors.values())
    model = GPT2(CONFIG, weights)
    assert model.num_parameters == sum(int(np.prod(s)) for s in expected_shapes(CONFIG).values())


@pytest.mark.parametrize("dtype", ["float64", np.float64])
def test_another_dtype_converts_once(tensors, dtype):
    weights = weights_from_tensors(tensors, CONFIG, dtype=dtype)
    assert all(a.dtype == np.float64 for a in weights.arrays())
    np.testing.assert_array_equal(weights.wte, tensors["wte.weight"])


def test_half_precision_tensors_are_widened(tensors):
    half = {k: v.astype(np.float16) for k, v in tensors.items()}
    weights = weights_from_tensors(half, CONFIG)
    assert all(a.dtype == np.float32 for a in weights.arrays())
    np.testing.assert_array_equal(weights.wpe, half["wpe.weight"].astype(np.float32))


def test_prefix_and_ignored_buffers(tensors):
    named = {"transformer." + k: v for k, v in tensors.items()}
    named["transformer.h.0.attn.bias"] = np.zeros((1, 1, 10, 10), dtype=np.float32)
    named["transformer.h.2.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    weights = weights_from_tensors(named, CONFIG)
    assert weights.h[0].attn.c_attn.bias is tensors["h.0.attn.c_attn.bias"]  # not the ignored attn.bias


@pytest.mark.parametrize(
    "name, ignored",
    [
        ("h.0.attn.bias", True),
        ("h.11.attn.masked_bias", True),
        ("h.0.attn.c_attn.bias", False),
        ("h.0.attn.c_proj.bias", False),
        ("attn.bias", False),
        ("h.0.attn.bias.extra", False),
    ],
)
def test_only_the_old_mask_buffers_are_ignored(name, ignored):
    assert bool(IGNORED.match(name)) is ignored


def test_missing_tensor(tensors):
    with pytest.raises(
        CheckpointError,
        match=r"my.safetensors has no tensor 'h.2.ln_2.bias' \(expected shape \[12\]\); the file is incomplete",
    ):
        weights_from_tensors(
            {k: v for k, v in tensors.items() if k != "h.2.ln_2.bias"}, CONFIG, source="my.safetensors"
        )


def test_wrong_shape(tensors):
    bad = {**tensors, "h.1.attn.c_proj.weight": np.zeros((12, 13), dtype=np.float32)}
    with pytest.raises(
        CheckpointError, match=r"tensor 'h.1.attn.c_proj.weight' has shape \[12, 13\] but the config implies \[12, 12\]"
    ):
        weights_from_tensors(bad, CONFIG)


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.bool_, np.complex64])
def test_non_float_dtype(tensors, dtype):
    bad = {**tensors, "ln_f.weight": np.ones(12, dtype=dtype)}
    with pytest.raises(CheckpointError, match=f"tensor 'ln_f.weight' is {np.dtype(dtype)}, not a floating-point type"):
        weights_from_tensors(bad, CONFIG)


@pytest.mark.parametrize(
    "change, phrase",
    [
        (
            dict(n_embd=24),
            r"wte.weight is \[50, 12\] \(vocab 50, n_embd 12\) but config.json says vocab_size=50, n_embd=24",
        ),
        (dict(vocab_size=51), r"but config.json says vocab_size=51, n_embd=12"),
        (dict(n_layer=2), r"holds 3 blocks \(h.0 .. h.2\) but config.json says n_layer=2"),
        (dict(n_layer=4), r"holds 3 blocks \(h.0 .. h.2\) but config.json says n_layer=4"),
    ],
)
def test_config_disagreeing_with_tensors_is_reported_as_such(tensors, change, phrase):
    config = GPT2Config(**{**{k: v for k, v in CONFIG.to_dict().items() if k != "model_type"}, **change})
    with pytest.raises(CheckpointError, match=phrase + ": config.json does not belong to these weights"):
        weights_from_tensors(tensors, config)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_first_non_finite_counts_and_finds_the_first(dtype):
    from gpt2np.weights import first_non_finite

    t = np.zeros((4, 5), dtype=dtype)
    assert first_non_finite(t) is None and first_non_finite(np.zeros((0, 3), dtype)) is None
    t[2, 3], t[1, 4], t[3, 0] = np.nan, -np.inf, np.inf
    assert first_non_finite(t) == (3, (1, 4))  # the first in C order
    assert first_non_finite(np.full(3, np.finfo(dtype).max, dtype=dtype)) is None  # large, finite: fine


def test_in_memory_tensors_are_checked_too(tensors):
    bad = {**tensors, "h.2.mlp.c_proj.bias": np.where(np.arange(12) == 4, np.nan, 0).astype(np.float32)}
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint: tensor 'h.2.mlp.c_proj.bias' holds 1 non-finite value \(NaN or inf; the first is nan at index \[4\]\)",
    ):
        weights_from_tensors(bad, CONFIG)


def test_untied_config_on_a_tied_checkpoint_points_at_the_setting(tensors):
    """ "tie_word_embeddings": false asks for lm_head.weight, which a tied checkpoint lacks."""
    untied = GPT2Config(
        **{**{k: v for k, v in CONFIG.to_dict().items() if k != "model_type"}, "tie_word_embeddings": False}
    )
    with pytest.raises(
        CheckpointError,
        match=r"has no tensor 'lm_head.weight', which config.json asks for with "
        r"\"tie_word_embeddings\": false.*set \"tie_word_embeddings\" to true",
    ):
        weights_from_tensors(tensors, untied)
