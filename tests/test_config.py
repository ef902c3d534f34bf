"""config.json: parsing, defaults, and a ConfigError naming the field for every bad value.

(Config values that disagree with the tensors are in test_checkpoint.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gpt2np import GPT2, ConfigError, GPT2Config, GPT2npError

# openai-community/gpt2's config.json as published on the hub (the fields that matter here).
GPT2_CONFIG_JSON = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_embd": 768,
    "n_head": 12,
    "n_layer": 12,
    "n_positions": 1024,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257,
}
REQUIRED = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")


def write(tmp_path, content) -> Path:
    path = tmp_path / "config.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_gpt2s_own_config_parses_to_the_124m_model(tmp_path):
    config = GPT2Config.from_json_file(write(tmp_path, GPT2_CONFIG_JSON))
    assert (config.vocab_size, config.n_positions, config.n_embd, config.n_layer, config.n_head) == (
        50257,
        1024,
        768,
        12,
        12,
    )
    assert config.head_dim == 64 and config.mlp_width == 3072 and config.tie_word_embeddings
    assert config == GPT2Config()  # the defaults are GPT-2 124M's, as transformers'


def test_to_dict_round_trips(tmp_path):
    config = GPT2Config(
        vocab_size=1000,
        n_positions=40,
        n_embd=48,
        n_layer=3,
        n_head=3,
        n_inner=100,
        scale_attn_by_inverse_layer_idx=True,
        tie_word_embeddings=False,
        eos_token_id=None,
    )
    assert GPT2Config.from_json_file(write(tmp_path, config.to_dict())) == config


def test_very_old_configs_name_n_positions_n_ctx(tmp_path):
    raw = {k: v for k, v in GPT2_CONFIG_JSON.items() if k != "n_positions"}
    raw["n_ctx"] = 512
    assert GPT2Config.from_json_file(write(tmp_path, raw)).n_positions == 512


def test_unknown_fields_are_ignored(tmp_path):
    assert GPT2Config.from_json_file(write(tmp_path, {**GPT2_CONFIG_JSON, "some_future_field": [1, 2]})) == GPT2Config()


# --- config.json that cannot be read -----------------------------------------------------


def test_missing_config_json(tmp_path):
    with pytest.raises(
        ConfigError, match="config.json does not exist: a model folder needs config.json next to model.safetensors"
    ):
        GPT2Config.from_json_file(tmp_path / "config.json")


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"n_embd": 768,}', "{'single': 'quotes'}", b"\xff\xfe\x00{", "NaN-ish garbage", "[" * 100000],
)
def test_config_json_that_is_not_json(tmp_path, content):
    with pytest.raises(
        ConfigError, match=r"config.json is not valid JSON \(.*\); restore it from the model's repository"
    ):
        GPT2Config.from_json_file(write(tmp_path, content))


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_an_empty_config_json_is_called_empty(tmp_path, content):
    with pytest.raises(ConfigError, match=r"config.json is empty; restore it from the model's repository"):
        GPT2Config.from_json_file(write(tmp_path, content))


@pytest.mark.parametrize("content, kind", [("[1, 2]", "list"), ('"gpt2"', "str"), ("12", "int"), ("null", "NoneType")])
def test_config_json_that_is_not_an_object(tmp_path, content, kind):
    with pytest.raises(ConfigError, match=f"must hold a JSON object, found {kind}"):
        GPT2Config.from_json_file(write(tmp_path, content))


@pytest.mark.parametrize("field", REQUIRED)
def test_a_missing_required_field_is_named(tmp_path, field):
    raw = {k: v for k, v in GPT2_CONFIG_JSON.items() if k != field and not (field == "n_positions" and k == "n_ctx")}
    with pytest.raises(ConfigError, match=f"lacks the field\\(s\\) {field}; every GPT-2 config.json has them"):
        GPT2Config.from_json_file(write(tmp_path, raw))


def test_all_missing_fields_are_named_at_once(tmp_path):
    with pytest.raises(ConfigError, match="lacks the field\\(s\\) vocab_size, n_positions, n_layer, n_head;"):
        GPT2Config.from_json_file(write(tmp_path, {"n_embd": 8}))


@pytest.mark.parametrize("model_type", ["llama", "gpt_neo", "gpt2-but-not"])
def test_another_architecture_is_refused(tmp_path, model_type):
    with pytest.raises(ConfigError, match=f"describes a '{model_type}' model; gpt2np runs GPT-2 checkpoints only"):
        GPT2Config.from_json_file(write(tmp_path, {**GPT2_CONFIG_JSON, "model_type": model_type}))


def test_cross_attention_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="asks for cross-attention"):
        GPT2Config.from_json_file(write(tmp_path, {**GPT2_CONFIG_JSON, "add_cross_attention": True}))


# --- impossible values -------------------------------------------------------------------


@pytest.mark.parametrize("field", REQUIRED)
@pytest.mark.parametrize("value", [0, -1, 12.0, "12", True, None])
def test_size_fields_must_be_positive_integers(tmp_path, field, value):
    with pytest.raises(
        ConfigError, match=f"config.json: config field '{field}' must be a positive integer, got {value!r}"
    ):
        GPT2Config.from_json_file(write(tmp_path, {**GPT2_CONFIG_JSON, field: value}))


@pytest.mark.parametrize("value", [0, -4, 3072.0, "3072", False])
def test_n_inner_must_be_null_or_a_positive_integer(value):
    with pytest.raises(ConfigError, match=f"'n_inner' must be null or a positive integer, got {value!r}"):
        GPT2Config(n_inner=value)


def test_n_embd_must_split_into_heads():
    with pytest.raises(ConfigError, match=r"n_embd \(768\) must be divisible by n_head \(10\)"):
        GPT2Config(n_head=10)


@pytest.mark.parametrize("eps", [0, -1e-5, float("nan"), float("inf"), "1e-5", None, True])
def test_layer_norm_epsilon_must_be_a_positive_number(eps):
    with pytest.raises(ConfigError, match=f"'layer_norm_epsilon' must be a positive number, got {eps!r}"):
        GPT2Config(layer_norm_epsilon=eps)


@pytest.mark.parametrize("name", ["relu", "gelu", "silu"])
def test_activations_other_than_tanh_gelu_are_refused(name):
    with pytest.raises(
        ConfigError, match=f"activation_function '{name}' is not supported: gpt2np implements GPT-2's tanh GELU"
    ):
        GPT2Config(activation_function=name)


def test_both_names_of_the_tanh_gelu_are_accepted():
    assert GPT2Config(activation_function="gelu_pytorch_tanh").activation_function == "gelu_pytorch_tanh"


@pytest.mark.parametrize("field", ["scale_attn_weights", "scale_attn_by_inverse_layer_idx", "tie_word_embeddings"])
@pytest.mark.parametrize("value", ["false", "true", 0, 1, None])
def test_boolean_fields_must_be_booleans(tmp_path, field, value):
    """ "false" is a truthy string: read as it is, it would silently mean true."""
    with pytest.raises(ConfigError, match=f"config field '{field}' must be true or false, got {value!r}"):
        GPT2Config.from_json_file(write(tmp_path, {**GPT2_CONFIG_JSON, field: value}))


@pytest.mark.parametrize("field", ["bos_token_id", "eos_token_id"])
@pytest.mark.parametrize("value", [-1, "50256", 50256.0, [50256], True])
def test_special_token_ids_must_be_null_or_ids(field, value):
    with pytest.raises(ConfigError, match=f"'{field}' must be null or a token id"):
        GPT2Config(**{field: value})


def test_config_errors_are_value_errors_and_gpt2np_errors(tmp_path):
    for base in (ValueError, GPT2npError):
        with pytest.raises(base):
            GPT2Config(n_layer=0)


def test_a_bad_config_stops_from_pretrained(tmp_path, model_dir):
    """End to end: a model folder whose config.json is broken fails with ConfigError."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(model_dir("tiny") / "model.safetensors")
    (folder / "config.json").write_text("{broken")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        GPT2.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"n_embd": 32, "n_layer": 2}))
    with pytest.raises(ConfigError, match="lacks the field\\(s\\) vocab_size, n_positions, n_head"):
        GPT2.from_pretrained(folder)
    (folder / "config.json").write_text((model_dir("tiny") / "config.json").read_text())
    assert GPT2.from_pretrained(folder).config.n_layer == 2


def test_an_eos_token_id_outside_the_vocabulary_is_refused_at_load_naming_the_file(tmp_path, model_dir):
    """Once caught only when generating, with a Python keyword as the advice (a CLI user has none)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(model_dir("tiny") / "model.safetensors")
    (folder / "config.json").write_text(
        json.dumps({**json.loads((model_dir("tiny") / "config.json").read_text()), "eos_token_id": 50257})
    )
    with pytest.raises(
        ConfigError,
        match=r"config.json: config field 'eos_token_id' is 50257, outside the vocabulary \(vocab_size=50257, "
        r"ids 0 \.\. 50256\); set it to the model's end-of-text id \(GPT-2: 50256\) or null",
    ):
        GPT2.from_pretrained(folder)
    assert GPT2Config(vocab_size=60, eos_token_id=None).eos_token_id is None  # null: never stop early
    assert (
        GPT2Config(vocab_size=60, eos_token_id=59, bos_token_id=50256).bos_token_id == 50256
    )  # bos is unused: not refused


def test_n_head_cannot_be_detected_from_the_weights(model_dir, tmp_path):
    """No tensor's shape depends on n_head (c_attn is [C, 3C] for any head count): a config.json
    with another n_head loads and runs, and computes something else. What can be checked is:
    n_embd must split into n_head equal heads (test_n_embd_must_split_into_heads). The docs say so."""
    from gpt2np.weights import load_weights

    tiny = model_dir("tiny")
    config = GPT2Config.from_json_file(tiny / "config.json")
    other = GPT2Config(**{**{k: v for k, v in config.to_dict().items() if k != "model_type"}, "n_head": 4})
    ids = [[3666, 3290, 318]]
    right = GPT2(config, load_weights(tiny / "model.safetensors", config))(ids).logits
    wrong = GPT2(other, load_weights(tiny / "model.safetensors", other))(ids).logits
    assert np.isfinite(wrong).all() and not np.allclose(right, wrong)
    assert "cannot be detected" in (Path(__file__).resolve().parents[1] / "docs" / "errors.md").read_text()
