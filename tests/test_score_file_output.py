"""The output of `gpt2np score --file` (gpt2np/tools/score_file.py): nothing lost and nothing
silently wrong. An --out that is the input, or a bad option, never costs a byte of an existing
file; a second run on the same --out refuses (OUT.lock); --resume continues only its own job (the
sidecar OUT.meta.json: the same settings, the same input lines, the same records) and gives the
bytes of an uninterrupted run, after Ctrl-C, kill -9, a full disk or a grown input."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from test_score_file import part, read_jsonl, run, texts

from gpt2np import InputError
from gpt2np.tools import score_file


def corpus_file(tmp_path, n: int, seed: int, name: str = "corpus.txt"):
    src = tmp_path / name
    src.write_text("\n".join(texts(n, seed)) + "\n")
    return src


def leftovers(out) -> list[str]:
    """The files a run leaves next to OUT besides OUT itself and its sidecar."""
    return sorted(
        p.name for p in out.parent.iterdir() if p.name.startswith(out.name + ".") and p.name != out.name + ".meta.json"
    )


# --- item 1: an --out that is the input -------------------------------------------------------


def test_an_out_that_is_the_input_is_refused_and_the_input_untouched(tmp_path, short_context, tokenizer_dir, capsys):
    """`--file in.txt --out in.txt` exited 0, "scored 0 lines", and emptied in.txt; so did a
    symlink to it. The same file is found by device and inode, whatever its names."""
    src = corpus_file(tmp_path, 5, seed=0)
    before = src.read_bytes()
    (tmp_path / "link.txt").symlink_to(src)
    os.link(src, tmp_path / "hard.txt")
    for out in (src, tmp_path / "link.txt", tmp_path / "hard.txt"):
        for extra in ([], ["--resume"]):
            assert run(["--file", str(src), "--out", str(out), *extra], short_context, tokenizer_dir) == 1
            err = capsys.readouterr().err
            assert f"--out {out} would overwrite the input" in err and "give another --out" in err
    assert run(["--file", str(tmp_path / "link.txt"), "--out", str(src)], short_context, tokenizer_dir) == 1
    assert "would overwrite the input" in capsys.readouterr().err
    assert src.read_bytes() == before and leftovers(src) == []


def test_stdin_that_is_the_out_is_refused(tmp_path, short_context, tokenizer_dir, capsys, monkeypatch):
    src = corpus_file(tmp_path, 3, seed=1)
    before = src.read_bytes()
    with open(src, "rb") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        assert run(["--file", "-", "--out", str(src)], short_context, tokenizer_dir) == 1
    assert "is the same file as stdin" in capsys.readouterr().err and src.read_bytes() == before


# --- item 2: bad options are refused before any output is opened -------------------------------


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--stride", "0"], "--stride must be a whole number of tokens >= 1, got 0"),
        (["--stride", "-4"], "--stride must be a whole number of tokens >= 1"),
        (["--stride", "100"], "--stride must be a whole number from 1 to n_positions - 1 = 31, got 100"),
        (["--stride", "32"], "--stride must be a whole number from 1 to n_positions - 1 = 31"),
        (["--batch-size", "0"], "--batch-size must be a positive whole number, got 0"),
        (["--max-tokens", "-1"], "--max-tokens must be a positive whole number, got -1"),
        (["--text-field", ""], '--text-field "" names no field'),
    ],
)
def test_a_bad_option_never_touches_an_existing_out(tmp_path, short_context, tokenizer_dir, capsys, flags, said):
    """`--out prev.jsonl --stride 0` exited 1 with prev.jsonl emptied (50206 -> 0 bytes). (With
    --overwrite: even a run allowed to replace it refuses a bad option before touching it.)"""
    src, out = corpus_file(tmp_path, 5, seed=2), tmp_path / "prev.jsonl"
    out.write_text('{"line": 1, "precious": true}\n')
    assert run(["--file", str(src), "--out", str(out), "--overwrite", *flags], short_context, tokenizer_dir) == 1
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1, err
    assert out.read_text() == '{"line": 1, "precious": true}\n' and leftovers(out) == []


def test_bad_out_paths(tmp_path, short_context, tokenizer_dir, capsys):
    src = corpus_file(tmp_path, 2, seed=3)
    assert run(["--file", str(src), "--out", str(tmp_path)], short_context, tokenizer_dir) == 1
    assert "is a folder; give the name of the file to write" in capsys.readouterr().err
    assert run(["--file", str(src), "--out", str(tmp_path / "no" / "x.jsonl")], short_context, tokenizer_dir) == 1
    assert f"there is no folder {tmp_path / 'no'}" in capsys.readouterr().err
    assert run(["--file", str(tmp_path), "--out", str(tmp_path / "x.jsonl")], short_context, tokenizer_dir) == 1
    assert "is a folder; give a file" in capsys.readouterr().err


def test_an_existing_out_is_replaced_only_when_the_run_is_done(tmp_path, short_context, tokenizer_dir, monkeypatch):
    """The records go to OUT.part; OUT is replaced by it, in one rename, at the end. A run that
    stops short leaves the previous OUT as it was. (--overwrite: that OUT is no output of ours.)"""
    src, out = corpus_file(tmp_path, 40, seed=4), tmp_path / "out.jsonl"
    out.write_text("the previous run's records\n")
    monkeypatch.setattr(score_file, "CHUNK_BATCHES", 2)  # chunks of 16 lines (batch size 8)
    real = score_file.score_texts
    calls = []

    def stop_in_the_second_chunk(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(score_file, "score_texts", stop_in_the_second_chunk)
    assert run(["--file", str(src), "--out", str(out), "--overwrite"], short_context, tokenizer_dir) == 130
    assert out.read_text() == "the previous run's records\n"
    assert [r["line"] for r in read_jsonl(part(out))] == list(range(1, 17))
    monkeypatch.setattr(score_file, "score_texts", real)
    assert run(["--file", str(src), "--out", str(out), "--resume"], short_context, tokenizer_dir) == 0
    assert [r["line"] for r in read_jsonl(out)] == list(range(1, 41)) and leftovers(out) == []


def test_a_run_without_resume_never_throws_an_interrupted_one_away(tmp_path, short_context, tokenizer_dir, capsys, monkeypatch):  # fmt: skip
    src, out = corpus_file(tmp_path, 30, seed=5), tmp_path / "out.jsonl"
    monkeypatch.setattr(score_file, "CHUNK_BATCHES", 1)
    monkeypatch.setattr(score_file, "score_texts", lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt))
    assert run(["--file", str(src), "--out", str(out)], short_context, tokenizer_dir) == 130
    err = capsys.readouterr().err
    assert f"0 lines are done and kept in {part(out)}; the same command with --resume continues from line 1" in err
    part(out).write_text('{"line": 1, "pretend": "hours of work"}\n')
    assert run(["--file", str(src), "--out", str(out)], short_context, tokenizer_dir) == 1
    assert f"{part(out)} holds the records of an interrupted run: continue it with --resume" in capsys.readouterr().err
    assert part(out).read_text() == '{"line": 1, "pretend": "hours of work"}\n'


# --- item 3: one writer per --out ---------------------------------------------------------------


def test_a_second_run_on_the_same_out_refuses(tmp_path, short_context, tokenizer_dir, capsys):
    """Two --resume runs on one --out both exited 0 and left 336 duplicate lines."""
    src, out = corpus_file(tmp_path, 5, seed=6), tmp_path / "out.jsonl"
    with score_file.output_lock(str(out)):  # another run holds it (flock: per open file, even in one process)
        for extra in ([], ["--resume"]):
            assert run(["--file", str(src), "--out", str(out), *extra], short_context, tokenizer_dir) == 1
            err = capsys.readouterr().err
            assert f"another `gpt2np score --file` is writing {out} (it holds {out}.lock)" in err
        assert not out.exists() and not part(out).exists()
    assert not (tmp_path / "out.jsonl.lock").exists()  # released and removed
    assert run(["--file", str(src), "--out", str(out)], short_context, tokenizer_dir) == 0


def test_the_lock_is_the_file_the_name_names(tmp_path, monkeypatch):
    """A run that finishes removes OUT.lock. A run that opened the old file just before, and
    locks it just after, holds a lock no one else sees: it must lock the file the name names."""
    out, lock = tmp_path / "out.jsonl", tmp_path / "out.jsonl.lock"
    real_flock, calls = score_file.fcntl.flock, []

    def finished_in_between(fd, operation):
        calls.append(fd)
        if len(calls) == 1:  # between our open and our flock: the file is removed, and a new one made
            os.unlink(lock)
            lock.write_text("")
        return real_flock(fd, operation)

    monkeypatch.setattr(score_file.fcntl, "flock", finished_in_between)
    with score_file.output_lock(str(out)):
        assert len(calls) == 2  # locked again: the file the name names now
        monkeypatch.setattr(score_file.fcntl, "flock", real_flock)
        with (
            pytest.raises(InputError, match="another `gpt2np score --file` is writing"),
            score_file.output_lock(str(out)),
        ):
            pass


def test_two_processes_on_one_out(tmp_path, short_context, tokenizer_dir):
    """The refusal across processes, as the issue met it: a second command while the first runs."""
    src, out = corpus_file(tmp_path, 40, seed=7), tmp_path / "out.jsonl"
    first = start_half_fed(src, 20, out, short_context, tokenizer_dir, "--batch-size", "1")  # chunks of 16 lines
    try:
        wait_for_lines_done(out, 16, first)
        second = subprocess.run(command(src, out, short_context, tokenizer_dir), capture_output=True, text=True, env=ENV, timeout=120)  # fmt: skip
        assert second.returncode == 1 and f"another `gpt2np score --file` is writing {out}" in second.stderr
    finally:
        first.kill()
        first.wait()
        first.stdin.close()
        first.stderr.close()


# --- item 4: --resume continues only its own job -------------------------------------------------


def interrupted_run(tmp_path, short_context, tokenizer_dir, monkeypatch, src, out, *flags, after_chunks=2):
    """A run stopped (as by Ctrl-C) after `after_chunks` chunks of 8 lines (batch size 4)."""
    monkeypatch.setattr(score_file, "CHUNK_BATCHES", 2)
    real, calls = score_file.score_texts, []

    def stop(*a, **kw):
        calls.append(1)
        if len(calls) > after_chunks:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(score_file, "score_texts", stop)
    args = ["--file", str(src), "--out", str(out), "--batch-size", "4", *flags]
    assert run(args, short_context, tokenizer_dir) == 130
    monkeypatch.setattr(score_file, "score_texts", real)
    return args


@pytest.mark.parametrize(
    "change, said",
    [
        (["--stride", "8"], "--stride: None then, 8 now"),
        (["--token-logprobs"], "--token-logprobs: False then, True now"),
        (["--batch-size", "5"], "--batch-size: 4 then, 5 now"),
        (["--max-tokens", "999"], "--max-tokens: 4096 then, 999 now"),
        (["--dtype", "float64"], "--dtype: float32 then, float64 now"),
        (["--mask-fill", "-1e9"], "--mask-fill: min then, -1e9 now"),
        (["--text-field", "text"], "--text-field (null: plain text): None then, text now"),
        (["MODEL"], "the model's weights (model.safetensors): another one"),
        (["MODEL_BETWEEN_SAMPLES"], "the model's weights (model.safetensors): another one"),
    ],
)
def test_resume_refuses_other_settings_naming_them(tmp_path, short_context, tokenizer_dir, model_dir, capsys, monkeypatch, change, said):  # fmt: skip
    """--resume accepted records of another model, another --stride, --token-logprobs in only
    some records: the sidecar holds the run's settings, and a difference is named."""
    src, out = corpus_file(tmp_path, 40, seed=8), tmp_path / "out.jsonl"
    args = interrupted_run(tmp_path, short_context, tokenizer_dir, monkeypatch, src, out)
    before = part(out).read_bytes()
    capsys.readouterr()
    model = short_context
    if change == ["MODEL"]:  # another checkpoint, same shapes and config: only its weights differ
        other = tmp_path / "other"
        other.mkdir()
        (other / "config.json").write_bytes((short_context / "config.json").read_bytes())
        data = bytearray((short_context / "model.safetensors").read_bytes())
        data[-8:] = bytes(8)  # the last two weights of the file become 0
        (other / "model.safetensors").write_bytes(bytes(data))
        model, change = other, []
    if change == ["MODEL_BETWEEN_SAMPLES"]:
        # 2,000 weights changed between the blocks checkpoint.content_sample reads (issue 30): the
        # fingerprint is the whole file's sha256, so another model is still another model.
        from gpt2np.checkpoint import content_sample, sample_offsets

        other = tmp_path / "between"
        other.mkdir()
        (other / "config.json").write_bytes((short_context / "config.json").read_bytes())
        data = bytearray((short_context / "model.safetensors").read_bytes())
        offsets = sample_offsets(len(data))
        start = (offsets[10] + offsets[11]) // 2 // 4 * 4  # a float32 midway between two sampled blocks
        assert start > offsets[10] + 4096 and start + 8000 < offsets[11]
        data[start : start + 8000] = bytes(8000)  # 2,000 float32 weights become 0
        (other / "model.safetensors").write_bytes(bytes(data))
        assert content_sample(other / "model.safetensors") == content_sample(short_context / "model.safetensors")
        model, change = other, []
    assert run([*args, *change, "--resume"], model, tokenizer_dir) == 1  # (argparse: the last --batch-size wins)
    err = capsys.readouterr().err
    assert f"cannot resume {part(out)}: it was scored with other settings ({said}" in err, err
    assert err.count("\n") == 1 and part(out).read_bytes() == before


@pytest.mark.parametrize(
    "edit",
    [
        lambda meta: meta["done"].update(lines=-5),  # was KeyError
        lambda meta: meta["done"].update(records_bytes=-1),
        lambda meta: meta["done"].update(input_sha256=None),
        None,  # the whole sidecar: JSON nested deeper than Python's parser can recurse (was RecursionError)
    ],
    ids=["lines-negative", "bytes-negative", "hash-not-text", "nested"],
)
def test_resume_refuses_an_edited_sidecar_with_one_message(tmp_path, short_context, tokenizer_dir, capsys, monkeypatch, edit):  # fmt: skip
    """Issue 30: a sidecar edited to "lines": -5 gave "unexpected KeyError", one nested thousands
    of levels deep "unexpected RecursionError"."""
    src, out = corpus_file(tmp_path, 40, seed=8), tmp_path / "out.jsonl"
    args = interrupted_run(tmp_path, short_context, tokenizer_dir, monkeypatch, src, out)
    before = part(out).read_bytes()
    sidecar = out.with_name(out.name + ".meta.json")
    meta = json.loads(sidecar.read_text())
    if edit is None:
        sidecar.write_text("[" * 100_000 + "]" * 100_000)
    else:
        edit(meta)
        sidecar.write_text(json.dumps(meta))
    capsys.readouterr()
    assert run([*args, "--resume"], short_context, tokenizer_dir) == 1
    err = capsys.readouterr().err
    assert (
        f"cannot resume: {sidecar} is not a sidecar written by this version of gpt2np" in err and err.count("\n") == 1
    ), err
    assert part(out).read_bytes() == before


def test_resume_refuses_another_input(tmp_path, short_context, tokenizer_dir, capsys, monkeypatch):
    src, out = corpus_file(tmp_path, 40, seed=9), tmp_path / "out.jsonl"
    args = interrupted_run(tmp_path, short_context, tokenizer_dir, monkeypatch, src, out)
    before = part(out).read_bytes()
    lines = src.read_text().splitlines(keepends=True)
    src.write_text("".join(lines[:3] + ["an edited line\n"] + lines[4:]))
    assert run([*args, "--resume"], short_context, tokenizer_dir) == 1
    assert "cannot resume: lines 1-16 of the input" in capsys.readouterr().err
    src.write_text("".join(lines[:10]))  # shorter than the 16 lines already scored
    assert run([*args, "--resume"], short_context, tokenizer_dir) == 1
    err = capsys.readouterr().err
    assert f"the input ({src}) has 10 lines, but {part(out)} holds the records of 16" in err
    assert part(out).read_bytes() == before


def test_resume_refuses_more_records_than_the_input_has_lines(tmp_path, short_context, tokenizer_dir, capsys):
    """The issue's case was 400 records for a 10-line input; here the records of a 60-line input."""
    big, out = corpus_file(tmp_path, 60, seed=10, name="big.txt"), tmp_path / "out.jsonl"
    assert run(["--file", str(big), "--out", str(out)], short_context, tokenizer_dir) == 0
    small = corpus_file(tmp_path, 10, seed=11, name="small.txt")
    before = out.read_bytes()
    assert run(["--file", str(small), "--out", str(out), "--resume"], short_context, tokenizer_dir) == 1
    assert f"the input ({small}) has 10 lines, but {out} holds the records of 60" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_resume_refuses_records_that_are_not_those_of_the_sidecar(tmp_path, short_context, tokenizer_dir, capsys, monkeypatch):  # fmt: skip
    src, out = corpus_file(tmp_path, 40, seed=12), tmp_path / "out.jsonl"
    args = interrupted_run(tmp_path, short_context, tokenizer_dir, monkeypatch, src, out)
    records = part(out).read_text().splitlines(keepends=True)
    part(out).write_text("".join(records[:5] + [records[5].replace('"n_tokens"', '"n_tokens" ')] + records[6:]))
    assert run([*args, "--resume"], short_context, tokenizer_dir) == 1
    assert "the first 16 records of" in capsys.readouterr().err
    part(out).write_text("".join(records[:10]))  # fewer than the sidecar vouches for
    assert run([*args, "--resume"], short_context, tokenizer_dir) == 1
    assert "holds 10 records, fewer than the 16 its sidecar says were written" in capsys.readouterr().err
    part(out).write_text("".join(records) + "".join(json.dumps({"line": n}) + "\n" for n in range(17, 60)))
    assert run([*args, "--resume"], short_context, tokenizer_dir) == 1
    assert "holds 59 records, more than the 16 its sidecar vouches for" in capsys.readouterr().err


def test_the_sidecar_says_what_was_done(tmp_path, short_context, tokenizer_dir):
    src, out = corpus_file(tmp_path, 20, seed=13), tmp_path / "out.jsonl"
    assert run(["--file", str(src), "--out", str(out), "--token-logprobs"], short_context, tokenizer_dir) == 0
    meta = json.loads((tmp_path / "out.jsonl.meta.json").read_text())
    assert meta["settings"]["token_logprobs"] is True and meta["settings"]["stride"] is None
    assert meta["settings"]["chunk_lines"] == 8 * score_file.CHUNK_BATCHES and meta["settings"]["dtype"] == "float32"
    import hashlib

    assert meta["done"] == {
        "lines": 20,
        "input_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
        "records_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "records_bytes": len(out.read_bytes()),
    }


# --- item 10: a resumed run gives the bytes of an uninterrupted one -----------------------------


def test_a_resume_after_a_partial_write_gives_the_uninterrupted_bytes(tmp_path, short_context, tokenizer_dir, monkeypatch):  # fmt: skip
    """A full disk stops a run in the middle of a chunk's records. Resumed from the last record,
    the next lines were batched with other batch-mates than in an uninterrupted run, and their
    numbers differed at ~1e-8. The resume goes back to the last chunk the sidecar vouches for
    and scores from there: the same batches, the same bytes. (Batches of 4 texts of 1 to 24
    words: batch-mates change the float32 sums.)"""
    monkeypatch.setattr(score_file, "CHUNK_BATCHES", 2)  # chunks of 8 lines
    src = corpus_file(tmp_path, 40, seed=14)
    args = ["--file", str(src), "--batch-size", "4"]
    full = tmp_path / "full.jsonl"
    assert run([*args, "--out", str(full)], short_context, tokenizer_dir) == 0

    out, real_write_meta, calls = tmp_path / "out.jsonl", score_file.write_meta, []

    def disk_full_in_the_third_chunk(*a, **kw):
        calls.append(1)
        if len(calls) == 4:  # the first sidecar, chunks 1 and 2; then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_meta(*a, **kw)

    monkeypatch.setattr(score_file, "write_meta", disk_full_in_the_third_chunk)
    assert run([*args, "--out", str(out)], short_context, tokenizer_dir) == 1
    monkeypatch.setattr(score_file, "write_meta", real_write_meta)
    records = part(out).read_text().splitlines(keepends=True)
    assert len(records) == 24  # chunk 3 reached the file, not the sidecar
    part(out).write_text("".join(records[:21]) + records[21][:30])  # the disk filled after 5 of its 8 records
    assert run([*args, "--out", str(out), "--resume"], short_context, tokenizer_dir) == 0
    assert out.read_bytes() == full.read_bytes()


def test_a_finished_run_whose_input_grew_resumes_as_one_run(tmp_path, short_context, tokenizer_dir, monkeypatch):
    """The last chunk of a finished run was cut short by the end of its input; when the input
    grows, that chunk is scored again, whole, so that its lines get the batch-mates they get in
    one run over the grown input."""
    monkeypatch.setattr(score_file, "CHUNK_BATCHES", 2)  # chunks of 8 lines
    lines = texts(30, seed=15)
    src, out, full = tmp_path / "c.txt", tmp_path / "out.jsonl", tmp_path / "full.jsonl"
    args = ["--file", str(src), "--batch-size", "4"]
    src.write_text("\n".join(lines[:20]) + "\n")  # chunks 1-8, 9-16, 17-20
    assert run([*args, "--out", str(out)], short_context, tokenizer_dir) == 0
    assert run([*args, "--out", str(out), "--resume"], short_context, tokenizer_dir) == 0  # nothing new: unchanged
    assert [r["line"] for r in read_jsonl(out)] == list(range(1, 21))
    src.write_text("\n".join(lines) + "\n")
    assert run([*args, "--out", str(out), "--resume"], short_context, tokenizer_dir) == 0
    assert run([*args, "--out", str(full)], short_context, tokenizer_dir) == 0
    assert out.read_bytes() == full.read_bytes() and leftovers(out) == []


# --- kill -9 and Ctrl-C, in a real process --------------------------------------------------------

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def command(src, out, model, tokenizer_dir, *flags) -> list[str]:
    return [sys.executable, "-m", "gpt2np", "score", "--model", str(model), "--tokenizer", str(tokenizer_dir),
            "--file", str(src), "--out", str(out), "--no-progress", *flags]  # fmt: skip


def start_half_fed(src, n_lines: int, out, model, tokenizer_dir, *flags) -> subprocess.Popen:
    """A run reading its corpus from a pipe (--file -) that is given only the first n_lines of
    `src`: it scores the chunks it can, then waits for more lines. So it is surely running when
    the test stops it, however fast the machine."""
    process = subprocess.Popen(
        command("-", out, model, tokenizer_dir, *flags), stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
    )
    process.stdin.write(b"".join(src.read_bytes().splitlines(keepends=True)[:n_lines]))
    process.stdin.flush()
    return process


def wait_for_lines_done(out, n: int, process: subprocess.Popen) -> None:
    """Until the sidecar says n lines are done (the process still running), or fail."""
    meta = out.with_name(out.name + ".meta.json")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if meta.exists() and json.loads(meta.read_text())["done"]["lines"] >= n:
            assert process.poll() is None, process.stderr.read().decode()
            return
        time.sleep(0.01)
    raise AssertionError(f"{meta} did not reach {n} lines done in 120 s")


KILL_FLAGS = ("--batch-size", "2")  # chunks of 32 lines


@pytest.fixture(scope="module")
def killable(tmp_path_factory, short_context, tokenizer_dir):
    """A corpus of 100 lines, and its uninterrupted output: from a fresh process, as the killed
    and resumed runs are (this process's BLAS may have been set otherwise by an earlier test)."""
    folder = tmp_path_factory.mktemp("killable")
    src, full = corpus_file(folder, 100, seed=16), folder / "full.jsonl"
    done = subprocess.run(command(src, full, short_context, tokenizer_dir, *KILL_FLAGS), capture_output=True, env=ENV, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return src, full.read_bytes()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_a_killed_run_resumes_to_the_uninterrupted_bytes(tmp_path, short_context, tokenizer_dir, killable, how):
    """kill -9 (no cleanup at all: the lock file stays, unlocked) or Ctrl-C (exit 130, saying
    where the records are) in the third chunk, then --resume: the file of an uninterrupted run,
    byte for byte. The corpus comes through a pipe (--file -), as `zcat corpus.gz |` would."""
    src, full = killable
    out = tmp_path / "out.jsonl"
    process = start_half_fed(src, 80, out, short_context, tokenizer_dir, *KILL_FLAGS)  # chunks 1-2, half of 3
    wait_for_lines_done(out, 64, process)
    process.send_signal(getattr(signal, how))
    process.wait(timeout=60)  # (stdin still open: the run cannot finish instead)
    stderr = process.stderr.read().decode()
    process.stdin.close()
    process.stderr.close()
    if how == "SIGKILL":
        assert process.returncode == -signal.SIGKILL
        assert (tmp_path / "out.jsonl.lock").exists()  # left behind, but no process holds it
    else:
        assert process.returncode == 130, stderr
        assert (
            f"64 lines are done and kept in {part(out)}; the same command with --resume continues from line 65"
            in stderr
        )
        assert "gpt2np: interrupted" in stderr
    assert not out.exists()
    resumed = subprocess.run(command("-", out, short_context, tokenizer_dir, *KILL_FLAGS, "--resume"), input=src.read_bytes(), capture_output=True, env=ENV, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "lines 1-64 were already done; scored 36 lines" in resumed.stderr.decode()
    assert out.read_bytes() == full and leftovers(out) == []


def test_a_fifo_or_process_substitution_is_read(tmp_path, short_context, tokenizer_dir):
    """`--file <(zcat corpus.gz)` was "no such file: /dev/fd/63"."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out.jsonl"
    corpus = "\n".join(texts(12, seed=17)) + "\n"
    writer = threading.Thread(target=lambda: fifo.write_text(corpus))
    writer.start()
    assert run(["--file", str(fifo), "--out", str(out)], short_context, tokenizer_dir) == 0
    writer.join()
    assert [r["line"] for r in read_jsonl(out)] == list(range(1, 13))
    read_end, write_end = os.pipe()  # what bash's <(...) hands over: /dev/fd/N
    threading.Thread(target=lambda: (os.write(write_end, corpus.encode()), os.close(write_end))).start()
    out2 = tmp_path / "out2.jsonl"
    assert run(["--file", f"/dev/fd/{read_end}", "--out", str(out2)], short_context, tokenizer_dir) == 0
    os.close(read_end)
    assert out2.read_bytes() == out.read_bytes()


def test_an_out_that_is_not_a_regular_file_is_streamed(tmp_path, short_context, tokenizer_dir, capsys):
    src = corpus_file(tmp_path, 4, seed=18)
    assert run(["--file", str(src), "--out", "/dev/null"], short_context, tokenizer_dir) == 0
    assert not os.path.exists("/dev/null.part") and not os.path.exists("/dev/null.meta.json")
    assert run(["--file", str(src), "--out", "/dev/null", "--resume"], short_context, tokenizer_dir) == 1
    assert "--resume needs --out to be a regular file" in capsys.readouterr().err
