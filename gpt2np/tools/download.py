"""`gpt2np download NAME`: put a model into weights/NAME/ so that this checkout works offline."""

from __future__ import annotations

import argparse

from ..hub import download
from .common import add_debug


def add_parser(sub) -> None:
    d = sub.add_parser("download", help="put a model into weights/NAME/ for offline use")
    d.add_argument("name", help="gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2 or a hub repo id")
    d.add_argument("--dest", default=None, help="folder to write (default: weights/NAME)")
    d.add_argument("--no-verify", action="store_true", help="skip the size/sha256 check")
    add_debug(d)
    d.set_defaults(run=cmd_download)


def cmd_download(args: argparse.Namespace) -> int:
    dest = download(args.name, dest=args.dest, verify=not args.no_verify)
    print(f"{args.name} is in {dest}")
    return 0
