"""A trace file: what `gpt2np trace` writes and `gpt2np compare` reads.

One safetensors file (docs/cross-checking.md, section 2): the inputs, the activation points
under their hooks.py names, and string metadata; with `gpt2np trace --grads`, also the labels,
the loss, the gradient at every point (`<name>_grad`) and every parameter's gradient
(transformers' names), which compare walks in the order backpropagation computes them
(backward_position). Both commands import this module, and neither imports the other.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import GPT2npError, InputError
from ..hooks import BLOCK_POINTS

FORMAT = "gpt2np-trace/1"
INPUTS = ("input_ids", "attention_mask", "position_ids", "labels")  # [B, T] int64, the batch as run (labels: --grads)
GRAD = "_grad"  # TransformerLens's suffix: blocks.3.hook_resid_pre_grad is the loss's gradient there
# One block's gradients in the order its backward computes them, from its output back to its input.
# A parameter's gradient comes out of the same step as the gradient at its layer's input (dx and dW
# of y = x W + b are both made from dy), so it is listed beside that one: when a layer's backward is
# wrong in dx only (LayerNorm without its mean term), its parameters still agree and the gradient
# at its input is the first to diverge.
BLOCK_BACKWARD = (
    "hook_resid_post_grad", "hook_mlp_out_grad",
    "mlp.hook_post_grad", "mlp.c_proj.weight", "mlp.c_proj.bias",  # c_proj's backward
    "mlp.hook_pre_grad",  # GELU's
    "ln2.hook_normalized_grad", "mlp.c_fc.weight", "mlp.c_fc.bias",  # c_fc's
    "ln2.hook_scale_grad", "ln_2.weight", "ln_2.bias", "hook_resid_mid_grad",  # ln_2's (+ the residual)
    "hook_attn_out_grad",
    "attn.hook_z_grad", "attn.c_proj.weight", "attn.c_proj.bias",  # attention's c_proj
    "attn.hook_pattern_grad", "attn.hook_attn_scores_grad",  # the weighted sum's, then softmax's
    "attn.hook_v_grad", "attn.hook_k_grad", "attn.hook_q_grad",  # the weighted sum's and the scores'
    "ln1.hook_normalized_grad", "attn.c_attn.weight", "attn.c_attn.bias",  # c_attn's
    "ln1.hook_scale_grad", "ln_1.weight", "ln_1.bias", "hook_resid_pre_grad",  # ln_1's (+ the residual)
)  # fmt: skip
# Before the blocks (from the loss) and after them (the embeddings), in the same order.
HEAD_BACKWARD = (
    "loss", "logits_grad", "lm_head.weight", "ln_final.hook_normalized_grad",
    "ln_final.hook_scale_grad", "transformer.ln_f.weight", "transformer.ln_f.bias",
)  # fmt: skip
EMBED_BACKWARD = ("hook_pos_embed_grad", "hook_embed_grad", "transformer.wpe.weight", "transformer.wte.weight")


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


def backward_position(name: str) -> tuple[int, int, int] | None:
    """Where a gradient (or the loss) comes in the backward pass, as a sort key; None for a name
    that is none. 'loss' -> (0, 0, 0), 'blocks.3.hook_resid_post_grad' and
    'transformer.h.3.mlp.c_proj.weight' -> (1, -3, ...), 'transformer.wte.weight' -> (2, 0, 3)."""
    if name in HEAD_BACKWARD:
        return 0, 0, HEAD_BACKWARD.index(name)
    if name in EMBED_BACKWARD:
        return 2, 0, EMBED_BACKWARD.index(name)
    for prefix in ("blocks.", "transformer.h."):
        if name.startswith(prefix):
            layer, _, rest = name.removeprefix(prefix).partition(".")
            # blocks.{i}. names a point's gradient (..._grad), transformer.h.{i}. a parameter's
            right_kind = rest in BLOCK_BACKWARD and (prefix == "blocks.") == rest.endswith(GRAD)
            if right_kind and layer.isdigit() and str(int(layer)) == layer:  # "3", not "03" nor "٣"
                return 1, -int(layer), BLOCK_BACKWARD.index(rest)
    return None


def gradient_names_in(tensors) -> list[str]:
    """The loss and the gradients a trace holds, in the order backpropagation computes them (from
    the loss back to the embeddings): its own names sorted, as activation_names_in."""
    names = [n for n in tensors if backward_position(n) is not None]
    return sorted(names, key=lambda n: backward_position(n) or (3, 0, 0))


def point_of(name: str) -> str | None:
    """'blocks.3.hook_q_grad' -> 'blocks.3.hook_q' (the point whose gradient it is); None for the
    loss and a parameter's gradient."""
    return name.removesuffix(GRAD) if name.endswith(GRAD) else None


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
