"""`gpt2np compare REFERENCE CANDIDATE`: two traces, point by point, in forward order.

    gpt2np trace --model gpt2 "My dog is" --dtype float64 --out ref.safetensors
    ... your implementation writes cand.safetensors with the same names (docs/cross-checking.md) ...
    gpt2np compare ref.safetensors cand.safetensors

One row per point: max |difference|, the point's scale (max |reference|), their ratio, the
tolerance and a verdict; then the first point that diverges, where the bug is (every later
point inherits it). A trace with gradients (`gpt2np trace --grads`) is walked twice: the
forward points in forward order, then the loss and the gradients in the order backpropagation
computes them, from the loss back to the embeddings; the first gradient that diverges names the
backward step that made it (`made by ln_2's backward ...`), the bug in a training
implementation whose forward agrees. Exit status: 0 no point diverges, 1 some point does, 2 bad usage
(a missing or unreadable file, a trace without inputs, a reference compare cannot trust:
metadata that is not finite numbers, points of the wrong shape, blocks not numbered 0, 1, ...).

What is compared (measure.py): the values at real tokens only (a pad's values mean nothing,
and implementations fill them differently on purpose; the report counts the pad positions left
out), but a NaN or inf fails anywhere, pads included, naming the rows and tokens. For
hook_attn_scores, the allowed cells (real query, key neither a pad nor in the future) as
numbers; the forbidden cells hold a convention (the reference's fill, -inf, another large
negative, or nothing written), named in one note, and pass unless the fill was added twice;
hook_pattern shows whether they really get weight 0. A point whose values match the
reference's once two axes of the same length are swapped (T and H with 12 tokens and 12 heads;
T and Tk) is named as such.

Tolerances, per point, relative to the point's scale:
- float64 reference with `float32_error` (gpt2np trace --dtype float64 writes it): FACTOR x
  the larger of how far gpt2np's own float32 run lies from the reference at that point and
  FLOOR. A different correct float32 code rounds differently, but not by much more: on the
  four test models, transformers' float32 uses at most 0.16 of this tolerance at any point
  (`pytest tests/test_compare.py -k transformers_float32 -s` prints it), while the bugs of
  docs/cross-checking.md lie 16x (the erf GELU) to 1000x (LayerNorm with ddof=1) beyond it.
- otherwise (a float32 reference, or none measured): UNCALIBRATED for every point.
- --rtol X replaces both.
"""

from __future__ import annotations

import difflib
import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GPT2npError, InputError
from ..hooks import axes
from .common import add_debug
from .measure import Measurement, measure, point_axes, point_scale, ranges
from .tracefile import (
    FORMAT,
    INPUTS,
    activation_names_in,
    forward_position,
    gradient_names_in,
    load_trace,
    point_of,
)

FACTOR = 10  # how much further than gpt2np's float32 a correct float32 candidate may lie
FLOOR = 1e-6  # relative: ~8 float32 steps (2^-23 = 1.2e-7); where our float32 error is 0 (embeddings)
UNCALIBRATED = 2e-5  # relative, when the reference carries no float32_error
EXIT_SAME, EXIT_DIVERGES, EXIT_USAGE = 0, 1, 2
CANDIDATE_METADATA = ("dtype", "model", "mask_fill")  # printed when a candidate carries them; nothing else is read
DESCRIPTIONS = {  # the last part of a name -> what it is, for the "first divergence" line
    "input_ids": "the token ids",
    "attention_mask": "the attention mask",
    "position_ids": "the position ids",
    "labels": "the labels",
    "loss": "the mean cross-entropy over the counted labels",
    "hook_embed": "wte[input_ids]",
    "hook_pos_embed": "wpe[position_ids]",
    "hook_resid_pre": "the residual stream entering the block",
    "hook_normalized": "a LayerNorm's output",
    "hook_q": "the queries",
    "hook_k": "the keys",
    "hook_v": "the values",
    "hook_attn_scores": "the masked attention scores before softmax",
    "hook_pattern": "the softmax weights",
    "hook_z": "the heads' weighted sums of values",
    "hook_attn_out": "attention's c_proj output",
    "hook_resid_mid": "the residual after attention",
    "hook_pre": "the MLP's c_fc output",
    "hook_post": "GELU's output",
    "hook_mlp_out": "the MLP's c_proj output",
    "hook_resid_post": "the residual stream leaving the block",
    "logits": "the logits",
}
# What makes each gradient in the backward pass (the step to read when it is the first to diverge),
# by the last part of its name: a point's gradient (..._grad) or a parameter's (..weight / ..bias).
MADE_BY = {
    "logits_grad": "the loss's backward: (softmax(logits) - onehot(label)) / N at each counted position, 0 elsewhere",
    "hook_normalized_grad": "the backward of the layer that reads the LayerNorm's output (lm_head, c_attn or c_fc): dy W^T",
    "hook_resid_post_grad": "ln_f's backward (its three terms: gain, mean, variance)",  # the last block's
    "hook_mlp_out_grad": "the residual add: = hook_resid_post_grad",
    "hook_post_grad": "the MLP's c_proj backward: dy W^T",
    "hook_pre_grad": "GELU's backward (the derivative of the tanh form)",
    "hook_resid_mid_grad": "ln_2's backward (its three terms: gain, mean, variance), plus hook_resid_post_grad through the residual",
    "hook_attn_out_grad": "the residual add: = hook_resid_mid_grad",
    "hook_z_grad": "attention's c_proj backward: dy W^T, split into heads",
    "hook_pattern_grad": "the weighted sum's backward: dz v^T",
    "hook_attn_scores_grad": "softmax's backward: p * (dp - sum(p * dp)) per row",
    "hook_v_grad": "the weighted sum's backward: pattern^T dz",
    "hook_k_grad": "the scores' backward: dscores^T q * scale",
    "hook_q_grad": "the scores' backward: dscores k * scale",
    "hook_resid_pre_grad": "ln_1's backward (its three terms: gain, mean, variance), plus hook_resid_mid_grad through the residual",
    "hook_embed_grad": "the sum wte[ids] + wpe[positions]: = blocks.0.hook_resid_pre_grad",
    "hook_pos_embed_grad": "the sum wte[ids] + wpe[positions]: = blocks.0.hook_resid_pre_grad",
    "hook_scale_grad": "the LayerNorm's backward at its scale sqrt(var + eps)",
    "wte.weight": "each token's rows of hook_embed_grad added up, plus the tied output layer's dlogits^T x",
    "wpe.weight": "each position's rows of hook_pos_embed_grad added up",
    "lm_head.weight": "the output layer's backward: dlogits^T x",
    "ln.weight": "the LayerNorm's backward: dy * normalized x, summed over the tokens",
    "weight": "the layer's backward: x^T dy, [in, out] like the weight",
    "bias": "the layer's backward: dy summed over the tokens",
}


@dataclass
class Row:
    name: str
    shape: list[int]
    measurement: Measurement | None  # None: missing in the candidate or misshapen
    tolerance: float | None  # relative
    verdict: str  # "ok", "DIVERGES", "missing", "SHAPE"
    note: str = ""


def shape_hint(name: str, ref_shape, cand_shape) -> str:
    """Why a candidate's shape may differ: axes in another order, a missing batch axis, heads not split."""
    ref_shape, cand_shape = tuple(ref_shape), tuple(cand_shape)
    names = ["B", "T"] if name in INPUTS else point_axes(name)
    if name == "loss":
        return "expected one number (shape [] or [1])"
    if names is None:  # a parameter's gradient: its parameter's shape
        if len(ref_shape) == 2 and cand_shape == ref_shape[::-1]:
            return (
                f"expected {list(ref_shape)} (GPT-2's Conv1D layout [in, out]); given transposed, as torch's nn.Linear "
                "stores its weight [out, in]: transpose it"
            )
        return f"expected {list(ref_shape)}, the parameter's shape"
    expected = f"[{', '.join(names)}] = {list(ref_shape)}"
    if cand_shape == ref_shape[1:]:
        return f"expected {expected}: the batch axis is missing (save a single sequence as [1, ...])"
    if len(cand_shape) == len(ref_shape) and sorted(cand_shape) == sorted(ref_shape):
        for order in itertools.permutations(range(len(ref_shape))):
            if order != tuple(range(len(ref_shape))) and tuple(ref_shape[i] for i in order) == cand_shape:
                given = ", ".join(names[i] for i in order)
                return f"expected {expected}; looks like [{given}]: transpose the axes"
    if np.prod(cand_shape) == np.prod(ref_shape):
        if names[-2:] == ["H", "D"] and cand_shape == ref_shape[:2] + (ref_shape[2] * ref_shape[3],):
            return f"expected {expected}; given as [B, T, H*D]: split the heads, reshape to {list(ref_shape)}"
        return f"expected {expected}: same number of values, another shape"
    return f"expected {expected}"


# --- comparing two traces ------------------------------------------------------------------


@dataclass
class Report:
    rows: list[Row]
    missing: list[str]
    unknown: list[str]  # candidate names that are no activation point, with the nearest
    tolerance_rule: str
    reference: dict[str, str]
    candidate: dict[str, str]

    pads: np.ndarray  # [B, T] True at the pad positions, whose values are not compared
    notes: list[str]  # what passed but is worth knowing (another fill convention)

    grads: list[str] = field(default_factory=list)  # the rows that are the loss and gradients

    @property
    def first(self) -> Row | None:
        """The first forward point (or input) that diverges."""
        return next((r for r in self.rows if r.verdict in ("DIVERGES", "SHAPE") and r.name not in self.grads), None)

    @property
    def first_grad(self) -> Row | None:
        """The first of the loss and the gradients that diverges, walking from the loss back."""
        return next((r for r in self.rows if r.verdict in ("DIVERGES", "SHAPE") and r.name in self.grads), None)


# --- the reference must be one compare can trust -------------------------------------------


def check_reference(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> dict[str, float]:
    """Refuse (InputError: exit 2, never a verdict) a reference that is not a gpt2np trace compare
    can trust, naming what is wrong. Everything compare derives from the file is bounded by what
    the file holds. -> its float32_error per point ({} when it has none)."""

    def bad(what: str) -> InputError:
        return InputError(f"{path} is not a usable reference: {what}; write it with `gpt2np trace`")

    if "attention_mask" not in tensors or "input_ids" not in tensors:
        raise InputError(f"{path} has no input_ids/attention_mask: a reference must be written by `gpt2np trace`")
    if metadata.get("format", FORMAT) != FORMAT:
        raise InputError(f"{path} has format {metadata.get('format')!r}; this gpt2np reads {FORMAT!r}")
    ids, mask = tensors["input_ids"], tensors["attention_mask"]
    for name in (n for n in INPUTS if n in tensors):  # a float id would make every candidate "diverge"
        if tensors[name].dtype.kind not in "iu":
            raise bad(f"{name} is {tensors[name].dtype}, not integers")
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise bad(f"input_ids has shape {list(ids.shape)}, not [B, T]")
    B, T = ids.shape
    for name in ("attention_mask", "position_ids", "labels"):
        if name in tensors and tensors[name].shape != ids.shape:
            raise bad(f"{name} has shape {list(tensors[name].shape)}, not input_ids' [B, T] = [{B}, {T}]")
    if not np.isin(mask, (0, 1)).all():
        raise bad("attention_mask holds values other than 0 and 1")
    sizes = {"B": B, "T": T, "Tk": T}  # a trace is one forward pass of [B, T] tokens: the keys are its T
    for name in activation_names_in(tensors):
        a, names = tensors[name], axes(name)
        if (
            a.dtype.kind != "f"
            or a.ndim != len(names)
            or any(a.shape[names.index(k)] != n for k, n in sizes.items() if k in names)
        ):
            raise bad(
                f"{name} is {a.dtype} {list(a.shape)}, not a float [{', '.join(names)}] point of a [{B}, {T}] batch"
            )
        # A NaN or inf in the reference would pass every candidate there (NaN compares as no
        # difference); only hook_attn_scores' forbidden cells may hold -inf, a fill convention.
        allowed = np.isneginf(a) if name.endswith("hook_attn_scores") else np.zeros(a.shape, bool)
        if not (np.isfinite(a) | allowed).all():
            where = tuple(int(i) for i in np.argwhere(~(np.isfinite(a) | allowed))[0])
            raise bad(f"{name} holds {a[where]} at {list(where)}: a reference's values must be finite numbers")
    check_gradients(tensors, bad)
    layers = sorted({int(n.split(".")[1]) for n in tensors if n.startswith("blocks.") and forward_position(n)})
    if layers != list(range(len(layers))):
        raise bad(f"its blocks are numbered {layers[:3]} ... {layers[-1]}, not 0, 1, ... in order")
    config = _json_field(metadata, "config", dict, bad)
    if config is not None and "n_layer" in config and len(layers) not in (0, config["n_layer"]):
        raise bad(f"it holds {len(layers)} blocks, its config {config['n_layer']}")
    if "fill" in metadata:
        try:
            fill = float(metadata["fill"])
        except ValueError:
            raise bad(f"its metadata 'fill' is {metadata['fill']!r}, not a number") from None
        if not fill < 0:  # NaN fails this too
            raise bad(f"its metadata 'fill' is {metadata['fill']!r}, not a negative number (or -inf)")
    errors = _json_field(metadata, "float32_error", dict, bad) or {}
    points = set(activation_names_in(tensors) + gradient_names_in(tensors))
    for name, value in errors.items():
        if name not in points:
            raise bad(f"its metadata 'float32_error' names {name!r}, which is no point of the trace")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise bad(f"its metadata 'float32_error' gives {name} {value!r}: each must be a finite number >= 0")
    return {name: float(value) for name, value in errors.items()}


def check_gradients(tensors: dict[str, np.ndarray], bad) -> None:
    """The loss and the gradients of a reference: finite floats, a point's gradient of the point's
    shape, the loss one number; labels with them (the loss means nothing without)."""
    names = gradient_names_in(tensors)
    if names and "labels" not in tensors:
        raise bad("it holds gradients but no labels (the loss and its gradients mean nothing without)")
    for name in names:
        a, point = tensors[name], point_of(name)
        if a.dtype.kind != "f":
            raise bad(f"{name} is {a.dtype}, not floats")
        if name == "loss" and a.size != 1:
            raise bad(f"loss has shape {list(a.shape)}, not one number")
        if point is not None and point in tensors and a.shape != tensors[point].shape:
            raise bad(f"{name} has shape {list(a.shape)}, not its point's {list(tensors[point].shape)}")
        if not np.isfinite(a).all():
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
            raise bad(f"{name} holds {a[where]} at {list(where)}: a reference's values must be finite numbers")


def _json_field(metadata: dict[str, str], field: str, kind: type, bad) -> Any:
    """metadata[field] parsed as JSON of the given kind, or None when absent."""
    if field not in metadata:
        return None
    try:
        value = json.loads(metadata[field])
    except ValueError:
        raise bad(f"its metadata {field!r} is not JSON: {metadata[field][:40]!r}") from None
    except RecursionError:  # Python's JSON parser recurses once per level: [[[[... deep enough overflows it
        raise bad(f"its metadata {field!r} is JSON nested too deeply to read") from None
    if not isinstance(value, kind):
        raise bad(f"its metadata {field!r} is a JSON {type(value).__name__}, not an object")
    return value


def tolerances(
    measured: dict[str, float], names: list[str], scales: dict[str, float], rtol: float | None
) -> tuple[dict[str, float], str]:
    if rtol is not None:
        return dict.fromkeys(names, rtol), f"--rtol {rtol:g} relative to each point's scale"
    if not measured:
        return (
            dict.fromkeys(names, UNCALIBRATED),
            (
                f"{UNCALIBRATED:g} relative to each point's scale (this reference carries no float32 error per point; "
                "trace it with --dtype float64 for measured tolerances)"
            ),
        )
    out = {}
    for n in names:
        scale = scales.get(n) or 1.0
        out[n] = FACTOR * max(measured.get(n, 0.0) / scale, FLOOR) if n in measured else UNCALIBRATED
    return out, (
        f"{FACTOR} x max(how far gpt2np's float32 lies from this reference at the point, {FLOOR:g}), "
        "relative to the point's scale (max |reference| over the compared cells)"
    )


def compare_traces(reference: str | Path, candidate: str | Path, rtol: float | None = None) -> Report:
    ref, ref_meta = load_trace(reference)
    cand, cand_meta = load_trace(candidate)
    measured = check_reference(reference, ref, ref_meta)
    mask = ref["attention_mask"]
    grads = gradient_names_in(ref)
    points = activation_names_in(ref) + grads
    order = [n for n in INPUTS if n in ref] + points
    scales = {n: point_scale(n, ref[n], mask) for n in points}
    tol, rule = tolerances(measured, points, scales, rtol)
    rows, missing = [], []
    for name in order:
        r = ref[name]
        if name not in cand:
            missing.append(name)
            continue
        c = cand[name]
        if name == "loss" and c.size == 1:  # a scalar written as [] or [1]: one number either way
            c = c.reshape(r.shape)
        if c.shape != r.shape:
            rows.append(Row(name, list(c.shape), None, None, "SHAPE", shape_hint(name, r.shape, c.shape)))
        elif name in INPUTS:
            cells = (
                mask.astype(bool) if name == "position_ids" else np.ones(r.shape, bool)
            )  # a pad's position is never read
            wrong = np.argwhere((c != r) & cells)
            note = (
                ""
                if not wrong.size
                else f"differs at [{', '.join(map(str, wrong[0]))}]: {c[tuple(wrong[0])]} instead of {r[tuple(wrong[0])]}"
            )
            rows.append(Row(name, list(r.shape), None, None, "DIVERGES" if wrong.size else "ok", note))
        else:
            m = measure(name, r, c, mask, ref_meta)
            diverges = bool(m.problems) or m.diff > tol[name] * (m.scale or 1.0)
            notes = m.problems + (m.hints if diverges else [])
            if diverges and m.multiple is not None and name in grads:
                notes += [mean_as_sum(m.multiple, ref)] if mean_as_sum(m.multiple, ref) else []
            swapped = swapped_axes(name, r, c, mask, ref_meta, tol[name]) if diverges else None
            notes += [swapped] if swapped else []
            rows.append(Row(name, list(r.shape), m, tol[name], "DIVERGES" if diverges else "ok", "; ".join(notes)))
    known = set(order) | {"generated_ids", "generated_logits"}
    unknown = []
    for name in sorted(set(cand) - known):
        near = difflib.get_close_matches(name, order, n=1, cutoff=0.5)
        unknown.append(f"{name} (did you mean {near[0]}?)" if near else name)
    notes = fill_notes(rows, has_pattern=any(n.endswith("hook_pattern") for n in cand))
    return Report(rows, missing, unknown, rule, ref_meta, cand_meta, pads=mask == 0, notes=notes, grads=grads)


def mean_as_sum(a: float, ref: dict[str, np.ndarray]) -> str:
    """The usual reason every gradient is N x too large (or 1/N): the loss is the mean over the N
    counted labels, so each gradient carries 1/N, which a backward may forget or apply twice."""
    if "labels" not in ref:
        return ""
    labels, mask = ref["labels"], ref["attention_mask"]
    n = int(((labels[:, 1:] != -100) & (mask[:, :-1] == 1)).sum())  # labels.counted's rule
    for factor, what in ((n, "not divided by N"), (1 / n, "divided by N twice")):
        if n > 1 and abs(a / factor - 1) < 1e-3:
            return f"N = {n} labels are counted, and the loss is their mean: this gradient looks {what}"
    return ""


def swapped_axes(name: str, ref: np.ndarray, cand: np.ndarray, mask: np.ndarray, metadata, tol: float) -> str | None:
    """A diverging point of the reference's shape whose values match once two axes of the same
    length are swapped: [B, H, T, D] saved where [B, T, H, D] belongs with T == H (a 12-token
    prompt on a 12-head model), keys and queries exchanged in a [B, H, T, Tk] point."""
    names = point_axes(name) or (["in", "out"] if ref.ndim == 2 else [f"axis {i}" for i in range(ref.ndim)])
    for i, j in itertools.combinations(range(ref.ndim), 2):
        if ref.shape[i] != ref.shape[j]:
            continue
        m = measure(name, ref, np.swapaxes(cand, i, j), mask, metadata)
        if not m.problems and m.diff <= tol * (m.scale or 1.0):
            order = names.copy()
            order[i], order[j] = order[j], order[i]
            return (
                f"its values match the reference's with axes {names[i]} and {names[j]} swapped (both "
                f"{ref.shape[i]} long): it looks like [{', '.join(order)}]; transpose it to [{', '.join(names)}]"
            )
    return None


def fill_notes(rows: list[Row], has_pattern: bool) -> list[str]:
    """One note per way hook_attn_scores' forbidden cells differ from the reference's fill (the
    same in every block, as a rule), naming the blocks."""
    blocks: dict[str, list[int]] = {}
    for row in rows:
        if row.measurement is not None and row.measurement.fill_note:
            blocks.setdefault(row.measurement.fill_note, []).append(int(row.name.split(".")[1]))
    checked = (
        "which hook_pattern shows"
        if has_pattern
        else "which hook_pattern would show (the candidate has none: a leak shows in hook_z)"
    )
    return [
        f"hook_attn_scores of block{'s' if len(layers) > 1 else ''} {ranges(layers)}: {note}. They pass: "
        f"a fill is a convention, not a number to match; what counts is that softmax gives them weight 0, {checked}"
        for note, layers in blocks.items()
    ]


# --- printing ------------------------------------------------------------------------------


def fmt(x: float | None) -> str:
    if x is None:
        return ""
    if x == 0:
        return "0"
    return "inf" if np.isinf(x) else f"{x:.2e}"


def describe(name: str) -> str:
    point = point_of(name)
    if point is not None:
        return f"the loss's gradient at {describe(point)}"
    if name.endswith((".weight", ".bias")):
        return f"the loss's gradient for the parameter {name}"
    return DESCRIPTIONS.get(name.rsplit(".", 1)[-1], name)


def made_by(name: str, n_layer: int) -> str:
    """The backward step that computes a gradient: 'ln_2's backward (...)'."""
    last = name.rsplit(".", 1)[-1]
    if name.endswith(("wte.weight", "wpe.weight", "lm_head.weight")):
        last = ".".join(name.rsplit(".", 2)[-2:])
    elif name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
        last = "ln.weight"
    if last == "hook_resid_post_grad" and name != f"blocks.{n_layer - 1}.hook_resid_post_grad":
        return "the residual stream's pass-through: = the next block's hook_resid_pre_grad"
    return MADE_BY.get(last, "")


def candidate_metadata(metadata: dict[str, str]) -> str:
    """What compare prints from a candidate's metadata: ': float32, model my-gpt2.c, mask_fill -inf'."""
    shown = [metadata["dtype"]] if "dtype" in metadata else []
    shown += [f"{key} {metadata[key]}" for key in CANDIDATE_METADATA[1:] if key in metadata]
    return f": {', '.join(shown)}" if shown else ""


def format_report(report: Report, reference, candidate) -> str:
    ref, cand = report.reference, report.candidate
    lines = [
        f"reference  {reference}: {ref.get('dtype', '?')}, model {ref.get('model', '?')}, mask_fill {ref.get('mask_fill', '?')}",
        f"candidate  {candidate}" + candidate_metadata(cand),
        f"tolerance  {report.tolerance_rule}",
        "",
        f"{'point':<36} {'shape':<18} {'max|diff|':>9} {'scale':>9} {'relative':>9} {'tolerance':>9}  verdict",
    ]
    first_grad_row = next((r.name for r in report.rows if r.name in report.grads), None)
    for row in report.rows:
        if row.name == first_grad_row:
            lines += ["", "the loss and the gradients, from the loss back to the embeddings (backpropagation's order):"]
        m = row.measurement
        rel = None if m is None else (m.diff / m.scale if m.scale else m.diff)
        lines.append(
            f"{row.name:<36} {row.shape!s:<18} {fmt(None if m is None else m.diff):>9} {fmt(None if m is None else m.scale):>9} {fmt(rel):>9} "
            f"{fmt(row.tolerance):>9}  {row.verdict}" + (f"  ({row.note})" if row.note else "")
        )
    lines.append("")
    compared = len(report.rows)
    if report.missing:
        lines.append(
            f"missing in the candidate ({len(report.missing)} of {compared + len(report.missing)}, not compared): "
            + ", ".join(report.missing[:12])
            + (" ..." if len(report.missing) > 12 else "")
        )
    if report.unknown:
        lines.append(f"in the candidate but no point of the reference: {', '.join(report.unknown[:12])}")
    for note in report.notes:
        lines.append(f"note: {note}")
    if report.pads.any():
        B, T = report.pads.shape
        rows = np.flatnonzero(report.pads.any(axis=1)).tolist()
        lines.append(
            f"pads: {int(report.pads.sum())} of the {B * T} positions (in row{'s' if len(rows) > 1 else ''} "
            f"{', '.join(map(str, rows))}) are pads; their values are not compared, only checked to be finite"
        )
    return "\n".join(lines + summary(report))


def summary(report: Report) -> list[str]:
    """The last lines: the first divergence of the forward, and of the backward when the traces
    hold gradients (where a training implementation whose forward agrees has its bug)."""
    forward = [r for r in report.rows if r.name not in report.grads]
    backward = [r for r in report.rows if r.name in report.grads]
    first, first_grad = report.first, report.first_grad
    bad = [r for r in forward if r.verdict != "ok"]
    if first is None and first_grad is None:
        both = f", and so do the loss and all {len(backward) - 1} gradients" if backward else ""
        return [f"no divergence: all {len(forward)} compared points agree within tolerance{both}"]
    lines = []
    if first is None:
        lines.append(f"forward: no divergence: all {len(forward)} compared points agree within tolerance")
    else:
        lines.append(
            f"first divergence: {first.name} ({describe(first.name)}); {len(bad)} of {len(forward)} compared points "
            "diverge, each after the first may only inherit it"
        )
    if first_grad is None:
        if backward:
            lines.append(f"backward: no divergence: the loss and all {len(backward) - 1} gradients agree")
        return lines
    bad_grads = [r for r in backward if r.verdict != "ok"]
    before = [r.name for r in backward[: backward.index(first_grad)] if not r.name.endswith((".weight", ".bias"))]
    n_layer = 1 + max((int(r.name.split(".")[1]) for r in backward if r.name.startswith("blocks.")), default=-1)
    step = made_by(first_grad.name, n_layer)
    text = (
        f"first divergence in the backward: {first_grad.name} ({describe(first_grad.name)})"
        + (f", made by {step}" if step else "")
        + (f", from {before[-1]}, which agrees" if before and point_of(first_grad.name) else "")
        + f". {len(bad_grads)} of {len(backward)} diverge, each after the first may only inherit it"
    )
    if first is not None:
        text += f". The forward diverges first ({first.name}): the gradients inherit that; fix the forward first"
    return lines + [text]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two traces point by point; name the first point that diverges",
        description="Compare a candidate trace with a reference trace (both safetensors, see `gpt2np trace`) in "
        "forward order. Exit 0 if no point diverges, 1 if one does, 2 on bad usage.",
    )
    p.add_argument("reference", help="the reference trace (ideally `gpt2np trace --dtype float64`)")
    p.add_argument("candidate", help="the trace to check (any subset of the reference's names)")
    p.add_argument("--rtol", type=float, default=None, help="one tolerance for every point, relative to its scale")
    add_debug(p)
    p.set_defaults(run=cmd_compare)


def cmd_compare(args) -> int:
    try:
        if args.rtol is not None and not 0 < args.rtol < 1:  # (NaN fails this too)
            raise InputError(
                f"--rtol must be a positive number below 1, got {args.rtol}: it is relative to each point's scale "
                "(max |reference|), and a difference as large as the scale means the values are all wrong; e.g. 1e-4"
            )
        report = compare_traces(args.reference, args.candidate, rtol=args.rtol)
    except (GPT2npError, OSError) as e:  # bad usage: 2, so that 1 always means "diverges"
        if getattr(args, "debug", False):
            raise
        print("gpt2np: error: " + " ".join(str(e).split()), file=sys.stderr)
        return EXIT_USAGE
    print(format_report(report, args.reference, args.candidate))
    if not report.rows:
        print("gpt2np: error: the candidate holds none of the reference's points", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_SAME if report.first is None else EXIT_DIVERGES
