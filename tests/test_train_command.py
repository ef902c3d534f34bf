"""`gpt2np train` (gpt2np/tools/train.py): the command, its checkpoints, --resume and its refusals.

- kill -9 at several points (after a step, halfway through writing the model, before and between
  the renames), each followed by --resume: the final model.safetensors and optimizer.safetensors
  are byte for byte those of a run never stopped; with dropout too (its generator's state saved).
- SIGTERM and Ctrl-C (real signals, sent by the process to itself at a step) save and exit 143 / 130.
- The same seed gives the same bytes; another seed other ones.
- transformers' GPT2LMHeadModel.from_pretrained(OUT) gives gpt2np's logits for the output.
- Refusals before any work: --out the model's folder, an existing folder without --resume or
  --overwrite; --resume with another model, data or setting names the difference.
- Bad input: one line, exit 1 (2 for usage).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require_module

from gpt2np import GPT2
from gpt2np.llmc import write_tokens
from gpt2np.tools.cli import main

ROOT = Path(__file__).resolve().parents[1]
TEXT = (
    "The quick brown fox jumps over the lazy dog. It was a bright cold day in April, and the clocks were "
    "striking thirteen. Call me Ishmael. Some years ago, never mind how long precisely, having little or no "
    "money in my purse, I thought I would sail about a little and see the watery part of the world.\n\n"
    "In a hole in the ground there lived a hobbit. Not a nasty, dirty, wet hole, filled with the ends of worms "
    "and an oozy smell, nor yet a dry, bare, sandy hole with nothing in it to sit down on or to eat.\n"
)
# A small run: 6 steps, a checkpoint every 2.
ARGS = [
    "--steps",
    "6",
    "--save-every",
    "2",
    "--seq-len",
    "16",
    "--batch-size",
    "2",
    "--val-split",
    "0.2",
    "--val-every",
    "3",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text(TEXT * 3)
    return path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m gpt2np train ...` in a fresh process (a kill takes only it down)."""
    environ = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "gpt2np", "train", *args], capture_output=True, text=True, env=environ, timeout=300
    )


def files(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("model.safetensors", "optimizer.safetensors")}


@pytest.fixture(scope="module")
def uninterrupted(model_dir, data, tmp_path_factory):
    """The run never stopped, without and with dropout: {dropout: (out, its bytes)}."""
    runs = {}
    for extra in ([], ["--dropout", "0.1"]):
        out = tmp_path_factory.mktemp("whole") / "out"
        done = run("--model", str(model_dir("tiny")), "--data", str(data), "--out", str(out), *ARGS, *extra)
        assert done.returncode == 0, done.stderr
        runs[bool(extra)] = (out, files(out))
    return runs


@pytest.mark.parametrize("dropout", [False, True], ids=["no-dropout", "dropout"])
def test_kill_9_anywhere_then_resume_gives_the_same_bytes(model_dir, data, tmp_path, uninterrupted, dropout):
    out = tmp_path / "out"
    common = ["--model", str(model_dir("tiny")), "--data", str(data), "--out", str(out), *ARGS]
    common += ["--dropout", "0.1"] if dropout else []
    # Each run is killed at one point, the next resumes: after step 3 (the last checkpoint is
    # step 2), halfway through writing step 4's model, after step 4's .tmp files are whole but
    # before any rename, and between step 6's first and second rename.
    kills = ["step:3", "model-half:4", "before-rename:4", "mid-rename:6"]
    first = True
    for point in kills:
        killed = run(*common, *([] if first else ["--resume"]), env={"GPT2NP_TRAIN_KILL_AT": point})
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
        first = False
    assert any(p.name.endswith(".tmp") for p in out.iterdir())  # the last kill left a checkpoint between renames
    done = run(*common, "--resume")
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stdout
    assert files(out) == uninterrupted[dropout][1]
    state = json.loads((out / "train_state.json").read_text())
    assert state["step"] == 6
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


def test_kill_9_from_outside_at_random_moments(model_dir, data, tmp_path, uninterrupted):
    """The same, with SIGKILL sent from outside at moments nobody chose: 0 to 0.6 s after the
    run has started its loop (config.json written), three times, then a --resume to the end."""
    import time

    out = tmp_path / "out"
    common = ["--model", str(model_dir("tiny")), "--data", str(data), "--out", str(out), *ARGS]
    delays = np.random.default_rng(0).uniform(0, 0.6, size=3)
    environ = dict(os.environ, PYTHONPATH=str(ROOT))
    outcomes = []
    for i, delay in enumerate(delays):
        argv = [sys.executable, "-m", "gpt2np", "train", *common, *(["--resume"] if i else [])]
        process = subprocess.Popen(argv, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (out / "config.json").exists() and process.poll() is None:
            time.sleep(0.01)
        time.sleep(delay)
        process.kill()
        outcomes.append(process.wait())
    done = run(*common, "--resume")
    assert done.returncode == 0, done.stderr
    assert files(out) == uninterrupted[False][1], outcomes
    assert -signal.SIGKILL in outcomes  # at least one run was really killed (each needs seconds to finish)


@pytest.mark.parametrize("sig", ["sigterm", "sigint"])
def test_sigterm_and_ctrl_c_save_a_checkpoint_and_exit(model_dir, data, tmp_path, uninterrupted, sig):
    out = tmp_path / "out"
    common = ["--model", str(model_dir("tiny")), "--data", str(data), "--out", str(out), *ARGS]
    stopped = run(*common, env={"GPT2NP_TRAIN_KILL_AT": f"{sig}:3"})
    expected = signal.SIGTERM if sig == "sigterm" else signal.SIGINT
    assert stopped.returncode == 128 + expected, stopped.stderr
    assert "stopped at step 3, checkpoint saved" in stopped.stderr
    assert json.loads((out / "train_state.json").read_text())["step"] == 3  # saved at once (--save-every 2)
    done = run(*common, "--resume")
    assert done.returncode == 0, done.stderr
    assert files(out) == uninterrupted[False][1]


def test_the_same_seed_gives_the_same_bytes_and_another_seed_others(model_dir, data, tmp_path, uninterrupted, capsys):
    base = ["--model", str(model_dir("tiny")), "--data", str(data), *ARGS]
    assert main(["train", *base, "--out", str(tmp_path / "a")]) == 0  # in this process: the same bytes again
    assert files(tmp_path / "a") == uninterrupted[False][1]
    assert main(["train", *base, "--out", str(tmp_path / "b"), "--seed", "1"]) == 0
    assert files(tmp_path / "b")["model.safetensors"] != uninterrupted[False][1]["model.safetensors"]
    # recomputed activations: the same bytes
    assert main(["train", *base, "--out", str(tmp_path / "c"), "--gradient-checkpointing"]) == 0
    assert files(tmp_path / "c") == uninterrupted[False][1]


def test_the_output_is_a_model_folder_and_the_run_says_what_it_does(uninterrupted, model_dir):
    out, _ = uninterrupted[False]
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "optimizer.safetensors"):
        assert (out / name).is_file(), name
    state = json.loads((out / "train_state.json").read_text())
    assert state["position"] == {"epoch": state["position"]["epoch"], "index": state["position"]["index"]}
    assert [h[0] for h in state["history"]] == [1, 2, 3, 4, 5, 6]
    assert [h[2] is not None for h in state["history"]] == [False, False, True, False, False, True]  # --val-every 3
    trained = GPT2.from_pretrained(out)
    before = GPT2.from_pretrained(model_dir("tiny"))
    assert not np.array_equal(trained.weights.wte, before.weights.wte)  # it learned something
    # The loss went down on the text it saw.
    assert state["history"][-1][1] < state["history"][0][1]


def test_progress_bar_and_evaluation_lines(model_dir, data, tmp_path, capsys):
    assert (
        main(["train", "--model", str(model_dir("tiny")), "--data", str(data), "--out", str(tmp_path / "o"), *ARGS])
        == 0
    )
    captured = capsys.readouterr()
    assert "step 3: train loss " in captured.out and ", val loss " in captured.out
    assert "step 6/6" in captured.err and "tokens/s" in captured.err and "left" in captured.err
    assert "val " in captured.err


def test_transformers_loads_the_output_with_the_same_logits(uninterrupted, transformers):
    import torch

    out, _ = uninterrupted[False]
    theirs = transformers.GPT2LMHeadModel.from_pretrained(out, attn_implementation="eager").eval()
    ids = np.random.default_rng(0).integers(0, 50257, size=(2, 12))
    with torch.no_grad():
        expected = theirs(torch.tensor(ids)).logits.numpy()
    ours = GPT2.from_pretrained(out)(ids).logits
    scale = np.abs(expected).max()
    assert np.abs(ours - expected).max() <= 1e-5 * scale  # float32 both: the forward's own tolerance


def test_generate_runs_on_the_output(uninterrupted, capsys):
    out, _ = uninterrupted[False]
    assert main(["generate", "--model", str(out), "The quick", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith("The quick")


def test_the_loss_curve(model_dir, data, tmp_path):
    require_module("matplotlib", "pip install -e '.[plot]'")  # skipped locally without it, a failure in CI
    png = tmp_path / "loss.png"
    args = ["--model", str(model_dir("tiny")), "--data", str(data), "--out", str(tmp_path / "o"), *ARGS]
    assert main(["train", *args, "--plot", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")


# --- refusals --------------------------------------------------------------------------------


def error_of(capsys, *args: str) -> tuple[int, str]:
    code = main(["train", *args])
    return code, capsys.readouterr().err


def test_out_is_the_models_folder_refused(model_dir, data, capsys, tmp_path):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(model_dir("tiny"), model)
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    code, err = error_of(capsys, "--model", str(model), "--data", str(data), "--out", str(model), "--overwrite", *ARGS)
    assert code == 1 and "is the folder of the model being trained" in err
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before


def test_an_existing_folder_is_refused_without_resume_or_overwrite(model_dir, data, capsys, uninterrupted, tmp_path):
    out, saved = uninterrupted[False]
    common = ["--model", str(model_dir("tiny")), "--data", str(data), "--out", str(out), *ARGS]
    code, err = error_of(capsys, *common)
    assert code == 1 and "is not empty" in err and "--overwrite" in err
    assert files(out) == saved
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, err = error_of(
        capsys, "--model", str(model_dir("tiny")), "--data", str(data), "--out", str(other), "--resume"
    )
    assert code == 1 and "notes.txt" in err and "did not write" in err


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--lr", "1e-3"], "--lr (0.0006 then, 0.001 now)"),
        (["--seed", "3"], "--seed (0 then, 3 now)"),
        (["--dropout", "0.2"], "--dropout"),
        (["--data", "OTHER"], "--data's content"),
        (["--model", "SMALL"], "--model"),
    ],
)
def test_resume_with_other_settings_is_refused_naming_them(
    model_dir, data, capsys, uninterrupted, tmp_path, change, named
):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(uninterrupted[False][0], out)
    (tmp_path / "other.txt").write_text(TEXT * 4)
    args = {"--model": str(model_dir("tiny")), "--data": str(data), "--out": str(out)}
    extra = []
    for flag, value in zip(change[::2], change[1::2]):
        value = {"OTHER": str(tmp_path / "other.txt"), "SMALL": str(model_dir("small-outliers"))}.get(value, value)
        if flag in args:
            args[flag] = value
        else:
            extra += [flag, value]
    argv = [a for kv in args.items() for a in kv] + ARGS + extra
    argv[argv.index("--steps") + 1] = "8"  # one more step asked for: the refusal must come first
    code, err = error_of(capsys, *argv, "--resume")
    assert code == 1 and named in err, err
    assert files(out) == uninterrupted[False][1]


def test_resume_with_settings_that_do_not_change_the_result(model_dir, data, capsys, uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(uninterrupted[False][0], out)
    argv = ["--model", str(model_dir("tiny")), "--data", str(data), "--out", str(out), *ARGS]
    argv[argv.index("--save-every") + 1] = "5"
    argv[argv.index("--val-every") + 1] = "1"
    assert main(["train", *argv, "--resume"]) == 0  # nothing left to do, and nothing refused
    assert files(out) == uninterrupted[False][1]


# --- bad input ------------------------------------------------------------------------------


def test_bad_data_files(model_dir, capsys, tmp_path):
    common = ["--model", str(model_dir("tiny")), *ARGS]
    cases = {
        "missing": (None, "no such file"),
        "empty": (b"", "is empty"),
        "binary": (b"\x89PNG\r\n\x1a\n\0\0\0", "is a binary file"),
        "latin1": ("caf\xe9 au lait".encode("latin-1"), "is not UTF-8"),
        "blank": (b"\n\n  \n", "holds no text"),
        "short": (b"Too short.", "shorter than one sequence"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        code, err = error_of(capsys, *common, "--data", str(path), "--out", str(tmp_path / f"out-{name}"))
        assert code == 1 and message in err and err.count("\n") == 1, (name, err)
        assert not (tmp_path / f"out-{name}" / "model.safetensors").exists()


def test_bad_numbers_and_lengths(model_dir, data, capsys, tmp_path):
    common = ["--model", str(model_dir("tiny")), "--data", str(data), "--out", str(tmp_path / "o")]
    for flags, message in [
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--lr=-1e-3"], "--lr must be a finite number"),
        (["--min-lr=-1"], "--min-lr must be"),
        (["--seq-len", "65"], "--seq-len 65 is longer than the model's context (n_positions 64)"),
        (["--steps", "0"], "--steps must be 1 or more"),
        (["--val-split", "1.5"], "--val-split must lie in [0, 1)"),
        (["--dropout", "1"], "dropout probability must lie in [0, 1)"),
        (["--seq-len", "64", "--val-split", "0.05"], "fewer than one sequence"),
    ]:
        code, err = error_of(capsys, *common, *flags)
        assert code == 1 and message in err, (flags, err)
    with pytest.raises(SystemExit) as e:
        main(["train", *common, "--steps", "many"])
    assert e.value.code == 2


def test_token_files(model_dir, capsys, tmp_path):
    """llm.c's token data file: trained on as it is; an id beyond the vocabulary refused."""
    odd = model_dir("odd")  # a vocabulary of 1000 and no tokenizer: only token files fit it
    good, bad = tmp_path / "good.bin", tmp_path / "bad.bin"
    write_tokens(good, np.random.default_rng(0).integers(0, 1000, size=200))
    write_tokens(bad, np.array([1, 2, 3, 1000, 5] * 20))
    args = ["--model", str(odd), "--steps", "2", "--seq-len", "8", "--val-split", "0"]
    assert main(["train", *args, "--data", str(good), "--out", str(tmp_path / "a")]) == 0
    code, err = error_of(capsys, *args, "--data", str(bad), "--out", str(tmp_path / "b"))
    assert code == 1 and "token 3 is id 1000, beyond the model's vocabulary (0 .. 999)" in err
    (tmp_path / "text.txt").write_text(TEXT)
    code, err = error_of(capsys, *args, "--data", str(tmp_path / "text.txt"), "--out", str(tmp_path / "c"))
    assert code == 1 and "no tokenizer" in err


def test_a_loss_that_becomes_nan_stops_and_keeps_the_last_good_checkpoint(model_dir, data, capsys, tmp_path):
    out = tmp_path / "o"
    argv = ["--model", str(model_dir("tiny")), "--data", str(data), "--out", str(out), *ARGS]
    argv[argv.index("--save-every") + 1] = "1"  # a checkpoint after every good step
    code, err = error_of(capsys, *argv, "--lr", "1e30", "--grad-clip", "0")
    assert code == 1 and "the loss became" in err and "lower --lr" in err, err
    step = int(err.split(" at step ")[1].split(":")[0])
    assert step > 1  # the first step's loss is finite (the weights are still the model's)
    state = json.loads((out / "train_state.json").read_text())
    assert state["step"] == step - 1 and f"the last good checkpoint (step {step - 1}) is kept" in err
    assert np.isfinite(GPT2.from_pretrained(out, verify=False).weights.wte).all()


def test_gradient_accumulation_is_one_batch_of_all_the_rows(model_dir, data):
    """--grad-accum 2 of 1 row takes the same windows as one batch of 2 rows: the same loss and
    gradient norm (the mean over the micro-batches, not their sum)."""
    import argparse

    from gpt2np.tools.train import train_step
    from gpt2np.train import AdamW
    from gpt2np.training_data import Batcher

    tokens = np.random.default_rng(0).integers(0, 50257, size=200)
    results = []
    for batch_size, accum in [(2, 1), (1, 2)]:
        model = GPT2.from_pretrained(model_dir("tiny"), dtype="float64")
        args = argparse.Namespace(
            batch_size=batch_size,
            grad_accum=accum,
            grad_clip=0.0,
            lr=1e-3,
            warmup=0,
            steps=1,
            gradient_checkpointing=False,
        )
        opt = AdamW(model, lr=1e-3)
        rng = np.random.default_rng(0)
        results.append(train_step(model, opt, Batcher(tokens, 16, seed=0), args, None, rng, 0, 1e-4))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-12)  # the loss
    assert results[1][1] == pytest.approx(results[0][1], rel=1e-9)  # the gradients' norm


def test_bare_dropout_takes_the_configs_probabilities(model_dir, tmp_path):
    """--dropout alone: config.json's embd_pdrop, attn_pdrop, resid_pdrop (0.1, transformers'
    default, where one is absent); --dropout P: P for all three."""
    import shutil

    from gpt2np.tools.train import dropout_rates

    folder = tmp_path / "m"
    shutil.copytree(model_dir("tiny"), folder)
    config = json.loads((folder / "config.json").read_text())
    config |= {"attn_pdrop": 0.3, "resid_pdrop": 0.0}
    config.pop("embd_pdrop", None)
    (folder / "config.json").write_text(json.dumps(config))
    assert dropout_rates("config", str(folder)) == {"embd": 0.1, "attn": 0.3, "resid": 0.0}
    assert dropout_rates("0.25", str(folder)) == {"embd": 0.25, "attn": 0.25, "resid": 0.25}
    assert dropout_rates(None, str(folder)) is None
