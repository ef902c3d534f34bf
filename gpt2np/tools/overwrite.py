"""The overwrite rule, one for every command that writes (score --out, trace --out, plot --out,
page --out, random-model, download, llmc export / import, and the ones to come):

    A command writes over nothing it did not make, unless told to with --overwrite:
    - never a file of the model it loaded (the files in its folder: config.json, model.safetensors,
      the tokenizer's files);
    - never a file, or a folder's content, that is not a finished output of the same command
      (a score --out with its sidecar, a trace file, a PNG plot drew, an earlier download);
    - never through a symlink: an --out that is a symlink to a file would replace the link's
      target, which the user may not know; with --overwrite the target is written (as the shell's
      `>` does), the link is kept.
    A stream (a pipe, /dev/stdout, /dev/null) is written to as it is: it holds nothing to lose.

Every check runs before any model is loaded or any output opened: a refusal costs nothing.
The safe ways of writing stay as they were: OUT.part renamed into place when done, the lock, --resume.
"""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import GPT2npError, InputError

HOW = "give another path, or add --overwrite to replace it"


def add_overwrite_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"allow {what} to replace what gpt2np did not write there itself: another program's file, a file of "
        "the loaded model, a symlink's target (refused otherwise: docs/errors.md, the overwrite rule)",
    )


def nonempty_path(value: str) -> str:
    """argparse type: a path that names something ('' would be the current directory)."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"{value!r} names no path; give a file or folder name")
    return value


# What a model folder holds of the model itself (hub.DOWNLOAD_FILES, the files transformers saves
# beside them, the recipe of a test model): never written over. Anything else in the folder (a
# score --out the user put there) follows the rest of the rule.
MODEL_FILE_NAMES = {
    "config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json", "generation_config.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "model.safetensors.index.json",
    "pytorch_model.bin", "recipe.txt",
}  # fmt: skip


def model_files(*names: str | Path | None) -> list[Path]:
    """The files of the models / tokenizers named, found without a download: the ones the loader
    reads, and the other model files (MODEL_FILE_NAMES) of their folders; [] for a name that
    resolves to nothing here (loading it will say why)."""
    from ..hub import resolve_model_files, resolve_tokenizer_files

    files: set[Path] = set()
    for name in names:
        if name is None or str(name) == "":
            continue
        folder = Path(name).expanduser()
        if folder.is_dir():
            files.update(folder / f for f in MODEL_FILE_NAMES)
        for resolve in (resolve_model_files, resolve_tokenizer_files):
            try:
                found = resolve(name, verify=False, local_files_only=True)
            except (GPT2npError, OSError):  # not here: loading the model will say so, in its own words
                continue
            files.update(found.values())
            files.update(p.parent / f for p in found.values() for f in MODEL_FILE_NAMES)
    return sorted(p for p in files if p.exists())


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samestat(os.stat(a), os.stat(b))
    except OSError:
        return False


def check_out_file(
    out: str,
    *,
    overwrite: bool,
    protected: Iterable[Path] = (),
    is_ours: Callable[[Path], bool] = lambda path: False,
    ours: str = "a file this command wrote",
    also: Iterable[Callable[[Path], Path]] = (),
    flag: str = "--out",
) -> str:
    """The path to write `out` to, or an InputError saying why not (the rule above).

    protected: the loaded model's files (never written without --overwrite); is_ours(path): is
    the existing file a finished output of this command (then it may be replaced); also: the
    files written beside OUT (OUT.part, ...), checked against the protected files too."""
    path = Path(out)
    if os.path.islink(path):
        if path.exists() and not stat.S_ISREG(os.stat(path).st_mode):  # (os.stat follows /proc's magic links too)
            return out  # a link to a stream (/dev/stdout is one, to a pipe or a terminal): written to as it is
        target = path.resolve()
        if not overwrite:
            raise InputError(
                f"{flag} {out} is a symlink to {target}: writing would replace that file; give the target itself, "
                "or add --overwrite to write into it (the link is kept)"
            )
        path = target
    if path.exists() and not stat.S_ISREG(os.stat(path).st_mode):
        return str(path)  # a stream, or a folder (refused by the command in its own words)
    protected = list(protected)
    for written in (path, *(f(path) for f in also)):
        hit = next((p for p in protected if _same_file(written, p)), None)
        if hit is not None and not overwrite:
            which = "it" if written == path else str(written)
            raise InputError(
                f"{flag} {out}: {which} is {hit.name} of the model being used ({hit}); writing there would destroy "
                f"the model: {HOW}"
            )
    if path.exists() and not overwrite and not is_ours(path):
        raise InputError(f"{flag} {out} already exists and is not {ours}: {HOW}")
    return str(path)


def check_out_folder(
    out: str,
    *,
    overwrite: bool,
    is_ours: Callable[[Path], bool],
    ours: str = "",
    flag: str = "OUT",
) -> Path:
    """A folder to write a model into: absent, empty, or `is_ours` (a finished output of this
    command, which `ours` names for the message: ", and not ..."); anything else only with
    --overwrite. A symlink to a folder is refused without it."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {out} is a file; name a folder to write the model into")
    if os.path.islink(path) and not overwrite:
        raise InputError(
            f"{flag} {out} is a symlink to {path.resolve()}: writing would change that folder; give the folder "
            "itself, or add --overwrite"
        )
    if path.is_dir() and any(path.iterdir()) and not overwrite and not is_ours(path):
        held = sorted(p.name for p in path.iterdir())
        shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
        raise InputError(
            f"{flag} {out} is not empty ({shown}){ours}: give an empty or new folder, or add --overwrite to write into it"
        )
    return path
