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


# --- fixed token ids, with or without a tokenizer (issue 23, item 4) ------------------------


def rows(ids):
    return [",".join(map(str, row)) for row in ids]


def trace_ids(tmp_path, model, *args, out="ids.safetensors"):
    path = tmp_path / out
    return main(["trace", "--model", str(model), "--out", str(path), *args]), path


def test_ids_with_a_pad_id_trace_exactly_what_the_prompts_do(tmp_path, tiny, tokenizer_dir, batch):
    """The seed batch as ids: its leading 50256s are pads by --pad-id 50256, by an explicit
    --attention-mask, or as left padding of shorter rows given without them; all three are the
    text trace, bit for bit."""
    _, from_text = trace(tmp_path, tiny, tokenizer_dir, out="text.safetensors")
    text, _ = load_trace(from_text)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    ways = {
        "pad-id": [a for row in rows(ids) for a in ("--ids", row)] + ["--pad-id", "50256"],
        "mask": [a for row in rows(ids) for a in ("--ids", row)]
        + [a for row in rows(mask) for a in ("--attention-mask", row)],
        "unpadded": [a for row, m in zip(ids, mask) for a in ("--ids", ",".join(map(str, row[m == 1])))],
    }
    for way, args in ways.items():
        code, path = trace_ids(tmp_path, tiny, *args, out=f"{way}.safetensors")
        assert code == 0, way
        tensors, meta = load_trace(path)
        assert set(tensors) == set(text) and json.loads(meta["texts"]) == []
        for name in text:
            np.testing.assert_array_equal(tensors[name], text[name], err_msg=f"{way}: {name}")


def test_an_ids_file_is_the_same_as_ids(tmp_path, tiny):
    (tmp_path / "ids.txt").write_text("50256 50256 1026 481\n\n40, 765, 284, 4483\n")
    code, from_file = trace_ids(tmp_path, tiny, "--ids-file", str(tmp_path / "ids.txt"), "--pad-id", "50256")
    code2, from_ids = trace_ids(
        tmp_path,
        tiny,
        "--ids",
        "50256,50256,1026,481",
        "--ids",
        "40,765,284,4483",
        "--pad-id",
        "50256",
        out="b.safetensors",
    )
    a, b = load_trace(from_file)[0], load_trace(from_ids)[0]
    assert code == code2 == 0 and all(np.array_equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(a["attention_mask"], [[0, 0, 1, 1], [1, 1, 1, 1]])


def test_a_model_without_tokenizer_files_is_traced_from_ids(tmp_path, model_dir, capsys):
    """odd has 1000 tokens and no tokenizer files: text cannot be traced, ids can."""
    odd = model_dir("odd")
    code, path = trace_ids(tmp_path, odd, "--ids", "999,999,17,42", "--ids", "5,6,7,8", "--pad-id", "999")
    assert code == 0 and "points of a [2, 4] batch" in capsys.readouterr().out
    tensors, _ = load_trace(path)
    model = GPT2.from_pretrained(odd)
    ids, mask = np.array([[999, 999, 17, 42], [5, 6, 7, 8]]), np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    np.testing.assert_array_equal(tensors["attention_mask"], mask)
    np.testing.assert_array_equal(tensors["logits"], model(ids, attention_mask=mask).logits)
    assert main(["trace", "some text", "--model", str(odd), "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "has no tokenizer files" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["some text", "--ids", "1,2"], "give prompts or --ids / --ids-file, not both"),
        (["--ids", "1,x,3"], "--ids '1,x,3': 'x' is not an integer"),
        (["--ids", " , "], "--ids ' , ' is empty"),
        (["--ids", "1,2", "--attention-mask", "1"], "--attention-mask 1 does not fit its row 1,2"),
        (["--ids", "1,2", "--attention-mask", "1,2"], "--attention-mask 1,2 does not fit its row 1,2"),
        (["--ids", "1,2", "--ids", "3", "--attention-mask", "1,1"], "1 --attention-mask for 2 rows"),
        (["--ids", "7,7", "--pad-id", "7"], "a row has no real token"),
        (["--ids", "1,50257"], "input_ids[0, 1] = 50257 is not a token id"),
        (["--ids", "1,2", "--tokenizer", "x"], "--tokenizer has no use with --ids"),
        (["--ids", "1", "--ids-file", "f"], "with --ids or with --ids-file, not both"),
        (["--ids-file", "nowhere.txt"], "--ids-file nowhere.txt: no such file"),
        (["--ids", str(2**63)], f"{2**63} is not a token id (far beyond any vocabulary)"),  # was OverflowError
        (["--ids", "1,2", "--pad-id", str(-(2**64))], f"--pad-id: {-(2**64)} is not a token id"),
    ],
    ids=[
        "prompts-and-ids",
        "not-an-integer",
        "empty",
        "mask-too-short",
        "mask-not-0-1",
        "one-mask-two-rows",
        "all-pads",
        "out-of-vocabulary",
        "tokenizer",
        "ids-and-file",
        "no-file",
        "id-beyond-int64",
        "pad-id-beyond-int64",
    ],
)
def test_ids_bad_usage(tmp_path, tiny, capsys, args, message):
    code, _ = trace_ids(tmp_path, tiny, *args)
    err = capsys.readouterr().err
    assert code == 1 and message in err and err.count("\n") == 1, err


def test_rows_of_different_lengths_need_a_pad_id_when_the_model_has_no_eos(tmp_path, capsys):
    from gpt2np.config import GPT2Config
    from gpt2np.tools.random_model import make_random_checkpoint

    config = GPT2Config(vocab_size=100, n_layer=1, n_head=2, n_embd=8, n_positions=8, eos_token_id=None)
    folder = make_random_checkpoint(tmp_path / "no-eos", config)
    code, _ = trace_ids(tmp_path, folder, "--ids", "1,2,3", "--ids", "4")
    err = capsys.readouterr().err
    assert code == 1 and "this model has no eos_token_id to pad with: pass --pad-id" in err
    code, path = trace_ids(tmp_path, folder, "--ids", "1,2,3", "--ids", "4", "--pad-id", "0")
    np.testing.assert_array_equal(load_trace(path)[0]["input_ids"], [[1, 2, 3], [0, 0, 4]])
