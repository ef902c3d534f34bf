"""`gpt2np download NAME`: put a model into weights/NAME/ so that this checkout works offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..hub import DOWNLOAD_FILES, download, weights_dir
from .common import add_debug
from .overwrite import add_overwrite_flag, check_out_folder, nonempty_path


def add_parser(sub) -> None:
    d = sub.add_parser("download", help="put a model into weights/NAME/ for offline use")
    d.add_argument("name", help="gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2 or a hub repo id")
    d.add_argument("--dest", default=None, type=nonempty_path, help="folder to write (default: weights/NAME)")
    d.add_argument("--no-verify", action="store_true", help="skip the size/sha256 check")
    add_overwrite_flag(d, "the download")
    add_debug(d)
    d.set_defaults(run=cmd_download)


def is_a_download(folder: Path) -> bool:
    """Does `folder` hold only what an earlier download put there: model files, each with the
    record huggingface_hub keeps of its download (.cache/huggingface/download/FILE.metadata)?
    Then downloading again only fetches what changed; anything else in it is the user's."""
    records = folder / ".cache" / "huggingface" / "download"
    for path in folder.iterdir():
        if path.name == ".cache":
            continue
        if path.name not in DOWNLOAD_FILES or not (records / f"{path.name}.metadata").is_file():
            return False
    return True


def cmd_download(args: argparse.Namespace) -> int:
    dest = args.dest if args.dest is not None else str(weights_dir() / args.name)
    check_out_folder(  # the overwrite rule (tools/overwrite.py)
        dest,
        overwrite=args.overwrite,
        is_ours=is_a_download,
        ours=", and holds more than an earlier download of a model",
        flag="--dest",
    )
    dest = download(args.name, dest=Path(dest), verify=not args.no_verify)
    print(f"{args.name} is in {dest}")
    return 0
