"""The overwrite rule (gpt2np/tools/overwrite.py), command by command: no command writes over a
file of the loaded model, over a file or folder it did not make, or through a symlink, unless
given --overwrite (issue 30: `score --out M/model.safetensors` replaced the weights by JSON lines)."""

from __future__ import annotations

import shutil

import pytest
from test_hub import fake_hub, model_files  # noqa: F401  fake_hub: a fixture

from gpt2np.tools.cli import main

SMALL = ["--n-layer", "1", "--n-head", "1", "--n-embd", "8", "--n-positions", "8", "--vocab-size", "10"]


@pytest.fixture
def model(tmp_path, model_dir):
    """A copy of the tiny test model, which a test may try to overwrite."""
    folder = tmp_path / "M"
    shutil.copytree(model_dir("tiny"), folder)
    return folder


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpt2np"), err
    return err


def snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def score(model, tokenizer_dir, src, out, *flags) -> int:
    return main(["score", "--model", str(model), "--tokenizer", str(tokenizer_dir), "--no-progress",
                 "--file", str(src), "--out", str(out), *flags])  # fmt: skip


def trace(model, tokenizer_dir, out, *flags) -> int:
    return main(["trace", "My dog is", "--model", str(model), "--tokenizer", str(tokenizer_dir), "--out", str(out), *flags])  # fmt: skip


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "recipe.txt"])
def test_score_never_writes_over_the_models_own_files(tmp_path, model, tokenizer_dir, capsys, name):
    src = tmp_path / "one.txt"
    src.write_text("My dog is cute\n")
    before = snapshot(model)
    assert score(model, tokenizer_dir, src, model / name) == 1
    err = one_line_error(capsys)
    assert f"it is {name} of the model being used" in err and "--overwrite" in err, err
    assert snapshot(model) == before


def test_an_output_of_ours_beside_the_model_is_no_model_file(tmp_path, model, tokenizer_dir, capsys):
    """Only the model's own files are protected: a score output kept in the model's folder is
    replaced by the next run like any output of ours; the user's own file there is not."""
    src = tmp_path / "one.txt"
    src.write_text("My dog is cute\n")
    assert score(model, tokenizer_dir, src, model / "scores.jsonl") == 0
    assert score(model, tokenizer_dir, src, model / "scores.jsonl") == 0
    (model / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert score(model, tokenizer_dir, src, model / "notes.txt") == 1
    assert "already exists and is not the output of" in one_line_error(capsys)


def test_trace_never_writes_over_the_models_weights(tmp_path, model, tokenizer_dir, capsys):
    before = snapshot(model)
    assert trace(model, tokenizer_dir, model / "model.safetensors") == 1
    assert "it is model.safetensors of the model being used" in one_line_error(capsys)
    assert snapshot(model) == before
    # With consent it is done, and safely: written beside, then renamed over (never truncated in place).
    assert trace(model, tokenizer_dir, model / "model.safetensors", "--overwrite") == 0
    assert snapshot(model)["model.safetensors"] != before["model.safetensors"]


def test_a_file_the_command_did_not_write_is_replaced_only_with_overwrite(tmp_path, model, tokenizer_dir, capsys):
    src = tmp_path / "one.txt"
    src.write_text("My dog is cute\n")
    theirs = tmp_path / "notes.jsonl"
    theirs.write_text("the user's own notes\n")
    assert score(model, tokenizer_dir, src, theirs) == 1
    assert "already exists and is not the output of a `gpt2np score --file` run" in one_line_error(capsys)
    assert theirs.read_text() == "the user's own notes\n"
    # a finished output of ours is replaced, as before (OUT.part renamed over it at the end)
    ours = tmp_path / "ours.jsonl"
    assert score(model, tokenizer_dir, src, ours) == 0
    assert score(model, tokenizer_dir, src, ours) == 0
    capsys.readouterr()
    # a trace: another program's .safetensors file is not a trace
    other = tmp_path / "weights.safetensors"
    shutil.copy(model / "model.safetensors", other)
    assert trace(model, tokenizer_dir, other) == 1
    assert "is not a trace gpt2np wrote" in one_line_error(capsys)
    assert trace(model, tokenizer_dir, tmp_path / "t.safetensors") == 0
    assert trace(model, tokenizer_dir, tmp_path / "t.safetensors") == 0  # our own trace: replaced
    capsys.readouterr()
    assert score(model, tokenizer_dir, src, theirs, "--overwrite") == 0
    assert '"line": 1' in theirs.read_text()


def test_a_symlinked_out_is_written_through_only_with_overwrite(tmp_path, model, tokenizer_dir, capsys):
    src = tmp_path / "one.txt"
    src.write_text("My dog is cute\n")
    target = tmp_path / "target.jsonl"
    target.write_text("precious\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert score(model, tokenizer_dir, src, link) == 1
    assert f"--out {link} is a symlink to {target}: writing would replace that file" in one_line_error(capsys)
    assert link.is_symlink() and target.read_text() == "precious\n"
    assert score(model, tokenizer_dir, src, link, "--overwrite") == 0
    assert link.is_symlink() and '"line": 1' in target.read_text()  # the link kept, its target written
    capsys.readouterr()
    # a link to the model's weights is the model's weights
    weights = tmp_path / "w.safetensors"
    weights.symlink_to(model / "model.safetensors")
    assert trace(model, tokenizer_dir, weights) == 1
    assert "a symlink to" in one_line_error(capsys)


def test_a_link_to_a_stream_is_written_to_as_it_is(tmp_path, model, tokenizer_dir):
    """/dev/stdout is a symlink (to /proc/self/fd/1, a pipe here): a stream, not a file to protect."""
    import subprocess
    import sys

    src = tmp_path / "one.txt"
    src.write_text("My dog is cute\n")
    result = subprocess.run(
        [sys.executable, "-m", "gpt2np", "score", "--model", str(model), "--tokenizer", str(tokenizer_dir),
         "--file", str(src), "--out", "/dev/stdout", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('{"line": 1, "n_tokens": 4')


def test_random_model_writes_only_into_an_empty_or_new_folder(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "own config"}')
    assert main(["random-model", str(mine), *SMALL]) == 1
    assert f"OUT {mine} is not empty (config.json): give an empty or new folder" in one_line_error(capsys)
    assert (mine / "config.json").read_text() == '{"my": "own config"}'
    assert main(["random-model", str(mine), *SMALL, "--overwrite"]) == 0
    assert (mine / "model.safetensors").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["random-model", str(empty), *SMALL]) == 0
    capsys.readouterr()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    assert main(["random-model", str(link), *SMALL]) == 1
    assert "is a symlink to" in one_line_error(capsys)


def test_random_model_into_an_empty_name_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["random-model", "", *SMALL])
    assert e.value.code == 2 and "'' names no path" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_download_writes_only_into_a_new_folder_or_an_earlier_download(tmp_path, fake_hub, capsys):  # noqa: F811
    fake_hub({"acme/tiny": model_files(tmp_path)})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "own config"}')
    assert main(["download", "acme/tiny", "--dest", str(mine)]) == 1
    assert f"--dest {mine} is not empty (config.json), and holds more than an earlier download" in one_line_error(
        capsys
    )
    assert (mine / "config.json").read_text() == '{"my": "own config"}'
    dest = tmp_path / "dest"
    assert main(["download", "acme/tiny", "--dest", str(dest)]) == 0
    assert main(["download", "acme/tiny", "--dest", str(dest)]) == 0  # again: its own earlier download
    assert main(["download", "acme/tiny", "--dest", str(mine), "--overwrite"]) == 0
    assert (mine / "config.json").read_bytes() == (dest / "config.json").read_bytes()
