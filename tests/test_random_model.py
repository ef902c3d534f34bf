"""The random test models: reproducible bytes, loadable by transformers, shaped as promised."""

from __future__ import annotations

import numpy as np

import gpt2np.attention
import gpt2np.layers
import gpt2np.model
from gpt2np import GPT2
from gpt2np.hub import sha256_of
from gpt2np.tools.random_model import TEST_MODELS, build_test_model, random_tensors


def test_same_seed_same_bytes(tmp_path):
    a = build_test_model("small-outliers", tmp_path / "a")
    b = build_test_model("small-outliers", tmp_path / "b")
    assert sha256_of(a / "model.safetensors") == sha256_of(b / "model.safetensors")
    assert (a / "config.json").read_text() == (b / "config.json").read_text()


def test_outlier_dimensions_are_in_the_hundreds(model_dir):
    model = GPT2.from_pretrained(model_dir("small-outliers"))
    wpe = model.weights.wpe
    assert (np.abs(wpe).max(axis=0) > 100).sum() == TEST_MODELS["small-outliers"]["outlier_dims"]  # +300, -150, -150


def test_other_seed_other_weights():
    cfg = TEST_MODELS["tiny"]["config"]
    assert not np.array_equal(random_tensors(cfg, seed=1)["wte.weight"], random_tensors(cfg, seed=2)["wte.weight"])


def test_gpt2_shaped_has_gpt2_small_parameter_count(model_dir, hf_model):
    folder = model_dir("gpt2-shaped")
    assert GPT2.from_pretrained(folder).num_parameters == hf_model(folder).num_parameters()


def test_the_models_do_not_depend_on_the_forward_pass(tmp_path, monkeypatch):
    """A reference must not be computed by the code it checks: the test models are built with
    gpt2np's forward pass made unusable, so a bug there can never change their bytes (and a
    failing reference then reads "gpt2np computes something else", not "stale data")."""
    expected = sha256_of(build_test_model("small-outliers", tmp_path / "a") / "model.safetensors")

    def forbidden(*args, **kwargs):
        raise AssertionError("building a test model ran gpt2np's forward pass")

    monkeypatch.setattr(gpt2np.model.GPT2, "forward", forbidden)
    monkeypatch.setattr(gpt2np.model.GPT2, "__call__", forbidden)
    for module in (gpt2np.layers, gpt2np.attention):
        for name in ("layer_norm", "gelu", "softmax", "linear", "lm_head", "mlp", "attention", "self_attention"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, forbidden)
    assert sha256_of(build_test_model("small-outliers", tmp_path / "b") / "model.safetensors") == expected
