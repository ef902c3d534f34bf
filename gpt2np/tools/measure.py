"""How one point of a candidate trace is measured against the reference's: which cells count,
the largest difference there, the scale, and the problems that fail it whatever the tolerance.

`gpt2np compare` judges with it; `gpt2np trace --dtype float64` measures its own float32 run
with it (the float32_error compare's tolerances come from), so both measure alike.

Three rules, each for a reason a first-time cross-checker runs into:
- Only real tokens' values are compared: what a pad holds means nothing, and implementations
  fill pads differently on purpose. But a NaN or inf is a failure anywhere, pads included:
  it does not stay in its pad (one block later, 0 * NaN = NaN reaches the real tokens).
- In hook_attn_scores the forbidden cells (a key in the future, or a pad) hold a convention,
  not a number to match: the reference's fill, -inf, another large negative, or whatever was
  there when a loop over the allowed keys only (j <= i) never wrote them. What they hold is
  named in a note; what counts is that softmax gives them weight 0, which hook_pattern shows.
  One pattern is a bug, though: the fill added twice (padding mask + causal mask) where a key
  is both a pad and in the future.
- A point is a [B, ...] array with its axes in hooks.py's order; compare.py diagnoses other
  orders.
- A gradient at a point (`<name>_grad`) is compared where the point is, at real tokens (in
  hook_attn_scores_grad at every key of a real query: a forbidden cell's gradient is 0, and one
  that is not flows on into q and k; in hook_pattern_grad at real keys only: dz_i . v_j holds a
  pad key's value, which implementations define differently). The loss and a parameter's
  gradient are compared whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..hooks import axes
from ..masks import build_attention_mask
from .tracefile import point_of

# A forbidden score at or below this is a mask's fill: far below any real score (GPT-2's lie
# within a few hundred of 0), so exp(it - the row's max) is exactly 0 in float32 and float64
# alike (float64's exp underflows below -745). Above it, a forbidden cell holds an ordinary
# score, or the 0 of an array nobody wrote into.
LARGE_NEGATIVE = -1e3


@dataclass
class Measurement:
    diff: float = 0.0  # max |candidate - reference| over the compared cells (inf for NaN)
    scale: float = 0.0  # max |reference| over those cells
    problems: list[str] = field(default_factory=list)  # reasons it diverges whatever the tolerance
    hints: list[str] = field(default_factory=list)  # what the difference looks like, shown if it diverges
    fill_note: str = ""  # hook_attn_scores: what the forbidden cells hold when not the reference's fill
    multiple: float | None = None  # the candidate is this multiple of the reference (not 1), if it is one


def point_axes(name: str) -> list[str] | None:
    """A point's axes (hooks.py), also for its gradient ('blocks.0.hook_q_grad' -> B T H D); None
    for the loss and a parameter's gradient, which have no token axes."""
    point = point_of(name) or name
    try:
        return axes(point)
    except KeyError:
        return None


def compared_cells(name: str, shape, attention_mask: np.ndarray) -> np.ndarray:
    """Boolean [shape]: the cells whose values must agree (real tokens; allowed score cells)."""
    real = attention_mask.astype(bool)  # [B, T]
    names = point_axes(name)
    if names is None or len(names) != len(shape):  # the loss, a parameter's gradient: every cell
        return np.ones(shape, dtype=bool)
    if name.endswith("hook_attn_scores"):
        return np.broadcast_to(allowed_cells(attention_mask, shape[2]), shape)
    if name.endswith("hook_pattern_grad"):  # dL/dp[i, j] = dz_i . v_j: a pad key's v is a convention
        return np.broadcast_to(real[:, None, :, None] & real[:, None, None, :], shape)
    if names[:2] == ["B", "H"]:  # [B, H, T, Tk]: real query rows, every key
        return np.broadcast_to(real[:, None, :, None], shape)
    return np.broadcast_to(real.reshape(real.shape + (1,) * (len(shape) - 2)), shape)


def allowed_cells(attention_mask: np.ndarray, n_queries: int) -> np.ndarray:
    """[B, 1, T, Tk] True where a query may see a key: the key is no pad and not in its future."""
    return build_attention_mask(attention_mask, n_queries, -np.inf, np.float64).additive == 0


def point_scale(name: str, ref: np.ndarray, attention_mask: np.ndarray) -> float:
    """max |reference| over the compared cells: what a point's tolerance is relative to."""
    values = ref[compared_cells(name, ref.shape, attention_mask)]
    return float(np.abs(values).max()) if values.size else 0.0


def expected_fill(metadata: dict[str, str], dtype) -> float:
    """What a forbidden score cell holds in a candidate of this dtype, by the reference's fill."""
    if metadata.get("mask_fill") == "min":
        return float(np.finfo(dtype).min) if np.dtype(dtype).kind == "f" else float(np.finfo(np.float32).min)
    return float(metadata.get("fill", "-inf"))


# --- NaN and inf, pads included --------------------------------------------------------------


def non_finite_cells(name: str, cand: np.ndarray, cells: np.ndarray) -> np.ndarray | None:
    """Boolean [shape] of the NaN and inf values, or None when there is none. In hook_attn_scores a
    forbidden cell may hold -inf (a fill); only NaN and +inf count there."""
    if np.isfinite(cand.min()) and np.isfinite(cand.max()):  # the common case: two passes, no copy
        return None
    bad = ~np.isfinite(cand)
    if name.endswith("hook_attn_scores"):
        bad &= cells | ~np.isneginf(cand)
    return bad if bad.any() else None


def ranges(numbers) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    numbers = np.asarray(sorted(numbers))
    runs = np.split(numbers, np.flatnonzero(np.diff(numbers) > 1) + 1)  # consecutive numbers together
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


def token_ranges(positions: np.ndarray, limit: int = 3) -> str:
    """[B, T] boolean -> '(row 0: tokens 0-2; row 2: tokens 0-4)' (the first `limit` rows)."""
    rows = np.flatnonzero(positions.any(axis=1))
    parts = []
    for b in rows[:limit]:
        t = np.flatnonzero(positions[b])
        parts.append(f"row {b}: token{'s' if len(t) > 1 else ''} {ranges(t)}")
    return "(" + "; ".join(parts) + ("; ..." if len(rows) > limit else "") + ")"


def describe_non_finite(name: str, cand: np.ndarray, bad: np.ndarray, attention_mask: np.ndarray) -> str:
    """How many NaN/inf values, at which tokens (real or pads), and, for pads, why that matters."""
    names = point_axes(name)
    if names is None or len(names) != bad.ndim:  # the loss, a parameter's gradient: no tokens to name
        where = ", ".join(map(str, np.argwhere(bad)[0])) if bad.ndim else ""
        return f"{int(bad.sum())} non-finite values (e.g. {cand[bad][0]} at [{where}])"
    other = tuple(i for i, a in enumerate(names) if a not in ("B", "T"))
    positions = bad.any(axis=other) if other else bad  # [B, T]: the tokens (queries) holding one
    real = attention_mask.astype(bool)
    at_real, at_pads = positions & real, positions & ~real
    text = f"{int(bad.sum())} non-finite values (e.g. {cand[bad][0]})"
    if at_real.any():
        return (
            text
            + f" at real tokens {token_ranges(at_real)}"
            + (f" and at pads {token_ranges(at_pads)}" if at_pads.any() else "")
        )
    text += f" at pads only {token_ranges(at_pads)}"
    if name.endswith("hook_pattern"):
        return (
            text + ". The query of a left pad may see no key (its own is a pad, and so is everything before it): "
            "softmax of a row whose every score is masked is 0/0 = NaN with fill -inf. Pads are not compared, but one "
            "block later 0 * NaN reaches the real tokens: give such a row weights 0 (gpt2np does)"
        )
    return (
        text + ". Pads are not compared, but a NaN or inf does not stay there: one block later 0 * NaN reaches the "
        "real tokens (the usual source: softmax of a pad query's fully masked row, 0/0)"
    )


# --- the forbidden cells of hook_attn_scores -------------------------------------------------


def fill_flag(value: float, dtype) -> str:
    """The --mask-fill that writes `value` into forbidden cells of a trace of this dtype."""
    if value == -np.inf:
        return "-inf"
    if np.dtype(dtype).kind == "f" and np.isclose(value, np.finfo(dtype).min, rtol=1e-3):
        return "min"
    return "-1e9" if np.isclose(value, -1e9, rtol=1e-3) else f"{value:.3g}"


def classify_forbidden(
    scores: np.ndarray, ref: np.ndarray, forbidden: np.ndarray, attention_mask: np.ndarray, fill: float
) -> tuple[str | None, str]:
    """(a problem, a note) about what the forbidden cells of hook_attn_scores hold.

    Every consistent way of forbidding passes, with a note naming it unless it is the
    reference's own fill: -inf, another large negative (<= -1e3), or values no mask wrote.
    The fill added twice (where a key is a pad *and* in the future: 2 x fill, or -inf when that
    overflows) is a problem. NaN and +inf are non_finite_cells' business."""
    values = scores[forbidden].astype(np.float64)  # [n] in row-major order
    theirs = ref[forbidden].astype(np.float64)  # the reference's: fill + score, in its dtype
    both = twice_forbidden(scores.shape, attention_mask)[forbidden]  # [n]: a pad key in the future
    keep = ~(np.isnan(values) | np.isposinf(values))
    values, theirs, both = values[keep], theirs[keep], both[keep]
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        is_fill = (values == fill) if np.isinf(fill) else np.isclose(values, fill, rtol=1e-3, atol=0)
        is_fill |= np.isclose(values, theirs, rtol=1e-5, atol=0)  # a custom fill: score + fill, as the reference
    classes = {
        "fill": is_fill,
        "-inf": (values == -np.inf) & ~is_fill,
        "large": finite & (values <= LARGE_NEGATIVE) & ~is_fill,
        "unwritten": finite & (values > LARGE_NEGATIVE) & ~is_fill,
    }
    if classes["fill"].all():
        return None, ""
    doubled = added_twice(values, both, is_fill | classes["large"])
    if doubled:
        return doubled, ""
    held = []
    for kind, where in classes.items():
        n = int(where.sum())
        if not n:
            continue
        if kind == "fill":
            text = "the reference's fill"
        elif kind == "-inf":
            text = "-inf"
        elif kind == "large":
            low, high = values[where].min(), values[where].max()
            text = f"{low:.4g}" if np.isclose(low, high, rtol=1e-3) else f"large negatives ({low:.4g} .. {high:.4g})"
        else:
            text = "0 (never written)" if (values[where] == 0).all() else "ordinary numbers (never written?)"
        held.append(text + ("" if where.all() else f" ({n} cells)"))
    kinds = [kind for kind, where in classes.items() if where.any()]
    if kinds == ["-inf"] or kinds == ["large"]:
        value = -np.inf if kinds == ["-inf"] else float(np.median(values))
        advice = f"trace the reference with --mask-fill {fill_flag(value, scores.dtype)} to compare them as numbers too"
    elif kinds == ["unwritten"]:
        advice = "a loop over the allowed keys only (j <= i) leaves them so"
    else:
        advice = "more than one convention"
    return None, f"the forbidden cells hold {' and '.join(held)} where the reference has its fill {fill:.4g}: {advice}"


def twice_forbidden(shape, attention_mask: np.ndarray) -> np.ndarray:
    """Boolean [B, H, T, Tk]: the cells forbidden twice over, their key being a pad and in the future."""
    B, H, T, Tk = shape
    future = np.arange(Tk)[None, :] > np.arange(T)[:, None]  # [T, Tk]
    pad_key = attention_mask[:, None, None, :] == 0  # [B, 1, 1, Tk]
    return np.broadcast_to(future[None, None] & pad_key, shape)


def added_twice(values: np.ndarray, both: np.ndarray, masking: np.ndarray) -> str | None:
    """The fill added twice: the cells forbidden twice over hold 2 x the others' fill (or -inf,
    where that overflows). None when that is not what they show."""
    if not both.any() or both.all() or not masking[~both].all():
        return None
    fill = float(np.median(values[~both]))  # what a cell forbidden once holds
    twice = values[both]
    if not np.isfinite(fill) or np.isclose(twice, fill, rtol=1e-3).all():
        return None
    if not (np.isclose(twice, 2 * fill, rtol=1e-3) | (twice == -np.inf)).all():
        return None
    return (
        f"{twice.size} forbidden cells hold e.g. {twice[0]:.4g}, the others {fill:.4g}: the fill added twice "
        "(padding mask + causal mask) where a key is both a pad and in the future; build the mask from one boolean"
    )


# --- a scale or a sign ---------------------------------------------------------------------------


def multiple_of(ref: np.ndarray, cand: np.ndarray) -> float | None:
    """a when cand = a x ref to within 1e-3 of the reference's scale, for an a that is not 1 (nor
    near it: an ordinary difference is no scale error), else None. ref, cand: the compared cells,
    float64. The least-squares a = <cand, ref> / <ref, ref>."""
    norm = float(ref @ ref)
    if norm == 0:
        return None
    a = float(cand @ ref) / norm
    scale = float(np.abs(ref).max())
    if abs(a - 1) < 1e-2 or float(np.abs(cand - a * ref).max()) > 1e-3 * abs(a) * scale:
        return None
    return a


def describe_multiple(a: float) -> str:
    if abs(a + 1) < 1e-2:
        return "its values are the reference's with the sign flipped (-1 x): a minus sign lost or added"
    if abs(a) < 1e-12:
        return "its values are all 0 where the reference's are not"
    return f"its values are {a:.4g} x the reference's: the pattern is right, a scale factor is not"


# --- one point -------------------------------------------------------------------------------


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
        m.diff = float(d.max()) if np.isfinite(d).all() else float(np.inf)
        m.scale = float(np.abs(r).max())
    bad = non_finite_cells(name, cand, cells)
    if bad is not None:
        m.problems.append(describe_non_finite(name, cand, bad, attention_mask))
    elif r.size:
        m.multiple = multiple_of(r, c)
        if m.multiple is not None:
            m.hints.append(describe_multiple(m.multiple))
    if name.endswith("hook_attn_scores"):
        fill = expected_fill(metadata, cand.dtype)
        problem, m.fill_note = classify_forbidden(cand, ref, ~cells, attention_mask, fill)
        if problem:
            m.problems.append(problem)
    if name.endswith("hook_pattern"):
        outside = cells & ~allowed_cells(attention_mask, ref.shape[2])  # [B, H, T, Tk] real queries, forbidden keys
        weights = np.abs(cand[outside].astype(np.float64))
        weights = weights[np.isfinite(weights) & (weights > 1e-6)]  # the reference has 0 in every one of them
        if weights.size and weights.max() >= 0.5 * m.diff:  # the leak is what makes the difference
            m.hints.append(
                f"{weights.size} forbidden cells get weight (up to {weights.max():.2g}) where the reference has 0: "
                "a key in the future or a pad is attended to, the mask does not reach the softmax"
            )
    return m
