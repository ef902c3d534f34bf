"""Deliberately wrong GPT-2s, each writing a trace, for docs/cross-checking.md and its tests.

    python scripts/data/wrong_variants.py REFERENCE.safetensors --model FOLDER --out DIR

reads the batch (input_ids, attention_mask) from the reference trace, as your own
implementation would, and writes DIR/correct.safetensors (gpt2np's float32, which must pass)
and one trace per wrong variant:

    positions-not-offset   position ids arange(T), not counting the left pads
    softmax-no-max         exp(s) / sum(exp(s)) without subtracting the row's max first
    gelu-erf               the exact erf GELU instead of GPT-2's tanh form
    layernorm-ddof1        LayerNorm with the unbiased variance (divides by C - 1)
    mask-fill-twice        padding mask + causal mask added, so a cell that is both gets 2 x fill
    pad-rows-nan           fill -inf and no care for a pad query that may see no key: 0/0 = NaN
    mask-not-applied       the scores are computed for every key and nothing masks them
    heads-major            q, k, v and z saved as [B, H, T, D] (attention's own layout)

and one per convention, correct code written another way, which must pass (with a note):

    fill-minus-inf         the forbidden cells hold -inf, whatever fill the reference used
    forbidden-unwritten    a loop over the allowed keys only (j <= i) into a zeroed array: the
                           forbidden cells of hook_attn_scores hold 0

Given a reference with gradients (`gpt2np trace ... --grads`), it writes instead
DIR/correct-grads.safetensors and one trace per wrong *backward* (the forward is right in each):

    layernorm-backward-no-mean   LayerNorm's backward without its mean term (dx = (dxhat - xhat
                                 mean(dxhat xhat)) / std: the - mean(dxhat) is missing)
    softmax-backward-no-rowsum   softmax's backward as p * dp, without the row sum (- p sum(p dp))
    loss-grad-not-averaged       the loss is the mean, but its gradient is not divided by N
    weight-grads-transposed      each Conv1D weight's gradient saved [out, in], nn.Linear's layout

Each variant is gpt2np's own forward pass (or backward pass) with one function swapped for the
wrong one (or its trace saved another way), so nothing else differs. `gpt2np compare REFERENCE
DIR/<variant>.safetensors` must name the point in VARIANTS as the first divergence, and pass
the CONVENTIONS (tests/test_cross_checking.py checks it). --only NAME writes just those.

    python scripts/data/wrong_variants.py --sharpen FOLDER DEST

writes a copy of the model FOLDER whose block-0 queries are scaled by 50 (a "sharp" head, some
scores above 88.7 = log of float32's max, where a softmax that does not subtract the max
overflows); on the random test models' mild scores (|s| < 10) that bug changes nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gpt2np import GPT2  # noqa: E402
from gpt2np.masks import AttentionMask, position_ids_from_mask  # noqa: E402
from gpt2np.tools.trace import trace_metadata  # noqa: E402
from gpt2np.tools.tracefile import load_trace, save_trace  # noqa: E402

# name: (what is wrong, the first point where compare must see it)
VARIANTS = {
    "positions-not-offset": ("position ids arange(T) instead of cumsum(mask) - 1", "position_ids"),
    "softmax-no-max": ("softmax without subtracting the row's max", "blocks.0.attn.hook_pattern"),
    "gelu-erf": ("exact erf GELU instead of the tanh form", "blocks.0.mlp.hook_post"),
    "layernorm-ddof1": ("LayerNorm variance with ddof=1", "blocks.0.ln1.hook_normalized"),
    "mask-fill-twice": ("padding and causal masks added: 2 x fill where both forbid", "blocks.0.attn.hook_attn_scores"),
    "pad-rows-nan": (
        "fill -inf, a pad query's fully masked row left as softmax makes it: NaN",
        "blocks.0.attn.hook_pattern",
    ),
    "mask-not-applied": ("no mask added to the scores: softmax over every key", "blocks.0.attn.hook_pattern"),
    "heads-major": ("q, k, v, z saved as [B, H, T, D]", "blocks.0.attn.hook_q"),
}
# name: what is different; compare must pass these, with a note on hook_attn_scores
CONVENTIONS = {
    "fill-minus-inf": "forbidden score cells hold -inf",
    "forbidden-unwritten": "forbidden score cells never written (0)",
}
# name: (what is wrong in the backward, the first gradient where compare must see it), on a 2-block model
BACKWARD_VARIANTS = {
    "layernorm-backward-no-mean": (
        "LayerNorm's backward without its mean term",
        "blocks.1.hook_resid_post_grad",  # ln_f's backward is the first LayerNorm backward reached
    ),
    "softmax-backward-no-rowsum": ("softmax's backward without the row sum", "blocks.1.attn.hook_attn_scores_grad"),
    "loss-grad-not-averaged": ("the loss's gradient not divided by N", "logits_grad"),
    "weight-grads-transposed": ("Conv1D weight gradients saved [out, in]", "transformer.h.1.mlp.c_proj.weight"),
}
SHARPEN = 50.0


def naive_softmax(x):
    e = np.exp(x)  # overflows to inf for x > 88.7 in float32: inf / inf = NaN
    return e / e.sum(axis=-1, keepdims=True)


def erf_gelu(x):
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(x.dtype)


def ddof1_layer_norm(x, norm, eps, dtype=None):
    x64 = x.astype(np.float64)
    y = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, ddof=1, keepdims=True) + eps)
    return (y * norm.weight + norm.bias).astype(x.dtype if dtype is None else dtype)


def mask_without_empty_rows(attention_mask, n_queries, fill, dtype):
    """The right mask, but nobody told attention which rows may see no key: it does not zero them."""
    from gpt2np.masks import build_attention_mask

    return AttentionMask(
        additive=build_attention_mask(attention_mask, n_queries, fill, dtype).additive, empty_rows=None
    )


def no_mask(attention_mask, n_queries, fill, dtype):
    """Nothing masked: every query sees every key, pads and the future included."""
    B, Tk = attention_mask.shape
    return AttentionMask(additive=np.zeros((B, 1, n_queries, Tk), dtype), empty_rows=None)


def forbidden_unwritten(cache, attention_mask):
    """hook_attn_scores as a loop over j <= i into a zeroed array leaves it: 0 in the forbidden cells."""
    from gpt2np.tools.measure import allowed_cells

    for name, scores in cache.items():
        if name.endswith("hook_attn_scores"):
            cache[name] = np.where(allowed_cells(attention_mask, scores.shape[2]), scores, 0).astype(scores.dtype)


def heads_major(cache):
    """q, k, v and z as attention computes them, [B, H, T, D], saved without the transpose back."""
    for name in list(cache):
        if name.endswith(("hook_q", "hook_k", "hook_v", "hook_z")):
            cache[name] = np.ascontiguousarray(cache[name].swapaxes(1, 2))


def mask_added_twice(attention_mask, n_queries, fill, dtype):
    from gpt2np.masks import build_attention_mask

    right = build_attention_mask(attention_mask, n_queries, fill, dtype)
    B, Tk = attention_mask.shape
    causal = np.arange(Tk)[None, :] <= (Tk - n_queries + np.arange(n_queries))[:, None]  # [Tq, Tk]
    with np.errstate(over="ignore"):
        additive = np.where(causal, 0, fill).astype(dtype)[None, None] + np.where(
            attention_mask[:, None, None, :] != 0, 0, fill
        ).astype(dtype)
    return AttentionMask(additive=additive, empty_rows=right.empty_rows)  # [B, 1, Tq, Tk]


@contextmanager
def swapped(module, name, replacement):
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)


def variant_model(model: GPT2, variant: str | None) -> GPT2:
    """The model a variant runs: the reference's fill, or -inf for the variants that use it."""
    if variant in ("pad-rows-nan", "fill-minus-inf"):
        return GPT2(model.config, model.weights, dtype=model.dtype, mask_fill="-inf")
    return model


def variant_trace(model: GPT2, variant: str | None, input_ids, attention_mask) -> dict[str, np.ndarray]:
    """A trace of `model` with one function swapped for the variant's (None: the correct one)."""
    import gpt2np.attention
    import gpt2np.layers
    import gpt2np.model

    model = variant_model(model, variant)
    positions = position_ids_from_mask(attention_mask)  # [B, T]
    swaps = {
        "softmax-no-max": (gpt2np.attention, "softmax", naive_softmax),
        "gelu-erf": (gpt2np.layers, "gelu", erf_gelu),
        "layernorm-ddof1": (gpt2np.model, "layer_norm", ddof1_layer_norm),
        "mask-fill-twice": (gpt2np.model, "build_attention_mask", mask_added_twice),
        "pad-rows-nan": (gpt2np.model, "build_attention_mask", mask_without_empty_rows),
        "mask-not-applied": (gpt2np.model, "build_attention_mask", no_mask),
    }
    if variant == "positions-not-offset":
        positions = np.broadcast_to(np.arange(input_ids.shape[1]), input_ids.shape)
    if variant in swaps:
        # Another implementation with this bug would write its NaNs into the trace: so must its
        # emulation, where gpt2np's own forward pass would refuse them (a ModelError).
        with (
            swapped(*swaps[variant]),
            swapped(gpt2np.model, "all_finite", lambda x: True),
            np.errstate(over="ignore", invalid="ignore"),
        ):
            _, cache = model.run_with_cache(input_ids, attention_mask=attention_mask, position_ids=positions)
    else:
        _, cache = model.run_with_cache(input_ids, attention_mask=attention_mask, position_ids=positions)
    if variant == "forbidden-unwritten":
        forbidden_unwritten(cache, attention_mask)
    if variant == "heads-major":
        heads_major(cache)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": positions}
    return {**{k: np.asarray(v, dtype=np.int64) for k, v in inputs.items()}, **cache}


def layer_norm_backward_no_mean(dy, x, ln, eps):
    """plain_backward.layer_norm_backward without the mean term: the gradient of the mean that
    x - mean(x) subtracts is forgotten (the gain's and the variance's terms are there)."""
    x64 = x.astype(np.float64)
    std = np.sqrt(x64.var(-1, keepdims=True) + eps)  # [B, T, 1]
    xhat = (x64 - x64.mean(-1, keepdims=True)) / std  # [B, T, C]
    dxhat = dy * ln.weight  # [B, T, C]
    dx = (dxhat - xhat * (dxhat * xhat).mean(-1, keepdims=True)) / std  # missing: - dxhat.mean(-1)
    return dx.astype(dy.dtype), {
        "weight": (dy * xhat).reshape(-1, x.shape[-1]).sum(0),
        "bias": dy.reshape(-1, x.shape[-1]).sum(0),
    }


def softmax_backward_no_rowsum(dp, p):
    """p * dp: the Jacobian's diagonal only, without - p * sum(p * dp) over the row."""
    return p * dp


def counted_labels(tensors) -> int:
    labels, mask = tensors["labels"], tensors["attention_mask"]
    return int(((labels[:, 1:] != -100) & (mask[:, :-1] == 1)).sum())


def backward_variant_trace(model: GPT2, variant: str | None, input_ids, attention_mask, labels):
    """A --grads trace of `model` with one backward function swapped for the variant's."""
    import gpt2np.backward
    from gpt2np.tools.trace import trace_tensors
    from gpt2np.tools.tracefile import gradient_names_in

    swaps = {
        "layernorm-backward-no-mean": (gpt2np.backward, "layer_norm_backward", layer_norm_backward_no_mean),
        "softmax-backward-no-rowsum": (gpt2np.backward, "softmax_backward", softmax_backward_no_rowsum),
    }
    if variant in swaps:
        with swapped(*swaps[variant]):
            trace = trace_tensors(model, input_ids, attention_mask, grads=True, labels=labels)
    else:
        trace = trace_tensors(model, input_ids, attention_mask, grads=True, labels=labels)
    if variant == "loss-grad-not-averaged":  # every gradient N x: dlogits = probs - onehot, no / N
        n = counted_labels(trace)
        for name in gradient_names_in(trace):
            if name != "loss":
                trace[name] = (trace[name] * n).astype(trace[name].dtype)
    if variant == "weight-grads-transposed":
        for name in gradient_names_in(trace):
            if name.startswith("transformer.h.") and trace[name].ndim == 2:  # c_attn, c_proj, c_fc weights
                trace[name] = np.ascontiguousarray(trace[name].T)
    return trace


def write_variants(reference: Path, model_dir: Path, out: Path, only=None) -> list[Path]:
    """Every variant's trace (a reference with gradients: the backward variants, with its labels)."""
    tensors, metadata = load_trace(reference)
    model = GPT2.from_pretrained(model_dir, mask_fill=metadata.get("mask_fill", "min"))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "labels" in tensors:
        for variant in only or [None, *BACKWARD_VARIANTS]:
            trace = backward_variant_trace(
                model, variant, tensors["input_ids"], tensors["attention_mask"], tensors["labels"]
            )
            path = out / f"{variant or 'correct-grads'}.safetensors"
            save_trace(path, trace, {**trace_metadata(model, str(model_dir), None, []), "variant": variant or "none"})
            written.append(path)
        return written
    for variant in only or [None, *VARIANTS, *CONVENTIONS]:
        trace = variant_trace(model, variant, tensors["input_ids"], tensors["attention_mask"])
        path = out / f"{variant or 'correct'}.safetensors"
        meta = trace_metadata(variant_model(model, variant), str(model_dir), None, [])
        save_trace(path, trace, {**meta, "variant": variant or "none"})
        written.append(path)
    return written


def sharpen(folder: Path, dest: Path, factor: float = SHARPEN) -> Path:
    """A copy of the model with block 0's query weights and bias scaled by `factor`."""
    from gpt2np.checkpoint import map_tensors, save_checkpoint
    from gpt2np.config import GPT2Config

    config = GPT2Config.from_json_file(folder / "config.json")
    tensors = {k: np.array(v) for k, v in map_tensors(folder / "model.safetensors").items()}
    C = config.n_embd
    for name in ("h.0.attn.c_attn.weight", "h.0.attn.c_attn.bias"):
        key = name if name in tensors else "transformer." + name
        tensors[key][..., :C] *= np.float32(factor)  # [C, 3C] / [3C]: the q third
    dest.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dest / "model.safetensors", tensors)
    (dest / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return dest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reference", nargs="?", help="the reference trace (gpt2np trace --dtype float64)")
    p.add_argument("--model", help="the model folder the reference was traced with")
    p.add_argument("--out", help="folder for the candidate traces")
    p.add_argument(
        "--sharpen", nargs=2, metavar=("FOLDER", "DEST"), help="write a copy of FOLDER with a sharp block-0 head"
    )
    p.add_argument(
        "--only", action="append", choices=[*VARIANTS, *CONVENTIONS, *BACKWARD_VARIANTS], help="write only this variant"
    )
    args = p.parse_args(argv)
    if args.sharpen:
        print(f"wrote {sharpen(Path(args.sharpen[0]), Path(args.sharpen[1]))}")
        return 0
    if not (args.reference and args.model and args.out):
        p.error("give REFERENCE --model FOLDER --out DIR (or --sharpen FOLDER DEST)")
    for path in write_variants(Path(args.reference), Path(args.model), Path(args.out), args.only):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
