"""model.safetensors: the memory-mapped reader, and a CheckpointError for every broken file.

Files are written with gpt2np.checkpoint.save_checkpoint (which uses the `safetensors`
package, the reference writer) or byte by byte here, then damaged: truncated, a garbage
header, wrong offsets, unknown or integer dtypes, a tensor missing or misshapen, a config.json
that does not belong to the tensors.
"""

from __future__ import annotations

import json
import mmap
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from gpt2np import GPT2, CheckpointError, GPT2Config, ModelNotFoundError, checkpoint
from gpt2np.checkpoint import map_tensors, read_header, save_checkpoint
from gpt2np.tools.random_model import random_tensors
from gpt2np.weights import load_weights

CONFIG = GPT2Config(vocab_size=60, n_positions=12, n_embd=8, n_layer=2, n_head=2, eos_token_id=59, bos_token_id=59)
IDS = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])


def write_safetensors(path: Path, entries: dict, header_pad_to: int = 8, extra_header: dict | None = None) -> Path:
    """By hand: entries name -> (dtype code, shape, raw bytes). The header is padded with
    spaces to a multiple of header_pad_to (8 keeps every tensor aligned; 1 does not pad)."""
    header, offset, blobs = dict(extra_header or {}), 0, []
    for name, (code, shape, raw) in entries.items():
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % header_pad_to)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path


def header_of(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def rewrite_header(src: Path, dst: Path, header) -> Path:
    """The same tensor bytes as src under another header."""
    _, body = header_of(src)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    dst.write_bytes(struct.pack("<Q", len(text)) + text + body)
    return dst


def model_folder(folder: Path, tensors: dict, config: GPT2Config | dict = CONFIG) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / "model.safetensors", tensors)
    raw = config.to_dict() if isinstance(config, GPT2Config) else config
    (folder / "config.json").write_text(json.dumps(raw))
    return folder


@pytest.fixture(scope="module")
def tensors():
    return random_tensors(CONFIG, seed=5)


@pytest.fixture
def good(tmp_path, tensors) -> Path:
    return model_folder(tmp_path / "good", {"transformer." + k: v for k, v in tensors.items()})


# --- reading -----------------------------------------------------------------------------


def test_map_tensors_reads_back_what_safetensors_wrote(tmp_path):
    rng = np.random.default_rng(0)
    written = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f64": rng.standard_normal(7),
        "f16": rng.standard_normal((2, 2)).astype(np.float16),
        "i64": rng.integers(-9, 9, size=(4,)),
        "i32": rng.integers(-9, 9, size=(2, 3)).astype(np.int32),
        "u8": rng.integers(0, 255, size=(5,)).astype(np.uint8),
        "scalar": np.array(1.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    save_checkpoint(tmp_path / "x.safetensors", written)
    read = map_tensors(tmp_path / "x.safetensors")
    assert set(read) == set(written)
    for name, array in written.items():
        assert read[name].dtype == array.dtype and read[name].shape == array.shape, name
        np.testing.assert_array_equal(read[name], array)


def test_tensors_are_read_only_zero_copy_views_of_one_memory_map(good):
    tensors = map_tensors(good / "model.safetensors")
    maps = set()
    for name, t in tensors.items():
        assert not t.flags.writeable, name
        assert not t.flags.owndata, name  # a view: the bytes stay in the file's pages
        base = t
        while isinstance(base, np.ndarray):
            base = base.base
        assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap), name
        maps.add(id(base.obj))
    assert len(maps) == 1  # one map for the whole file
    with pytest.raises(ValueError, match="read-only"):
        tensors["transformer.wte.weight"][0, 0] = 1.0


def test_float32_weights_are_used_without_a_copy_and_float64_copies(good):
    weights = load_weights(good / "model.safetensors", CONFIG)
    for a in weights.arrays():
        assert not a.flags.owndata and not a.flags.writeable
        base = a
        while isinstance(base, np.ndarray):
            base = base.base
        assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)
    weights64 = load_weights(good / "model.safetensors", CONFIG, dtype="float64")
    assert all(a.dtype == np.float64 and a.flags.owndata for a in weights64.arrays())
    np.testing.assert_array_equal(weights64.wte, weights.wte.astype(np.float64))


def test_bf16_is_widened_exactly_to_float32(tmp_path):
    # Values whose float32 bits have a zero low half are exactly representable in bfloat16.
    values = np.array([1.0, -2.5, 0.15625, 2.0**100, -0.0, 2.0**-100], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2")
    assert ((bf16.astype(np.uint32) << 16).view(np.float32) == values).all()  # the premise
    path = write_safetensors(tmp_path / "bf16.safetensors", {"x": ("BF16", (2, 3), bf16.tobytes())})
    x = map_tensors(path)["x"]
    assert x.dtype == np.float32 and x.shape == (2, 3)
    np.testing.assert_array_equal(x.ravel(), values)


def test_a_misaligned_tensor_is_copied_and_still_correct(tmp_path):
    values = np.arange(6, dtype="<f4") / 7
    # 1-byte tensor first + no header padding: the float32 tensor starts at an odd address.
    path = write_safetensors(
        tmp_path / "odd.safetensors",
        {"a": ("U8", (1,), b"\x07"), "b": ("F32", (2, 3), values.tobytes())},
        header_pad_to=1,
    )
    _, data_start, _ = read_header(path)
    assert (data_start + 1) % 4  # the premise: misaligned
    b = map_tensors(path)["b"]
    np.testing.assert_array_equal(b.ravel(), values)
    assert b.ctypes.data % 4 == 0  # aligned memory, so BLAS is used


def test_float16_and_bfloat16_checkpoints_load_into_float32(tmp_path, tensors):
    """A half-precision file is widened once; the model then equals a float32 model built from
    the same (rounded) values."""
    half = {k: v.astype(np.float16) for k, v in tensors.items()}
    model16 = GPT2.from_pretrained(model_folder(tmp_path / "f16", half))
    model32 = GPT2.from_pretrained(model_folder(tmp_path / "f32", {k: v.astype(np.float32) for k, v in half.items()}))
    assert model16.weights.wte.dtype == np.float32
    np.testing.assert_array_equal(model16(IDS).logits, model32(IDS).logits)

    bf16 = {k: (v.view(np.uint32) >> 16).astype("<u2") for k, v in tensors.items()}
    folder = tmp_path / "bf16"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors", {k: ("BF16", v.shape, v.tobytes()) for k, v in bf16.items()})
    (folder / "config.json").write_text(json.dumps(CONFIG.to_dict()))
    truncated = {k: (v.astype(np.uint32) << 16).view(np.float32) for k, v in bf16.items()}
    model_bf = GPT2.from_pretrained(folder)
    model_ref = GPT2.from_pretrained(model_folder(tmp_path / "bf-ref", truncated))
    np.testing.assert_array_equal(model_bf(IDS).logits, model_ref(IDS).logits)


def test_the_transformer_prefix_is_optional(tmp_path, tensors):
    plain = GPT2.from_pretrained(model_folder(tmp_path / "plain", tensors))
    prefixed = GPT2.from_pretrained(
        model_folder(tmp_path / "prefixed", {"transformer." + k: v for k, v in tensors.items()})
    )
    np.testing.assert_array_equal(plain(IDS).logits, prefixed(IDS).logits)


def test_old_causal_mask_buffers_are_ignored(tmp_path, tensors):
    """Old transformers saved attn.bias (the causal mask) and attn.masked_bias; they are not
    parameters. Garbage in them must change nothing."""
    extra = dict(tensors)
    for i in range(CONFIG.n_layer):
        extra[f"h.{i}.attn.bias"] = np.full((1, 1, 12, 12), 7.0, dtype=np.float32)  # not even a triangle
        extra[f"h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    with_buffers = GPT2.from_pretrained(model_folder(tmp_path / "buffers", extra))
    without = GPT2.from_pretrained(model_folder(tmp_path / "plain", tensors))
    np.testing.assert_array_equal(with_buffers(IDS).logits, without(IDS).logits)


def test_metadata_is_not_a_tensor(tmp_path):
    path = write_safetensors(
        tmp_path / "m.safetensors", {"x": ("F32", (1,), b"\0\0\x80?")}, extra_header={"__metadata__": {"format": "pt"}}
    )
    assert set(map_tensors(path)) == {"x"}


# --- broken files ------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0, 3, 7])
def test_a_file_shorter_than_the_length_field(tmp_path, good, keep):
    path = good / "model.safetensors"
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(
        CheckpointError,
        match=f"model.safetensors is {keep} bytes, too short to be a safetensors file; download it again",
    ):
        GPT2.from_pretrained(good)


def test_a_file_cut_inside_its_header(tmp_path, good):
    path = good / "model.safetensors"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(
        CheckpointError,
        match=r"is truncated or has a corrupted safetensors header \(it claims \d+ header bytes in a 40-byte file\)",
    ):
        GPT2.from_pretrained(good)


@pytest.mark.parametrize("cut", [1, 4, 1000, "half", "all data"])
def test_a_file_cut_inside_its_tensors(tmp_path, good, cut):
    path = good / "model.safetensors"
    data = path.read_bytes()
    header, body = header_of(path)
    n_cut = {"half": len(data) // 2, "all data": len(body)}.get(cut, cut)
    path.write_bytes(data[: len(data) - n_cut])
    with pytest.raises(
        CheckpointError,
        match=rf"is truncated: its header describes {len(data)} bytes but the file has {len(data) - n_cut}; the download was probably interrupted",
    ):
        GPT2.from_pretrained(good)


def test_a_garbage_header(good):
    path = good / "model.safetensors"
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    path.write_bytes(data[:8] + bytes(range(256)) * (n // 256) + b"\xff" * (n % 256) + data[8 + n :])
    with pytest.raises(
        CheckpointError, match=r"has a corrupted safetensors header \(not valid JSON\); download the file again"
    ):
        GPT2.from_pretrained(good)


def test_a_header_that_is_not_an_object(tmp_path, good):
    rewrite_header(good / "model.safetensors", good / "model.safetensors", ["wte.weight"])
    with pytest.raises(CheckpointError, match=r"corrupted safetensors header \(not a JSON object\)"):
        GPT2.from_pretrained(good)


def test_an_absurd_header_length(good):
    path = good / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + path.read_bytes()[8:])
    with pytest.raises(CheckpointError, match=rf"it claims {2**62} header bytes"):
        GPT2.from_pretrained(good)


def _damage(good: Path, name: str, change) -> None:
    path = good / "model.safetensors"
    header, _ = header_of(path)
    change(header[name])
    rewrite_header(path, path, header)


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e["data_offsets"].__setitem__(1, e["data_offsets"][1] + 4),  # one float too many
        lambda e: e["data_offsets"].__setitem__(1, e["data_offsets"][1] - 4),  # one float too few
        lambda e: e.__setitem__("shape", [e["shape"][0] + 1]),
        lambda e: e.__setitem__("shape", [-8]),
        lambda e: e.__setitem__("data_offsets", [-32, 0]),
        # shapes whose element count overflows int64: np.prod wrapped [2**62, 2**62] to 0 elements,
        # [2**64] raised a raw OverflowError, and NumPy refuses [0, 2**62] (a ValueError) although it is empty
        lambda e: (e.__setitem__("shape", [2**62, 2**62]), e.__setitem__("data_offsets", [0, 0])),
        lambda e: e.__setitem__("shape", [2**64]),
        lambda e: (e.__setitem__("shape", [0, 2**62]), e.__setitem__("data_offsets", [0, 0])),
    ],
    ids=["end+4", "end-4", "shape+1", "negative shape", "negative begin", "2^124 wraps to 0", "2^64", "0 x 2^62"],
)
def test_offsets_that_disagree_with_shape_and_dtype(good, change):
    _damage(good, "transformer.ln_f.bias", change)
    with pytest.raises(
        CheckpointError,
        match=r"tensor 'transformer.ln_f.bias' claims shape .* of F32 in bytes .* which do not agree; the file is corrupted",
    ):
        GPT2.from_pretrained(good)


def test_tensors_whose_bytes_overlap_are_refused(good):
    """Issue 30: ln_2.weight given ln_1.weight's byte range loaded and ran, logits off by 0.16."""
    header, _ = header_of(good / "model.safetensors")
    header["transformer.h.0.ln_2.weight"]["data_offsets"] = header["transformer.h.0.ln_1.weight"]["data_offsets"]
    rewrite_header(good / "model.safetensors", good / "model.safetensors", header)
    with pytest.raises(CheckpointError, match=r"tensors 'transformer.h.0.ln_\d.weight' and 'transformer.h.0.ln_\d.weight' claim overlapping bytes"):  # fmt: skip
        GPT2.from_pretrained(good)


def test_offsets_past_the_end_of_the_file(good):
    _damage(good, "transformer.ln_f.bias", lambda e: e.__setitem__("data_offsets", [10**9, 10**9 + 32]))
    with pytest.raises(CheckpointError, match="is truncated: its header describes"):
        GPT2.from_pretrained(good)


@pytest.mark.parametrize(
    "entry",
    [
        5,
        "F32",
        [],
        {"shape": [8], "data_offsets": [0, 32]},
        {"dtype": "F32", "data_offsets": [0, 32]},
        {"dtype": "F32", "shape": [8]},
        {"dtype": "F32", "shape": "8", "data_offsets": [0, 32]},
        {"dtype": "F32", "shape": [8.0], "data_offsets": [0, 32]},
        {"dtype": "F32", "shape": [8], "data_offsets": [0, 32, 64]},
        {"dtype": "F32", "shape": [8], "data_offsets": ["0", "32"]},
        {"dtype": ["F32"], "shape": [8], "data_offsets": [0, 32]},
    ],
)
def test_a_malformed_header_entry(good, entry):
    path = good / "model.safetensors"
    header, _ = header_of(path)
    header["transformer.ln_f.bias"] = entry
    rewrite_header(path, path, header)
    with pytest.raises(CheckpointError, match=r"the header entry of tensor 'transformer.ln_f.bias' is malformed"):
        GPT2.from_pretrained(good)


@pytest.mark.parametrize("code", ["F8_E4M3", "C64", "float32", "U64"])
def test_an_unknown_dtype_is_named(good, code):
    _damage(good, "transformer.ln_f.bias", lambda e: e.__setitem__("dtype", code))
    with pytest.raises(
        CheckpointError, match=f"tensor 'transformer.ln_f.bias' has dtype '{code}', which gpt2np cannot read"
    ):
        GPT2.from_pretrained(good)


def test_float_bytes_labelled_as_integers_are_refused(tmp_path, tensors):
    path = model_folder(tmp_path / "m", tensors) / "model.safetensors"
    _damage(path.parent, "h.0.mlp.c_fc.weight", lambda e: e.__setitem__("dtype", "I32"))  # same size, wrong type
    with pytest.raises(
        CheckpointError,
        match="tensor 'h.0.mlp.c_fc.weight' is int32, not a floating-point type; the file is not usable",
    ):
        GPT2.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("dtype", ["int64", "int32", "int16", "uint8", "bool"])
def test_integer_weights_written_by_safetensors_are_refused(tmp_path, tensors, dtype):
    bad = {**tensors, "wpe.weight": np.ones(tensors["wpe.weight"].shape, dtype=dtype)}
    with pytest.raises(CheckpointError, match=f"tensor 'wpe.weight' is {dtype}, not a floating-point type"):
        GPT2.from_pretrained(model_folder(tmp_path / "m", bad))


@pytest.mark.parametrize(
    "name", ["wte.weight", "wpe.weight", "ln_f.bias", "h.1.attn.c_proj.weight", "h.0.mlp.c_fc.bias"]
)
def test_a_missing_tensor_is_named_with_its_shape(tmp_path, tensors, name):
    incomplete = {k: v for k, v in tensors.items() if k != name}
    shape = list(tensors[name].shape)
    with pytest.raises(
        CheckpointError,
        match=rf"has no tensor '{name}' \(expected shape {shape}\).*".replace("[", r"\[").replace("]", r"\]"),
    ):
        GPT2.from_pretrained(model_folder(tmp_path / "m", incomplete))


def test_an_untied_config_needs_lm_head(tmp_path, tensors):
    config = {**CONFIG.to_dict(), "tie_word_embeddings": False}
    with pytest.raises(CheckpointError, match="has no tensor 'lm_head.weight'"):
        GPT2.from_pretrained(model_folder(tmp_path / "m", tensors, config))
    lm_head = np.random.default_rng(1).standard_normal(tensors["wte.weight"].shape).astype(np.float32)
    model = GPT2.from_pretrained(model_folder(tmp_path / "ok", {**tensors, "lm_head.weight": lm_head}, config))
    assert model.weights.lm_head is not model.weights.wte


@pytest.mark.parametrize("name", ["ln_f.weight", "h.0.attn.c_attn.weight", "h.1.mlp.c_proj.bias"])
def test_a_tensor_of_the_wrong_shape_is_named(tmp_path, tensors, name):
    bad = {**tensors, name: np.zeros(tensors[name].shape[:-1] + (tensors[name].shape[-1] + 1,), dtype=np.float32)}
    with pytest.raises(
        CheckpointError,
        match=f"tensor '{name}' has shape .* but the config implies .*config.json and the weights do not match",
    ):
        GPT2.from_pretrained(model_folder(tmp_path / "m", bad))


def test_a_transposed_linear_layer_is_refused(tmp_path, tensors):
    """A torch nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out]."""
    bad = {**tensors, "h.0.mlp.c_fc.weight": np.ascontiguousarray(tensors["h.0.mlp.c_fc.weight"].T)}
    with pytest.raises(
        CheckpointError, match=r"'h.0.mlp.c_fc.weight' has shape \[32, 8\] but the config implies \[8, 32\]"
    ):
        GPT2.from_pretrained(model_folder(tmp_path / "m", bad))


# --- config.json that does not belong to the tensors -------------------------------------


@pytest.mark.parametrize(
    "field, value, phrase",
    [
        ("n_embd", 16, r"wte.weight is \[60, 8\] \(vocab 60, n_embd 8\) but config.json says vocab_size=60, n_embd=16"),
        (
            "vocab_size",
            50257,
            r"wte.weight is \[60, 8\] \(vocab 60, n_embd 8\) but config.json says vocab_size=50257, n_embd=8",
        ),
        ("vocab_size", 59, "config.json says vocab_size=59"),
        ("n_layer", 3, r"holds 2 blocks \(h.0 .. h.1\) but config.json says n_layer=3"),
        ("n_layer", 1, r"holds 2 blocks \(h.0 .. h.1\) but config.json says n_layer=1"),
    ],
)
def test_config_values_that_disagree_with_the_tensors(tmp_path, tensors, field, value, phrase):
    config = {**CONFIG.to_dict(), field: value}
    if field == "vocab_size":
        config["eos_token_id"] = value - 1  # an eos outside the vocabulary is refused first, by the config itself
    with pytest.raises(CheckpointError, match=phrase + ".*config.json does not belong to these weights"):
        GPT2.from_pretrained(model_folder(tmp_path / "m", tensors, config))


@pytest.mark.parametrize(
    "field, value, tensor",
    [("n_positions", 24, "wpe.weight"), ("n_inner", 40, "h.0.mlp.c_fc.weight")],
)
def test_config_sizes_the_tensors_contradict(tmp_path, tensors, field, value, tensor):
    config = {**CONFIG.to_dict(), field: value}
    with pytest.raises(CheckpointError, match=f"tensor '{tensor}' has shape .* but the config implies .*do not match"):
        GPT2.from_pretrained(model_folder(tmp_path / "m", tensors, config))


# --- model folders -----------------------------------------------------------------------


def test_a_folder_without_config_json(good):
    (good / "config.json").unlink()
    with pytest.raises(
        ModelNotFoundError, match=r"lacks config.json \(a model folder needs config.json \+ model.safetensors\)"
    ):
        GPT2.from_pretrained(good)


def test_a_folder_without_model_safetensors(good):
    (good / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="lacks model.safetensors"):
        GPT2.from_pretrained(good)


class _Payload:
    """Unpickling this creates a folder: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_folder_with_only_pytorch_model_bin_is_refused_unread(good, tmp_path):
    (good / "model.safetensors").unlink()
    marker = tmp_path / "the-pickle-ran"
    (good / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(
        CheckpointError, match="has only pytorch_model.bin, a pickle file. gpt2np never unpickles.*save_pretrained"
    ):
        GPT2.from_pretrained(good)
    assert not marker.exists()
    pickle.loads((good / "pytorch_model.bin").read_bytes())  # the premise: loading it would have run code
    assert marker.exists()


def test_a_path_that_is_not_a_folder(tmp_path, good):
    with pytest.raises(
        ModelNotFoundError,
        match="^no folder .*nowhere .*; give an existing model folder .* or a model name such as 'gpt2'",
    ):
        GPT2.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ModelNotFoundError, match="is a file, not a folder"):
        GPT2.from_pretrained(str(good / "model.safetensors"))
    with pytest.raises(ModelNotFoundError, match=r"^no folder \./surely-not-here;"):
        GPT2.from_pretrained("./surely-not-here")


def test_the_good_folder_loads_and_runs(good):
    """The control for everything above: the undamaged files load."""
    assert np.isfinite(GPT2.from_pretrained(good)(IDS).logits).all()


# --- non-finite weights ------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["wpe.weight", "h.1.attn.c_attn.bias", "ln_f.weight"])
def test_a_nan_or_inf_in_a_weight_is_refused_and_the_tensor_named(tmp_path, name, bad, monkeypatch):
    monkeypatch.setenv("GPT2NP_CACHE", str(tmp_path / "cache"))
    tensors = random_tensors(CONFIG, seed=0)
    tensors[name] = tensors[name].copy()
    index = (3, 5) if tensors[name].ndim == 2 else (5,)
    tensors[name][index] = bad
    folder = model_folder(tmp_path / "m", tensors)
    with pytest.raises(
        CheckpointError,
        match=rf"tensor '{re.escape(name)}' holds 1 non-finite value \(NaN or inf; the first is "
        rf"{re.escape(str(np.float32(bad)))} at index \[{', '.join(map(str, index))}\]\).*"
        r"download it again",
    ):
        GPT2.from_pretrained(folder)
    assert not (tmp_path / "cache" / "finite").exists() or not any(
        (tmp_path / "cache" / "finite").iterdir()
    )  # not remembered as good


def test_a_float64_value_too_large_for_float32_is_refused_as_float32_only(tmp_path, monkeypatch):
    """1e39 is finite in float64 and inf in float32: loading as float32 is what breaks it."""
    monkeypatch.setenv("GPT2NP_CACHE", str(tmp_path / "cache"))
    tensors = {k: v.astype(np.float64) for k, v in random_tensors(CONFIG, seed=0).items()}
    tensors["h.0.mlp.c_fc.weight"][0, 0] = 1e39
    folder = model_folder(tmp_path / "m", tensors)
    assert GPT2.from_pretrained(folder, dtype="float64").weights.h[0].mlp.c_fc.weight[0, 0] == 1e39
    with pytest.raises(
        CheckpointError, match=r"'h.0.mlp.c_fc.weight' holds 1 non-finite value \(NaN or inf; the first is inf"
    ):
        GPT2.from_pretrained(folder, dtype="float32")


def test_the_finite_check_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    """The check reads every weight: it runs once per version of the file (and dtype)."""
    import gpt2np.weights

    monkeypatch.setenv("GPT2NP_CACHE", str(tmp_path / "cache"))
    calls = []
    real = gpt2np.weights.check_finite
    monkeypatch.setattr(
        gpt2np.weights, "check_finite", lambda params, source: (calls.append(source), real(params, source))
    )
    tensors = random_tensors(CONFIG, seed=0)
    folder = model_folder(tmp_path / "m", tensors)
    GPT2.from_pretrained(folder)
    GPT2.from_pretrained(folder)
    assert len(calls) == 1
    GPT2.from_pretrained(folder, dtype="float64")  # another dtype: checked again (and remembered)
    GPT2.from_pretrained(folder, dtype="float64")
    assert len(calls) == 2
    # The file is replaced by one with a NaN (same size, later mtime): checked again, and refused.
    tensors["wte.weight"] = tensors["wte.weight"].copy()
    tensors["wte.weight"][7, 1] = np.nan
    path = folder / "model.safetensors"
    mtime = path.stat().st_mtime_ns
    save_checkpoint(path, tensors)
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
    with pytest.raises(CheckpointError, match="'wte.weight' holds 1 non-finite value"):
        GPT2.from_pretrained(folder)
    assert len(calls) == 3


# A checkpoint larger than the content sample's first MiB (wte alone is 3.2 MB), so that a byte
# between the sampled blocks exists.
BIG = GPT2Config(vocab_size=50000, n_positions=12, n_embd=16, n_layer=1, n_head=2, eos_token_id=0, bos_token_id=0)


def unsampled_wte_index(path: Path) -> tuple[int, int, int]:
    """(row, column, byte offset in the file) of a wte value that content_sample does not read."""
    header, data_start, size = read_header(path)
    begin = data_start + header["wte.weight"]["data_offsets"][0]
    blocks = checkpoint.sample_offsets(size)
    for offset in range(checkpoint.SAMPLE_HEAD + 4096, size, 4):
        if offset >= begin and all(not (b - 4 < offset < b + checkpoint.SAMPLE_BLOCK) for b in blocks):
            row, col = divmod((offset - begin) // 4, BIG.n_embd)
            if row < BIG.vocab_size:
                return row, col, offset
    raise AssertionError("no unsampled wte value")


def test_a_nan_written_with_the_mtime_put_back_is_found(tmp_path, monkeypatch):
    """cp -p, rsync -t and tar put the old mtime back after writing (here: os.utime). The stamp
    of the finite check, once keyed by path, size and mtime, then still matched: the NaN loaded
    and every logit was NaN. The ctime changes all the same (no one can set it), so the check
    runs again. The NaN is placed where the content sample does not look: only ctime shows it."""
    monkeypatch.setenv("GPT2NP_CACHE", str(tmp_path / "cache"))
    folder = model_folder(tmp_path / "m", random_tensors(BIG, seed=0), BIG)
    path = folder / "model.safetensors"
    assert np.isfinite(GPT2.from_pretrained(folder)([[1, 2, 3]]).logits).all()  # checked and remembered
    before = path.stat()
    row, col, offset = unsampled_wte_index(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.float32(np.nan).tobytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with pytest.raises(
        CheckpointError,
        match=rf"'wte.weight' holds 1 non-finite value \(NaN or inf; the first is nan at index \[{row}, {col}\]",
    ):
        GPT2.from_pretrained(folder)


def test_the_stamp_samples_the_content_where_the_times_say_nothing(tmp_path, monkeypatch):
    """On a filesystem that keeps no ctime, a change of the header or of a sampled block is still
    seen: the stamp holds a hash of a sample of the content. (os.stat is frozen to play that part.)"""
    monkeypatch.setenv("GPT2NP_CACHE", str(tmp_path / "cache"))
    path = model_folder(tmp_path / "m", random_tensors(BIG, seed=0), BIG) / "model.safetensors"
    checkpoint.remember(path, "finite", "finite as float32")
    assert checkpoint.is_remembered(path, "finite", "finite as float32")
    frozen, real_stat = os.stat(path), os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **kw: frozen if str(p) == str(path) else real_stat(p, *a, **kw))
    _, data_start, _ = read_header(path)
    with open(path, "r+b") as f:  # a weight inside the first MiB becomes NaN
        f.seek(data_start + 64)
        f.write(np.float32(np.nan).tobytes())
    assert os.stat(path) == frozen  # the times say nothing
    assert not checkpoint.is_remembered(path, "finite", "finite as float32")


def test_the_content_sample_reads_a_fixed_amount_and_follows_the_content(tmp_path):
    path = model_folder(tmp_path / "m", random_tensors(BIG, seed=0), BIG) / "model.safetensors"
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(path.read_bytes())
    assert checkpoint.content_sample(copy) == checkpoint.content_sample(path)  # content, not path or times
    header, _, size = read_header(path)
    assert size > 3 * checkpoint.SAMPLE_HEAD
    assert checkpoint.sample_offsets(size)[-1] == size - checkpoint.SAMPLE_BLOCK  # the last block ends the file
    for offset in (20, size - 1, checkpoint.sample_offsets(size)[30] + 100):  # the header, the end, a block between
        changed = bytearray(path.read_bytes())
        changed[offset] ^= 1
        copy.write_bytes(bytes(changed))
        assert checkpoint.content_sample(copy) != checkpoint.content_sample(path), offset


def test_an_unwritable_cache_only_costs_a_second_check(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("GPT2NP_CACHE", str(tmp_path / "a-file"))
    folder = model_folder(tmp_path / "m", random_tensors(CONFIG, seed=0))
    assert np.isfinite(GPT2.from_pretrained(folder)(IDS).logits).all()
    assert np.isfinite(GPT2.from_pretrained(folder)(IDS).logits).all()
