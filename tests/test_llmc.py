"""llm.c's files, written by `gpt2np llmc export` and read back by a reader written here from
llm.c's published layout (train_gpt2.py's write_model / write_state / write_tokenizer, and the
parameter sizes of train_gpt2.c's fill_in_parameter_sizes), not from gpt2np/llmc.py: a mistake
shared by our writer and our reader cannot hide. And the other way: an llm.c model file loads as
a GPT2, with our errors for a bad magic, version or size.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import build_model

from gpt2np import GPT2, CheckpointError, InputError, Tokenizer, plain_backward
from gpt2np.tools.cli import main

# --- llm.c's layout, written out from its sources --------------------------------------------


def read_header(f) -> tuple[int, ...]:
    return struct.unpack("<256i", f.read(1024))


def llmc_sizes(maxT: int, Vp: int, L: int, C: int) -> list[tuple[str, tuple[int, ...]]]:
    """train_gpt2.c's ParameterTensors, in order, with their shapes (nn.Linear: [out, in])."""
    return [
        ("wte", (Vp, C)), ("wpe", (maxT, C)), ("ln1w", (L, C)), ("ln1b", (L, C)), ("qkvw", (L, 3 * C, C)),
        ("qkvb", (L, 3 * C)), ("attprojw", (L, C, C)), ("attprojb", (L, C)), ("ln2w", (L, C)), ("ln2b", (L, C)),
        ("fcw", (L, 4 * C, C)), ("fcb", (L, 4 * C)), ("fcprojw", (L, C, 4 * C)), ("fcprojb", (L, C)),
        ("lnfw", (C,)), ("lnfb", (C,)),
    ]  # fmt: skip


def read_tensors(f, sizes) -> dict[str, np.ndarray]:
    out = {}
    for name, shape in sizes:
        n = int(np.prod(shape))
        out[name] = np.frombuffer(f.read(4 * n), dtype="<f4").reshape(shape)
    return out


def as_llmc(tensors: dict[str, np.ndarray], L: int) -> dict[str, np.ndarray]:
    """transformers-named arrays (Conv1D [in, out]) -> llm.c's names, stacked and transposed."""
    stack = lambda kind, t=False: np.stack(
        [tensors[f"transformer.h.{i}.{kind}"].T if t else tensors[f"transformer.h.{i}.{kind}"] for i in range(L)]
    )
    return {
        "wte": tensors["transformer.wte.weight"], "wpe": tensors["transformer.wpe.weight"],
        "ln1w": stack("ln_1.weight"), "ln1b": stack("ln_1.bias"), "qkvw": stack("attn.c_attn.weight", True),
        "qkvb": stack("attn.c_attn.bias"), "attprojw": stack("attn.c_proj.weight", True), "attprojb": stack("attn.c_proj.bias"),
        "ln2w": stack("ln_2.weight"), "ln2b": stack("ln_2.bias"), "fcw": stack("mlp.c_fc.weight", True),
        "fcb": stack("mlp.c_fc.bias"), "fcprojw": stack("mlp.c_proj.weight", True), "fcprojb": stack("mlp.c_proj.bias"),
        "lnfw": tensors["transformer.ln_f.weight"], "lnfb": tensors["transformer.ln_f.bias"],
    }  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny model exported with a debug state of B=2, T=8 from a text, and a token file."""
    out = tmp_path_factory.mktemp("llmc")
    text = out / "story.txt"
    text.write_text("It will rain in the morning, and the rain will fall on the hills all day long. " * 3)
    folder = build_model("tiny")
    assert main(["llmc", "export", str(out / "files"), "--model", str(folder), "--debug-state", "--batch-size", "2",
          "--seq-len", "8", "--text", str(text), "--tokens", str(text)]) == 0  # fmt: skip
    return out / "files", folder, text


def test_the_model_file_is_llmcs_layout(exported):
    files, folder, _ = exported
    m = GPT2.from_pretrained(folder)
    cfg = m.config
    with open(files / "gpt2_124M.bin", "rb") as f:
        h = read_header(f)
        assert h[:8] == (20240326, 3, cfg.n_positions, cfg.vocab_size, cfg.n_layer, cfg.n_head, cfg.n_embd, 50304)
        assert not any(h[8:])
        params = read_tensors(f, llmc_sizes(cfg.n_positions, 50304, cfg.n_layer, cfg.n_embd))
        assert f.read() == b""  # nothing after the last tensor
    _, grads = plain_backward.loss_and_grads(m.weights, m.config, [[1, 2]])  # only for the names
    from gpt2np.weights import named_parameters

    want = as_llmc(named_parameters(m.weights), cfg.n_layer)
    assert set(grads) == set(named_parameters(m.weights))
    for name, a in params.items():
        if name == "wte":
            np.testing.assert_array_equal(a[: cfg.vocab_size], want["wte"])
            assert not a[cfg.vocab_size :].any()  # the padding rows are zeros
        else:
            np.testing.assert_array_equal(a, want[name], err_msg=name)


def test_the_debug_state_is_llmcs_layout_and_our_gradients(exported):
    """x, y, logits, loss and every gradient, read as test_gpt2.c reads them, against the plain
    page in float64 (the loss over every position of x predicting y: x plus y's last token as one
    sequence, so position t predicts y[t]) to float32's rounding."""
    files, folder, text = exported
    m = GPT2.from_pretrained(folder)
    m64 = GPT2.from_pretrained(folder, dtype="float64")
    cfg, V, L, C = m.config, m.config.vocab_size, m.config.n_layer, m.config.n_embd
    with open(files / "gpt2_124M_debug_state.bin", "rb") as f:
        h = read_header(f)
        assert h[:4] == (20240327, 2, 2, 8) and not any(h[4:])
        x = np.frombuffer(f.read(4 * 16), "<i4").reshape(2, 8)
        y = np.frombuffer(f.read(4 * 16), "<i4").reshape(2, 8)
        logits = np.frombuffer(f.read(4 * 16 * V), "<f4").reshape(2, 8, V)
        (loss,) = struct.unpack("<f", f.read(4))
        grads = read_tensors(f, llmc_sizes(cfg.n_positions, 50304, L, C))
        assert f.read() == b""
    tok = Tokenizer.from_pretrained("gpt2")
    tokens = [tok.eos_token_id, *tok.encode(text.read_text())][:17]  # <|endoftext|> first, as llm.c's data
    np.testing.assert_array_equal(x.reshape(-1), tokens[:16])
    np.testing.assert_array_equal(y.reshape(-1), tokens[1:17])
    np.testing.assert_array_equal(logits, m(x.astype(np.int64)).logits)
    ids = np.concatenate([x, y[:, -1:]], axis=1).astype(np.int64)  # [2, 9]: position t predicts y[t]
    want_loss, want = plain_backward.loss_and_grads(m64.weights, cfg, ids, labels=ids)
    assert abs(loss - want_loss) <= 1e-6 * want_loss
    from gpt2np.llmc import padded_vocab

    want = as_llmc(want, L)
    want["wte"] = np.concatenate([want["wte"], np.zeros((padded_vocab(V) - V, C))])
    for name, g in grads.items():
        error = np.abs(g - want[name]).max() / np.abs(want[name]).max()
        assert error <= 1e-5, f"{name}: {error:.1e}"


def test_the_tokenizer_and_token_files(exported):
    files, _, text = exported
    tok = Tokenizer.from_pretrained("gpt2")
    with open(files / "gpt2_tokenizer.bin", "rb") as f:
        h = read_header(f)
        assert h[:4] == (20240328, 2, 50257, 50256) and not any(h[4:])
        pieces = []
        for _ in range(50257):
            (n,) = f.read(1)
            pieces.append(f.read(n))
        assert f.read() == b""
    assert pieces[0] == b"!" and pieces[262] == b" the" and pieces[50256] == b"<|endoftext|>"
    assert b"".join(pieces[i] for i in tok.encode("Héllo wörld")) == "Héllo wörld".encode()
    with open(files / "story.bin", "rb") as f:
        h = read_header(f)
        tokens = np.frombuffer(f.read(), "<u2")
    want = [tok.eos_token_id, *tok.encode(text.read_text())]
    assert h[:3] == (20240520, 1, len(want)) and not any(h[3:])
    np.testing.assert_array_equal(tokens, want)


def test_an_llmc_model_file_loads_as_a_gpt2_and_imports_as_a_folder(exported, tmp_path):
    files, folder, _ = exported
    ours = GPT2.from_pretrained(folder)
    ids = np.array([[5, 6, 7, 8, 9]])
    theirs = GPT2.from_pretrained(files / "gpt2_124M.bin")
    np.testing.assert_array_equal(theirs(ids).logits, ours(ids).logits)
    assert main(["llmc", "import", str(files / "gpt2_124M.bin"), str(tmp_path / "back")]) == 0
    np.testing.assert_array_equal(GPT2.from_pretrained(tmp_path / "back")(ids).logits, ours(ids).logits)


def test_a_bfloat16_model_file_loads(exported, tmp_path):
    """Version 5: every value as bfloat16, the top 16 bits of its float32."""
    files, folder, _ = exported
    data = (files / "gpt2_124M.bin").read_bytes()
    values = np.frombuffer(data[1024:], "<u4")
    header = np.frombuffer(data[:1024], "<i4").copy()
    header[1] = 5
    path = tmp_path / "bf16.bin"
    path.write_bytes(header.tobytes() + (values >> 16).astype("<u2").tobytes())
    m = GPT2.from_pretrained(path)
    truncated = (GPT2.from_pretrained(folder).weights.wte.view(np.uint32) & 0xFFFF0000).view(np.float32)
    np.testing.assert_array_equal(m.weights.wte, truncated)


def corrupt(files: Path, tmp_path: Path, index: int, value: int, cut: int = 0) -> Path:
    data = bytearray((files / "gpt2_124M.bin").read_bytes())
    data[4 * index : 4 * index + 4] = struct.pack("<i", value)
    path = tmp_path / "bad.bin"
    path.write_bytes(bytes(data[: len(data) - cut]))
    return path


def test_bad_model_files_are_our_errors(exported, tmp_path):
    files, _, _ = exported
    with pytest.raises(CheckpointError, match="magic number 20240327"):
        GPT2.from_pretrained(files / "gpt2_124M_debug_state.bin")
    with pytest.raises(CheckpointError, match="version 2"):
        GPT2.from_pretrained(corrupt(files, tmp_path, 1, 2))
    with pytest.raises(CheckpointError, match="truncated"):
        GPT2.from_pretrained(corrupt(files, tmp_path, 1, 3, cut=4))
    with pytest.raises(CheckpointError, match="impossible header"):
        GPT2.from_pretrained(corrupt(files, tmp_path, 7, 100))  # a padded vocabulary below the vocabulary
    (tmp_path / "short.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="shorter than"):
        GPT2.from_pretrained(tmp_path / "short.bin")


def test_a_model_llmc_cannot_run_is_refused_before_any_file(tmp_path, capsys):
    assert main(["llmc", "export", str(tmp_path / "out"), "--model", str(build_model("odd"))]) != 0
    assert "llm.c cannot run this model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    from gpt2np.llmc import check_exportable

    with pytest.raises(InputError, match="untied"):
        check_exportable(GPT2.from_pretrained(build_model("odd")).config)


def test_a_small_vocabulary_round_trips(tmp_path):
    """vocab 100: padded to 128, no tokenizer file (GPT-2's does not fit), eos read back as the last id."""
    from gpt2np import GPT2Config
    from gpt2np.tools.random_model import make_random_checkpoint

    config = GPT2Config(vocab_size=100, n_positions=16, n_embd=8, n_layer=2, n_head=2, bos_token_id=99, eos_token_id=99)
    folder = make_random_checkpoint(tmp_path / "small", config, seed=5)
    assert (
        main(["llmc", "export", str(tmp_path / "out"), "--model", str(folder), "--debug-state", "--seq-len", "8"]) == 0
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpt2_124M.bin", "gpt2_124M_debug_state.bin"]
    with open(tmp_path / "out" / "gpt2_124M.bin", "rb") as f:
        assert read_header(f)[:8] == (20240326, 3, 16, 100, 2, 2, 8, 128)
    back = GPT2.from_pretrained(tmp_path / "out" / "gpt2_124M.bin")
    assert back.config.eos_token_id == 99
    ids = np.array([[1, 2, 3, 4]])
    np.testing.assert_array_equal(back(ids).logits, GPT2.from_pretrained(folder)(ids).logits)


def test_export_and_import_follow_the_overwrite_rule(exported, tmp_path, capsys):
    """docs/errors.md's overwrite rule: a folder of other files, or the model's own file, needs
    --overwrite (and the file being read is never written); an earlier export is replaced."""
    files, folder, _ = exported
    out = tmp_path / "out"
    assert main(["llmc", "export", str(out), "--model", str(folder)]) == 0
    assert main(["llmc", "export", str(out), "--model", str(folder)]) == 0  # an earlier export: replaced
    (out / "notes.txt").write_text("mine")
    assert main(["llmc", "export", str(out), "--model", str(folder)]) == 1
    assert "is not empty (gpt2_124M.bin, gpt2_tokenizer.bin, notes.txt), and not only llm.c's .bin files" in (
        capsys.readouterr().err
    )
    assert (out / "notes.txt").read_text() == "mine"
    back = tmp_path / "back"  # an llm.c model file exported into its own folder would overwrite itself
    back.mkdir()
    (back / "gpt2_124M.bin").write_bytes((files / "gpt2_124M.bin").read_bytes())
    before = (back / "gpt2_124M.bin").read_bytes()
    assert main(["llmc", "export", str(back), "--model", str(back / "gpt2_124M.bin")]) == 1
    assert "gpt2_124M.bin of the model being used" in capsys.readouterr().err
    assert (back / "gpt2_124M.bin").read_bytes() == before
    imported = tmp_path / "imported"
    imported.mkdir()
    (imported / "keep.txt").write_text("mine")
    assert main(["llmc", "import", str(files / "gpt2_124M.bin"), str(imported)]) == 1
    assert "is not empty (keep.txt)" in capsys.readouterr().err
    assert main(["llmc", "import", str(files / "gpt2_124M.bin"), str(imported), "--overwrite"]) == 0
    assert (imported / "keep.txt").read_text() == "mine" and (imported / "model.safetensors").exists()
    link = tmp_path / "link"
    link.mkdir()
    (link / "model.safetensors").symlink_to(files / "gpt2_124M.bin")  # the file being read, under another name
    assert main(["llmc", "import", str(files / "gpt2_124M.bin"), str(link), "--overwrite"]) == 1
    assert (files / "gpt2_124M.bin").read_bytes()[:4] == (20240326).to_bytes(4, "little")
