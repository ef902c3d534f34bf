"""Re-run every command block of docs/how-it-works.md and docs/training.md and write what it prints
back into the pages.

    python scripts/docs/refresh_docs.py            # rewrite the page's outputs in place
    python scripts/docs/refresh_docs.py --check    # only say which blocks are stale (exit 1 if any)

Each ```console block is `$ command` and the output. The commands run from the repository root,
as a reader runs them after the README: the page's own `gpt2np random-model` lines make the
models it uses (weights/tiny, and weights/gpt2-shaped for the parameter count), then every
`gpt2np ...` block is run with `python -m gpt2np` and its output replaces the block's. The
tests (tests/test_explain.py, tests/test_docs.py) re-run the same commands and fail on a stale
block; this script is how the blocks are made, so no output on the page is typed by hand.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "docs" / "how-it-works.md", ROOT / "docs" / "training.md"]
BLOCK = re.compile(r"```console\n\$ (.*?)\n(.*?)```", flags=re.S)
MODELS = {  # the models the page uses, made as the page says (gpt2-shaped: random-model's defaults)
    "weights/tiny": "random-model weights/tiny --n-layer 2 --n-head 2 --n-embd 32 --n-positions 64 --seed 1",
    "weights/gpt2-shaped": "random-model weights/gpt2-shaped",
    "weights/small": "random-model weights/small --n-layer 2 --n-head 2 --n-embd 64 --n-positions 128 --init gpt2 --seed 0",
}


def gpt2np(command: str) -> str:
    args = shlex.split(command)
    if args[0] != "gpt2np":
        raise SystemExit(f"the page's block `{command}` is not a gpt2np command: this script only runs those")
    out = subprocess.run([sys.executable, "-m", "gpt2np", *args[1:]], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"`{command}` failed:\n{out.stderr}")
    return out.stdout


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report stale blocks, change nothing")
    parser.add_argument("--page", action="append", help="only this page (how-it-works, training); repeatable")
    args = parser.parse_args(argv)
    stale = []
    for page in PAGES:
        if args.page is None or page.stem in args.page:
            stale += refresh(page, args.check)
    return 1 if args.check and stale else 0


def refresh(page: Path, check: bool) -> list[str]:
    """Re-run the page's blocks; rewrite the page unless check. -> the commands whose output changed."""
    text = page.read_text(encoding="utf-8")
    for folder, command in MODELS.items():
        if folder in text and not (ROOT / folder / "model.safetensors").is_file():
            gpt2np("gpt2np " + command)
    stale = []

    def rerun(match: re.Match) -> str:
        command, shown = match.group(1), match.group(2)
        if command.startswith("gpt2np random-model "):  # made afresh where it cannot meet the user's folder
            folder = shlex.split(command)[2]
            with tempfile.TemporaryDirectory() as tmp:
                printed = gpt2np(command.replace(folder, f"{tmp}/{folder}", 1)).replace(f"{tmp}/", "")
        else:
            printed = gpt2np(command)
        if printed != shown:
            stale.append(command)
        return f"```console\n$ {command}\n{printed}```"

    new = BLOCK.sub(rerun, text)
    for command in stale:
        print(f"{page.name}: {'stale' if check else 'rewritten'}: {command}")
    if not check and new != text:
        page.write_text(new, encoding="utf-8")
    return stale


if __name__ == "__main__":
    sys.exit(main())
