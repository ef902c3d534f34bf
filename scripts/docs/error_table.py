"""Regenerate docs/errors.md: every bad input we know of, the error it gets, and its test.

    python scripts/docs/error_table.py            # print the table
    python scripts/docs/error_table.py --write    # rewrite docs/errors.md

Each row is a real run: the bad input is tried here (offline, in a temporary folder; the hub
download cases run against the local fake hub of tests/test_hub.py), and the message in the
table is the one that came out, with temporary paths shortened to "…/". A case that does not
raise the error class it is listed with stops the script: the table cannot drift silently.
Uses the GPT-2 tokenizer files that ship inside the package.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys

from error_cases import CASES
from error_fixtures import ROOT, TMP, TOKENIZER_DIR, CliError  # sets up an offline temporary home first


def run_case(expected, call) -> tuple[str, str]:
    """-> (error class shown, message)."""
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            call()
        except CliError as e:
            if e.cls != expected.__name__:
                raise SystemExit(
                    f"error_table.py: expected {expected.__name__}, the command line raised {e.cls}: {e}"
                ) from None
            return e.cls, str(e)
        except expected as e:
            return type(e).__name__, str(e)
    raise SystemExit(f"error_table.py: expected {expected.__name__}, but nothing was raised by {call!r}")


def cell(text: str, limit: int = 330) -> str:
    text = text.replace(str(TMP) + "/", "…/").replace(str(TMP), "…").replace(str(TOKENIZER_DIR), "<tokenizer>")
    text = " ".join(re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text).split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text.replace("|", "\\|").replace("`", "'")


HEADER = """# Bad inputs and the errors they get

Every error gpt2np raises on purpose is a subclass of `gpt2np.GPT2npError`; the ones about
bad arguments (`InputError`, `ConfigError`) are also `ValueError`s. Each message says what is
wrong and how to fix it. From the command line the same message is one line on stderr with a
non-zero exit (2 for a malformed command line, 1 for anything else), and no traceback unless
`--debug` is given (before or after the subcommand).

Choices made:
- 1-D `input_ids` are one sequence (as in transformers' forward); the outputs then drop the batch axis.
- Right padding given to `generate` is refused (transformers warns and then generates from a pad position).
- Generation settings that transformers accepts with a warning, or drops silently, are refused:
  `min_new_tokens` / `min_length` beyond the length limit (it warns), `bad_words_ids` holding
  the eos token alone (it drops that word). A tiny temperature is greedy decoding, not NaN; one
  the logits' dtype rounds to 0 is refused.
- `mask_fill` is `"-inf"`, `"-1e9"`, `"min"` (transformers' choice, the default) or a negative number.
- Known files (gpt2's model.safetensors: 548105171 bytes, sha256 248dfc39…a707; the tokenizer's
  vocab.json and merges.txt) and every large file whose sha256 the hub announced are checked
  once, after download or on first use; the result is remembered, so the next load does not
  hash again. `verify=False` / `--no-verify` skips the check.
- Pickle files (`pytorch_model.bin`) are never opened.
- A NaN or an infinity in any weight is refused at load, naming the tensor. The check reads every
  weight once per version of the file (max and min of each tensor; the first load of the 124M
  model pays it) and is remembered like the sha256 check; it runs even with `verify=False`.
- A model folder without tokenizer files gets GPT-2's own tokenizer (it ships with gpt2np) when
  its config.json has GPT-2's vocabulary (50257 tokens), whether or not a `pytorch_model.bin` lies
  beside its `model.safetensors`; otherwise it needs `--tokenizer FOLDER`. The commands load the
  model before its tokenizer, so a problem of the model folder is reported as the model's.
- Scoring many texts (`gpt2np score --file`, `score_texts`, Ray's `score_dataset`), one bad text
  never stops the others: it gets an error record (`{"line": 7, "error": "..."}`, the `error`
  column) saying why. So do a line that is not UTF-8, not JSON, nested too deeply for the JSON
  parser or without the field; a text that is not a string, empty, holding a lone surrogate or
  too long without `--stride`; and a text whose forward pass fails (its batch is scored again one
  text at a time) or whose scores are not finite. A UTF-8 byte order mark at the start of a file
  is not text. `--strict` stops at the first bad line instead.
- `gpt2np score --file --out OUT` writes `OUT.part` and renames it to `OUT` when done (an existing
  `OUT` is never emptied first), holds `OUT.lock` while it runs, and keeps its settings and
  progress in `OUT.meta.json`; `--resume` continues only the same job (docs/scale.md). The job's
  weights are identified by the sha256 of the whole `model.safetensors`, computed once per version
  of the file and remembered (by size, mtime, ctime, inode and a sampled fingerprint), so weights
  changed anywhere by an ordinary write are "another model". What it cannot see: bytes changed
  behind the filesystem's back (a raw block device, a restore with the clock turned back) that
  leave size, mtime, ctime and inode alone and fall between the sampled blocks.
- **The overwrite rule**, for every command that writes (`score --out`, `trace --out`, `plot --out`,
  `random-model`, `download`, and the ones to come; gpt2np/tools/overwrite.py): a command writes
  over nothing it did not make unless given `--overwrite`. Not a file of the model it loaded (the
  files of its folder: config.json, model.safetensors, tokenizer files); not a file that is not a
  finished output of the same command (a `score --file` output has its sidecar, a trace says
  `format: gpt2np-trace/1`, a PNG of `plot` says `Software: gpt2np plot`); not a folder holding anything but what the command itself wrote there
  (`random-model` needs an empty or new folder; `download` an empty one or its own earlier
  download); never through a symlink (with `--overwrite` the link's target is written and the link
  kept). A stream (a pipe, /dev/stdout, /dev/null) is written to as it is. `random-model ''` is a
  usage error. Every check runs before a model is loaded or an output opened, and the safe ways
  of writing stay: `OUT.part` renamed into place, the lock, `--resume`; a trace is written beside
  its `--out` and renamed over it.
- NumPy's warnings never reach the terminal: a RuntimeWarning (overflow, invalid value) during a
  command stops it with one line and no result, rather than printing a result it may have spoiled.
  Settings that would make one are refused first, naming the setting: a `repetition_penalty` or a
  `length_penalty` the dtype cannot carry, a shape or a number of beams beyond the memory available.

What cannot be detected:
- A wrong `n_head` in config.json: no tensor's shape depends on it (`c_attn` is `[C, 3C]` for any
  number of heads), so the checkpoint loads and runs and computes something else. Only that
  `n_embd` splits into `n_head` equal heads is checked. Keep `n_head` from the model's own config.

Generated by `python scripts/docs/error_table.py --write` from real runs; messages are abridged
(temporary paths shortened to `…/`).
"""


def build_table() -> str:
    lines = [HEADER]
    for group, cases in CASES:
        lines += [f"\n## {group}\n", "| bad input | error | message | test |", "| --- | --- | --- | --- |"]
        for what, expected, call, test in cases:
            try:
                name, message = run_case(expected, call)
            except SystemExit as e:
                raise SystemExit(f"{e} (the case: {what})") from None
            tests = ", ".join(f"`tests/{t.strip()}`" for t in test.split(","))
            lines.append(f"| {what} | `{name}` | {cell(message)} | {tests} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite docs/errors.md")
    args = parser.parse_args()
    table = build_table()
    if args.write:
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "errors.md").write_text(table)
        print(f"wrote {ROOT / 'docs' / 'errors.md'}")
    else:
        sys.stdout.write(table)
