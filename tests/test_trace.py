"""`gpt2np trace` writes one safetensors file: every point, the inputs, metadata, and with
--generate the greedy tokens and each step's logits; `gpt2np compare`'s exit codes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from gpt2np import GPT2, Tokenizer, __version__
from gpt2np.masks import position_ids_from_mask
from gpt2np.tools.cli import main
from gpt2np.tools.tracefile import load_trace

PROMPTS = ["It will rain in the", "I want to eat a big bowl of", "My dog is"]


@pytest.fixture(scope="module")
def tiny(model_dir):
    return model_dir("tiny")


@pytest.fixture(scope="module")
def batch(tokenizer_dir):
    tok = Tokenizer.from_pretrained(tokenizer_dir)
    tok.padding_side, tok.pad_token = "left", tok.eos_token
    return tok(PROMPTS, padding=True)


def trace(tmp_path, tiny, tokenizer_dir, *extra, out="t.safetensors"):
    path = tmp_path / out
    code = main(
        ["trace", *PROMPTS, "--model", str(tiny), "--tokenizer", str(tokenizer_dir), "--out", str(path), *extra]
    )
    return code, path


def test_trace_holds_every_point_the_inputs_and_metadata(tmp_path, tiny, tokenizer_dir, batch, capsys):
    code, path = trace(tmp_path, tiny, tokenizer_dir)
    assert code == 0 and "34 points of a [3, 8] batch, float32" in capsys.readouterr().out
    tensors, meta = load_trace(path)
    model = GPT2.from_pretrained(tiny)
    np.testing.assert_array_equal(tensors["input_ids"], batch["input_ids"])
    np.testing.assert_array_equal(tensors["attention_mask"], batch["attention_mask"])
    np.testing.assert_array_equal(tensors["position_ids"], position_ids_from_mask(batch["attention_mask"]))
    assert all(tensors[k].dtype == np.int64 for k in ("input_ids", "attention_mask", "position_ids"))
    _, cache = model.run_with_cache(batch["input_ids"], attention_mask=batch["attention_mask"])
    assert set(tensors) == {"input_ids", "attention_mask", "position_ids", *cache}
    for name, a in cache.items():
        np.testing.assert_array_equal(tensors[name], a, err_msg=name)
    assert json.loads(meta["names"]) == model.activation_names()
    assert meta["format"] == "gpt2np-trace/1" and meta["gpt2np_version"] == __version__ and meta["model"] == str(tiny)
    assert meta["checkpoint_sha256"] == hashlib.sha256((tiny / "model.safetensors").read_bytes()).hexdigest()
    assert (
        meta["dtype"] == "float32"
        and meta["mask_fill"] == "min"
        and float(meta["fill"]) == float(np.finfo(np.float32).min)
    )
    assert json.loads(meta["config"]) == model.config.to_dict() and json.loads(meta["texts"]) == PROMPTS
    assert "float32_error" not in meta  # only a float64 trace measures it


def test_float64_trace_carries_the_float32_error_per_point(tmp_path, tiny, tokenizer_dir):
    code, path = trace(tmp_path, tiny, tokenizer_dir, "--dtype", "float64", "--mask-fill", "-inf")
    tensors, meta = load_trace(path)
    assert code == 0 and tensors["logits"].dtype == np.float64 and meta["mask_fill"] == "-inf"
    errors = json.loads(meta["float32_error"])
    assert list(errors) == json.loads(meta["names"])
    assert errors["hook_embed"] == 0  # the same float32 weights, looked up
    assert all(0 < errors[n] < 1e-4 for n in errors if n.startswith("blocks.") or n == "logits")


def test_generate_saves_greedy_tokens_and_each_steps_logits(tmp_path, tiny, tokenizer_dir, batch):
    code, path = trace(tmp_path, tiny, tokenizer_dir, "--generate", "4")
    tensors, _ = load_trace(path)
    model = GPT2.from_pretrained(tiny)
    ids = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=4)
    np.testing.assert_array_equal(tensors["generated_ids"], ids[:, 8:])
    logits = tensors["generated_logits"]  # [B, 4, V]
    assert logits.shape == (3, 4, model.config.vocab_size)
    np.testing.assert_array_equal(logits.argmax(-1), tensors["generated_ids"])
    # step 0's logits are the prompt's last position
    np.testing.assert_allclose(logits[:, 0], tensors["logits"][:, -1], atol=1e-5)


def test_trace_bad_usage(tmp_path, tiny, tokenizer_dir, capsys):
    code, _ = trace(tmp_path, tiny, tokenizer_dir, out="t.npz")
    assert code == 1 and "name the file *.safetensors" in capsys.readouterr().err
    code, _ = trace(tmp_path, tiny, tokenizer_dir, "--generate", "-1")
    assert code == 1 and "--generate must be 0 or more" in capsys.readouterr().err
    (tmp_path / "dir.safetensors").mkdir()  # was "unexpected SafetensorError"
    code, _ = trace(tmp_path, tiny, tokenizer_dir, out="dir.safetensors")
    err = capsys.readouterr().err
    assert code == 1 and "is a directory; name the file to write" in err and err.count("\n") == 1


def test_compare_exit_codes(tmp_path, tiny, tokenizer_dir, capsys):
    _, ref = trace(tmp_path, tiny, tokenizer_dir, "--dtype", "float64", out="ref.safetensors")
    _, same = trace(tmp_path, tiny, tokenizer_dir, out="f32.safetensors")
    _, other = trace(tmp_path, tiny, tokenizer_dir, "--mask-fill", "-inf", out="inf.safetensors")
    capsys.readouterr()
    assert main(["compare", str(ref), str(same)]) == 0
    assert "no divergence" in capsys.readouterr().out
    assert main(["compare", str(ref), str(other)]) == 0  # a -inf fill where the reference used min: a convention
    out = capsys.readouterr().out
    assert "no divergence" in out and "note: hook_attn_scores of blocks 0-1: the forbidden cells hold -inf" in out
    assert main(["compare", str(ref), str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["compare", str(ref), str(same), "--rtol", "-1"]) == 2
    result = subprocess.run([sys.executable, "-m", "gpt2np", "compare", str(ref)], capture_output=True, text=True)
    assert result.returncode == 2 and "candidate" in result.stderr  # argparse: a missing argument
