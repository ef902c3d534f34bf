"""How one point of a candidate trace is measured against the reference's: which cells count,
the largest difference there, the scale, and the problems that fail it whatever the tolerance.

`gpt2np compare` judges with it; `gpt2np trace --dtype float64` measures its own float32 run
with it (the float32_error compare's tolerances come from), so both measure alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..hooks import axes
from ..masks import build_attention_mask


@dataclass
class Measurement:
    diff: float = 0.0  # max |candidate - reference| over the compared cells (inf for NaN)
    scale: float = 0.0  # max |reference| over those cells
    problems: list[str] = field(default_factory=list)  # reasons it diverges whatever the tolerance


def compared_cells(name: str, shape, attention_mask: np.ndarray) -> np.ndarray:
    """Boolean [shape]: the cells whose values must agree (real tokens; allowed score cells)."""
    real = attention_mask.astype(bool)  # [B, T]
    if name.endswith("hook_attn_scores"):
        allowed = build_attention_mask(attention_mask, shape[2], -np.inf, np.float64).additive == 0  # [B, 1, T, Tk]
        return np.broadcast_to(allowed, shape)
    if axes(name)[:2] == ["B", "H"]:  # [B, H, T, Tk]: real query rows, every key
        return np.broadcast_to(real[:, None, :, None], shape)
    return np.broadcast_to(real.reshape(real.shape + (1,) * (len(shape) - 2)), shape)


def expected_fill(metadata: dict[str, str], dtype) -> float:
    """What a forbidden score cell holds in a candidate of this dtype, by the reference's fill."""
    if metadata.get("mask_fill") == "min":
        return float(np.finfo(dtype).min) if np.dtype(dtype).kind == "f" else float(np.finfo(np.float32).min)
    return float(metadata.get("fill", "-inf"))


def check_fill(scores: np.ndarray, forbidden: np.ndarray, fill: float) -> str | None:
    """A problem with the forbidden cells of hook_attn_scores, or None."""
    values = scores[forbidden].astype(np.float64)
    ok = np.isclose(values, fill, rtol=1e-6, atol=0) | ((values == fill) & np.isinf(fill))
    if ok.all():
        return None
    bad = values[~ok]
    doubled = np.isfinite(fill) and bool(
        (np.isclose(bad, 2 * fill, rtol=1e-6) | (bad == -np.inf)).all()
    )  # min + min = -inf
    hint = (
        "; the fill added twice (padding mask + causal mask) where a key is both a pad and in the future?"
        if doubled
        else ""
    )
    return f"{bad.size} forbidden cells hold e.g. {bad[0]:.4g}, not the fill {fill:.4g}{hint}"


def measure(
    name: str, ref: np.ndarray, cand: np.ndarray, attention_mask: np.ndarray, metadata: dict[str, str]
) -> Measurement:
    """Compare one point of the same shape."""
    m = Measurement()
    cells = compared_cells(name, ref.shape, attention_mask)
    r, c = ref[cells].astype(np.float64), cand[cells].astype(np.float64)
    if r.size:
        with np.errstate(invalid="ignore"):
            d = np.abs(c - r)
        nan = ~np.isfinite(d)
        if nan.any():
            m.problems.append(
                f"{int(nan.sum())} non-finite values (e.g. {c[nan][0]}) where the reference has finite ones"
            )
        m.diff = float(np.inf) if nan.any() else float(d.max())
        m.scale = float(np.abs(r).max())
    if name.endswith("hook_attn_scores"):
        problem = check_fill(cand, ~cells, expected_fill(metadata, cand.dtype))
        if problem:
            m.problems.append(problem)
    return m
