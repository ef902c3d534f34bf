"""`gpt2np score --file`: score a corpus into JSON lines, one per input line, in input order.

The input is read as a stream, a chunk of texts at a time (never the whole corpus in memory).
Each chunk is scored in batches of similar length (gpt2np/corpus.py) and its records are
written, in input order, before the next chunk is read. So an interrupted run leaves a file
whose records are exactly the input's first lines (maybe followed by one line cut short), and
`--resume` carries on from there: it drops the cut line, skips the input lines already done,
and appends the rest.

A record is {"line", "n_tokens", "n_scored", "log_likelihood", "perplexity"} (+ "token_logprobs"
with --token-logprobs: one per token, null for the first, which nothing predicts), or
{"line", "error"} for a line that could not be scored. JSON has no NaN: a perplexity with
nothing to score (a one-token text) is null.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..corpus import TextScore, score_texts
from ..errors import InputError

CHUNK_BATCHES = 16  # texts read ahead = batch_size x this: enough for length sorting to find neighbours


@dataclass
class Options:
    text_field: str | None = None  # None: plain text, one text per line
    batch_size: int = 8
    max_tokens: int = 4096
    stride: int | None = None
    token_logprobs: bool = False
    strict: bool = False


def is_jsonl(path: str, text_field: str | None) -> bool:
    """JSON lines when the file says so (.jsonl) or a field to read was named."""
    return text_field is not None or str(path).endswith(".jsonl")


def parse_line(raw: bytes, text_field: str | None) -> tuple[str | None, str | None]:
    """One input line -> (text, None) or (None, why it has no text)."""
    try:
        line = raw.decode("utf-8").rstrip("\r\n")  # the newline ends the line; it is not part of the text
    except UnicodeDecodeError as e:
        return None, f"the line is not UTF-8 (byte {e.start + 1}); convert the file to UTF-8"
    if text_field is None:
        return line, None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return None, f"invalid JSON ({e.msg} at column {e.colno}); each line must be one JSON object"
    if not isinstance(obj, dict):
        return None, f"the line is a JSON {type(obj).__name__}, not an object with a {text_field!r} field"
    if text_field not in obj:
        fields = ", ".join(map(repr, list(obj)[:5])) or "none"
        return None, f"no field {text_field!r} (fields: {fields}); name the text's field with --text-field"
    return obj[text_field], None  # a non-string or empty text is reported by corpus.check_text


def record(line: int, s: TextScore, token_logprobs: bool) -> dict:
    """A TextScore -> the JSON object written for input line `line`."""
    if s.error is not None:
        return {"line": line, "error": s.error}
    r: dict[str, Any] = {
        "line": line,
        "n_tokens": s.n_tokens,
        "n_scored": s.n_scored,
        "log_likelihood": s.log_likelihood,
        "perplexity": None if math.isnan(s.perplexity) else s.perplexity,
    }
    if token_logprobs:
        r["token_logprobs"] = [None if math.isnan(x) else float(x) for x in s.token_logprobs]  # type: ignore[union-attr]
    return r


def json_line(r: dict) -> str:
    return json.dumps(r, allow_nan=False) + "\n"  # allow_nan=False: NaN is not JSON; ASCII: any stdout can take it


def lines_done(path: Path) -> int:
    """How many records an earlier run wrote to `path`, checking they are lines 1, 2, ... in
    order; a last line cut short by the interruption (no newline) is removed from the file."""
    count, keep = 0, 0  # complete records; bytes up to the end of the last one
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break  # written halfway when the run stopped
            try:
                line = json.loads(raw)["line"]
            except (ValueError, KeyError, TypeError):
                line = None
            if line != count + 1:
                raise InputError(
                    f"cannot resume: line {count + 1} of {path} is not the record of input line {count + 1} "
                    "(was it written by `gpt2np score --file`?); use another --out, or drop --resume to start over"
                )
            count, keep = count + 1, keep + len(raw)
    with open(path, "rb+") as f:
        f.truncate(keep)
    return count


def chunks(lines: Iterable[bytes], size: int, start: int) -> Iterator[list[tuple[int, bytes]]]:
    """(line number, raw line) pairs, `size` at a time, from line `start` + 1 on (1-based)."""
    chunk = []
    for number, raw in enumerate(lines, start=1):
        if number <= start:
            continue  # done by an earlier run (--resume)
        chunk.append((number, raw))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def score_chunk(model, tokenizer, chunk: list[tuple[int, bytes]], opts: Options) -> list[dict]:
    """Parse, score and turn into records one chunk of input lines."""
    parsed = [parse_line(raw, opts.text_field) for _, raw in chunk]
    texts = [text for text, error in parsed if error is None]
    scores = iter(
        score_texts(model, tokenizer, texts, opts.batch_size, opts.max_tokens, opts.stride, opts.token_logprobs)
    )
    return [
        record(number, TextScore(None, error=error) if error else next(scores), opts.token_logprobs)
        for (number, _), (_, error) in zip(chunk, parsed)
    ]


def score_lines(
    model, tokenizer, lines: Iterable[bytes], out: TextIO, opts: Options, start: int = 0, progress=None
) -> dict:
    """Score input lines (after the first `start`) into JSON lines on `out`, a chunk at a time.
    With opts.strict the first bad line stops the run, after every line before it is written.
    Returns counts: texts scored, errors, tokens scored."""
    done = {"lines": 0, "errors": 0, "tokens": 0}
    for chunk in chunks(lines, opts.batch_size * CHUNK_BATCHES, start):
        records = score_chunk(model, tokenizer, chunk, opts)
        bad = next((r for r in records if "error" in r), None)
        if opts.strict and bad is not None:
            records = records[: records.index(bad)]
        out.write("".join(map(json_line, records)))
        out.flush()
        done["lines"] += len(records)
        done["errors"] += sum("error" in r for r in records)
        done["tokens"] += sum(r.get("n_scored", 0) for r in records)
        if progress is not None:
            progress(len(records), done)
        if opts.strict and bad is not None:
            raise InputError(
                f"line {bad['line']}: {bad['error']} (--strict stops at the first bad line; "
                f"lines before it are written)"
            )
    return done


def check_paths(path: str, out_path: str | None, resume: bool) -> None:
    """Refuse what cannot work before anything is loaded."""
    if resume and out_path is None:
        raise InputError("--resume continues the file given with --out; give --out")
    if path != "-" and not Path(path).is_file():
        raise InputError(f"no such file: {path}")


def run(
    model, tokenizer, path: str, out_path: str | None, opts: Options, resume: bool = False, show_progress: bool = True
) -> dict:
    """The command: open the input (a file, or '-' for stdin) and the output (a file, or stdout),
    resume if asked, and score with a progress bar on stderr."""
    from tqdm import tqdm

    check_paths(path, out_path, resume)
    start = lines_done(Path(out_path)) if resume and out_path and Path(out_path).exists() else 0
    # Bytes, split at b"\n" only: line numbers are those of `wc -l` and `sed -n 5p`, and a line
    # that is not UTF-8 becomes an error record instead of stopping the run.
    # (noqa SIM115: stdin/stdout or a file, so no `with`; the files are closed in the `finally` below)
    source = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    sink = sys.stdout if out_path is None else open(out_path, "a" if resume else "w", encoding="utf-8")  # noqa: SIM115
    bar = tqdm(unit=" texts", file=sys.stderr, disable=not show_progress, initial=start, dynamic_ncols=True)

    def progress(n: int, done: dict) -> None:
        bar.update(n)
        elapsed = bar.format_dict["elapsed"] or float("nan")
        bar.set_postfix_str(f"{done['tokens'] / elapsed:,.0f} tokens/s, {done['errors']} errors")

    try:
        done = score_lines(model, tokenizer, source, sink, opts, start=start, progress=progress)
    finally:
        bar.close()
        if path != "-":
            source.close()
        if sink is not sys.stdout:
            sink.close()
    done["resumed_after"] = start
    return done
