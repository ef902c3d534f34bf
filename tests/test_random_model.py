"""The random test models: reproducible bytes, loadable by transformers, shaped as promised."""

from __future__ import annotations

import numpy as np
import pytest

import gpt2np.attention
import gpt2np.layers
import gpt2np.model
from gpt2np import GPT2
from gpt2np.hub import sha256_of
from gpt2np.tools.cli import main
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


# --- `gpt2np random-model` (issue 23, item 5) -----------------------------------------------


def test_the_command_writes_the_model_its_flags_ask_for(tmp_path, capsys):
    from gpt2np.config import GPT2Config
    from gpt2np.tools.cli import main
    from gpt2np.tools.random_model import make_random_checkpoint

    flags = ["--n-layer", "3", "--n-head", "4", "--n-embd", "64", "--n-positions", "32", "--vocab-size", "1000"]
    assert main(["random-model", str(tmp_path / "m"), *flags, "--n-inner", "100", "--seed", "7"]) == 0
    out = capsys.readouterr().out
    config = GPT2Config.from_json_file(tmp_path / "m" / "config.json")
    expected = GPT2Config(
        n_layer=3, n_head=4, n_embd=64, n_positions=32, vocab_size=1000, n_inner=100, bos_token_id=999, eos_token_id=999
    )
    assert config == expected
    model = GPT2.from_pretrained(tmp_path / "m")
    assert f"{model.num_parameters:,} parameters" in out and "trace it from token ids" in out
    same = make_random_checkpoint(tmp_path / "again", expected, seed=7)  # the seed gives the bytes
    assert sha256_of(same / "model.safetensors") == sha256_of(tmp_path / "m" / "model.safetensors")


def test_the_defaults_are_gpt2config_s(tmp_path):
    """No flags: GPT-2 124M's shape (what GPT2Config() is), seed 0 (not written here: 500 MB)."""
    from gpt2np.config import GPT2Config
    from gpt2np.tools.cli import build_parser
    from gpt2np.tools.random_model import config_from_flags

    args = build_parser().parse_args(["random-model", str(tmp_path / "m")])
    assert config_from_flags(args) == GPT2Config() and args.seed == 0


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--n-embd", "30", "--n-head", "4"], "--n-embd (30) must be divisible by --n-head (4)"),
        (["--n-layer", "0"], "--n-layer must be a positive integer, got 0"),
        (["--seed", "-1", "--n-embd", "8"], "--seed must be 0 or more"),
    ],
    ids=["heads", "layers", "seed"],
)
def test_bad_flags_are_named_as_flags(tmp_path, capsys, flags, message):
    from gpt2np.tools.cli import main

    assert main(["random-model", str(tmp_path / "m"), *flags]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "flags",
    [
        ["--n-embd", "16384", "--n-head", "16", "--n-layer", "100"],
        ["--vocab-size", str(10**9)],
        ["--n-positions", str(10**9)],
        ["--n-inner", str(10**12)],
        ["--n-embd", str(2**62), "--n-head", "1"],
    ],
    ids=["wide-and-deep", "vocab", "positions", "inner", "n_embd-2-62"],
)
def test_a_size_beyond_the_machines_memory_is_refused_naming_it(tmp_path, capsys, flags):
    """Issue 30: these ran until MemoryError (or "array is too big") and left an empty folder.
    The bytes are counted first, in Python integers, and compared with the memory available."""
    from gpt2np.tools.cli import main
    from gpt2np.tools.random_model import available_memory

    assert main(["random-model", str(tmp_path / "m"), *flags]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "parameters" in err and "as float32, and writing it needs about" in err, err
    assert "available: choose a smaller shape" in err and available_memory() > 0
    assert not (tmp_path / "m").exists()


def test_an_existing_model_or_a_file_is_not_overwritten(tmp_path, capsys):
    from gpt2np.tools.cli import main

    small = ["--n-layer", "1", "--n-head", "1", "--n-embd", "8", "--n-positions", "8", "--vocab-size", "10"]
    assert main(["random-model", str(tmp_path / "m"), *small]) == 0
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    assert main(["random-model", str(tmp_path / "m"), *small, "--seed", "1"]) == 1
    assert "already holds a model" in capsys.readouterr().err
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    (tmp_path / "f").write_text("x")
    assert main(["random-model", str(tmp_path / "f"), *small]) == 1
    assert "is a file; name a folder" in capsys.readouterr().err


@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-9), ("float32", 1e-4)])
def test_a_model_it_writes_loads_in_transformers_with_the_same_logits(tmp_path, hf_model, capsys, dtype, tolerance):
    """Live: transformers' GPT2LMHeadModel.from_pretrained(OUT) of a model the command wrote, on
    a left-padded batch, against gpt2np's (the crosscheck tolerances)."""
    import torch

    from gpt2np.tools.cli import main

    flags = ["--n-layer", "2", "--n-head", "4", "--n-embd", "64", "--n-positions", "16", "--vocab-size", "300"]
    assert main(["random-model", str(tmp_path / "m"), *flags, "--n-inner", "96", "--seed", "5"]) == 0
    ids = np.array([[299, 299, 17, 42, 7], [5, 6, 7, 8, 9]])
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # as transformers' generate makes them (not ours)
    ours = GPT2.from_pretrained(tmp_path / "m", dtype=dtype)(ids, attention_mask=mask).logits
    hf = hf_model(tmp_path / "m", "eager", dtype)
    with torch.no_grad():
        theirs = hf(
            torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions)
        ).logits.numpy()
    real = mask.astype(bool)
    assert np.abs(ours[real] - theirs[real]).max() <= tolerance
    assert ours.dtype == theirs.dtype == np.dtype(dtype)


def test_the_readme_s_commands_run(tmp_path):
    """README.md's "A random GPT-2" block, run as written (in a temporary folder)."""
    import re
    import shlex
    import subprocess
    import sys

    from conftest import ROOT

    section = (ROOT / "README.md").read_text().split("### A random GPT-2")[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands[0].startswith("gpt2np random-model") and len(commands) == 5
    for command in commands:
        args = shlex.split(command)
        assert args[0] == "gpt2np"
        result = subprocess.run(
            [sys.executable, "-m", "gpt2np", *args[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0 and result.stderr == "", f"{command}: {result.stderr}"
    assert (tmp_path / "ref.safetensors").is_file() and (tmp_path / "mini.safetensors").is_file()


def init_gpt2_tensors(tmp_path, capsys) -> dict:
    from safetensors.numpy import load_file

    out = tmp_path / "init"
    assert main(["random-model", str(out), "--n-layer", "3", "--n-head", "2", "--n-embd", "64", "--init", "gpt2"]) == 0
    assert "GPT-2's initialisation" in capsys.readouterr().out
    return {k.removeprefix("transformer."): v for k, v in load_file(out / "model.safetensors").items()}


def test_init_gpt2_is_gpt2s_initialisation(tmp_path, capsys):
    """Issue 32: --init gpt2 draws what training from scratch starts from (transformers'
    _init_weights, nanoGPT): normal 0.02, c_proj by 1/sqrt(2 n_layer), zero biases, LayerNorm 1/0."""
    t = init_gpt2_tensors(tmp_path, capsys)
    for name, a in t.items():
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            assert (a == 1).all(), name
        elif name.endswith(".bias"):
            assert (a == 0).all(), name
        else:
            std = 0.02 / np.sqrt(2 * 3) if name.endswith("c_proj.weight") else 0.02
            assert abs(a.mean()) < 4 * std / np.sqrt(a.size), name
            assert abs(a.std() / std - 1) < 8 / np.sqrt(a.size), name  # the sample std's noise: ~1/sqrt(2n)


@pytest.mark.transformers
def test_init_gpt2_has_transformers_statistics(tmp_path, capsys, transformers):
    """The same statistics as transformers' own GPT2LMHeadModel(config) draws."""
    import torch

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=3, n_head=2, n_embd=64)
    theirs = {
        k.removeprefix("transformer."): v.detach().numpy()
        for k, v in transformers.GPT2LMHeadModel(cfg).named_parameters()
    }
    ours = init_gpt2_tensors(tmp_path, capsys)
    for name, a in theirs.items():
        b = ours[name]
        assert b.shape == a.shape, name
        if a.std() == 0:
            assert (b == a).all(), name  # ones and zeros
        else:
            assert abs(b.std() / a.std() - 1) < 10 / np.sqrt(a.size), name
