"""scripts/bench/export_gguf.py: the f32 GGUF of the bench's llama.cpp column and its logits check.

The staging of a model folder and the copy of ggml's float16 GELU are plain NumPy and run
everywhere. The rest converts the tiny random model for real and runs it in llama.cpp: it needs
llama-cpp-python (which compiles llama.cpp: not in any extra), torch, and llama.cpp's converter
already fetched by `python scripts/bench/export_gguf.py` (the tests download nothing); each is skipped,
saying which, where missing.
"""

from __future__ import annotations

import json
import shutil
import sys
from importlib import metadata
from importlib.util import find_spec

import numpy as np
import pytest
from conftest import ROOT, build_model, changed_copy, decode_alike

if str(ROOT) not in sys.path:  # scripts/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from scripts.bench import export_gguf
from scripts.bench.export_onnx import LogitsMismatch

pytestmark = pytest.mark.usefixtures("blas_threads_restored")  # the bench impls limit BLAS threads process-wide

# --- staging and the GELU copy (NumPy only) --------------------------------------------------


def test_the_folder_is_staged_as_a_hub_gpt2_with_the_same_weights(tmp_path):
    folder = build_model("tiny")
    staged = export_gguf.stage(folder, tmp_path / "tiny")
    config = json.loads((staged / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["n_ctx"] == config["n_positions"] == 64
    assert (staged / "model.safetensors").resolve() == (folder / "model.safetensors").resolve()  # linked, not copied
    shipped = ROOT / "gpt2np" / "tokenizer_files"
    for name in ("vocab.json", "merges.txt"):
        assert (staged / name).read_bytes() == (shipped / name).read_bytes()


def test_the_ggml_gelu_copy_rounds_in_and_out_to_float16_and_passes_large_inputs():
    before, after = (fn for _, fn in export_gguf.ggml_gelu_hooks())
    x = np.array([[1.0001, -0.3, 12.3456, -11.0]], np.float32)
    rounded = before(x, "blocks.0.mlp.hook_pre")
    np.testing.assert_array_equal(rounded, x.astype(np.float16).astype(np.float32))
    y = np.array([[0.84134567, -0.11456789, 12.3456, -1e-30]], np.float32)  # what GELU made of the rounded x
    out = after(y, "blocks.0.mlp.hook_post")
    assert out[0, 0] == np.float32(np.float16(0.84134567)) and out[0, 1] == np.float32(np.float16(-0.11456789))
    assert out[0, 2] == np.float32(12.3456)  # x >= 10: x itself, not rounded (ggml's table is not read)
    assert out[0, 3] == 0  # x <= -10: 0


# --- the conversion and llama.cpp itself -----------------------------------------------------


def converter_or_none():
    if find_spec("llama_cpp") is None:
        return None
    folder = export_gguf.gguf_root() / f"llama.cpp-converter-{metadata.version('llama-cpp-python')}"
    return folder if (folder / export_gguf.CONVERTER).is_file() else None


MISSING = export_gguf.missing_for_conversion()
CONVERTER = converter_or_none()
needs_llama = pytest.mark.skipif(
    bool(MISSING) or CONVERTER is None,
    reason=(
        f"{', '.join(MISSING)} not installed (pip install llama-cpp-python; CI installs only .[test])"
        if MISSING
        else "llama.cpp's converter not fetched yet: run `python scripts/bench/export_gguf.py` once (the tests download nothing)"
    ),
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The tiny model converted once into a private GPT2NP_BENCH_MODELS: (model folder, model.gguf, manifest)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("bench-models")
    assert CONVERTER is not None
    shutil.copytree(CONVERTER, root / "gguf" / CONVERTER.name)  # the converter already fetched
    mp.setenv("GPT2NP_BENCH_MODELS", str(root))
    folder = build_model("tiny")
    path, manifest = export_gguf.ensure_gguf(folder, threads=1, log=lambda *_: None)
    yield folder, path, manifest
    mp.undo()


@needs_llama
def test_the_gguf_gives_gpt2np_s_logits_within_its_tolerance(converted):
    _, path, manifest = converted
    assert path.is_file() and manifest["gguf_bytes"] == path.stat().st_size
    check = manifest["check"]
    assert check["max_abs_diff"] <= export_gguf.LLAMA_TOLERANCE
    assert check["positions_compared"] == 3 * 28 - (5 + 11)


@needs_llama
def test_the_check_refuses_a_gguf_of_other_weights(converted, tmp_path):
    folder, path, _ = converted
    other = changed_copy(folder, tmp_path / "tiny")  # ln_f.bias + 0.1: far beyond float16 GELU noise
    with pytest.raises(LogitsMismatch, match=r"tiny: llama.cpp's logits differ from gpt2np's .*export_gguf.py --force"):
        export_gguf.check_logits(other, path, threads=1)


@needs_llama
def test_the_bench_s_llamacpp_worker_does_what_gpt2np_s_does(converted):
    from scripts.bench.impl_gpt2np import Gpt2np
    from scripts.bench.impl_llamacpp import LlamaCpp

    folder, path, _ = converted
    batch_of_3 = LlamaCpp(threads=1, gguf_path=path, batch=3, row_tokens=20)
    ours, theirs = decode_alike(Gpt2np(threads=1), batch_of_3, folder, export_gguf.LLAMA_TOLERANCE)
    ids = np.random.default_rng(0).integers(0, ours.vocab_size, size=(2, 9), dtype=np.int64)
    out = theirs.generate(ids, 6)
    assert out.shape == (2, 15) and (out[:, :9] == ids).all()
