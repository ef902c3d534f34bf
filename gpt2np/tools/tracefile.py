"""A trace file: what `gpt2np trace` writes and `gpt2np compare` reads.

One safetensors file (docs/cross-checking.md, section 2): the inputs, the activation points
under their hooks.py names, and string metadata. Both commands import this module, and
neither imports the other.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import GPT2npError, InputError
from ..hooks import BLOCK_POINTS

FORMAT = "gpt2np-trace/1"
INPUTS = ("input_ids", "attention_mask", "position_ids")  # [B, T] int64, the batch as run


def forward_position(name: str) -> tuple[int, int, int] | None:
    """Where an activation point comes in the forward pass, as a sort key; None for a name that is
    no point. 'hook_embed' -> (0, 0, 0), 'blocks.3.attn.hook_q' -> (1, 3, 2), 'logits' -> (2, 0, 1)."""
    first, last = ["hook_embed", "hook_pos_embed"], ["ln_final.hook_normalized", "logits"]
    if name in first:
        return 0, 0, first.index(name)
    if name in last:
        return 2, 0, last.index(name)
    parts = name.split(".", 2)  # "blocks", "3", "attn.hook_q"
    if len(parts) == 3 and parts[0] == "blocks" and parts[2] in BLOCK_POINTS:
        layer = parts[1]
        if layer.isdigit() and str(int(layer)) == layer:  # "3", not "03" nor "٣"
            return 1, int(layer), BLOCK_POINTS.index(parts[2])
    return None


def activation_names_in(tensors) -> list[str]:
    """The activation points a trace holds, in forward order: its own names sorted, never a list
    built from a block count (a name like blocks.99999999999.hook_q must not make us build 10^11)."""
    points = [n for n in tensors if forward_position(n) is not None]
    return sorted(points, key=lambda n: forward_position(n) or (3, 0, 0))


def save_trace(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside, then renamed over: a file being replaced (a trace, or a file the user allowed
    # with --overwrite) is never half-written, nor truncated under a memory map that reads it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def is_trace_file(path: str | Path) -> bool:
    """Is `path` a trace gpt2np wrote (a safetensors file whose metadata says FORMAT)?"""
    import json
    import struct

    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(min(n, 100 * 1024 * 1024)))
        return header.get("__metadata__", {}).get("format") == FORMAT
    except Exception:  # noqa: BLE001  anything unreadable is not a trace
        return False


def load_trace(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of a safetensors trace; InputError when it cannot be read."""
    from safetensors import safe_open

    from ..checkpoint import map_tensors

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist; write a trace with `gpt2np trace ... --out {path.name}`")
    try:
        tensors = map_tensors(path)
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
    except GPT2npError as e:
        raise InputError(f"{path} is not a readable safetensors trace: {e}") from None
    except Exception as e:  # noqa: BLE001  the safetensors package's own errors
        raise InputError(f"{path} is not a readable safetensors trace: {e}") from None
    return tensors, metadata
