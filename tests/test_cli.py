"""The `gpt2np` command: generate and download, and errors as one line on stderr.

Happy paths run the random "tiny" test model with the genuine GPT-2 tokenizer and compare the
printed text with what the library's generate gives for the same batch. Error paths check the
exit code, that stderr is exactly one line naming the problem, and that there is no traceback
(unless --debug). Most tests call cli.main in-process; a few run `python -m gpt2np` and the
installed `gpt2np` script for real.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpt2np import GPT2, Tokenizer
from gpt2np.tools import generate as generate_module
from gpt2np.tools.cli import main

PROMPTS = ["It will rain in the", "I want to eat a big bowl of", "My dog is"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Empty caches and weights folder, offline: nothing here may reach the network."""
    for key, value in {"HF_HOME": "hf", "GPT2NP_WEIGHTS": "weights", "GPT2NP_CACHE": "gpt2np-cache"}.items():
        monkeypatch.setenv(key, str(tmp_path / value))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(model_dir) -> Path:
    return model_dir("tiny")


@pytest.fixture(scope="module")
def tiny_model(tiny):
    return GPT2.from_pretrained(tiny)


@pytest.fixture
def gen_tok(tokenizer_dir):
    tok = Tokenizer.from_pretrained(tokenizer_dir)
    tok.padding_side, tok.pad_token = "left", tok.eos_token
    return tok


def run(capsys, *argv, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    """cli.main in-process -> (exit code, stdout, stderr). argparse's own errors exit via SystemExit."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def run_process(
    *args, stdin: str | None = None, env: dict | None = None, script: str | None = None
) -> subprocess.CompletedProcess:
    command = [script] if script else [sys.executable, "-m", "gpt2np"]
    return subprocess.run(
        command + list(args),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def expected_batch_output(model, tok, prompts, **settings) -> str:
    batch = tok(prompts, padding=True)
    out = model.generate(
        batch["input_ids"], attention_mask=batch["attention_mask"], pad_token_id=tok.pad_token_id, **settings
    )
    return "---\n".join(tok.decode(row, skip_special_tokens=True) + "\n" for row in out)


def assert_one_line_error(err: str, *phrases: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith(("gpt2np: error: ", "gpt2np generate: error: ", "gpt2np download: error: ")), lines[0]
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])


# --- generate: happy paths ---------------------------------------------------------------


def test_one_prompt_streams_its_continuation(capsys, tiny, tokenizer_dir, tiny_model, gen_tok, monkeypatch):
    writes = []

    class Recorder(io.StringIO):
        def write(self, text):
            writes.append(text)
            return super().write(text)

    monkeypatch.setattr(sys, "stdout", Recorder())
    code = main(
        ["generate", PROMPTS[0], "--model", str(tiny), "--tokenizer", str(tokenizer_dir), "--max-new-tokens", "8"]
    )
    out = sys.stdout.getvalue()
    assert code == 0
    ids = np.array([gen_tok.encode(PROMPTS[0])])
    new = tiny_model.generate(ids, max_new_tokens=8)[0, ids.shape[1] :]
    assert out == PROMPTS[0] + gen_tok.decode(new, skip_special_tokens=True) + "\n"
    assert out.startswith(PROMPTS[0])
    assert len([w for w in writes if w]) >= 3  # the prompt, then pieces as tokens arrive: streamed


def test_several_prompts_are_one_batch_printed_in_order(capsys, tiny, tokenizer_dir, tiny_model, gen_tok):
    code, out, err = run(
        capsys, "generate", *PROMPTS, "--model", str(tiny), "--tokenizer", str(tokenizer_dir), "--max-new-tokens", "6"
    )
    assert (code, err) == (0, "")
    assert out == expected_batch_output(tiny_model, gen_tok, PROMPTS, max_new_tokens=6)
    blocks = out.split("---\n")
    assert len(blocks) == 3 and all(b.startswith(p) for b, p in zip(blocks, PROMPTS))


def test_prompts_from_stdin(capsys, tiny, tokenizer_dir, tiny_model, gen_tok, monkeypatch):
    code, out, err = run(
        capsys,
        "generate",
        "--model",
        str(tiny),
        "--tokenizer",
        str(tokenizer_dir),
        "--max-new-tokens",
        "4",
        stdin="It will rain in the\n\nMy dog is\r\n",
        monkeypatch=monkeypatch,
    )
    assert (code, err) == (0, "")
    assert out == expected_batch_output(tiny_model, gen_tok, ["It will rain in the", "My dog is"], max_new_tokens=4)


def test_max_length_counts_the_padded_prompt(capsys, tiny, tokenizer_dir, tiny_model, gen_tok):
    code, out, _ = run(
        capsys, "generate", *PROMPTS, "--model", str(tiny), "--tokenizer", str(tokenizer_dir), "--max-length", "11"
    )
    assert code == 0
    assert out == expected_batch_output(tiny_model, gen_tok, PROMPTS, max_length=11)  # 8 prompt columns + 3


def test_default_length_is_20_as_transformers(capsys, tiny, tokenizer_dir, tiny_model, gen_tok):
    code, out, _ = run(capsys, "generate", *PROMPTS[1:], "--model", str(tiny), "--tokenizer", str(tokenizer_dir))
    assert code == 0
    assert out == expected_batch_output(tiny_model, gen_tok, PROMPTS[1:], max_length=20)


def test_sampling_is_reproducible_with_a_seed(capsys, tiny, tokenizer_dir, tiny_model, gen_tok):
    args = [
        "generate",
        *PROMPTS,
        "--model",
        str(tiny),
        "--tokenizer",
        str(tokenizer_dir),
        "--max-new-tokens",
        "5",
        "--do-sample",
        "--seed",
        "7",
        "--top-k",
        "20",
        "--top-p",
        "0.9",
        "--temperature",
        "0.8",
    ]
    first, second = run(capsys, *args), run(capsys, *args)
    assert first == second and first[0] == 0
    assert first[1] == expected_batch_output(
        tiny_model, gen_tok, PROMPTS, max_new_tokens=5, do_sample=True, seed=7, top_k=20, top_p=0.9, temperature=0.8
    )


def test_no_cache_and_mask_fill_give_the_same_greedy_text(capsys, tiny, tokenizer_dir):
    base = ["generate", *PROMPTS, "--model", str(tiny), "--tokenizer", str(tokenizer_dir), "--max-new-tokens", "5"]
    reference = run(capsys, *base)
    assert reference[0] == 0
    for extra in (
        ["--no-cache"],
        ["--mask-fill", "-inf"],
        ["--mask-fill", "-1e9"],
        ["--mask-fill", "-1e30"],
        ["--dtype", "float64"],
    ):
        assert run(capsys, *base, *extra) == reference, extra


def test_python_dash_m_and_the_installed_script(tiny, tokenizer_dir, tiny_model, gen_tok):
    args = ["generate", *PROMPTS, "--model", str(tiny), "--tokenizer", str(tokenizer_dir), "--max-new-tokens", "3"]
    expected = expected_batch_output(tiny_model, gen_tok, PROMPTS, max_new_tokens=3)
    result = run_process(*args)
    assert (result.returncode, result.stdout, result.stderr) == (0, expected, "")
    script = Path(sys.executable).with_name("gpt2np")
    assert script.is_file(), "the package's console script is not installed next to this Python (pip install -e .)"
    result = run_process(*args, script=str(script))
    assert (result.returncode, result.stdout) == (0, expected)


def test_stdin_through_a_real_pipe(tiny, tokenizer_dir, tiny_model, gen_tok):
    result = run_process(
        "generate",
        "--model",
        str(tiny),
        "--tokenizer",
        str(tokenizer_dir),
        "--max-new-tokens",
        "3",
        stdin="My dog is\n",
    )
    ids = np.array([gen_tok.encode("My dog is")])
    new = tiny_model.generate(ids, max_new_tokens=3)[0, 3:]
    assert (result.returncode, result.stdout) == (0, "My dog is" + gen_tok.decode(new, skip_special_tokens=True) + "\n")


@pytest.fixture
def generate_tiny(capsys, tiny, tokenizer_dir):
    """generate_tiny(*args): `gpt2np generate ARGS` on the tiny model with GPT-2's tokenizer -> (exit code, stdout, stderr)."""
    return lambda *args: run(capsys, "generate", *args, "--model", str(tiny), "--tokenizer", str(tokenizer_dir))


def test_beam_search_prints_each_prompts_best_sequences_at_the_end(generate_tiny, tiny_model, gen_tok):
    flags = ["--num-beams", "4", "--num-return-sequences", "2", "--length-penalty", "0.5", "--early-stopping", "never"]
    code, out, err = generate_tiny(*PROMPTS, "--max-new-tokens", "6", *flags)
    assert (code, err) == (0, "")
    settings = dict(max_new_tokens=6, num_beams=4, num_return_sequences=2, length_penalty=0.5, early_stopping="never")
    assert out == expected_batch_output(tiny_model, gen_tok, PROMPTS, **settings)
    assert out.count("---\n") == 5  # 3 prompts x 2 sequences
    one = generate_tiny(PROMPTS[2], "--num-beams", "3")
    assert one[1] == expected_batch_output(tiny_model, gen_tok, PROMPTS[2:], num_beams=3)  # not streamed: printed whole


@pytest.mark.parametrize(
    "flags, settings",
    [
        (["--repetition-penalty", "1.4"], dict(repetition_penalty=1.4)),
        (["--no-repeat-ngram-size", "2", "--num-beams", "2"], dict(no_repeat_ngram_size=2, num_beams=2)),
        (["--bad-words", " hemisphere", "Jake"], dict(bad_words_ids=[[33169], [43930]])),
        (["--stop", "flow", "abnorm"], dict(stop_strings=["flow", "abnorm"])),
        (["--min-new-tokens", "3"], dict(min_new_tokens=3)),
        (
            ["--do-sample", "--seed", "2", "--min-p", "0.2", "--num-return-sequences", "2"],
            dict(do_sample=True, seed=2, min_p=0.2, num_return_sequences=2),
        ),
    ],
)
def test_processor_flags_reach_generate(generate_tiny, tiny_model, gen_tok, flags, settings):
    code, out, err = generate_tiny(*PROMPTS, "--max-new-tokens", "8", *flags)
    assert (code, err) == (0, "")
    if "stop_strings" in settings:
        settings["tokenizer"] = gen_tok
    expected = expected_batch_output(tiny_model, gen_tok, PROMPTS, max_new_tokens=8, **settings)
    assert out == expected
    if "min_new_tokens" not in settings:  # (the model's eos, 50256, never comes here: nothing to hold back)
        assert out != expected_batch_output(tiny_model, gen_tok, PROMPTS, max_new_tokens=8)  # the flag did something


def test_logprobs_prints_each_token_with_its_log_probability(generate_tiny, tiny_model, gen_tok):
    code, out, err = generate_tiny(PROMPTS[2], "--max-new-tokens", "3", "--logprobs")
    assert (code, err) == (0, "")
    ids = gen_tok.encode(PROMPTS[2])
    res = tiny_model.generate(np.array([ids]), max_new_tokens=3, return_dict_in_generate=True, output_scores=True)
    logp = tiny_model.compute_transition_scores(res.sequences, res.scores, normalize_logits=True)[0]
    lines = out.splitlines()
    assert lines[0] == gen_tok.decode(res.sequences[0])
    assert lines[1].split() == ["new", "token", "id", "log", "p"]
    for line, token, lp in zip(lines[2:5], res.sequences[0, 3:], logp):
        assert line.split()[1:] == [str(token), f"{lp:.3f}"]
    assert lines[5] == f"  sum {logp.sum():.3f} over 3 new tokens"


def test_logprobs_with_beams_name_the_beam_each_token_extended(generate_tiny, tiny_model, gen_tok):
    flags = ["--max-new-tokens", "4", "--num-beams", "3", "--num-return-sequences", "2", "--logprobs"]
    code, out, err = generate_tiny(PROMPTS[0], *flags)
    assert (code, err) == (0, "")
    res = tiny_model.generate(
        np.array([gen_tok.encode(PROMPTS[0])]), max_new_tokens=4, num_beams=3, num_return_sequences=2,
        return_dict_in_generate=True, output_scores=True,
    )  # fmt: skip
    logp = tiny_model.compute_transition_scores(res.sequences, res.scores, res.beam_indices)
    first, second = out.split("---\n")
    for text, row in ((first, 0), (second, 1)):
        lines = text.splitlines()
        assert lines[1].split()[-2:] == ["from", "beam"]
        for line, lp, beam in zip(lines[2:6], logp[row], res.beam_indices[row]):
            assert line.split()[-2:] == [f"{lp:.3f}", str(beam % 3)]
        assert lines[6].endswith(f"/ 4 ** 1.0 = {res.sequences_scores[row]:.3f}")


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--length-penalty", "2"], "--length-penalty only applies with --num-beams > 1"),
        (
            ["--early-stopping", "true", "--length-penalty", "0"],
            "--length-penalty, --early-stopping only apply with --num-beams > 1",
        ),
    ],
)
def test_beam_flags_without_beams_are_warned_about(capsys, tiny, flags, named):
    code, out, err = run(capsys, "generate", "My dog is", "--model", str(tiny), "--max-new-tokens", "3", *flags)
    assert code == 0 and out == run(capsys, "generate", "My dog is", "--model", str(tiny), "--max-new-tokens", "3")[1]
    assert err == f"gpt2np generate: warning: {named}; without it, there is no beam search\n"


# --- generate: errors --------------------------------------------------------------------


def test_an_unknown_model_offline(capsys):
    code, out, err = run(capsys, "generate", "hello", "--model", "no-such-model")
    assert code == 1 and out == ""
    assert_one_line_error(
        err, "'no-such-model' is not downloaded and HF_HUB_OFFLINE is set", "gpt2np download no-such-model"
    )


def test_gpt2_offline_and_not_cached_names_the_download_command(capsys):
    code, out, err = run(capsys, "generate", "hello")  # --model gpt2 is the default
    assert code == 1 and out == ""
    assert_one_line_error(err, "'gpt2' is not downloaded", "`gpt2np download gpt2`")


def test_an_unknown_model_without_network(capsys, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")  # nothing listens there
    code, _, err = run(capsys, "generate", "hello", "--model", "acme/nothing")
    assert code == 1
    assert_one_line_error(err, "the Hugging Face hub is unreachable", "gpt2np download acme/nothing")


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "hello", "--model", "no-such-model"],
        ["score", "hello there", "--model", "no-such-model"],
        ["trace", "hello", "--model", "no-such-model", "--out", "t.safetensors"],
        ["trace", "--ids", "1,2", "--model", "./no/such/folder", "--out", "t.safetensors"],
        ["plot", "--model", "no-such-model", "--out", "pictures"],
        ["crosscheck", "--model", "no-such-model"],
        ["download", "gpt2"],
    ],
    ids=["generate", "score", "trace", "trace-ids", "plot", "crosscheck", "download"],
)
def test_every_command_that_cannot_find_a_model_points_to_random_model(capsys, tmp_path, monkeypatch, command):
    """Offline and without weights, the way on is a random model: every command says how."""
    if command[0] == "crosscheck":
        pytest.importorskip("torch", reason="crosscheck needs torch before it looks for a model")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *command)
    assert code == 1 and out == ""
    assert_one_line_error(err, "No weights on this machine? `gpt2np random-model DIR", "README: a random GPT-2")


def test_explain_without_the_weights_points_to_random_model(capsys):
    code, out, err = run(capsys, "explain", "--step", "generate")  # gpt2, not downloaded
    assert (code, err) == (0, "") and "gpt2np download gpt2" in out and "`gpt2np random-model DIR" in out


def test_a_missing_tokenizer_does_not_point_to_random_model(capsys, model_dir):
    code, _, err = run(capsys, "generate", "My dog is", "--model", str(model_dir("odd")))
    assert code == 1 and "has no tokenizer files" in err and "random-model" not in err


def test_a_model_path_that_does_not_exist(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "hello", "--model", str(tmp_path / "nowhere"))
    assert code == 1
    assert_one_line_error(err, "no folder /", "nowhere")


def test_a_broken_checkpoint(capsys, tmp_path, tiny, tokenizer_dir):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text((tiny / "config.json").read_text())
    (folder / "model.safetensors").write_bytes((tiny / "model.safetensors").read_bytes()[:-100])
    code, out, err = run(capsys, "generate", "hello", "--model", str(folder), "--tokenizer", str(tokenizer_dir))
    assert code == 1 and out == ""
    assert_one_line_error(err, "model.safetensors is truncated")


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "hello"],
        ["score", "hello there"],
        ["explain", "--step", "generate"],
        ["explain", "--step", "empty-rows"],
    ],
)
def test_weights_with_a_nan_are_refused_by_every_command(capsys, tmp_path, tiny, command):
    """A corrupted checkpoint once printed 'Hello whose!!' (exit 0) and 'perplexity nan'."""
    from gpt2np.checkpoint import map_tensors, save_checkpoint

    tensors = {k: np.array(v) for k, v in map_tensors(tiny / "model.safetensors").items()}
    name = next(k for k in tensors if k.endswith("h.1.attn.c_attn.weight"))
    tensors[name][0, 0] = np.nan
    folder = tmp_path / "nan"
    folder.mkdir()
    save_checkpoint(folder / "model.safetensors", tensors)
    (folder / "config.json").write_text((tiny / "config.json").read_text())
    code, out, err = run(capsys, *command, "--model", str(folder))
    assert code == 1 and out == ""
    assert_one_line_error(
        err, f"tensor '{name.removeprefix('transformer.')}' holds 1 non-finite value", "download it again"
    )


def test_a_gpt2_that_is_not_the_official_file_needs_no_verify(capsys, tmp_path, tiny, tokenizer_dir):
    """weights/gpt2/ holding something else than GPT-2's published file is refused; --no-verify
    is the explicit way to use it anyway."""
    import shutil

    shutil.copytree(tiny, tmp_path / "weights" / "gpt2")  # $GPT2NP_WEIGHTS/gpt2
    args = [
        "generate",
        "My dog is",
        "--tokenizer",
        str(tokenizer_dir),
        "--max-new-tokens",
        "2",
    ]  # --model gpt2: the default
    code, out, err = run(capsys, *args)
    assert code == 1 and out == ""
    assert_one_line_error(err, "but openai-community/gpt2's model.safetensors is 548105171 bytes", "--no-verify")
    code, out, err = run(capsys, *args, "--no-verify")
    assert (code, err) == (0, "") and out.startswith("My dog is")


def test_a_model_folder_without_tokenizer_files(capsys, model_dir):
    """tiny has GPT-2's vocabulary: GPT-2's own tokenizer is used. odd (1000 tokens) needs --tokenizer."""
    code, out, err = run(capsys, "generate", "My dog is", "--model", str(model_dir("tiny")), "--max-new-tokens", "2")
    assert (code, err) == (0, "") and out.startswith("My dog is")
    code, out, err = run(capsys, "generate", "My dog is", "--model", str(model_dir("odd")))
    assert code == 1 and out == ""
    assert_one_line_error(
        err, "odd has no tokenizer files", "config.json has 1000 tokens, not GPT-2's 50257", "--tokenizer FOLDER"
    )


def test_the_model_folder_is_checked_before_its_tokenizer(capsys, tiny, model_dir, tmp_path):
    """The command resolved the tokenizer first: a folder with only pytorch_model.bin got "lacks
    vocab.json, merges.txt" (or, with another vocabulary than GPT-2's, "has no tokenizer files")
    instead of the pickle refusal, and a broken config.json was called missing. Each gets the
    model's own error now."""
    for source in (tiny, model_dir("odd")):  # GPT-2's vocabulary; 1000 tokens
        pickle_only = tmp_path / f"pickle-only-{source.name}"
        pickle_only.mkdir()
        (pickle_only / "config.json").write_bytes((source / "config.json").read_bytes())
        (pickle_only / "pytorch_model.bin").write_bytes(b"\x80\x04never unpickled")
        code, _, err = run(capsys, "generate", "x", "--model", str(pickle_only))
        assert code == 1
        assert_one_line_error(err, "has only pytorch_model.bin, a pickle file. gpt2np never unpickles")
    for content, said in (
        ("{not json", "config.json is not valid JSON"),
        ("[1]", "must hold a JSON object, found list"),
        ("", "is empty"),
    ):
        broken = tmp_path / f"broken-{len(content)}"
        broken.mkdir()
        (broken / "model.safetensors").symlink_to(tiny / "model.safetensors")
        (broken / "config.json").write_text(content)
        code, _, err = run(capsys, "generate", "x", "--model", str(broken))
        assert code == 1
        assert_one_line_error(err, said)


def test_a_folder_with_both_weight_files_and_no_tokenizer_runs(capsys, tiny, tmp_path):
    """model.safetensors + pytorch_model.bin + GPT-2's vocabulary: GPT-2's tokenizer, the safetensors weights."""
    folder = tmp_path / "both"
    folder.mkdir()
    for f in ("config.json", "model.safetensors"):
        (folder / f).symlink_to(tiny / f)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04never unpickled")
    code, out, err = run(capsys, "generate", "My dog is", "--model", str(folder), "--max-new-tokens", "2")
    assert (code, err) == (0, "") and out.startswith("My dog is")


def test_a_tokenizer_larger_than_the_model(capsys, model_dir, tokenizer_dir):
    code, _, err = run(capsys, "generate", "hello", "--model", str(model_dir("odd")), "--tokenizer", str(tokenizer_dir))
    assert code == 1
    assert_one_line_error(err, "the tokenizer has 50257 tokens but the model only 1000", "--tokenizer")


@pytest.mark.parametrize(
    "flags, phrase",
    [
        (["--max-new-tokens", "0"], "--max-new-tokens must be an integer >= 1, got 0"),
        (["--max-new-tokens", "-3"], "--max-new-tokens must be an integer >= 1"),
        (["--max-length", "3"], "--max-length=3 counts the prompt too"),
        (["--max-new-tokens", "100"], "more than this model's n_positions = 64"),
        (["--top-p", "2"], "--top-p must be in (0, 1]"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--top-p", "nan"], "--top-p must be in (0, 1]"),
        (["--top-k", "-1"], "--top-k must be an integer >= 0"),
        (["--do-sample", "--temperature", "0"], "--temperature must be a positive number when sampling"),
        (["--do-sample", "--temperature", "-1"], "--temperature must be a positive number when sampling"),
        (["--do-sample", "--seed", "-1"], "--seed must be an integer >= 0"),
        (["--mask-fill", "5"], "--mask-fill=5.0 would not mask anything"),
        (["--mask-fill", "0"], "would not mask anything"),
        (["--mask-fill", "nan"], "is NaN"),
        (["--num-beams", "0"], "--num-beams must be an integer >= 1"),
        (["--num-beams", "2", "--num-return-sequences", "3"], "--num-return-sequences=3 is more than --num-beams=2"),
        (["--num-return-sequences", "2"], "--num-return-sequences=2 with greedy decoding"),
        (["--num-beams", "2", "--do-sample"], "beam search with --do-sample (beam sampling) is not implemented"),
        (["--repetition-penalty", "0"], "--repetition-penalty must be a number > 0"),
        (["--no-repeat-ngram-size", "-2"], "--no-repeat-ngram-size must be an integer >= 0"),
        (["--max-new-tokens", "3", "--min-new-tokens", "5"], "--min-new-tokens=5 asks for at least 5 new tokens"),
        (["--do-sample", "--min-p", "2"], "--min-p must be a number in [0, 1]"),
        (["--bad-words", ""], "--bad-words '' has no tokens"),
        (["--stop", ""], "--stop must be a non-empty string"),
        (["--do-sample", "--temperature", "1e-50"], "--temperature=1e-50 is 0.0 in float32"),
        # issue 30: each was a catch-all "unexpected ..." or a silent wrong answer
        (["--stop", "\udcff"], "--stop holds a lone surrogate"),  # $'\xff' from argv (was UnicodeEncodeError)
        (["--stop", ".", "\udcff"], "--stop[1] holds a lone surrogate"),
        (
            ["--num-beams", "2", "--length-penalty", "1e300"],
            "--length-penalty=1e+300 is too large for",
        ),  # OverflowError
        (
            ["--do-sample", "--repetition-penalty", "1e-40"],
            "--repetition-penalty=1e-40 is 1e-40 in float32",
        ),  # NaN, id 0
        (["--repetition-penalty", "1e300"], "--repetition-penalty=1e+300 is inf in float32"),  # a leaked warning
    ],
)
def test_bad_values(capsys, tiny, tokenizer_dir, flags, phrase):
    code, out, err = run(
        capsys, "generate", "It will rain in the", "--model", str(tiny), "--tokenizer", str(tokenizer_dir), *flags
    )
    assert code == 1
    assert out == ""  # a refused call prints nothing, not even the prompt
    assert_one_line_error(err, phrase)
    for keyword in (
        "max_new_tokens",
        "max_length",
        "top_p",
        "top_k",
        "mask_fill",
        "do_sample",
        "num_beams",
        "stop_strings",
    ):
        assert keyword not in err  # a command-line user knows flags, not Python keywords


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--temperature", "0.7"], "--temperature only applies"),
        (["--top-k", "5", "--top-p", "0.9"], "--top-k, --top-p only apply"),
    ],
)
def test_sampling_flags_without_do_sample_are_warned_about(capsys, tiny, flags, named):
    code, out, err = run(capsys, "generate", "My dog is", "--model", str(tiny), "--max-new-tokens", "3", *flags)
    greedy = run(capsys, "generate", "My dog is", "--model", str(tiny), "--max-new-tokens", "3")
    assert code == 0 and out == greedy[1]  # greedy, as said
    assert err == f"gpt2np generate: warning: {named} with --do-sample; without it, decoding is greedy\n"
    code, _, err = run(
        capsys, "generate", "My dog is", "--model", str(tiny), "--max-new-tokens", "3", "--do-sample", *flags
    )
    assert (code, err) == (0, "")


def test_version(capsys):
    import tomllib

    import gpt2np

    code, out, _ = run(capsys, "--version")
    version = tomllib.loads((Path(gpt2np.__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "version"
    ]
    assert code == 0 and out == f"gpt2np {version}\n" and gpt2np.__version__ == version


@pytest.mark.parametrize("prompts", [[""], ["It will rain", ""]])
def test_an_empty_prompt(capsys, tiny, tokenizer_dir, prompts):
    code, out, err = run(capsys, "generate", *prompts, "--model", str(tiny), "--tokenizer", str(tokenizer_dir))
    assert code == 1 and out == ""
    assert_one_line_error(err, "a prompt is empty (it has no tokens)")


def test_no_prompt_at_all(capsys, tiny, monkeypatch):
    code, _, err = run(capsys, "generate", "--model", str(tiny), stdin="\n  \n", monkeypatch=monkeypatch)
    assert code == 1
    assert_one_line_error(err, "no prompt: give one or more as arguments, or one per line on stdin")


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["generate", "x", "--bogus"], "unrecognized arguments: --bogus"),
        (["generate", "x", "--max-new-tokens", "abc"], "argument --max-new-tokens: invalid int value: 'abc'"),
        (["generate", "x", "--top-p", "high"], "argument --top-p: invalid float value"),
        (["generate", "x", "--mask-fill", "bogus"], "'bogus' is not -inf, -1e9, min or a number"),
        (["generate", "x", "--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
        (["generate", "x", "--max-length", "30", "--max-new-tokens", "5"], "not allowed with argument"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required"),
        (["download"], "the following arguments are required: name"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(capsys, argv, phrase):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert_one_line_error(err, phrase, "--help")


def test_debug_shows_the_traceback(tiny, tokenizer_dir):
    base = ["generate", "x", "--model", str(tiny), "--tokenizer", str(tokenizer_dir), "--top-p", "2"]
    plain = run_process(*base)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr and len(plain.stderr.splitlines()) == 1
    for argv in (["--debug", *base], [*base, "--debug"]):  # before or after the subcommand
        result = run_process(*argv)
        assert result.returncode != 0
        assert "Traceback (most recent call last)" in result.stderr
        assert "gpt2np.errors.InputError: top_p must be in (0, 1]" in result.stderr


def test_an_unexpected_exception_is_still_one_line(capsys, monkeypatch, tiny):
    def boom(args):
        raise RuntimeError("something nobody planned for\nwith a second line")

    monkeypatch.setattr(generate_module, "load_model_and_tokenizer", boom)
    code, _, err = run(capsys, "generate", "x", "--model", str(tiny))
    assert code == 1
    assert_one_line_error(err, "unexpected RuntimeError: something nobody planned for with a second line", "--debug")
    with pytest.raises(RuntimeError, match="nobody planned"):
        main(["--debug", "generate", "x", "--model", str(tiny)])


def test_a_numpy_warning_never_reaches_the_terminal(capsys, monkeypatch, tiny):
    """Issue 30: NumPy's RuntimeWarnings (repetition_penalty 1e-40's NaN, 1e300's overflow) went to
    stderr and the command went on to print a wrong result. A warning now stops the command."""

    def overflow(args):
        return np.float32(3e38) * np.float32(10)  # RuntimeWarning: overflow encountered

    monkeypatch.setattr(generate_module, "load_model_and_tokenizer", overflow)
    code, out, err = run(capsys, "generate", "x", "--model", str(tiny))
    assert code == 1 and out == ""  # and one line on stderr, no "RuntimeWarning: ..." of its own
    assert_one_line_error(
        err, "a computation went wrong (overflow encountered", "no result is given rather than a wrong one"
    )


def test_an_os_error_is_one_line(capsys, monkeypatch, tiny):
    def unreadable(args):
        raise PermissionError(13, "Permission denied", str(tiny / "model.safetensors"))

    monkeypatch.setattr(generate_module, "load_model_and_tokenizer", unreadable)
    code, _, err = run(capsys, "generate", "x", "--model", str(tiny))
    assert code == 1
    assert_one_line_error(err, "Permission denied", "model.safetensors")


# --- download ----------------------------------------------------------------------------


def test_download_offline_is_one_line(capsys, tmp_path):
    code, out, err = run(capsys, "download", "gpt2", "--dest", str(tmp_path / "dest"))
    assert code == 1 and out == ""
    assert_one_line_error(err, "cannot download 'gpt2': HF_HUB_OFFLINE is set")
    assert not (tmp_path / "dest").exists()


def test_download_without_network_is_one_line(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"
    result = subprocess.run(
        [sys.executable, "-m", "gpt2np", "download", "gpt2", "--dest", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "cannot download 'gpt2'", "is unreachable from this machine")


@pytest.fixture
def start_hub(tmp_path):
    """start_hub(repos, corrupt=...) -> (FakeHub (see test_hub.py), environment pointing a
    subprocess at it). The model has GPT-2's vocabulary, so the real tokenizer goes with it."""
    from test_hub import FakeHub

    hubs = []

    def start(repos, **kwargs):
        fake = FakeHub(repos, **kwargs)
        hubs.append(fake)
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
        env["HF_ENDPOINT"] = fake.url
        return fake, env

    yield start
    for fake in hubs:
        fake.close()


@pytest.fixture(scope="module")
def small_vocab_files(tmp_path_factory) -> dict[str, bytes]:
    from test_hub import model_files

    from gpt2np import GPT2Config

    config = GPT2Config(n_positions=16, n_embd=8, n_layer=1, n_head=2)  # GPT-2's vocabulary, tiny otherwise
    return model_files(tmp_path_factory.mktemp("hub-model"), config=config)


def test_download_from_a_hub_into_dest_then_generate(tmp_path, start_hub, small_vocab_files, tokenizer_dir, gen_tok):
    fake, env = start_hub({"acme/tiny": small_vocab_files})
    dest = tmp_path / "dest"
    result = run_process("download", "acme/tiny", "--dest", str(dest), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"acme/tiny is in {dest}\n"
    assert {f: (dest / f).read_bytes() for f in small_vocab_files} == small_vocab_files
    assert ("GET", "/acme/tiny/resolve/main/model.safetensors") in fake.requests
    generated = run_process(
        "generate", *PROMPTS, "--model", str(dest), "--tokenizer", str(tokenizer_dir), "--max-new-tokens", "3"
    )
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout == expected_batch_output(GPT2.from_pretrained(dest), gen_tok, PROMPTS, max_new_tokens=3)


def test_download_damaged_on_the_way_is_refused_unless_no_verify(tmp_path, start_hub, small_vocab_files):
    _, env = start_hub({"acme/tiny": small_vocab_files}, corrupt={"model.safetensors"})
    result = run_process("download", "acme/tiny", "--dest", str(tmp_path / "dest"), env=env)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "model.safetensors has sha256", "the file is corrupted", "--no-verify")
    result = run_process("download", "acme/tiny", "--dest", str(tmp_path / "dest2"), "--no-verify", env=env)
    assert result.returncode == 0, result.stderr


def test_download_of_a_pickle_only_repo_from_the_cli(tmp_path, start_hub):
    _, env = start_hub({"acme/old": {"config.json": b"{}", "pytorch_model.bin": b"\x80\x04pickle"}})
    result = run_process("download", "acme/old", "--dest", str(tmp_path / "dest"), env=env)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "the hub repo acme/old has only pytorch_model.bin", "never unpickles")


def test_download_of_an_unknown_repo_from_the_cli(tmp_path, start_hub):
    _, env = start_hub({})
    result = run_process("download", "acme/nothing", "--dest", str(tmp_path / "dest"), env=env)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "'acme/nothing' is not a model on the Hugging Face hub")
