"""`gpt2np score --file`: score a corpus into JSON lines, one per input line, in input order.

The input is read as a stream, a chunk of lines at a time (never the whole corpus in memory).
Chunk k is always lines k*S + 1 .. (k + 1)*S, with S = --batch-size x CHUNK_BATCHES: a fixed
function of the line numbers. Each chunk is scored in batches of similar length
(gpt2np/corpus.py) and its records are written, in input order, before the next chunk is read.
A line's batch-mates are therefore the same however the run is interrupted and resumed, and so
are its numbers, to the last bit, and its record, byte for byte (on the same machine, with the
same BLAS and the same number of threads: a float32 sum is only that reproducible).

With --out OUT, these files sit next to OUT:
  OUT.part       the records while the run goes on, and after it stopped short (Ctrl-C, kill,
                 a full disk, a crash);
  OUT            the records of a finished run: OUT.part renamed, once every line is done. An
                 existing OUT is replaced at that moment, never emptied before;
  OUT.meta.json  the sidecar: the run's settings (the model's weights, config, dtype and mask
                 fill, the tokenizer, text field, stride, token log-probs, batch size, max
                 tokens, lines per chunk) and how far it got: the lines done (always a whole
                 number of chunks, or the whole input), a sha256 of those input lines and one of
                 their records. Rewritten (atomically) after each chunk, once the chunk's
                 records are on disk (fsync);
  OUT.lock       locked (fcntl.flock) while a run works on OUT, and removed after: a second run
                 on the same OUT refuses instead of interleaving its records with the first's.

`--resume` continues OUT.part (or a finished OUT whose input has grown) once the sidecar proves
it is the same job: the same settings (a difference is named), the same input lines (their
sha256), the same records (theirs). It keeps the records of the chunks the sidecar vouches for,
drops whatever came after them (a chunk written when the run was killed, a line cut in half),
and scores from the next chunk on. A run without --resume never touches an OUT.part: it refuses,
so that an interrupted run is never thrown away by a forgotten flag.

Without --out the records go to stdout as they are made (no sidecar, no resume); so they do to
an --out that is not a regular file (a pipe, /dev/stdout).

A record is {"line", "n_tokens", "n_scored", "log_likelihood", "perplexity"} (+ "token_logprobs"
with --token-logprobs: one per token, null for the first, which nothing predicts), or
{"line", "error"} for a line that could not be scored. JSON has no NaN: a perplexity with
nothing to score (a one-token text) is null, and a text whose numbers are not finite gets an
error record, so that the records around it are written.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import math
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .. import __version__
from ..checkpoint import remembered_sha256
from ..corpus import TextScore, check_batch_limits, score_texts
from ..errors import GPT2npError, InputError

CHUNK_BATCHES = 16  # lines read ahead = batch_size x this: enough for length sorting to find neighbours
BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark, which some editors put at the start of a file
SIDECAR_FORMAT = "gpt2np score --file sidecar, version 1"


@dataclass
class Options:
    text_field: str | None = None  # None: plain text, one text per line
    batch_size: int = 8
    max_tokens: int = 4096
    stride: int | None = None
    token_logprobs: bool = False
    strict: bool = False

    @property
    def chunk_lines(self) -> int:
        """S: chunk k is input lines k*S + 1 .. (k + 1)*S."""
        return self.batch_size * CHUNK_BATCHES


def check_options(opts: Options) -> None:
    """Every option that can be judged without the model, before anything is loaded or opened.
    (The stride's upper bound, the model's context, is checked once the model is loaded.)"""
    if opts.text_field == "":
        raise InputError('--text-field "" names no field; give the JSONL field that holds the text (default: text)')
    check_batch_limits(opts.batch_size, opts.max_tokens)  # "batch_size must be a positive whole number, ..."
    if opts.stride is not None and opts.stride < 1:
        raise InputError(f"--stride must be a whole number of tokens >= 1, got {opts.stride}")


def is_jsonl(path: str, text_field: str | None) -> bool:
    """JSON lines when the file says so (.jsonl) or a field to read was named."""
    return text_field is not None or str(path).endswith(".jsonl")


# --- reading the input ----------------------------------------------------------------------


def input_lines(source: Iterable[bytes]) -> Iterator[bytes]:
    """The input's lines, as bytes split at b"\\n" only (line numbers are those of `wc -l` and
    `sed -n 5p`, and a line that is not UTF-8 becomes an error record instead of stopping the
    run). A byte order mark at the start of the file is not text: dropped (as utf-8-sig does)."""
    lines = iter(source)
    first = next(lines, None)
    if first is None:
        return
    yield first.removeprefix(BOM)
    yield from lines


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
    except RecursionError:  # Python's JSON parser recurses once per level: [[[[... deep enough overflows it
        return None, "the JSON is nested too deeply to read (thousands of levels); each line must be one JSON object"
    if not isinstance(obj, dict):
        return None, f"the line is a JSON {type(obj).__name__}, not an object with a {text_field!r} field"
    if text_field not in obj:
        fields = ", ".join(map(repr, list(obj)[:5])) or "none"
        return None, f"no field {text_field!r} (fields: {fields}); name the text's field with --text-field"
    return obj[text_field], None  # a non-string, non-Unicode or empty text is reported by corpus.score_texts


# --- records --------------------------------------------------------------------------------


def record(line: int, s: TextScore, token_logprobs: bool) -> dict:
    """A TextScore -> the JSON object written for input line `line`."""
    if s.error is not None:
        return {"line": line, "error": s.error}
    numbers = [s.log_likelihood] + ([s.perplexity] if s.n_scored else [])  # no perplexity with nothing scored
    if token_logprobs:
        numbers += list(s.token_logprobs[1:])  # type: ignore[index]  # the first is NaN on purpose (null)
    if not all(math.isfinite(x) for x in numbers):
        # JSON cannot hold NaN or inf, and writing one would fail the whole chunk: this line gets
        # an error record instead, and the records around it are written.
        return {"line": line, "error": "the scores of this text are not finite numbers (NaN or inf)"}
    r: dict[str, Any] = {
        "line": line,
        "n_tokens": s.n_tokens,
        "n_scored": s.n_scored,
        "log_likelihood": s.log_likelihood,
        "perplexity": s.perplexity if s.n_scored else None,
    }
    if token_logprobs:
        first: list[float | None] = [None]  # nothing predicts the first token
        r["token_logprobs"] = first + [float(x) for x in s.token_logprobs[1:]]  # type: ignore[index]
    return r


def json_line(r: dict) -> str:
    return json.dumps(r, allow_nan=False) + "\n"  # allow_nan=False: NaN is not JSON; ASCII: any stdout can take it


# --- the output's files: where, the same file as the input, the lock ------------------------


def part_path(out: Path) -> Path:
    return out.with_name(out.name + ".part")


def meta_path(out: Path) -> Path:
    return out.with_name(out.name + ".meta.json")


def lock_path(out: Path) -> Path:
    return out.with_name(out.name + ".lock")


def is_stream(out_path: str | None) -> bool:
    """Records written straight through (no part file, sidecar or resume): stdout, or an --out
    that exists and is not a regular file (a pipe, /dev/stdout, /dev/null)."""
    return out_path is None or (os.path.exists(out_path) and not stat.S_ISREG(os.stat(out_path).st_mode))


def is_finished_output(out: Path) -> bool:
    """Is OUT the output of a `gpt2np score --file` run: has it a sidecar of ours?"""
    try:
        return read_meta(out) is not None
    except InputError:
        return False


def check_paths(path: str, out_path: str | None, resume: bool) -> None:
    """Refuse what cannot work, before anything is loaded or any output opened."""
    if resume and out_path is None:
        raise InputError("--resume continues the file given with --out; give --out")
    if path != "-" and not os.path.exists(path):
        raise InputError(f"no such file: {path}")
    if path != "-" and os.path.isdir(path):
        raise InputError(f"--file {path} is a folder; give a file (one text per line, or JSON lines)")
    # (Anything else that can be read will do: a FIFO, a <(...) process substitution, /dev/stdin.)
    if out_path is None:
        return
    out = Path(out_path)
    if out.is_dir():
        raise InputError(f"--out {out_path} is a folder; give the name of the file to write")
    if not out.parent.is_dir():
        raise InputError(f"--out {out_path}: there is no folder {out.parent}; create it first")
    if is_stream(out_path):
        if resume:
            raise InputError(f"--resume needs --out to be a regular file; {out_path} is not one")
        return
    if not os.access(out.parent, os.W_OK):
        raise InputError(f"--out {out_path}: the folder {out.parent} is not writable")
    # Same file by device and inode, not by name: a symlink or a hard link to the input is the input.
    given = input_stat(path)
    for written in (out, part_path(out), meta_path(out), lock_path(out)):
        if given is not None and written.exists() and os.path.samestat(os.stat(written), given):
            raise InputError(
                f"--out {out_path} would overwrite the input: {'it' if written == out else written} is the same file "
                f"as {'stdin' if path == '-' else path}; give another --out"
            )


def input_stat(path: str) -> os.stat_result | None:
    """The input's stat (stdin's for '-'), or None if stdin is no file at all (a test's stand-in)."""
    try:
        return os.fstat(sys.stdin.fileno()) if path == "-" else os.stat(path)
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError and a ValueError
        return None


@contextlib.contextmanager
def output_lock(out_path: str | None) -> Iterator[None]:
    """Hold OUT.lock, exclusively, while the run works on OUT; refuse at once if another run
    holds it. The lock is the kernel's (fcntl.flock): a killed run's lock is released with its
    process, so a stale lock file never blocks anyone. The file is removed at the end."""
    if is_stream(out_path):
        yield
        return
    path = lock_path(Path(out_path))  # type: ignore[arg-type]  # not a stream: there is an --out
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(
                f"another `gpt2np score --file` is writing {out_path} (it holds {path}); wait for it to "
                "finish, or give another --out"
            ) from None
        # The run that held the lock removes the file as it finishes: if that happened between our
        # open and our flock, we hold a file no one else can see. Lock the one the name names now.
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):  # (removed by hand meanwhile: nothing to remove)
            os.unlink(path)  # while still locked: whoever opens the name after this gets a new file
        os.close(fd)


# --- the sidecar: the run's settings, and how far it got -------------------------------------

# What each setting is called in a message (the sidecar's keys are Python names).
SETTING_NAMES = {
    "weights": "the model's weights (model.safetensors)",
    "config": "the model's config.json",
    "dtype": "--dtype",
    "mask_fill": "--mask-fill",
    "tokenizer": "the tokenizer",
    "text_field": "--text-field (null: plain text)",
    "stride": "--stride",
    "token_logprobs": "--token-logprobs",
    "batch_size": "--batch-size",
    "max_tokens": "--max-tokens",
    "chunk_lines": "lines per chunk",
}
HASHED = ("weights", "config", "tokenizer")  # compared by a sha256: a difference is "another one"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def run_settings(model: Any, tokenizer: Any, checkpoint: Path, opts: Options) -> dict:
    """Everything a record's bytes depend on (besides the machine). The weights, the config and
    the tokenizer are identified by a sha256 of their whole content: for the weights, the file's
    sha256, read once per version of the file and then remembered (checkpoint.remembered_sha256),
    so that --resume refuses weights changed anywhere, even by a byte between the blocks a sample
    would read. (What it cannot see: bytes changed behind the filesystem's back, without a change
    of size, mtime, ctime or inode, outside checkpoint.content_sample's blocks.)"""
    return {
        "weights": remembered_sha256(checkpoint),
        "config": sha256_text(json.dumps(model.config.to_dict(), sort_keys=True)),
        "dtype": str(model.dtype),
        "mask_fill": str(model.mask_fill),
        "tokenizer": sha256_text(tokenizer.backend.to_str()),  # the whole tokenizer, as tokenizers serializes it
        "text_field": opts.text_field,
        "stride": opts.stride,
        "token_logprobs": opts.token_logprobs,
        "batch_size": opts.batch_size,
        "max_tokens": opts.max_tokens,
        "chunk_lines": opts.chunk_lines,
    }


def differences(then: dict, now: dict) -> list[str]:
    """The settings that differ between a sidecar and this run, as a reader would name them."""
    out = []
    for key, name in SETTING_NAMES.items():
        if key == "chunk_lines" and then.get("batch_size") != now.get("batch_size"):
            continue  # follows from the batch size, named already
        if then.get(key) != now.get(key):
            out.append(f"{name}: another one" if key in HASHED else f"{name}: {then.get(key)} then, {now.get(key)} now")
    return out


@dataclass
class Progress:
    """How far a run got: lines done (whole chunks, or the whole input), a sha256 of their raw
    input lines and one of their records, and the records' bytes. Kept as running hashes."""

    lines: int = 0
    input_hash: Any = field(default_factory=hashlib.sha256)
    records_hash: Any = field(default_factory=hashlib.sha256)
    records_bytes: int = 0

    def add(self, raw_lines: list[bytes], text: str) -> None:
        for raw in raw_lines:
            self.input_hash.update(raw)
        data = text.encode()
        self.records_hash.update(data)
        self.lines += len(raw_lines)
        self.records_bytes += len(data)

    def as_json(self) -> dict:
        return {
            "lines": self.lines,
            "input_sha256": self.input_hash.hexdigest(),
            "records_sha256": self.records_hash.hexdigest(),
            "records_bytes": self.records_bytes,
        }


def write_meta(out: Path, settings: dict, progress: Progress, input_name: str) -> None:
    """Replace OUT.meta.json in one step (write a temporary file, fsync, rename over it), so
    that it is always whole: the old version or the new one."""
    meta = {
        "format": SIDECAR_FORMAT,
        "settings": settings,
        "done": progress.as_json(),
        "about": {"input": input_name, "gpt2np": __version__},  # for people; never compared
    }
    tmp = meta_path(out).with_name(meta_path(out).name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, meta_path(out))


def read_meta(out: Path) -> dict | None:
    path = meta_path(out)
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("format") != SIDECAR_FORMAT or not isinstance(meta.get("settings"), dict):
            raise ValueError
        done = meta["done"]
        # whole numbers >= 0 (an edited "lines": -5 would index the records from the end) and hex digests
        if not all(type(done[k]) is int and done[k] >= 0 for k in ("lines", "records_bytes")):
            raise ValueError
        if not all(isinstance(done[k], str) for k in ("input_sha256", "records_sha256")):
            raise ValueError
        return meta
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # RecursionError: [[[[... nested deep
        raise InputError(
            f"cannot resume: {path} is not a sidecar written by this version of gpt2np; start over without --resume "
            f"(delete {part_path(out)} if there is one)"
        ) from None


# --- resuming -------------------------------------------------------------------------------


@dataclass
class Resumed:
    """Where a resumed run starts: `progress` up to the last line kept, and the input lines
    already read past it (they are scored again, before the rest of the input)."""

    progress: Progress
    pending: list[bytes]


def count_records(path: Path, marks: tuple[int, ...]) -> tuple[int, dict[int, tuple[Any, int]]]:
    """(how many complete records `path` holds, {m: (sha256 of the first m records, their bytes)}
    for each m in `marks`), checking that the records are those of lines 1, 2, ... in order."""
    count, h, nbytes, at = 0, hashlib.sha256(), 0, {}
    with open(path, "rb") as f:
        for raw in f:
            if count in marks:
                at[count] = (h.copy(), nbytes)
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
            h.update(raw)
            nbytes += len(raw)
            count += 1
    if count in marks:
        at[count] = (h.copy(), nbytes)
    return count, at


def resume(out: Path, settings: dict, lines: Iterator[bytes], input_name: str) -> Resumed:
    """Check that OUT.part (or a finished OUT) is this job's, cut it back to its last whole
    chunk, and say where to go on. Reads from `lines` the input lines already done, to check
    them against their sha256 in the sidecar."""
    part, S = part_path(out), settings["chunk_lines"]
    meta = read_meta(out)
    data = part if part.exists() else out if out.exists() else None
    if meta is None:
        if data is None:
            return Resumed(Progress(), [])  # nothing to resume: start at line 1
        raise InputError(
            f"cannot resume {data}: it has no sidecar {meta_path(out)}, so nothing says how its records were made "
            "(another program, an older gpt2np?); start over without --resume, or give another --out"
        )
    start_over = f"start over without --resume (delete {part} first if it is there), or give another --out"
    changed = differences(meta["settings"], settings)
    if changed:
        raise InputError(
            f"cannot resume {data or out}: it was scored with other settings ({'; '.join(changed)}); use the "
            f"same settings, or {start_over}"
        )
    done = meta["done"]
    K = done["lines"]  # lines done: whole chunks, or the whole input as it was
    boundary = K - K % S  # the last chunk boundary: K itself, unless the input ended mid-chunk
    if data is None:
        if K == 0:
            return Resumed(Progress(), [])  # stopped before its first record: start at line 1
        raise InputError(
            f"cannot resume: {meta_path(out)} says {K} lines were scored, but neither {part} nor {out} is there; {start_over}"
        )

    # The records: at least the K the sidecar vouches for, and those exactly. A stopped run leaves
    # at most one more chunk (written, not yet in the sidecar); a resume stopped between writing
    # the sidecar and cutting the file, at most two. More is not something gpt2np left.
    n_records, at = count_records(data, (boundary, K))
    if n_records < K:
        raise InputError(
            f"cannot resume: {data} holds {n_records} records, fewer than the {K} its sidecar says were written: it was changed since; {start_over}"
        )
    if at[K][0].hexdigest() != done["records_sha256"]:
        raise InputError(
            f"cannot resume: the first {K} records of {data} are not those its sidecar describes (were they edited?); {start_over}"
        )
    if n_records > K + 2 * S:
        raise InputError(
            f"cannot resume: {data} holds {n_records} records, more than the {K} its sidecar vouches for and the chunks of {S} lines a stopped run may add; {start_over}"
        )

    # The input's first K lines must be the lines scored. Keep the running hash at the last
    # chunk boundary, and the lines after it: a last chunk cut short by the end of the input is
    # scored again if the input has grown since, so that its lines get the batch-mates of an
    # uninterrupted run on the grown input.
    input_hash, at_boundary, tail = hashlib.sha256(), hashlib.sha256(), []
    for number in range(1, K + 1):
        raw = next(lines, None)
        if raw is None:
            raise InputError(
                f"cannot resume: the input ({input_name}) has {number - 1} lines, but {data} holds the records of {K}: it is not the input they were scored from; {start_over}"
            )
        input_hash.update(raw)
        if number == boundary:
            at_boundary = input_hash.copy()
        if number > boundary:
            tail.append(raw)
    if input_hash.hexdigest() != done["input_sha256"]:
        raise InputError(
            f"cannot resume: lines 1-{K} of the input ({input_name}) are not the lines the records in {data} were scored from; {start_over}"
        )
    keep = K
    if tail:  # the input ended mid-chunk, at line K
        following = next(lines, None)
        if following is not None:  # ... and has grown since: score the cut chunk again, whole
            keep, input_hash, tail = boundary, at_boundary, [*tail, following]
        else:
            tail = []
    records_hash, records_bytes = at[keep]
    if data == out:
        os.replace(out, part)  # a finished OUT goes on growing: it is a run in progress again
    progress = Progress(keep, input_hash, records_hash, records_bytes)
    # The sidecar first, then the cut: stopped in between, the file still holds what it vouches for.
    write_meta(out, settings, progress, input_name)
    with open(part, "rb+") as f:
        f.truncate(records_bytes)  # the records of lines 1..keep; a chunk after them, a cut line: gone
    return Resumed(progress, tail)


# --- scoring --------------------------------------------------------------------------------


def chunks(lines: Iterable[bytes], size: int, first: int = 1) -> Iterator[list[tuple[int, bytes]]]:
    """(line number, raw line) pairs, `size` at a time; the first line is line `first` (1-based)."""
    numbered = enumerate(lines, start=first)
    while chunk := list(itertools.islice(numbered, size)):
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
    model,
    tokenizer,
    lines: Iterable[bytes],
    out: TextIO,
    opts: Options,
    start: int = 0,
    progress=None,
    chunk_done=None,
) -> dict:
    """Score input lines (the first being line `start` + 1) into JSON lines on `out`, a chunk
    at a time; after each whole chunk is written, `chunk_done(raw lines, text written)`.
    With opts.strict the first bad line stops the run, after every line before it is written.
    Returns counts: texts scored, errors, tokens scored."""
    done = {"lines": 0, "errors": 0, "tokens": 0}
    for chunk in chunks(lines, opts.chunk_lines, start + 1):
        records = score_chunk(model, tokenizer, chunk, opts)
        bad = next((r for r in records if "error" in r), None)
        if opts.strict and bad is not None:
            records = records[: records.index(bad)]
        text = "".join(map(json_line, records))
        out.write(text)
        out.flush()
        if chunk_done is not None and len(records) == len(chunk):
            chunk_done([raw for _, raw in chunk], text)
        done["lines"] += len(records)
        done["errors"] += sum("error" in r for r in records)
        done["tokens"] += sum(r.get("n_scored", 0) for r in records)
        if progress is not None:
            progress(len(records), done)
        if opts.strict and bad is not None:
            where = (
                ""
                if chunk_done is None
                else " (the records so far are kept for --resume: fix the line and run the same command with --resume)"
            )
            raise InputError(
                f"line {bad['line']}: {bad['error']} (--strict stops at the first bad line; "
                f"lines before it are written){where}"
            )
    return done


def run(
    model,
    tokenizer,
    path: str,
    out_path: str | None,
    opts: Options,
    resume_run: bool = False,
    show_progress: bool = True,
    settings: dict | None = None,
) -> dict:
    """The command, once the options and paths are checked and OUT.lock is held: open the input
    (a file, or '-' for stdin) and the output (OUT.part, stdout or a stream), resume if asked,
    score with a progress bar on stderr, and put OUT.part in place as OUT at the end."""
    from tqdm import tqdm

    input_name = "stdin" if path == "-" else path
    out = None if is_stream(out_path) else Path(out_path)  # type: ignore[arg-type]  # not a stream: an --out
    state = Progress()  # how far the run got: the lines done, in whole chunks
    sink: TextIO | None = None
    # (noqa SIM115: stdin/stdout or a file, so no `with`; the files are closed in the `finally` below)
    source = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    try:
        lines: Iterator[bytes] = input_lines(source)
        if out is None:
            sink = sys.stdout if out_path is None else open(out_path, "w", encoding="utf-8")  # noqa: SIM115
        else:
            assert settings is not None, "a run into a file records its settings"
            if resume_run:
                resumed = resume(out, settings, lines, input_name)
                state, lines = resumed.progress, itertools.chain(resumed.pending, lines)
            elif part_path(out).exists():
                raise InputError(
                    f"{part_path(out)} holds the records of an interrupted run: continue it with --resume (the same "
                    f"command plus --resume), or delete it to start over"
                )
            write_meta(out, settings, state, input_name)  # before OUT.part exists: it never lacks a sidecar
            sink = open(part_path(out), "a", encoding="utf-8")  # noqa: SIM115  appends after the records kept
        start = state.lines

        def chunk_done(raw_lines: list[bytes], text: str) -> None:
            os.fsync(sink.fileno())  # the records reach the disk before the sidecar says they are there
            state.add(raw_lines, text)
            write_meta(out, settings, state, input_name)  # type: ignore[arg-type]  # only called with a file

        bar = tqdm(unit=" texts", file=sys.stderr, disable=not show_progress, initial=start, dynamic_ncols=True)

        def progress(n: int, done: dict) -> None:
            bar.update(n)
            elapsed = bar.format_dict["elapsed"] or float("nan")
            bar.set_postfix_str(f"{done['tokens'] / elapsed:,.0f} tokens/s, {done['errors']} errors")

        try:
            done = score_lines(
                model, tokenizer, lines, sink, opts, start, progress, chunk_done=None if out is None else chunk_done
            )
        finally:
            bar.close()
        if out is not None:
            sink.close()
            os.replace(part_path(out), out)  # the finished output, in one step
    except GPT2npError:
        raise  # a refusal, or --strict's stop: its message says what to do
    except BaseException:  # Ctrl-C, a full disk, a crash: say where the records are and how to go on
        if out is not None and part_path(out).exists():
            sys.stderr.write(
                f"gpt2np: {state.lines} lines are done and kept in {part_path(out)}; the same command with --resume "
                f"continues from line {state.lines + 1}\n"
            )
        raise
    finally:
        if path != "-":
            source.close()
        if sink is not None and sink is not sys.stdout:
            sink.close()
    done["resumed_after"] = start
    return done
