"""`gpt2np score --file` (gpt2np/tools/score_file.py): a corpus in, one JSON line per input line
out, in order; bad lines reported or stopping the run with --strict; --resume after an
interruption redoes nothing and duplicates nothing; texts longer than the context with --stride."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import WORDS

from gpt2np import GPT2, Tokenizer
from gpt2np.corpus import score_texts
from gpt2np.tools import score_file
from gpt2np.tools.cli import main


@pytest.fixture(scope="module")
def model_and_tok(short_context, tokenizer_dir):
    return GPT2.from_pretrained(short_context), Tokenizer.from_pretrained(tokenizer_dir)


def texts(n: int, seed: int, max_words: int = 25) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, max_words))) for _ in range(n)]


def run(args, model, tokenizer_dir, capsys=None) -> int:
    return main(["score", "--model", str(model), "--tokenizer", str(tokenizer_dir), "--no-progress", *args])


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def part(out):
    """OUT.part: where a run writes until it is done."""
    return out.with_name(out.name + ".part")


def test_jsonl_in_order_with_the_library_numbers(tmp_path, short_context, tokenizer_dir, model_and_tok):
    model, tok = model_and_tok
    corpus = texts(40, seed=0)
    src = tmp_path / "corpus.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(corpus)))
    out = tmp_path / "scores.jsonl"
    assert (
        run(
            ["--file", str(src), "--out", str(out), "--batch-size", "4", "--max-tokens", "64"],
            short_context,
            tokenizer_dir,
        )
        == 0
    )
    records = read_jsonl(out)
    assert [r["line"] for r in records] == list(range(1, 41))
    for r, text in zip(records, corpus):
        assert set(r) == {"line", "n_tokens", "n_scored", "log_likelihood", "perplexity"}
        assert r["n_tokens"] == len(tok.encode(text)) and r["n_scored"] == r["n_tokens"] - 1
        if r["n_scored"]:
            alone = model.score(text, tokenizer=tok)  # (model.score refuses a text of one token alone)
            assert abs(r["log_likelihood"] - alone.total_logprob[0]) < 1e-4
            assert np.isclose(r["perplexity"], alone.perplexity[0], rtol=1e-5)
        else:
            assert r["log_likelihood"] == 0.0
            assert r["perplexity"] is None  # a one-token text: nothing to score, and JSON has no NaN


def test_bad_lines_get_error_records_naming_the_line(tmp_path, short_context, tokenizer_dir):
    lines = [
        json.dumps({"text": "My dog is"}),
        "{not json",
        json.dumps({"body": "a"}),
        json.dumps({"text": ""}),
        json.dumps({"text": None}),
        json.dumps(["text"]),
        json.dumps({"text": " ".join(WORDS * 3)}),  # 57 tokens > 32, and no --stride
        "",
        json.dumps({"text": "The cat sat."}),
    ]
    src = tmp_path / "bad.jsonl"
    src.write_bytes(("\n".join(lines) + "\n").encode() + b'{"text": "caf\xe9"}\n')  # line 10 is Latin-1
    out = tmp_path / "out.jsonl"
    assert run(["--file", str(src), "--out", str(out)], short_context, tokenizer_dir) == 0
    records = read_jsonl(out)
    assert [r["line"] for r in records] == list(range(1, 11))
    errors = {r["line"]: r["error"] for r in records if "error" in r}
    assert sorted(errors) == [2, 3, 4, 5, 6, 7, 8, 10]
    assert "invalid JSON" in errors[2] and "invalid JSON" in errors[8]
    assert "no field 'text'" in errors[3] and "'body'" in errors[3] and "--text-field" in errors[3]
    assert "empty" in errors[4] and "null" in errors[5] and "not an object" in errors[6]
    assert "57 tokens" in errors[7] and "--stride" in errors[7]
    assert "not UTF-8" in errors[10]
    assert set(records[0]) == set(records[8]) == {"line", "n_tokens", "n_scored", "log_likelihood", "perplexity"}


def test_strict_stops_at_the_first_bad_line_after_writing_those_before(tmp_path, short_context, tokenizer_dir, capsys):
    src = tmp_path / "c.jsonl"
    src.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in ["a b c", "d e f"])
        + '{"txt": 1}\n'
        + json.dumps({"text": "g h"})
        + "\n"
    )
    out = tmp_path / "out.jsonl"
    assert run(["--file", str(src), "--out", str(out), "--strict"], short_context, tokenizer_dir) == 1
    err = capsys.readouterr().err
    assert "line 3: no field 'text'" in err and err.count("\n") == 1 and "--resume" in err
    assert not out.exists()  # the run did not finish: its records are in out.jsonl.part
    assert [r["line"] for r in read_jsonl(part(out))] == [1, 2]
    # The line fixed, --resume finishes the job: the file an uninterrupted run gives.
    src.write_text(src.read_text().replace('{"txt": 1}', '{"text": "x y"}'))
    assert run(["--file", str(src), "--out", str(out), "--strict", "--resume"], short_context, tokenizer_dir) == 0
    full = tmp_path / "full.jsonl"
    assert run(["--file", str(src), "--out", str(full)], short_context, tokenizer_dir) == 0
    assert out.read_text() == full.read_text() and not part(out).exists()


def test_plain_text_text_field_and_token_logprobs(tmp_path, short_context, tokenizer_dir, model_and_tok):
    model, tok = model_and_tok
    src = tmp_path / "c.txt"
    src.write_text("The cat sat on the mat.\r\n\nHello\n")  # a CRLF line, an empty line
    out = tmp_path / "out.jsonl"
    assert run(["--file", str(src), "--out", str(out), "--token-logprobs"], short_context, tokenizer_dir) == 0
    r1, r2, r3 = read_jsonl(out)
    alone = model.score("The cat sat on the mat.", tokenizer=tok)  # the \r is not part of the text
    assert r1["n_tokens"] == alone.input_ids.shape[1] and len(r1["token_logprobs"]) == r1["n_tokens"]
    assert r1["token_logprobs"][0] is None  # nothing predicts the first token
    np.testing.assert_allclose(r1["token_logprobs"][1:], alone.token_logprobs[0, 1:], atol=1e-5)
    assert np.isclose(sum(r1["token_logprobs"][1:]), r1["log_likelihood"])
    assert r2 == {"line": 2, "error": "the text is empty: there is nothing to score"}
    assert r3["token_logprobs"] == [None] and r3["perplexity"] is None
    other = tmp_path / "c2.jsonl"  # any field, named with --text-field
    other.write_text(json.dumps({"body": "The cat sat on the mat."}) + "\n")
    assert run(["--file", str(other), "--out", str(out), "--text-field", "body"], short_context, tokenizer_dir) == 0
    assert read_jsonl(out)[0]["log_likelihood"] == pytest.approx(r1["log_likelihood"], abs=1e-4)


def test_stride_scores_long_lines(tmp_path, short_context, tokenizer_dir, model_and_tok):
    model, tok = model_and_tok
    corpus = texts(12, seed=3, max_words=120)  # many lines longer than 32 tokens
    src = tmp_path / "long.txt"
    src.write_text("\n".join(corpus) + "\n")
    out = tmp_path / "out.jsonl"
    assert (
        run(
            ["--file", str(src), "--out", str(out), "--stride", "16", "--max-tokens", "96"],
            short_context,
            tokenizer_dir,
        )
        == 0
    )
    records = read_jsonl(out)
    assert all("error" not in r for r in records) and max(r["n_tokens"] for r in records) > 32
    for r, text in zip(records, corpus):
        alone = model.score(text, tokenizer=tok, stride=16)
        assert r["n_scored"] == r["n_tokens"] - 1 == alone.n_scored[0]
        assert abs(r["log_likelihood"] - alone.total_logprob[0]) < 1e-4


def test_resume_after_an_interruption_redoes_and_duplicates_nothing(
    tmp_path, short_context, tokenizer_dir, monkeypatch
):
    """Run once uninterrupted; run again but stop it in its third chunk (as Ctrl-C would) and
    cut its last record in half (as a kill during a write would); --resume must then give the
    uninterrupted file, scoring only the lines not yet written."""
    corpus = texts(50, seed=4)
    src = tmp_path / "corpus.txt"
    src.write_text("\n".join(corpus) + "\n")
    monkeypatch.setattr(score_file, "CHUNK_BATCHES", 8)  # 8 x batch-size 1 = chunks of 8 lines
    args = ["--file", str(src), "--batch-size", "1"]  # one text per pass: batching cannot change a bit

    full = tmp_path / "full.jsonl"
    assert run([*args, "--out", str(full)], short_context, tokenizer_dir) == 0

    calls = []
    real_score_texts = score_file.score_texts

    def interrupted(model, tok, texts, *a, **kw):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the third chunk never gets written
        return real_score_texts(model, tok, texts, *a, **kw)

    monkeypatch.setattr(score_file, "score_texts", interrupted)
    out = tmp_path / "out.jsonl"
    assert run([*args, "--out", str(out)], short_context, tokenizer_dir) == 130  # "gpt2np: interrupted"
    assert not out.exists()  # the run did not finish
    assert [r["line"] for r in read_jsonl(part(out))] == list(range(1, 17))  # two chunks of 8 written
    with open(part(out), "a") as f:
        f.write('{"line": 17, "n_tok')  # a record cut short

    calls.clear()
    monkeypatch.setattr(
        score_file, "score_texts", lambda *a, **kw: calls.append(len(a[2])) or real_score_texts(*a, **kw)
    )
    assert run([*args, "--out", str(out), "--resume"], short_context, tokenizer_dir) == 0
    assert sum(calls) == 50 - 16  # only the lines not written yet were scored
    assert out.read_text() == full.read_text()  # no line lost, none twice, the cut one redone
    assert not part(out).exists() and not (tmp_path / "out.jsonl.lock").exists()


def test_resume_refuses_a_file_it_did_not_write(tmp_path, short_context, tokenizer_dir, capsys):
    src = tmp_path / "c.txt"
    src.write_text("a b\nc d\n")
    out = tmp_path / "out.jsonl"
    out.write_text('{"line": 1}\n{"line": 2}\n')  # plausible records, but nothing says how they were made
    assert run(["--file", str(src), "--out", str(out), "--resume"], short_context, tokenizer_dir) == 1
    assert f"cannot resume {out}: it has no sidecar {out}.meta.json" in capsys.readouterr().err
    assert out.read_text() == '{"line": 1}\n{"line": 2}\n'  # untouched
    assert run(["--file", str(src), "--out", str(out)], short_context, tokenizer_dir) == 1  # not ours: kept
    assert "already exists and is not the output of a `gpt2np score --file` run" in capsys.readouterr().err
    assert run(["--file", str(src), "--out", str(out), "--overwrite"], short_context, tokenizer_dir) == 0  # ours now
    records = out.read_text().splitlines()
    out.write_text(records[1] + "\n" + records[0] + "\n")  # the records out of order
    assert run(["--file", str(src), "--out", str(out), "--resume"], short_context, tokenizer_dir) == 1
    assert "cannot resume: line 1 of" in capsys.readouterr().err
    assert run(["--file", str(src), "--resume"], short_context, tokenizer_dir) == 1
    assert "give --out" in capsys.readouterr().err


def test_the_input_is_read_as_a_stream(short_context, tokenizer_dir, model_and_tok, monkeypatch):
    """Records of the first chunk are written before the last lines are even read."""
    model, tok = model_and_tok
    monkeypatch.setattr(score_file, "CHUNK_BATCHES", 1)
    out, written_when_read = [], []

    class Out:
        def write(self, s):
            out.append(s)

        def flush(self):
            pass

    def lines():
        for text in texts(20, seed=5):
            written_when_read.append("".join(out).count("\n"))
            yield (text + "\n").encode()

    score_file.score_lines(model, tok, lines(), Out(), score_file.Options(batch_size=4))
    assert "".join(out).count("\n") == 20
    assert written_when_read[-1] == 16  # when line 20 was read, lines 1-16 were already out


def test_progress_bar_and_summary_on_stderr(tmp_path, short_context, tokenizer_dir):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts(5, seed=6)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpt2np",
            "score",
            "--model",
            str(short_context),
            "--tokenizer",
            str(tokenizer_dir),
            "--file",
            "-",
            "--text-field",
            "text",
        ],
        input=src.read_bytes(),
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert [json.loads(line)["line"] for line in result.stdout.decode().splitlines()] == [
        1,
        2,
        3,
        4,
        5,
    ]  # stdout: records only
    err = result.stderr.decode()
    assert "5 texts" in err and "texts/s" in err and "tokens/s" in err  # tqdm's bar
    assert "scored 5 lines (0 errors" in err


def test_file_options_need_file(short_context, tokenizer_dir, capsys):
    assert run(["--out", "x.jsonl", "some text"], short_context, tokenizer_dir) == 1
    assert "--out goes with --file" in capsys.readouterr().err
    assert run(["--file", "nope.txt"], short_context, tokenizer_dir) == 1
    assert "no such file: nope.txt" in capsys.readouterr().err


def test_positional_texts_with_stride(short_context, tokenizer_dir, capsys, model_and_tok):
    model, tok = model_and_tok
    long = " ".join(WORDS * 3)  # 57 tokens > 32
    assert run(["--stride", "16", long], short_context, tokenizer_dir) == 0
    scores = model.score(long, tokenizer=tok, stride=16)
    printed = re.search(r"log-likelihood (\S+) over 56 scored tokens", capsys.readouterr().out)
    assert printed and abs(float(printed.group(1)) - scores.total_logprob[0]) <= 5e-4  # printed to 3 decimals


def test_score_texts_is_what_the_file_command_writes(tmp_path, short_context, tokenizer_dir, model_and_tok):
    """The command adds nothing of its own to the numbers: same batching, same results."""
    model, tok = model_and_tok
    corpus = texts(10, seed=7)
    src = tmp_path / "c.txt"
    src.write_text("\n".join(corpus) + "\n")
    out = tmp_path / "out.jsonl"
    assert run(["--file", str(src), "--out", str(out)], short_context, tokenizer_dir) == 0
    expected = score_texts(model, tok, corpus)
    assert [r["log_likelihood"] for r in read_jsonl(out)] == [e.log_likelihood for e in expected]


def test_a_byte_order_mark_is_not_text(tmp_path, short_context, tokenizer_dir):
    """A UTF-8 BOM at the start of a file was scored as text (line 1: 7 tokens instead of 4)."""
    for name, body in (
        ("c.txt", "The cat sat.\nMy dog\n"),
        ("c.jsonl", '{"text": "The cat sat."}\n{"text": "My dog"}\n'),
    ):
        plain, marked = tmp_path / name, tmp_path / f"bom-{name}"
        plain.write_text(body)
        marked.write_bytes(b"\xef\xbb\xbf" + body.encode())
        outs = [tmp_path / f"{f.name}.out" for f in (plain, marked)]
        for f, out in zip((plain, marked), outs):
            assert run(["--file", str(f), "--out", str(out)], short_context, tokenizer_dir) == 0
        assert outs[1].read_bytes() == outs[0].read_bytes(), name
        assert read_jsonl(outs[1])[0]["n_tokens"] == 4  # "The", " cat", " sat", "."
    assert list(score_file.input_lines([b"\xef\xbb\xbfa\n", b"\xef\xbb\xbfb\n"])) == [
        b"a\n",
        b"\xef\xbb\xbfb\n",
    ]  # the start only


def test_lines_that_stopped_the_run_get_error_records(tmp_path, short_context, tokenizer_dir, capsys):
    """A lone surrogate ("unexpected TypeError", exit 1, 0 lines written) and 100000 '[' ("unexpected
    RecursionError") stopped the whole run, and every --resume died the same way."""
    lines = [
        json.dumps({"text": "My dog is"}),
        '{"text": "emoji cut in half \\ud83d"}',
        "[" * 100000,
        json.dumps({"text": "The cat sat."}),
    ]
    src, out = tmp_path / "c.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(lines) + "\n")
    assert run(["--file", str(src), "--out", str(out)], short_context, tokenizer_dir) == 0
    r1, r2, r3, r4 = read_jsonl(out)
    assert "error" not in r1 and "error" not in r4
    assert "lone surrogate ('\\ud83d' at character 18)" in r2["error"] and "emoji cut in half" in r2["error"]
    assert r3 == {"line": 3, "error": score_file.parse_line(b"[" * 100000, "text")[1]}
    assert "nested too deeply" in r3["error"]
    assert "scored 4 lines (2 errors" in capsys.readouterr().err


def test_a_text_whose_scores_are_not_finite_gets_an_error_record(tmp_path, short_context, tokenizer_dir, monkeypatch):
    """A NaN score made the writer fail ("Out of range float values are not JSON compliant") and
    the whole chunk was lost: that line gets an error record, and the others are written."""
    real = score_file.score_texts

    def one_nan(model, tok, texts, *a, **kw):
        results = real(model, tok, texts, *a, **kw)
        for r, text in zip(results, texts):
            if text == "d e f":
                r.log_likelihood, r.perplexity = float("nan"), float("nan")
            if text == "g h i" and r.token_logprobs is not None:
                r.token_logprobs[-1] = -np.inf
        return results

    monkeypatch.setattr(score_file, "score_texts", one_nan)
    src, out = tmp_path / "c.txt", tmp_path / "out.jsonl"
    src.write_text("a b c\nd e f\ng h i\nj k\n")
    assert run(["--file", str(src), "--out", str(out), "--token-logprobs"], short_context, tokenizer_dir) == 0
    records = read_jsonl(out)
    assert [r["line"] for r in records] == [1, 2, 3, 4]
    error = "the scores of this text are not finite numbers (NaN or inf)"
    assert records[1] == {"line": 2, "error": error} and records[2] == {"line": 3, "error": error}
    assert "error" not in records[0] and "error" not in records[3]
